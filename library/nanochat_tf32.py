#!/usr/bin/python
"""Ansible module: the TF32 repair of nanochat/common.py (logic in module_utils/arms_patch.py)."""

from __future__ import annotations

DOCUMENTATION = r"""
module: nanochat_tf32
short_description: Rewrite nanochat's new-API TF32 line so torch.compile does not crash
description:
  - nanochat commits from 2025-12-27 to 2026-02-18 set TF32 with
    C(torch.backends.cuda.matmul.fp32_precision = "tf32") or C(torch.backends.fp32_precision = "tf32").
    With torch.compile/Inductor this mixes the legacy and new TF32 APIs and training crashes at the
    first step. This module rewrites such a line to C(torch.set_float32_matmul_precision("high")),
    exactly once, keeping the line's indent and its comment.
  - Comments never count, whether a commented-out line or a trailing one such as the URL of the
    C(set_float32_matmul_precision) docs that nanochat puts after the call from 2026-02-18 on.
  - A commit that already uses C(set_float32_matmul_precision("high")), or sets no TF32 at all, is left
    unchanged and the module says so.
  - TF32 set any other way (legacy C(allow_tf32) flags, another precision, a statement over several
    lines) fails with a sentence naming the line and what was expected, instead of guessing; so does
    a C(nanochat/common.py) that is not valid Python.
options:
  path:
    description: The nanochat checkout (the file changed is C(nanochat/common.py) inside it).
    type: path
    required: true
  inventory_arg:
    description:
      - The C(-i ...) part of the ansible-playbook command a refusal names (the inventory the caller was
        run with; a playbook passes C(arms_inventory_arg)).
    type: str
    default: "-i inventory/"
author: nanochat-arms
"""

EXAMPLES = r"""
- name: TF32 is set through the API torch.compile accepts
  nanochat_tf32:
    path: ~/nanochat
"""

RETURN = r"""
state:
  description: C(patched) (rewritten by this run), C(already_fixed) or C(no_tf32).
  type: str
  returned: success
lines:
  description: Line numbers rewritten.
  type: list
  elements: int
  returned: success
"""

from typing import Any

from ansible.module_utils.arms_common import run_module
from ansible.module_utils.arms_patch import tf32_apply
from ansible.module_utils.basic import AnsibleModule

ARGUMENT_SPEC: dict[str, Any] = {
    "path": {"type": "path", "required": True},
    "inventory_arg": {"type": "str", "default": "-i inventory/"},
}


def tf32(p: dict[str, Any], check_mode: bool) -> dict[str, Any]:
    r = tf32_apply(p["path"], check_mode=check_mode, inventory=p["inventory_arg"])
    diff = {}
    if r.changed:
        diff = {
            "before_header": "nanochat/common.py",
            "after_header": "nanochat/common.py",
            "before": r.before,
            "after": r.after,
        }
    return {"changed": r.changed, "state": r.state, "lines": r.lines, "msg": r.msg, "diff": diff}


def main() -> None:
    run_module(AnsibleModule, ARGUMENT_SPEC, tf32)


if __name__ == "__main__":
    main()
