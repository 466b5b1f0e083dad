"""A sharding run really killed (SIGKILL) at some point, then re-run: byte-identical shards, only the rest redone."""

from __future__ import annotations

import glob
import hashlib
import json
import os
import signal
import subprocess
import sys
import time
from typing import Any

import pytest
from ansible.module_utils.arms_common import ArmsError
from ansible.module_utils.arms_shard import Options, prepare_random_subset
from modtest import ROOT

SCRIPT = os.path.join(ROOT, "scripts", "prepare_hf_random_subset.py")
# many small shards so that a run lasts long enough to be killed in the middle
ARGS = {"ratio": 0.3, "seed": 5, "rows_per_shard": 8, "world_size": 2, "val_fraction": 0.05}


SOURCE = {"rows": 6000, "files_per_dump": 4, "dumps": 3, "seed": 8, "text_bytes_mean": 500, "row_group_rows": 100}


@pytest.fixture(scope="module")
def reference(source: str, tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    """Digests of an uninterrupted run (in-process, one worker)."""
    root = str(tmp_path_factory.mktemp("ref"))
    result = prepare_random_subset(
        Options(
            dataset=source, data_dir=os.path.join(root, "data"), val_dir=os.path.join(root, "val"), workers=1, **ARGS
        )
    )
    assert result["shards"] > 100
    return digests(result["data_dir"])


def digests(folder: str) -> dict[str, str]:
    out = {}
    for path in sorted(glob.glob(os.path.join(folder, "*.parquet"))):
        with open(path, "rb") as fh:
            out[os.path.basename(path)] = hashlib.sha256(fh.read()).hexdigest()
    return out


def cli(source: str, root: str, workers: int, *extra: str) -> list[str]:
    cmd = [sys.executable, SCRIPT, "--dataset", source, "--data-dir", os.path.join(root, "data")]
    cmd += ["--val-dir", os.path.join(root, "val"), "--workers", str(workers), "--quiet", "--json"]
    for key, value in ARGS.items():
        cmd += [f"--{key.replace('_', '-')}", str(value)]
    return cmd + list(extra)


def start_and_kill(cmd: list[str], ready: Any, *, whole_group: bool) -> None:
    """Start ``cmd``, wait until ``ready()`` holds, SIGKILL it (its process group, or the parent only)."""
    proc = subprocess.Popen(cmd, start_new_session=True, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.time() + 60
    while not ready():
        assert proc.poll() is None, f"the run ended before it could be killed: {proc.stderr.read()!r}"
        assert time.time() < deadline, "the run never reached the point to kill it at"
        time.sleep(0.005)
    if whole_group:
        os.killpg(proc.pid, signal.SIGKILL)
    else:
        os.kill(proc.pid, signal.SIGKILL)  # the workers die with it (PR_SET_PDEATHSIG)
    proc.wait()
    assert proc.returncode == -signal.SIGKILL


def finish(cmd: list[str]) -> dict[str, Any]:
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout)


def test_killed_while_writing_shards_then_rerun_gives_identical_bytes(
    source: str, reference: dict[str, str], tmp_path: str
) -> None:
    root = str(tmp_path)
    data_dir = os.path.join(root, "data")
    cmd = cli(source, root, 2)
    start_and_kill(cmd, lambda: len(glob.glob(os.path.join(data_dir, "shard_0*.parquet"))) >= 3, whole_group=True)
    assert not os.path.exists(os.path.join(data_dir, "manifest.json"))
    survivors = {p: os.stat(p).st_mtime_ns for p in glob.glob(os.path.join(data_dir, "shard_*.parquet"))}
    assert 3 <= len(survivors) < len(reference)
    result = finish(cmd)
    assert result["resumed"] and result["changed"]
    assert f"{len(survivors)} kept from an earlier run" in result["msg"]
    assert digests(data_dir) == reference
    assert {p: os.stat(p).st_mtime_ns for p in survivors} == survivors  # not rewritten
    assert not [n for n in os.listdir(data_dir) if n.endswith(".tmp")]
    assert not os.path.exists(os.path.join(root, ".arms-work-data"))
    with open(result["val_artifact"], "rb") as fh:
        assert hashlib.sha256(fh.read()).hexdigest() == reference["shard_val.parquet"]


def test_killed_while_sampling_then_rerun_gives_identical_bytes(
    source: str, reference: dict[str, str], tmp_path: str
) -> None:
    root = str(tmp_path)
    spill = os.path.join(root, ".arms-work-data", "spill")
    cmd = cli(source, root, 1)
    start_and_kill(cmd, lambda: len(glob.glob(os.path.join(spill, "u*.json"))) >= 2, whole_group=False)
    done_before = len(glob.glob(os.path.join(spill, "u*.json")))
    assert 2 <= done_before < 12
    result = finish(cli(source, root, 2))  # another worker count: same output
    assert result["resumed"]
    assert digests(os.path.join(root, "data")) == reference


def test_an_interrupted_run_is_not_finished_with_other_parameters(source: str, tmp_path: str) -> None:
    root = str(tmp_path)
    spill = os.path.join(root, ".arms-work-data", "spill")
    start_and_kill(cli(source, root, 1), lambda: len(glob.glob(os.path.join(spill, "u*.json"))) >= 1, whole_group=True)
    other = Options(
        dataset=source, data_dir=os.path.join(root, "data"), val_dir=os.path.join(root, "val"), **{**ARGS, "seed": 6}
    )
    with pytest.raises(ArmsError, match=r"interrupted run with other parameters .*seed 5 -> 6"):
        prepare_random_subset(other)
    other.force = True
    assert prepare_random_subset(other)["changed"]
