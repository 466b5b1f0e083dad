#!/usr/bin/python
"""Ansible module: refuse arms that are not comparable (logic in module_utils/arms_preflight.py)."""

from __future__ import annotations

DOCUMENTATION = r"""
module: nanochat_preflight
short_description: Refuse to launch arms that are not comparable
description:
  - Given every arm host's facts (from M(nanochat_preflight_facts)) and the experiment, checks that
    the arms differ only in their data - the same nanochat commit and TF32 state, identical
    hyperparameters and GPU counts, the same tokenizer files, the same validation shard as the last
    file, data dirs that match their manifests and are exactly what nanochat will read - that each
    arm holds enough data (or that arms repeat data alike), and that GPUs, disk and W&B credentials
    are there. Fails with one sentence per problem, naming the host, what differs and what to run.
options:
  facts:
    description: Host name to the facts M(nanochat_preflight_facts) returned.
    type: dict
    required: true
  arms:
    description: The experiment's arms (name to its settings).
    type: dict
    required: true
  hosts_of:
    description: Arm name to the hosts of its group.
    type: dict
    required: true
  model:
    description: The experiment's model settings (depth, batch sizes, gpus_per_node, extra_flags).
    type: dict
    required: true
  pin_sha:
    description: The full sha the nanochat pin resolves to.
    type: str
  commit_date:
    description: The pinned commit's date (YYYY-MM-DD), for nanochat's default data:param ratio.
    type: str
  inventory_arg:
    description:
      - The C(-i ...) part of the ansible-playbook commands that repair messages name (the inventory the
        caller was run with; the playbooks pass C(arms_inventory_arg)).
    type: str
    default: "-i inventory/"
  check_gpus:
    description: Require nvidia-smi to see at least gpus_per_node GPUs on every arm host.
    type: bool
    default: true
  allow_unequal_repeats:
    description: Only warn when arms would repeat their data a different number of times.
    type: bool
    default: false
  repeat_tolerance:
    description: Relative difference in passes over the data tolerated between arms.
    type: float
    default: 0.1
  budgets:
    description:
      - Host name to what M(nanochat_data_budget) returned on it (the arm's data measured with nanochat's own
        loader, on each arm's first host). With a measurement for every arm, passes over the data are tokens
        needed / tokens the loader yields a pass; otherwise every arm falls back to tokens needed / tokens held
        (one for one), and a note says why. A failed measurement is a problem.
    type: dict
    default: {}
  eval_bundle:
    description:
      - The CPU node's eval bundle (M(nanochat_eval_bundle) with C(state=check), plus C(host)), given when the
        CORE metric is on; every arm host must then hold that bundle, whole. Not given, nothing is checked.
    type: dict
author: nanochat-arms
"""

EXAMPLES = r"""
- name: Arms are comparable
  nanochat_preflight:
    facts: "{{ dict(arm_hosts | zip(arm_hosts | map('extract', hostvars, ['preflight', 'facts']))) }}"
    arms: "{{ arms_experiment.arms }}"
    hosts_of: {top16.5: [top], random16.5: [random]}
    model: "{{ arms_experiment.model }}"
  delegate_to: localhost
  run_once: true
"""

RETURN = r"""
problems:
  description: One sentence per reason the arms cannot be launched.
  type: list
  elements: str
  returned: always
notes:
  description: Things to know that do not stop the launch (an arm that will repeat data, say).
  type: list
  elements: str
  returned: always
budget:
  description:
    - The arms' passes over their data (C(arms)), C(lines) (one sentence per arm), C(source) (C(measured) with
      nanochat's loader, or C(estimated) one for one), C(comparable) and the iteration rule used (C(plan)).
  type: dict
  returned: always
"""

from typing import Any

from ansible.module_utils.arms_common import WARNINGS, ModuleFailure, run_module
from ansible.module_utils.arms_preflight import compare
from ansible.module_utils.basic import AnsibleModule

ARGUMENT_SPEC: dict[str, Any] = {
    "facts": {"type": "dict", "required": True},
    "arms": {"type": "dict", "required": True},
    "hosts_of": {"type": "dict", "required": True},
    "model": {"type": "dict", "required": True},
    "pin_sha": {"type": "str"},
    "commit_date": {"type": "str"},
    "check_gpus": {"type": "bool", "default": True},
    "allow_unequal_repeats": {"type": "bool", "default": False},
    "repeat_tolerance": {"type": "float", "default": 0.1},
    "eval_bundle": {"type": "dict"},
    "inventory_arg": {"type": "str", "default": "-i inventory/"},
    "budgets": {"type": "dict", "default": {}},
}


def preflight(p: dict[str, Any], check_mode: bool) -> dict[str, Any]:
    missing = [h for hosts in p["hosts_of"].values() for h in hosts if h not in p["facts"]]
    if missing:
        raise ModuleFailure(
            f"no preflight facts for {', '.join(missing)}: the preflight compares every arm, "
            "so their hosts must be reachable and not left out by --limit.",
            problems=[],
        )
    # every other option is compare's keyword of the same name
    options = {name: p[name] for name in ARGUMENT_SPEC if name not in ("facts", "inventory_arg", "budgets")}
    result = compare(p["facts"], inventory=p["inventory_arg"], measured=p["budgets"], **options)
    # Ansible reserves a result's "warnings" (passing it is deprecated): ours are "notes", also shown
    # as the module's own warnings
    result["notes"] = result.pop("warnings")
    result[WARNINGS] = result["notes"]
    if result["problems"]:
        count = len(result["problems"])
        raise ModuleFailure(
            f"the arms are not comparable ({count} problem{'s' if count > 1 else ''}): "
            + " | ".join(result["problems"]),
            **result,
        )
    return {"changed": False, "msg": "the arms are comparable", **result}


def main() -> None:
    run_module(AnsibleModule, ARGUMENT_SPEC, preflight, errors=(ModuleFailure,))


if __name__ == "__main__":
    main()
