#!/usr/bin/python
"""Ansible module: secret files, 0600, written atomically in one task (logic: arms_secrets.py)."""

from __future__ import annotations

DOCUMENTATION = r"""
module: arms_secret_files
short_description: Write secret files (whole, or a marked block of a shared file) with mode 0600
description:
  - "Each file of O(files) holds its content with mode 0600 after the task; a missing folder is made
    with mode 0700. A file with a O(files[].marker) keeps its other lines: only the block between
    C(# BEGIN <marker>) and C(# END <marker>) is set (the way C(ansible.builtin.blockinfile) marks it)."
  - "Each file is written through a temporary file and a rename, so a reader never sees half a secret.
    The contents are never returned, shown in a diff or logged; only the paths that changed are."
options:
  files:
    description: The files to write.
    type: list
    elements: dict
    required: true
    suboptions:
      path:
        description: The file.
        type: path
        required: true
      content:
        description: What the file (or its block) holds.
        type: str
        required: true
        no_log: true
      marker:
        description: Manage only the block marked with this text in the file; other lines are kept.
        type: str
author: nanochat-arms
"""

EXAMPLES = r"""
- name: Secret files are written (0600)
  arms_secret_files:
    files:
      - path: ~/.config/nanochat-arms/secrets.env
        content: "WANDB_API_KEY='{{ key }}'\n"
      - path: ~/.netrc
        content: "machine api.wandb.ai\n  login user\n  password {{ key }}\n"
        marker: nanochat-arms W&B
  no_log: true
"""

RETURN = r"""
changed_paths:
  description: Files that were (or, in check mode, would be) written.
  type: list
  elements: str
  returned: success
unchanged_paths:
  description: Files that already held their content with mode 0600.
  type: list
  elements: str
  returned: success
"""

from typing import Any

from ansible.module_utils.arms_common import ArmsError, run_module
from ansible.module_utils.arms_secrets import ensure_secret_files
from ansible.module_utils.basic import AnsibleModule

ARGUMENT_SPEC: dict[str, Any] = {
    "files": {
        "type": "list",
        "elements": "dict",
        "required": True,
        "options": {
            "path": {"type": "path", "required": True},
            "content": {"type": "str", "required": True, "no_log": True},
            "marker": {"type": "str"},
        },
    },
}


def write_files(p: dict[str, Any], check_mode: bool) -> dict[str, Any]:
    r = ensure_secret_files(p["files"], check_mode=check_mode)
    return {
        "changed": bool(r.changed),
        "changed_paths": r.changed,
        "unchanged_paths": r.unchanged,
        "diff": [
            {"before_header": path, "after_header": path, "prepared": f"{path}: secret content (not shown)\n"}
            for path in r.changed
        ],
    }


def main() -> None:
    run_module(AnsibleModule, ARGUMENT_SPEC, write_files, errors=(ArmsError, OSError))


if __name__ == "__main__":
    main()
