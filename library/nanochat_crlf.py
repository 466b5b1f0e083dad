#!/usr/bin/python
"""Ansible module: LF endings and run bits for nanochat's shell scripts (logic: arms_patch.py)."""

from __future__ import annotations

DOCUMENTATION = r"""
module: nanochat_crlf
short_description: Give nanochat's shell scripts LF line endings and their run bit
description:
  - "Scripts copied through Windows carry CRLF endings and fail with C(bash\\r: No such file or directory).
    Every file matching O(patterns) under O(path) gets LF endings and an execute bit wherever it is
    readable. Reports C(changed) only for files that really changed."
  - "The default covers every era of nanochat: root C(*.sh) and C(dev/runcpu.sh) until 2026-01-18,
    C(runs/*.sh) after."
options:
  path:
    description: The nanochat checkout.
    type: path
    required: true
  patterns:
    description: Globs relative to O(path).
    type: list
    elements: str
    default: ["*.sh", "runs/*.sh", "dev/*.sh"]
author: nanochat-arms
"""

EXAMPLES = r"""
- name: Nanochat scripts have LF line endings and are executable
  nanochat_crlf:
    path: ~/nanochat
"""

RETURN = r"""
converted:
  description: Scripts whose CRLF endings were converted (relative paths).
  type: list
  elements: str
  returned: success
made_executable:
  description: Scripts that only lacked the run bit.
  type: list
  elements: str
  returned: success
scripts:
  description: Every script considered.
  type: list
  elements: str
  returned: success
"""

from typing import Any

from ansible.module_utils.arms_common import run_module
from ansible.module_utils.arms_patch import SCRIPT_PATTERNS, crlf_apply
from ansible.module_utils.basic import AnsibleModule

ARGUMENT_SPEC: dict[str, Any] = {
    "path": {"type": "path", "required": True},
    "patterns": {"type": "list", "elements": "str", "default": list(SCRIPT_PATTERNS)},
}


def convert(p: dict[str, Any], check_mode: bool) -> dict[str, Any]:
    r = crlf_apply(p["path"], p["patterns"], check_mode=check_mode)
    return {"changed": r.changed, "converted": r.converted, "made_executable": r.made_executable, "scripts": r.scripts}


def main() -> None:
    run_module(AnsibleModule, ARGUMENT_SPEC, convert)


if __name__ == "__main__":
    main()
