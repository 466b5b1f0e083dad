"""A live run that printed its model config and then nothing: status names the rank starved of data.

Real parts: parquet files written with pyarrow, a real detached process with a pid file (arms_process), the
module as Ansible calls it. The log is a fake with real nanochat lines; its silence is set with its mtime.
"""

from __future__ import annotations

import os
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from ansible.module_utils.arms_logs import parse_log
from ansible.module_utils.arms_process import run_paths, start_detached, stop
from ansible.module_utils.arms_rowgroups import row_group_counts
from ansible.module_utils.arms_run import RunRef, is_stalled, run_status, run_world_size
from ansible.module_utils.arms_status import status_rows
from modtest import run_module

# what real nanochat (b07604e) prints before it takes its first training batch: banner lines, the model
# config, parameter counts (scripts/base_train.py)
CONFIG_LOG = (
    "Vocab size: 32,768\n"
    "Model config:\n"
    "{\n"
    '  "sequence_len": 2048,\n'
    '  "n_layer": 26\n'
    "}\n"
    "Parameter counts:\n"
    "wte                     : 33,554,432\n"
    "Estimated FLOPs per token: 1.234e+09\n"
)
STEP = "step 00001/00020 (5.00%) | loss: 10.393929 | lrm: 1.00 | dt: 366.38ms | tok/sec: 2,794 | epoch: 1\n"
VENV_PYTHON = os.path.join(sys.prefix, "bin", "python")


