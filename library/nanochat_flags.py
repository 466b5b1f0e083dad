#!/usr/bin/python
"""Ansible module: a nanochat script's command line in the checkout's own flag style."""

from __future__ import annotations

DOCUMENTATION = r"""
---
module: nanochat_flags
short_description: Write a nanochat script's command line in the flag style of the checkout's code
description:
  - Reads the flag style (configurator, argparse with underscores, argparse with dashes) from the
    checkout's own script (e.g. C(scripts/tok_train.py)), never from the commit date, and returns the
    argv C(<python> -m <script> --name=value ...) with the flags written in it.
  - Changes nothing on the host.
options:
  chdir:
    description: The nanochat checkout.
    type: path
    required: true
  script:
    description: The script as a module name, e.g. C(scripts.tok_train).
    type: str
    required: true
  python:
    description: The Python that runs it (the nanochat venv's).
    type: path
    required: true
  flags:
    description: "The flags, names with dashes or underscores, e.g. C({max-chars: 2000000})."
    type: dict
    default: {}
author: nanochat-arms
"""

EXAMPLES = r"""
- name: The tokenizer's command line is written in the checkout's own flag style
  nanochat_flags:
    chdir: ~/nanochat
    script: scripts.tok_train
    python: ~/nanochat/.venv/bin/python
    flags: {max-chars: 2000000}
  register: tok_cmd
"""

RETURN = r"""
flag_style:
  description: The style read from the script, C(configurator), C(underscore) or C(dash).
  returned: success
  type: str
argv:
  description: "The command line, e.g. C([~/nanochat/.venv/bin/python, -m, scripts.tok_train, --max-chars=2000000])."
  returned: success
  type: list
  elements: str
"""

import os
from typing import Any

from ansible.module_utils.arms_common import run_module
from ansible.module_utils.arms_flags import flag_style_of_checkout, normalize_flags, render_flags
from ansible.module_utils.basic import AnsibleModule

ARGUMENT_SPEC: dict[str, Any] = {
    "chdir": {"type": "path", "required": True},
    "script": {"type": "str", "required": True},
    "python": {"type": "path", "required": True},
    "flags": {"type": "dict", "default": {}},
}


def command_line(p: dict[str, Any], check_mode: bool) -> dict[str, Any]:
    script_path = os.path.join(*p["script"].split(".")) + ".py"
    style = flag_style_of_checkout(p["chdir"], script_path)
    argv = [p["python"], "-m", p["script"], *render_flags(normalize_flags(p["flags"]), style)]
    return {"changed": False, "flag_style": style, "argv": argv}


def main() -> None:
    run_module(AnsibleModule, ARGUMENT_SPEC, command_line)


if __name__ == "__main__":
    main()
