#!/usr/bin/python
"""Ansible module: the shared validation shard in an arm's data dir (logic in module_utils/arms_manifest.py)."""

from __future__ import annotations

DOCUMENTATION = r"""
module: nanochat_place_val
short_description: Put the experiment's shared validation shard into an arm's data dir
description:
  - nanochat validates on the last parquet file of its data dir. For arms to be compared on the same
    validation data, the held-out shard made by the random-subset step is copied into every arm's
    data dir as C(shard_val.parquet) (it sorts after every C(shard_NNNNN)), and recorded in the arm's
    manifest with C(role=val); the arm's own shards all count as training data.
options:
  data_dir:
    description: The arm's data dir (holding its manifest.json).
    type: path
    required: true
  val_file:
    description: The shared val shard on this host.
    type: path
    required: true
author: nanochat-arms
"""

EXAMPLES = r"""
- name: Shared val shard is the last file of the top arm
  nanochat_place_val:
    data_dir: ~/.cache/nanochat/base_data
    val_file: ~/.local/share/nanochat-arms/val/shard_val.parquet
"""

RETURN = r"""
msg:
  description: What was done.
  type: str
  returned: always
"""

from typing import Any

from ansible.module_utils.arms_common import run_module
from ansible.module_utils.arms_manifest import place_val_shard
from ansible.module_utils.basic import AnsibleModule

ARGUMENT_SPEC: dict[str, Any] = {
    "data_dir": {"type": "path", "required": True},
    "val_file": {"type": "path", "required": True},
}


def place(p: dict[str, Any], check_mode: bool) -> dict[str, Any]:
    changed = place_val_shard(p["data_dir"], p["val_file"], check_mode=check_mode)
    return {"changed": changed, "msg": "shared val shard placed" if changed else "shared val shard already in place"}


def main() -> None:
    run_module(AnsibleModule, ARGUMENT_SPEC, place)


if __name__ == "__main__":
    main()