def shard(path: Path, rows: int, group: int) -> None:
    """A parquet file of ``rows`` documents in row groups of ``group`` rows (0 rows: no row group at all)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    if rows == 0:
        pq.ParquetWriter(str(path), pa.schema([("text", pa.string())])).close()
        return
    pq.write_table(pa.table({"text": [f"document {i}" for i in range(rows)]}), str(path), row_group_size=group)


def starved_data(base: Path) -> None:
    """Two training files of 2 row groups and a val file of 8: ranks 2-7 of 8 get no training data."""
    for i in range(2):
        shard(base / "base_data" / f"shard_{i:05d}.parquet", 2048, 1024)
    shard(base / "base_data" / "shard_val.parquet", 8192, 1024)


@pytest.fixture
def live_run(tmp_path: Path) -> Iterator[dict[str, Any]]:
    """A live detached process recorded as an 8-process torchrun run of base dir ``tmp_path/base``, whose log
    holds ``CONFIG_LOG`` and was last written 20 minutes ago."""
    base = tmp_path / "base"
    starved_data(base)
    state = tmp_path / "runs"
    paths = run_paths(str(state), "exp-starved")
    record = start_detached(
        ["/bin/sh", "-c", 'printf "%s" "$0"; exec sleep 300', CONFIG_LOG],
        {"NANOCHAT_BASE_DIR": str(base), "VIRTUAL_ENV": sys.prefix},
        cwd=str(tmp_path),
        log_path=paths["log"],
        pidfile=paths["pidfile"],
        run_name="exp-starved",
        extra={
            "env": {"NANOCHAT_BASE_DIR": str(base), "VIRTUAL_ENV": sys.prefix},
            "identity": {"launcher": "torchrun x8"},
        },
    )
    try:
        for _ in range(100):  # the shell has written the log (a poll, not a timing assertion)
            if Path(paths["log"]).read_text().endswith("1.234e+09\n"):
                break
            time.sleep(0.05)
        silence(paths["log"], 20 * 60)
        yield {"base": base, "state": str(state), "paths": paths, "record": record}
    finally:
        stop(paths["pidfile"], timeout=5)


def silence(log: str, seconds: float) -> None:
    then = time.time() - seconds
    os.utime(log, (then, then))


def test_the_log_tells_whether_the_model_config_was_printed() -> None:
    assert parse_log(CONFIG_LOG)["config_printed"] is True
    assert parse_log("[rank0]: Model config:\n{}\n")["config_printed"] is True  # torchrun --tee prefix
    assert parse_log("Vocab size: 32,768\n")["config_printed"] is False


@pytest.mark.parametrize(
    ("progress", "silent_s", "alive", "stalled"),
    [
        ({"config_printed": True, "started": False}, 700, True, True),
        ({"config_printed": True, "started": False}, 30, True, False),  # still loading / compiling
        ({"config_printed": True, "started": True}, 7000, True, False),  # training: a slow step is no stall
        ({"config_printed": False, "started": False}, 7000, True, False),  # not that far yet (imports, rendezvous)
        ({"config_printed": True, "started": False}, 7000, False, False),  # dead: the diagnosis says why
    ],
)
def test_a_stall_is_a_live_run_silent_after_its_model_config_with_no_step_line(
    progress: dict[str, bool], silent_s: float, alive: bool, stalled: bool
) -> None:
    assert is_stalled({"alive": alive, "progress": progress}, silent_s, 600) is stalled


def test_the_world_size_is_the_launchs() -> None:
    assert run_world_size({"identity": {"launcher": "torchrun x16"}}, None) == 16
    assert run_world_size({"identity": {"launcher": "python x1"}}, None) == 1
    assert run_world_size({}, None) == 1


def test_the_footers_are_read_alike_here_and_by_the_runs_venv_python(tmp_path: Path) -> None:
    starved_data(tmp_path)
    shard(tmp_path / "base_data" / "shard_00002.parquet", 0, 1)
    paths = sorted(str(p) for p in (tmp_path / "base_data").iterdir())
    here = row_group_counts(paths)
    assert here == {
        "shard_00000.parquet": 2,
        "shard_00001.parquet": 2,
        "shard_00002.parquet": 0,
        "shard_val.parquet": 8,
    }
    assert row_group_counts(paths, VENV_PYTHON) == here


def test_status_names_the_rank_that_has_no_row_group_and_the_file(live_run: dict[str, Any]) -> None:
    ref = RunRef(state_dir=live_run["state"], run_name="exp-starved", host="gpu-a", inventory="-i inventory/lab/")
    status = run_status(ref, stall_after=600)
    assert status["alive"] and status["progress_line"] == "no step line yet"
    stall = status["stall"]
    assert stall["world_size"] == 8 and stall["data_dir"] == str(live_run["base"] / "base_data")
    assert (
        stall["cause"] == "rank 2 has no row group in shard_00000.parquet (2 row groups) nor in any other training file"
    )
    assert stall["silent_s"] >= 20 * 60
    assert (
        "It prints nothing: no step line and no output for 20 min after the model config: rank 2 has no row"
        in (status["msg"])
    )
    assert "ansible-playbook playbooks/stop.yml -i inventory/lab/ -l gpu-a" in stall["note"]
    assert "at least 8 row group(s) a file" in stall["note"]
    # the status table shows it under the run's row
    rows = status_rows("gpu-a", "random16.5", status)
    assert rows[0].startswith("gpu-a | random16.5 | alive pid ")
    assert rows[1] == f"    gpu-a: {stall['note']}"


def test_a_run_that_just_printed_its_config_or_that_trains_is_no_stall(live_run: dict[str, Any]) -> None:
    ref = RunRef(state_dir=live_run["state"], run_name="exp-starved", host="gpu-a")
    assert run_status(ref, stall_after=30 * 60)["stall"] is None  # silent 20 min: under the threshold
    with open(live_run["paths"]["log"], "a") as log:
        log.write(STEP)
    silence(live_run["paths"]["log"], 20 * 60)
    trains = run_status(ref, stall_after=600)
    assert trains["stall"] is None and trains["progress_line"].startswith("step 1/20")
    assert len(status_rows("gpu-a", "random16.5", trains)) == 1


def test_a_stalled_run_whose_data_feeds_every_rank_is_said_not_starved(live_run: dict[str, Any]) -> None:
    for name in ("shard_00000.parquet", "shard_00001.parquet"):
        shard(live_run["base"] / "base_data" / name, 8192, 1024)  # 8 row groups: every rank of 8 reads one
    silence(live_run["paths"]["log"], 20 * 60)
    stall = run_status(RunRef(state_dir=live_run["state"], run_name="exp-starved", host="gpu-a"))["stall"]
    assert stall["cause"] is None and "every rank of 8 has a row group in each file it reads" in stall["note"]


def test_the_module_reports_it_with_its_stall_after(
    live_run: dict[str, Any], capsys: pytest.CaptureFixture[str]
) -> None:
    args = {"state": "status", "state_dir": live_run["state"], "run_name": "exp-starved", "host": "random"}
    result = run_module("nanochat_train", {**args, "stall_after": 60}, capsys)
    assert not result.get("failed") and result["stall"]["cause"].startswith("rank 2 has no row group in shard_00000")
    assert run_module("nanochat_train", {**args, "stall_after": 3600}, capsys)["stall"] is None
