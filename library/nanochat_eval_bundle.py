#!/usr/bin/python
"""Ansible module: nanochat's CORE eval bundle placed or checked on a host (logic in arms_eval_bundle.py)."""

from __future__ import annotations

DOCUMENTATION = r"""
module: nanochat_eval_bundle
short_description: Place nanochat's CORE eval bundle under NANOCHAT_BASE_DIR, or check it
description:
  - base_train evaluates CORE every C(--core-metric-every) steps and, when C(<base_dir>/eval_bundle) is missing,
    downloads C(eval_bundle.zip) while every GPU waits. This module puts the bundle there before launch, as
    nanochat leaves it (C(<base_dir>/eval_bundle.zip) and the unzipped C(<base_dir>/eval_bundle/)), atomically,
    and records the zip's sha256 in C(eval_bundle/.nanochat-arms-bundle.json).
  - Idempotent by content, the zip's sha256. With O(expected_sha256) a host that already holds that bundle is
    not fetched from again, and a zip with another checksum is refused.
  - O(state=check) changes nothing and reports whether the bundle is whole and, with O(expected_sha256), the
    expected one.
  - With O(extra_flags) (base_train's extra flags, the experiment's C(model.extra_flags)) the bundle is needed
    only when they leave the CORE metric on (C(--core-metric-every) unset, nanochat's default 2000, or above 0);
    otherwise nothing is placed (O(always) places or checks it anyway) and RV(needed) is false.
options:
  base_dir:
    description: nanochat's base dir (C(NANOCHAT_BASE_DIR)) on the host.
    type: path
    required: true
  src:
    description:
      - The bundle, as a URL (C(https://), C(file://)) or a zip on the host.
      - Default, the URL nanochat itself uses (C(EVAL_BUNDLE_URL) in O(checkout)'s C(scripts/base_eval.py)).
    type: str
  checkout:
    description: nanochat's checkout, to read the bundle's URL from when O(src) is not given.
    type: path
  expected_sha256:
    description: The sha256 the zip must have (the one the CPU node fetched); refused otherwise.
    type: str
  state:
    description: C(present) places the bundle; C(check) only reports.
    type: str
    choices: [present, check]
    default: present
  timeout:
    description: Seconds a download may stall before it fails.
    type: int
    default: 600
  extra_flags:
    description:
      - base_train's extra flags (a mapping, dashes or underscores); the bundle is needed only when they leave
        the CORE metric on. Not given, the bundle is needed.
    type: dict
  always:
    description: Place (or check) the bundle even when O(extra_flags) switch the CORE metric off (the lab does).
    type: bool
    default: false
author: nanochat-arms
"""

EXAMPLES = r"""
- name: The CPU node holds nanochat's eval bundle
  nanochat_eval_bundle:
    base_dir: ~/.cache/nanochat
    checkout: ~/nanochat
  register: bundle

- name: Every arm host holds the same bundle as the CPU node
  nanochat_eval_bundle:
    base_dir: ~/.cache/nanochat
    src: /tmp/eval_bundle.zip
    expected_sha256: "{{ hostvars[groups['cpu'][0]].bundle.sha256 }}"

- name: The bundle is there before launch (when the experiment's flags leave the CORE metric on)
  nanochat_eval_bundle:
    base_dir: ~/.cache/nanochat
    state: check
    extra_flags: {core-metric-every: 2000}
    expected_sha256: "{{ hostvars[groups['cpu'][0]].bundle.sha256 }}"
"""

RETURN = r"""
needed:
  description: Whether the bundle is needed (CORE metric on, or O(always)); nothing is placed when it is not.
  type: bool
  returned: always
sha256:
  description: The sha256 of the bundle's zip (placed, or recorded on the host).
  type: str
  returned: when needed
path:
  description: The bundle's folder, C(<base_dir>/eval_bundle).
  type: str
  returned: when needed
files:
  description: Files in the bundle's folder (state=present).
  type: int
  returned: success
matches:
  description: Whether the bundle is whole and, with expected_sha256, the expected one (state=check).
  type: bool
  returned: success
problems:
  description: What is wrong with the bundle on the host, as sentences (state=check).
  type: list
  elements: str
  returned: success
"""

from typing import Any

from ansible.module_utils.arms_common import ArmsError, run_module
from ansible.module_utils.arms_eval_bundle import bundle_url, check_bundle, core_metric_on, place_bundle
from ansible.module_utils.basic import AnsibleModule

ARGUMENT_SPEC: dict[str, Any] = {
    "base_dir": {"type": "path", "required": True},
    "src": {"type": "str"},
    "checkout": {"type": "path"},
    "expected_sha256": {"type": "str"},
    "state": {"type": "str", "choices": ["present", "check"], "default": "present"},
    "timeout": {"type": "int", "default": 600},
    "extra_flags": {"type": "dict"},
    "always": {"type": "bool", "default": False},
}


def bundle(p: dict[str, Any], check_mode: bool) -> dict[str, Any]:
    needed = p["always"] or p["extra_flags"] is None or core_metric_on(p["extra_flags"])
    if not needed:
        return {
            "changed": False,
            "needed": False,
            "msg": "the CORE metric is off (--core-metric-every <= 0): no eval bundle is needed",
        }
    return {"needed": True, **_needed(p, check_mode)}


def _needed(p: dict[str, Any], check_mode: bool) -> dict[str, Any]:
    if p["state"] == "check":
        found = check_bundle(p["base_dir"], p["expected_sha256"])
        msg = "; ".join(found["problems"]) or f"{found['path']} holds the bundle {str(found['sha256'])[:12]}"
        return {"changed": False, "msg": msg, **found}
    src = p["src"]
    if not src:
        if not p["checkout"]:
            raise ArmsError("give src (the bundle's URL or zip) or checkout (to read nanochat's own URL).")
        src = bundle_url(p["checkout"])
    result = place_bundle(
        p["base_dir"], src, expected_sha256=p["expected_sha256"], check_mode=check_mode, timeout=p["timeout"]
    )
    return {"msg": f"eval bundle {str(result['sha256'])[:12]} at {result['path']}", **result}


def main() -> None:
    run_module(AnsibleModule, ARGUMENT_SPEC, bundle)


if __name__ == "__main__":
    main()
