"""The data budget in the lab: what each arm's host measured (a sample through real nanochat's loader, cached
beside its data) is within 5% of what that loader yields over the WHOLE arm, counted here on the host with
its own nanochat venv; the CPU phase measured the random arm before any GPU host was needed, and a re-run
reads the cache instead of measuring again.
"""

from __future__ import annotations

import json
import math
from typing import Any

import pytest
from conftest import converge, failure_text, on_host, play

pytestmark = pytest.mark.lab
ARMS = {"top": "top16.5", "random": "random16.5"}
BASE = "$HOME/.cache/nanochat"
CACHE = f"{BASE}/base_data.budget.json"  # arms_packing.cache_path of the arm's data dir
CPU_CACHE = "$HOME/.local/share/nanochat-arms/prepared/random16.5/base_data.budget.json"
MEASURE_TASK = "Each arm's data budget is measured with nanochat's own loader (on the arm's first host)"

# nanochat's loader over the whole arm (its data dir, the val shard last), unchanged, as rank 0 of 1: the rows
# it yields in one steady pass (after WARM passes, while its state says epoch WARM + 1), as
# tests/unit/test_budget.py counts them
COUNT_ROWS = """
import os, sys
T, WARM = int(sys.argv[1]), int(sys.argv[2])
sys.path.insert(0, os.getcwd())
from nanochat import dataloader
from nanochat.tokenizer import RustBPETokenizer
tok = RustBPETokenizer.from_directory(os.path.join(os.environ["NANOCHAT_BASE_DIR"], "tokenizer"))
loader = dataloader.tokenizing_distributed_data_loader_with_state_bos_bestfit(tok, 1, T, split="train", device="cpu")
rows = 0
for _inputs, _targets, state in loader:
    if state["epoch"] == WARM + 2:
        break
    rows += state["epoch"] == WARM + 1
print(rows)
"""


def cached_budget(host: str, path: str = CACHE) -> dict[str, Any]:
    cached = json.loads(on_host(host, f"cat {path}").stdout)
    assert set(cached) == {"key", "budget"}
    return cached["budget"]


def loader_rows_in_one_pass(host: str, max_seq_len: int, warm_passes: int) -> int:
    command = (
        f"cd ~/nanochat && NANOCHAT_BASE_DIR={BASE} .venv/bin/python - {max_seq_len} {warm_passes}"
        f" <<'PY'\n{COUNT_ROWS}\nPY"
    )
    return int(on_host(host, command).stdout.strip().splitlines()[-1])


@pytest.fixture(scope="module")
def measured(lab) -> dict[str, Any]:
    """The lab's arms ready (data, tokenizer), the CPU phase run, then the preflight from no cached measurement."""
    converge(lab, "playbooks/setup.yml", "playbooks/data.yml", "playbooks/tokenizer.yml")
    for host in ARMS:
        on_host(host, f"rm -f {CACHE}")
    on_host("cpu", f"rm -f {CPU_CACHE}")
    cpu_phase = play("playbooks/cpu_phase.yml", lab)
    assert cpu_phase.ok, failure_text(cpu_phase)
    preflight = play("playbooks/preflight.yml", lab)
    assert preflight.ok, failure_text(preflight)
    return {"lab": lab, "cpu_phase": cpu_phase, "preflight": preflight}


def test_the_preflight_says_each_arms_crop_rate_and_passes_from_the_loader(measured) -> None:
    out = measured["preflight"].stdout
    for arm in ARMS.values():
        lines = [ln for ln in out.splitlines() if f"{arm}: " in ln and "tokens held" in ln]
        assert lines, out[-3000:]
        assert "nanochat's loader crops " in lines[0] and "at T=64" in lines[0] and "passes over its data" in lines[0]
    assert "the data budget is an estimate" not in out


@pytest.mark.parametrize("host", sorted(ARMS))
def test_predicted_tokens_a_pass_are_within_5_percent_of_the_loader_over_the_whole_arm(measured, host) -> None:
    budget = cached_budget(host)
    assert budget["packing"] == "bestfit" and budget["max_seq_len"] == 64 and 0 < budget["crop_rate"] < 1
    warm = max(1, math.ceil(budget["warmup_docs"] / budget["train_rows"]))
    real = loader_rows_in_one_pass(host, budget["max_seq_len"], warm) * budget["max_seq_len"]
    error = budget["loader_tokens_per_pass"] / real - 1
    print(f"{ARMS[host]}: predicted {budget['loader_tokens_per_pass']:,} tokens a pass, real {real:,} ({error:+.2%})")
    assert abs(error) < 0.05


def test_the_cpu_phase_measured_the_random_arm_before_any_gpu_host(measured) -> None:
    done = [ln for ln in measured["cpu_phase"].stdout.splitlines() if "CPU-side work done (" in ln]
    assert done and "random16.5: " in done[0] and "passes over its data" in done[0], done
    # the same training shards and tokenizer as the random arm's host holds: the same figures
    on_cpu, on_host_ = cached_budget("cpu", CPU_CACHE), cached_budget("random")
    for key in ("tokens_held", "loader_tokens_per_pass", "crop_rate", "train_rows"):
        assert on_cpu[key] == on_host_[key], key


def test_a_rerun_reads_the_cached_figures(measured) -> None:
    before = {h: on_host(h, f"stat -c %y {CACHE}").stdout for h in ARMS}
    again = play("playbooks/preflight.yml", measured["lab"])
    assert again.ok, failure_text(again)
    statuses = {t["host"]: t["status"] for t in again.tasks if t["task"] == MEASURE_TASK}
    assert statuses == {"top": "ok", "random": "ok"}
    assert {h: on_host(h, f"stat -c %y {CACHE}").stdout for h in ARMS} == before, "measured again, nothing changed"
