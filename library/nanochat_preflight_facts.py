#!/usr/bin/python
"""Ansible module: what an arm host really has, for the comparability preflight (logic: arms_preflight.py)."""

from __future__ import annotations

DOCUMENTATION = r"""
module: nanochat_preflight_facts
short_description: Read what an arm host has, for the comparability preflight
description:
  - Reads the nanochat commit and TF32 state, the tokenizer files' sha256, the data dir against its
    manifest, the parquet files nanochat itself will read (asked from nanochat's own dataset code in
    the venv), the tokens the arm holds, the last file in sort order (nanochat's validation split)
    and its sha256, free disk, visible GPUs and whether a W&B key is present. Changes nothing on the
    host but a cache of nanochat's answer (in ~/.cache/nanochat-arms/preflight/). Asking costs seconds
    (nanochat imports torch), so the answer is given again while the listing code's bytes, the venv,
    the base dir and the data dir's entries are all as they were.
options:
  checkout:
    description: The nanochat checkout.
    type: path
    required: true
  venv:
    description: nanochat's venv.
    type: path
    required: true
  base_dir:
    description: NANOCHAT_BASE_DIR on this host.
    type: path
    required: true
  data_dir:
    description: The arm's data dir (C(base_dir/base_data)).
    type: path
    required: true
  env_file:
    description: The secrets env file (only whether it holds a W&B key is read).
    type: path
  check_gpus:
    description: Count GPUs with nvidia-smi.
    type: bool
    default: true
author: nanochat-arms
"""

EXAMPLES = r"""
- name: Arm host facts are read
  nanochat_preflight_facts:
    checkout: ~/nanochat
    venv: ~/nanochat/.venv
    base_dir: ~/.cache/nanochat
    data_dir: ~/.cache/nanochat/base_data
  register: facts
"""

RETURN = r"""
facts:
  description: commit, tf32, tokenizer, manifest, verify, manifest_files, held, last_file, last_sha256,
    nanochat (files nanochat reads), free_bytes, gpus, wandb_key.
  type: dict
  returned: success
"""

from typing import Any

from ansible.module_utils.arms_common import ArmsError, run_module
from ansible.module_utils.arms_preflight import host_facts
from ansible.module_utils.basic import AnsibleModule

ARGUMENT_SPEC: dict[str, Any] = {
    "checkout": {"type": "path", "required": True},
    "venv": {"type": "path", "required": True},
    "base_dir": {"type": "path", "required": True},
    "data_dir": {"type": "path", "required": True},
    "env_file": {"type": "path"},
    "check_gpus": {"type": "bool", "default": True},
}


def facts_of_host(p: dict[str, Any], check_mode: bool) -> dict[str, Any]:
    return {"changed": False, "facts": host_facts(**p)}


def main() -> None:
    run_module(
        AnsibleModule,
        ARGUMENT_SPEC,
        facts_of_host,
        errors=(ArmsError, OSError),
        fail_prefix="could not read this host's facts for the preflight: ",
    )


if __name__ == "__main__":
    main()
