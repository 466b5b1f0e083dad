#!/usr/bin/python
"""Ansible module: every rank of a run gets row groups from an arm's files (logic in arms_rowgroups.py)."""

from __future__ import annotations

DOCUMENTATION = r"""
module: nanochat_rank_shares
short_description: Check from parquet footers that no rank of a run starves on an arm's data
description:
  - nanochat's loader gives rank r of W the row groups r, r+W, ... of each file; the last file in sort order is
    validation. A rank with no row group in any training file, or in the validation file, makes the run hang
    without a word; a single-file arm has no training file at all.
  - Reads the parquet footers only. Fails with a sentence naming the file when a rank would starve (unless
    O(fail=false)); warns when the ranks' shares of training rows differ by more than O(uneven_tolerance).
options:
  data_dir:
    description: The arm's data dir, the folder nanochat reads.
    type: path
    required: true
  world_size:
    description: GPUs x nodes of the arm's run.
    type: int
    required: true
  uneven_tolerance:
    description: Spread of the ranks' shares ((largest - smallest) / mean) above which a warning is given.
    type: float
    default: 0.1
  fail:
    description: Fail when a rank would starve; with false, only report it in C(problems).
    type: bool
    default: true
author: nanochat-arms
"""

EXAMPLES = r"""
- name: No rank of the 8-GPU run starves on the Azure arm's shards
  nanochat_rank_shares:
    data_dir: ~/.cache/nanochat/base_data
    world_size: 8
"""

RETURN = r"""
problems:
  description: Why a rank would starve, one sentence each.
  type: list
  elements: str
  returned: always
shares:
  description: Training rows each rank reads a pass.
  type: list
  elements: int
  returned: success
spread:
  description: (largest share - smallest share) / mean share.
  type: float
  returned: success
files:
  description: Row groups of each file nanochat reads.
  type: dict
  returned: success
"""

from typing import Any

from ansible.module_utils.arms_common import WARNINGS, ArmsError, ModuleFailure, run_module
from ansible.module_utils.arms_rowgroups import check_data_dir
from ansible.module_utils.basic import AnsibleModule

ARGUMENT_SPEC: dict[str, Any] = {
    "data_dir": {"type": "path", "required": True},
    "world_size": {"type": "int", "required": True},
    "uneven_tolerance": {"type": "float", "default": 0.1},
    "fail": {"type": "bool", "default": True},
}


def rank_shares(p: dict[str, Any], check_mode: bool) -> dict[str, Any]:
    try:
        result = check_data_dir(p["data_dir"], p["world_size"], uneven_tolerance=p["uneven_tolerance"])
    except ArmsError as exc:
        raise ModuleFailure(str(exc), problems=[str(exc)]) from exc
    result = {**result, WARNINGS: result["warnings"]}
    if result["problems"] and p["fail"]:
        raise ModuleFailure(" ".join(result["problems"]), **result)
    return {"changed": False, "msg": "; ".join(result["problems"]) or "every rank gets row groups", **result}


def main() -> None:
    run_module(AnsibleModule, ARGUMENT_SPEC, rank_shares)


if __name__ == "__main__":
    main()
