"""No rank starves: nanochat's row-group assignment read from real parquet footers, checked against the real loader."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from ansible.module_utils.arms_common import ArmsError
from ansible.module_utils.arms_rowgroups import check_data_dir, check_ranks, rank_rows, starvation_cause
from modtest import run_module
from nanochat_real import nanochat_at_pin
from test_nanochat_eras import clone_nanochat, show


def shard(path: Path, rows: int, group: int) -> None:
    """A parquet file of ``rows`` short documents in row groups of ``group`` rows (the last may be shorter)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    table = pa.table({"text": [f"document {i}" for i in range(rows)]})
    pq.write_table(table, str(path), row_group_size=group)


def test_the_runbooks_14000_row_shards_with_1024_row_groups_give_shares_58_percent_apart(tmp_path: Path) -> None:
    for i in range(3):
        shard(tmp_path / f"shard_{i:05d}.parquet", 14000, 1024)
    shard(tmp_path / "shard_val.parquet", 8192, 1024)
    result = check_data_dir(str(tmp_path), 8)
    assert result["problems"] == []
    assert rank_rows(pq.ParquetFile(str(tmp_path / "shard_00000.parquet")).metadata.num_row_groups * [1], 8) == [
        2,
        2,
        2,
        2,
        2,
        2,
        1,
        1,
    ]
    assert result["shares"] == [3 * 2048] * 5 + [3 * 1712, 3 * 1024, 3 * 1024]
    assert result["spread"] == pytest.approx(0.585, abs=0.001)
    (warning,) = result["warnings"]
    assert "rank 0 reads 6,144 rows and rank 6 3,072 (59% of the mean share 5,250 apart)" in warning


def test_the_projects_own_shards_share_evenly(tmp_path: Path) -> None:
    for i in range(2):
        shard(tmp_path / f"shard_{i:05d}.parquet", 8000, 1000)  # 8 groups of 1000
    shard(tmp_path / "shard_val.parquet", 800, 100)
    result = check_data_dir(str(tmp_path), 8)
    assert result == {**result, "problems": [], "warnings": [], "spread": 0.0}


def test_a_single_file_arm_is_refused(tmp_path: Path) -> None:
    shard(tmp_path / "shard_00000.parquet", 1000, 100)
    (problem,) = check_data_dir(str(tmp_path), 1)["problems"]
    assert problem.startswith("the arm has 1 parquet file (shard_00000.parquet): nanochat takes the last file")
    assert "spin forever" in problem
    assert starvation_cause([str(tmp_path / "shard_00000.parquet")], 8) is not None


def test_too_few_row_groups_for_the_world_size_are_refused_naming_the_file(tmp_path: Path) -> None:
    for i in range(6):
        shard(tmp_path / f"shard_{i:05d}.parquet", 2048, 1024)  # 2 row groups each: ranks 2-7 get nothing
    shard(tmp_path / "shard_val.parquet", 2048, 1024)
    problems = check_data_dir(str(tmp_path), 8)["problems"]
    assert problems[0].startswith(
        "ranks 2, 3, 4, 5, 6, 7 of 8 have no row group in shard_00000.parquet (2 row groups) nor in any other "
        "training file: nanochat's loader would spin forever"
    )
    assert problems[1].startswith("ranks 2, 3, 4, 5, 6, 7 of 8 have no row group in shard_val.parquet (2 row groups)")
    paths = [str(tmp_path / n) for n in sorted(os.listdir(tmp_path))]
    assert starvation_cause(paths, 8) == (
        "rank 2 has no row group in shard_00000.parquet (2 row groups) nor in any other training file"
    )
    assert starvation_cause(paths, 2) is None


def test_a_val_shard_too_small_for_the_world_size_is_refused_alone(tmp_path: Path) -> None:
    for i in range(2):
        shard(tmp_path / f"shard_{i:05d}.parquet", 4000, 500)  # 8 groups
    shard(tmp_path / "shard_val.parquet", 300, 100)  # 3 groups
    result = check_data_dir(str(tmp_path), 8)
    (problem,) = result["problems"]
    assert problem.startswith("ranks 3, 4, 5, 6, 7 of 8 have no row group in shard_val.parquet (3 row groups)")
    paths = [str(tmp_path / n) for n in sorted(os.listdir(tmp_path))]
    assert (
        starvation_cause(paths, 8) == "rank 3 has no row group in shard_val.parquet (3 row groups, the validation file)"
    )


