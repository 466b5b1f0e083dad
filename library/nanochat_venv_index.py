#!/usr/bin/python
"""Ansible module: the package indexes nanochat's pyproject names for an extra (logic: arms_venv.py)."""

from __future__ import annotations

DOCUMENTATION = r"""
module: nanochat_venv_index
short_description: Read the package indexes nanochat's pyproject.toml names for an extra
description:
  - "nanochat takes torch for its C(gpu) and C(cpu) extras from named indexes (C([tool.uv.sources]) and
    C([[tool.uv.index]]) in its C(pyproject.toml)); C(uv export) of its lock writes the torch version
    (C(torch==2.9.1+cu128)) without the index. This module reads the checkout's C(pyproject.toml) and returns
    the C(uv pip install) arguments that add those indexes by name (C(--index NAME=URL)) with the
    C(unsafe-best-match) index strategy."
  - Read-only; never reports a change.
options:
  checkout:
    description: The nanochat checkout holding C(pyproject.toml).
    type: path
    required: true
  extra:
    description: nanochat's optional-dependency group (C(gpu), C(cpu)); empty for none.
    type: str
    default: ""
  index_urls:
    description: Index name to URL, replacing the URL the pyproject gives that index (a mirror, a local index).
    type: dict
    default: {}
author: nanochat-arms
"""

EXAMPLES = r"""
- name: Package indexes nanochat's pyproject names for the gpu extra are known
  nanochat_venv_index:
    checkout: ~/nanochat
    extra: gpu
    index_urls:
      pytorch-cu128: file:///srv/mirror/torch-cu128/simple
  register: indexes
"""

RETURN = r"""
indexes:
  description: The indexes the extra needs, in the pyproject's order.
  type: list
  elements: dict
  returned: success
  contains:
    name:
      description: The index name.
      type: str
    url:
      description: The URL used (the override when one was given).
      type: str
    packages:
      description: Packages the pyproject takes from it for the extra.
      type: list
      elements: str
    overridden:
      description: Whether O(index_urls) replaced the pyproject's URL.
      type: bool
uv_args:
  description: Arguments for C(uv pip install) (empty when the extra needs no index).
  type: list
  elements: str
  returned: success
  sample: ["--index", "pytorch-cu128=https://example.invalid/whl/cu128", "--index-strategy", "unsafe-best-match"]
index_strategy:
  description: The index strategy in O(uv_args) (empty when there is none).
  type: str
  returned: success
extra:
  description: The extra read.
  type: str
  returned: success
unused_overrides:
  description: Names in O(index_urls) that the extra does not use (also reported as a warning).
  type: list
  elements: str
  returned: success
"""

from typing import Any

from ansible.module_utils.arms_common import WARNINGS, run_module
from ansible.module_utils.arms_venv import plan_for_checkout, unused_override_warning
from ansible.module_utils.basic import AnsibleModule

ARGUMENT_SPEC: dict[str, Any] = {
    "checkout": {"type": "path", "required": True},
    "extra": {"type": "str", "default": ""},
    "index_urls": {"type": "dict", "default": {}},
}


def indexes(p: dict[str, Any], check_mode: bool) -> dict[str, Any]:
    plan = plan_for_checkout(p["checkout"], p["extra"] or "", p["index_urls"] or {})
    warnings = [unused_override_warning(plan)] if plan.unused_overrides else []
    return {"changed": False, **plan.to_result(), WARNINGS: warnings}


def main() -> None:
    run_module(AnsibleModule, ARGUMENT_SPEC, indexes)


if __name__ == "__main__":
    main()
