#!/usr/bin/python
"""Ansible module: an arm's data budget measured with nanochat's own loader (logic in arms_packing.py)."""

from __future__ import annotations

DOCUMENTATION = r"""
module: nanochat_data_budget
short_description: Measure the tokens nanochat's loader yields from an arm's data, and the passes a run makes
description:
  - Tokenizes a deterministic sample of the arm's training documents (every C(*.parquet) of O(data_dir) but the
    last, nanochat's validation file, unless O(val_last=false)) with the experiment's tokenizer and runs it
    through nanochat's own best-fit loader, imported from O(checkout), at the experiment's sequence length.
  - Reports the tokens the arm holds (extrapolated from the sample by rows), the tokens the loader yields a
    pass (rows x max_seq_len, the unit of base_train's total batch size), the crop rate and the passes the run
    makes over the data (from O(num_iterations) and O(total_batch_size), or from O(model) with nanochat's
    iteration rule at the checkout's commit date).
  - The measurement is kept beside the data dir (C(<data_dir>.budget.json)) with what it was made from (the
    training files' sha256 from the manifest, the tokenizer, nanochat's loader code, the sequence length and
    the sample); a run with the same inputs reads it instead of measuring again. Writing that cache is not
    reported as a change (the data, the tokenizer and nanochat are left as they are).
  - In check mode nothing is measured; the cached budget is returned when there is one, else C(budget) is null.
  - Must run with the python of nanochat's venv (C(ansible_python_interpreter)), which has torch and
    nanochat's dependencies. Reads only (but for the cache); a temporary copy of the sample is removed afterwards.
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
    description: The arm's data dir, the folder nanochat reads (or the CPU node's prepared shards).
    type: path
    required: true
  val_last:
    description:
      - The data dir's last parquet file is nanochat's validation split (an arm host's data dir). False for a
        folder of training shards only (the CPU node's prepared shards, whose val shard is kept apart).
    type: bool
    default: true
  arm:
    description: The arm's name, for the message.
    type: str
  model:
    description:
      - The experiment's model settings (depth, total_batch_size, extra_flags). Give the sequence length
        (extra flag max-seq-len, else nanochat's 2048) and, with nanochat's iteration rule, the tokens the run needs.
    type: dict
  commit_date:
    description: The nanochat commit's date (YYYY-MM-DD) for the iteration rule; read from O(checkout) when not given.
    type: str
  max_seq_len:
    description: The experiment's C(--max-seq-len); from O(model) when not given, else nanochat's default 2048.
    type: int
  sample_docs:
    description: Documents to sample (whole row groups); the whole arm when it holds fewer.
    type: int
    default: 20000
  seed:
    description: Seed of the sample.
    type: int
    default: 42
  num_iterations:
    description: Steps of the run, to compute the passes it makes (with O(total_batch_size); overrides O(model)'s rule).
    type: int
  total_batch_size:
    description: Tokens a step (base_train's C(--total-batch-size)), to compute the passes.
    type: int
  cache:
    description: Read and write the measurement beside the data dir.
    type: bool
    default: true
author: nanochat-arms
"""

EXAMPLES = r"""
- name: The random arm's data budget in nanochat's own tokens
  nanochat_data_budget:
    checkout: ~/nanochat
    tokenizer_dir: ~/.cache/nanochat/tokenizer
    data_dir: ~/.cache/nanochat/base_data
    arm: random16.5
    model: "{{ arms_experiment.model }}"
  vars:
    ansible_python_interpreter: ~/nanochat/.venv/bin/python
  register: budget
"""

