"""scripts/prepare_hf_random_subset.py: the runbook's command line, on the module's code."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pyarrow.parquet as pq
from modtest import ROOT

SCRIPT = os.path.join(ROOT, "scripts", "prepare_hf_random_subset.py")


SOURCE = {"rows": 1500, "files_per_dump": 1, "dumps": 3, "seed": 2, "text_bytes_mean": 400, "row_group_rows": 300}


def cli(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, SCRIPT, *args], capture_output=True, text=True, env=env, timeout=300)


def test_the_runbooks_flags_make_nanochat_shards_with_progress_lines(source: str, tmp_path: str) -> None:
    data_dir = os.path.join(str(tmp_path), "base_data")
    runbook = ["--dataset", source, "--split", "train", "--ratio", "0.3", "--seed", "42", "--data-dir", data_dir]
    proc = cli(*runbook, "--rows-per-shard", "100", "--world-size", "2", "--progress-file", data_dir + ".json")
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip().splitlines()[-1].startswith("5 training shards in " + data_dir)
    assert "sampling:" in proc.stderr and "MB/s" in proc.stderr
    names = sorted(n for n in os.listdir(data_dir) if n.endswith(".parquet"))
    assert names == [f"shard_{i:05d}.parquet" for i in range(5)]
    assert pq.ParquetFile(os.path.join(data_dir, names[0])).metadata.num_row_groups == 2
    assert json.load(open(data_dir + ".json"))["finished"] is True

    again = cli(*runbook, "--rows-per-shard", "100", "--world-size", "2", "--json")
    assert again.returncode == 0 and json.loads(again.stdout)["changed"] is False


def test_check_prints_what_would_happen_and_writes_nothing(source: str, tmp_path: str) -> None:
    data_dir = os.path.join(str(tmp_path), "d")
    proc = cli("--dataset", source, "--data-dir", data_dir, "--rows-per-shard", "100", "--check", "--quiet")
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.startswith(f"would write {data_dir}: about")
    assert os.listdir(str(tmp_path)) == []


def test_bad_input_exits_1_with_a_sentence(source: str, tmp_path: str) -> None:
    data_dir = os.path.join(str(tmp_path), "d")
    proc = cli("--dataset", source, "--data-dir", data_dir, "--ratio", "1.5")
    assert proc.returncode == 1
    assert proc.stderr.startswith("error: ratio must be in (0, 1]") and "Traceback" not in proc.stderr
    missing = cli("--dataset", source, "--data-dir", data_dir, "--id-column", "uid", "--rows-per-shard", "100")
    assert missing.returncode == 1 and "has no column 'uid' (named by id_column)" in missing.stderr
    assert not os.path.exists(data_dir)


def test_the_token_comes_from_the_environment_only() -> None:
    proc = cli("--help")
    assert proc.returncode == 0 and "token" not in proc.stdout.split("options:")[1].lower()


def test_refusals_name_the_force_flag(source: str, tmp_path: str) -> None:
    data_dir = os.path.join(str(tmp_path), "d")
    base = ["--dataset", source, "--data-dir", data_dir, "--rows-per-shard", "100", "--world-size", "2", "--quiet"]
    assert cli(*base).returncode == 0
    other = cli(*base, "--ratio", "0.2")
    assert other.returncode == 1
    assert "made with other parameters (ratio 0.165 -> 0.2)" in other.stderr
    assert "pass --force to replace it whole" in other.stderr and "force=true" not in other.stderr
    with open(os.path.join(data_dir, "manifest.json"), "w") as fh:
        fh.write("{not json")
    broken = cli(*base)
    assert broken.returncode == 1 and "remove it or pass --force." in broken.stderr
    assert cli(*base, "--force").returncode == 0
