#!/usr/bin/python
"""Ansible module: an arm's data dir checked against its manifest (logic in module_utils/arms_manifest.py)."""

from __future__ import annotations

DOCUMENTATION = r"""
module: nanochat_data_verify
short_description: Check an arm's data dir against its manifest.json
description:
  - Every shard the manifest names must be present with its size and sha256. Files hashed before and
    untouched since (same size and mtime, in the verification cache) are not hashed again unless
    O(deep=true).
  - With O(remove_bad=true) the shards that fail are deleted (so a following transfer or download
    fetches them again) and the module reports them instead of failing.
  - Parquet files in the data dir that the manifest does not name are reported as C(extra), since nanochat
    would read them too.
options:
  data_dir:
    description: The data dir holding C(manifest.json) and the shards.
    type: path
    required: true
  deep:
    description: Re-hash every shard, ignoring the verification cache.
    type: bool
    default: false
  remove_bad:
    description: Delete shards that are missing their expected size or hash, and report them instead of failing.
    type: bool
    default: false
  allow_missing_manifest:
    description: Return C(manifest=false) instead of failing when the data dir has no manifest yet.
    type: bool
    default: false
  fail_on_extra:
    description: Fail when parquet files the manifest does not name are present.
    type: bool
    default: false
author: nanochat-arms
"""

EXAMPLES = r"""
- name: Random arm's shards match their manifest
  nanochat_data_verify:
    data_dir: ~/.cache/nanochat/base_data
"""

RETURN = r"""
verified:
  description: Shards that match the manifest.
  type: int
  returned: success
bad:
  description: Shards missing or with the wrong size or sha256.
  type: list
  elements: str
  returned: always
removed:
  description: Bad shards deleted (with remove_bad).
  type: list
  elements: str
  returned: success
extra:
  description: Parquet files nanochat would read that the manifest does not name.
  type: list
  elements: str
  returned: success
hashed:
  description: Files actually hashed this run (the rest came from the verification cache).
  type: int
  returned: success
manifest:
  description: Whether a manifest was found.
  type: bool
  returned: always
totals:
  description: The manifest's totals (shards, rows, bytes, train_rows, val_rows).
  type: dict
  returned: success
"""

import os
from typing import Any

from ansible.module_utils.arms_common import ArmsError, ModuleFailure, run_module
from ansible.module_utils.arms_manifest import read_manifest, require_complete, verify_data_dir
from ansible.module_utils.basic import AnsibleModule

ARGUMENT_SPEC: dict[str, Any] = {
    "data_dir": {"type": "path", "required": True},
    "deep": {"type": "bool", "default": False},
    "remove_bad": {"type": "bool", "default": False},
    "allow_missing_manifest": {"type": "bool", "default": False},
    "fail_on_extra": {"type": "bool", "default": False},
}


def verify(p: dict[str, Any], check_mode: bool) -> dict[str, Any]:
    data_dir = p["data_dir"]
    try:
        manifest = read_manifest(data_dir)
    except ArmsError as exc:
        raise ModuleFailure(str(exc), bad=[], manifest=False) from exc
    if manifest is None:
        if p["allow_missing_manifest"]:
            msg = f"{data_dir} has no manifest yet"
            return {"changed": False, "manifest": False, "bad": [], "verified": 0, "msg": msg}
        try:  # its sentence: what a prep or download killed midway leaves, or nothing at all
            require_complete(data_dir)
        except ArmsError as exc:
            raise ModuleFailure(str(exc), bad=[], manifest=False) from exc
    result = verify_data_dir(data_dir, manifest, use_cache=not p["deep"])
    removed: list[str] = []
    if result.bad and p["remove_bad"]:
        for name in result.bad:
            path = os.path.join(data_dir, name)
            if os.path.exists(path):
                removed.append(name)
                if not check_mode:
                    os.unlink(path)
    out = {
        "manifest": True,
        "verified": len(result.ok),
        "bad": result.bad,
        "removed": removed,
        "extra": result.extra,
        "hashed": result.hashed,
        "totals": manifest.get("totals", {}),
        "details": result.to_json(),
    }
    if result.bad and not p["remove_bad"]:
        raise ModuleFailure(
            f"{data_dir} does not match its manifest: {result.summary()}. Re-run the transfer or download "
            "to repair it (a re-run fetches only what is bad).",
            **out,
        )
    if result.extra and p["fail_on_extra"]:
        raise ModuleFailure(
            f"{data_dir} holds parquet files its manifest does not name ({', '.join(result.extra[:5])}): nanochat "
            "would train on them too. Move them out of the data dir.",
            **out,
        )
    return {"changed": bool(removed), "msg": result.summary(), **out}


def main() -> None:
    run_module(AnsibleModule, ARGUMENT_SPEC, verify)


if __name__ == "__main__":
    main()