RETURN = r"""
budget:
  description:
    - tokens_held, loader_tokens_per_pass, loader_rows_per_pass, crop_rate, max_seq_len, passes and tokens_needed
      (when the run's length is known), the sample's figures (sample_rows, sample_tokens, sample_loader_rows,
      warmup_docs), packing (bestfit or stream) and the rule used. Null in check mode without a cached measurement.
  type: dict
  returned: success
source:
  description: C(measured), C(cache) (read from the cache file) or C(check_mode) (nothing measured).
  type: str
  returned: success
cache_file:
  description: The cache file read or written (null when none was).
  type: str
  returned: success
plan:
  description: How the tokens needed were found (nanochat's iteration rule), or why they are unknown.
  type: dict
  returned: success
"""

import subprocess
from typing import Any

from ansible.module_utils.arms_common import ArmsError, run_module
from ansible.module_utils.arms_packing import (
    DEFAULT_SAMPLE_DOCS,
    budget_line,
    measure_budget_cached,
    seq_len_of,
    tokens_needed,
    with_passes,
)
from ansible.module_utils.basic import AnsibleModule

ARGUMENT_SPEC: dict[str, Any] = {
    "checkout": {"type": "path", "required": True},
    "tokenizer_dir": {"type": "path", "required": True},
    "data_dir": {"type": "path", "required": True},
    "val_last": {"type": "bool", "default": True},
    "arm": {"type": "str"},
    "model": {"type": "dict"},
    "commit_date": {"type": "str"},
    "max_seq_len": {"type": "int"},
    "sample_docs": {"type": "int", "default": DEFAULT_SAMPLE_DOCS},
    "seed": {"type": "int", "default": 42},
    "num_iterations": {"type": "int"},
    "total_batch_size": {"type": "int"},
    "cache": {"type": "bool", "default": True},
}


def _commit_date(checkout: str) -> str | None:
    proc = subprocess.run(
        ["git", "-C", checkout, "show", "-s", "--format=%cs", "HEAD"], capture_output=True, text=True, check=False
    )
    if proc.returncode != 0:
        return None
    return proc.stdout.strip() or None


def plan_of(p: dict[str, Any]) -> dict[str, Any]:
    """The tokens the run needs: explicit iterations x batch, else the model's rule at the commit's date."""
    if p["num_iterations"] is not None and p["total_batch_size"] is not None:
        tokens = int(p["num_iterations"]) * int(p["total_batch_size"])
        return {"tokens": tokens, "rule": f"num_iterations {p['num_iterations']} x total batch {p['total_batch_size']}"}
    if not p["model"]:
        return {"tokens": None, "rule": "unknown: give model (or num_iterations and total_batch_size)"}
    try:
        return tokens_needed(p["model"], p["commit_date"] or _commit_date(p["checkout"]))
    except (ArmsError, KeyError, TypeError, ValueError) as exc:
        return {"tokens": None, "rule": f"unknown: {exc}"}


def budget_of(p: dict[str, Any], check_mode: bool) -> dict[str, Any]:
    max_seq_len = p["max_seq_len"] if p["max_seq_len"] is not None else seq_len_of(p["model"])
    measured = measure_budget_cached(
        checkout=p["checkout"],
        tokenizer_dir=p["tokenizer_dir"],
        data_dir=p["data_dir"],
        max_seq_len=max_seq_len,
        sample_docs=p["sample_docs"],
        seed=p["seed"],
        val_last=p["val_last"],
        cache=p["cache"],
        check_mode=check_mode,
    )
    name = p["arm"] or p["data_dir"]
    plan = plan_of(p)
    budget = measured["budget"]
    if budget is None:
        msg = f"{name}: would measure its data budget with nanochat's loader at T={max_seq_len} (check mode)"
    else:
        budget = with_passes(budget, plan["tokens"])
        msg = budget_line(name, budget) + (" (cached)" if measured["source"] == "cache" else "")
    # writing the cache beside the data is not a change to what the playbooks manage
    return {
        "changed": False,
        "msg": msg,
        "budget": budget,
        "plan": plan,
        **{k: measured[k] for k in ("source", "cache_file")},
    }


def main() -> None:
    run_module(AnsibleModule, ARGUMENT_SPEC, budget_of)


if __name__ == "__main__":
    main()