def test_one_short_training_file_starves_nobody_but_is_reported(tmp_path: Path) -> None:
    shard(tmp_path / "shard_00000.parquet", 4000, 500)  # 8 groups
    shard(tmp_path / "shard_00001.parquet", 500, 250)  # 2 groups
    shard(tmp_path / "shard_val.parquet", 800, 100)
    result = check_data_dir(str(tmp_path), 8)
    assert result["problems"] == []
    assert any("e.g. shard_00001.parquet: 2" in w for w in result["warnings"])


def test_a_bad_world_size_or_unreadable_file_gives_a_sentence(tmp_path: Path) -> None:
    (tmp_path / "shard_00000.parquet").write_bytes(b"not parquet")
    shard(tmp_path / "shard_val.parquet", 10, 5)
    with pytest.raises(ArmsError, match="is not a readable parquet file"):
        check_data_dir(str(tmp_path), 2)
    with pytest.raises(ArmsError, match="world_size must be at least 1"):
        check_ranks([], 0)


def test_the_assignment_is_nanochats_own(tmp_path_factory: pytest.TempPathFactory) -> None:
    """The rule this file implements, read in the real loader at the pin and the bundle's first and last commits."""
    repo = clone_nanochat(tmp_path_factory)
    for commit in ("3a5e0bc", "b07604e", "92d63d4"):
        code = show(repo, commit, "nanochat/dataloader.py") + show(repo, commit, "nanochat/dataset.py")
        assert 'parquet_paths[:-1] if split == "train" else parquet_paths[-1:]' in code, commit
        assert "rg_idx += ddp_world_size" in code or "range(start, pf.num_row_groups, step)" in code, commit
        assert "f.endswith('.parquet') and not f.endswith('.tmp')" in code, commit


# the real loader's document stream for one rank, as torchrun would set it up; prints the rows of
# the row groups the rank reads in its first epoch
RANK_PROBE = """
import json, sys
from nanochat import dataset, dataloader
dataset.DATA_DIR = sys.argv[1]
rows = 0
for batch, (pq_idx, rg_idx, epoch) in dataloader._document_batches("train", None, 10**9):
    if epoch > 1:
        break
    rows += len(batch)
print(json.dumps(rows))
"""


def rank_stream(checkout: Path, data_dir: Path, rank: int, world: int, timeout: float) -> int | None:
    env = {**os.environ, "RANK": str(rank), "LOCAL_RANK": str(rank), "WORLD_SIZE": str(world)}
    env["NANOCHAT_BASE_DIR"] = str(data_dir.parent)
    env["PYTHONPATH"] = str(checkout)
    try:
        proc = subprocess.run(
            [sys.executable, "-c", RANK_PROBE, str(data_dir)], env=env, capture_output=True, text=True, timeout=timeout
        )
    except subprocess.TimeoutExpired:
        return None
    assert proc.returncode == 0, proc.stderr
    return int(proc.stdout.strip().splitlines()[-1])


def test_the_shares_are_what_the_real_loader_reads_and_a_starved_rank_hangs(
    tmp_path_factory: pytest.TempPathFactory, tmp_path: Path
) -> None:
    checkout = nanochat_at_pin(tmp_path_factory)
    data = tmp_path / "base_data"
    shard(data / "shard_00000.parquet", 14000, 1024)
    shard(data / "shard_00001.parquet", 3000, 1024)  # 3 row groups: ranks 3-7 read nothing here
    shard(data / "shard_val.parquet", 8192, 1024)
    shares = check_data_dir(str(data), 8)["shares"]
    for rank in (0, 2, 5, 7):
        assert rank_stream(checkout, data, rank, 8, timeout=120) == shares[rank], rank
    # 16 ranks: ranks 14 and 15 have no row group anywhere; the real loader yields nothing, forever
    problems = check_data_dir(str(data), 16)["problems"]
    assert problems[0].startswith("ranks 14, 15 of 16 have no row group in shard_00001.parquet (3 row groups)")
    assert rank_stream(checkout, data, 15, 16, timeout=20) is None


def test_the_module_refuses_a_starving_rank_naming_the_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    for i in range(2):
        shard(tmp_path / f"shard_{i:05d}.parquet", 4000, 500)
    shard(tmp_path / "shard_val.parquet", 300, 100)
    refused = run_module("nanochat_rank_shares", {"data_dir": str(tmp_path), "world_size": 8}, capsys)
    assert refused["failed"] and refused["msg"].startswith("ranks 3, 4, 5, 6, 7 of 8 have no row group in shard_val")
    fine = run_module("nanochat_rank_shares", {"data_dir": str(tmp_path), "world_size": 2}, capsys)
    assert not fine.get("failed") and fine["changed"] is False and fine["shares"] == [4000, 4000]
