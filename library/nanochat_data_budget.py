#!/usr/bin/python
"""Ansible module: an arm's data budget measured with nanochat's own loader (logic in arms_packing.py)."""

from __future__ import annotations

DOCUMENTATION = r"""
module: nanochat_data_budget
short_description: Measure the tokens nanochat's loader yields from an arm's data, and the passes a run makes
description:
  - Tokenizes a deterministic sample of the arm's training documents (every C(*.parquet) of O(data_dir) but the
    last, nanochat's validation file) with the experiment's tokenizer and runs it through nanochat's own
    best-fit loader, imported from O(checkout), at O(max_seq_len).
  - Reports the tokens the arm holds (extrapolated from the sample by rows), the tokens the loader yields a
    pass (rows x max_seq_len, the unit of base_train's total batch size), the crop rate and, with
    O(num_iterations) and O(total_batch_size), the passes the run makes over the data.
  - Must run with the python of nanochat's venv (C(ansible_python_interpreter)), which has torch and
    nanochat's dependencies. Reads only; a temporary copy of the sample is removed afterwards.
options:
  checkout:
    description: nanochat's checkout on the host (nanochat is imported from there).
    type: path
    required: true
  tokenizer_dir:
    description: The experiment's tokenizer, C(<base_dir>/tokenizer) as scripts/tok_train.py writes it.
    type: path
    required: true
  data_dir:
    description: The arm's data dir, the folder nanochat reads.
    type: path
    required: true
  max_seq_len:
    description: The experiment's C(--max-seq-len).
    type: int
    default: 2048
  sample_docs:
    description: Documents to sample (whole row groups); the whole arm when it holds fewer.
    type: int
    default: 20000
  seed:
    description: Seed of the sample (the experiment's seed).
    type: int
    default: 42
  num_iterations:
    description: Steps of the run, to compute the passes it makes.
    type: int
  total_batch_size:
    description: Tokens a step (base_train's C(--total-batch-size)), to compute the passes.
    type: int
author: nanochat-arms
"""

EXAMPLES = r"""
- name: The random arm's data budget in nanochat's own tokens
  nanochat_data_budget:
    checkout: ~/nanochat
    tokenizer_dir: ~/.cache/nanochat/tokenizer
    data_dir: ~/.cache/nanochat/base_data
    max_seq_len: 2048
    num_iterations: 5000
    total_batch_size: 524288
  vars:
    ansible_python_interpreter: ~/nanochat/.venv/bin/python
  register: budget
"""

RETURN = r"""
budget:
  description:
    - tokens_held, loader_tokens_per_pass, loader_rows_per_pass, crop_rate, passes, tokens_needed, the sample's
      figures (sample_rows, sample_tokens, sample_loader_rows, warmup_docs), packing (bestfit or stream) and
      the rule used.
  type: dict
  returned: success
"""

from typing import Any

from ansible.module_utils.arms_common import run_module
from ansible.module_utils.arms_packing import DEFAULT_SAMPLE_DOCS, measure_budget
from ansible.module_utils.basic import AnsibleModule

ARGUMENT_SPEC: dict[str, Any] = {
    "checkout": {"type": "path", "required": True},
    "tokenizer_dir": {"type": "path", "required": True},
    "data_dir": {"type": "path", "required": True},
    "max_seq_len": {"type": "int", "default": 2048},
    "sample_docs": {"type": "int", "default": DEFAULT_SAMPLE_DOCS},
    "seed": {"type": "int", "default": 42},
    "num_iterations": {"type": "int"},
    "total_batch_size": {"type": "int"},
}


def budget_of(p: dict[str, Any], check_mode: bool) -> dict[str, Any]:
    budget = measure_budget(**p)
    passes = f", {budget['passes']:.2f} passes" if budget.get("passes") is not None else ""
    msg = (
        f"{budget['loader_tokens_per_pass']:,} tokens a pass of {budget['tokens_held']:,} held "
        f"(crop {budget['crop_rate']:.1%}){passes}"
    )
    return {"changed": False, "msg": msg, "budget": budget}


def main() -> None:
    run_module(AnsibleModule, ARGUMENT_SPEC, budget_of)


if __name__ == "__main__":
    main()
