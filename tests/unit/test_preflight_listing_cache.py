"""The preflight's question to nanochat (which parquet files will you read?) is asked again only when
its answer could differ: real nanochat (b07604e) run in this venv, real files in a base dir."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from ansible.module_utils.arms_preflight import nanochat_files
from nanochat_real import nanochat_at_pin

VENV = sys.prefix  # this venv has torch and pyarrow: nanochat's dataset code runs in it


@pytest.fixture(scope="module")
def checkout(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return nanochat_at_pin(tmp_path_factory)


def shard(folder: Path, name: str) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    pq.write_table(pa.table({"text": ["a", "b"]}), folder / name)


def names(answer: dict) -> list[str]:
    assert answer["ok"], answer
    return [os.path.basename(f) for f in answer["files"]]


def test_a_converged_base_dir_is_answered_from_the_cache_and_any_change_asks_nanochat_again(
    checkout: Path, tmp_path: Path
) -> None:
    base, cache = tmp_path / "base", str(tmp_path / "cache")
    data = base / "base_data"
    for name in ("shard_00000.parquet", "shard_00001.parquet", "shard_val.parquet"):
        shard(data, name)
    first = nanochat_files(str(checkout), VENV, str(base), str(data), cache)
    assert names(first) == ["shard_00000.parquet", "shard_00001.parquet", "shard_val.parquet"]
    assert "cached" not in first and len(os.listdir(cache)) == 1
    again = nanochat_files(str(checkout), VENV, str(base), str(data), cache)
    assert again.get("cached") is True and again["files"] == first["files"]
    # a file added: nanochat is asked again, and its answer has the new file
    shard(data, "shard_00002.parquet")
    added = nanochat_files(str(checkout), VENV, str(base), str(data), cache)
    assert "cached" not in added and "shard_00002.parquet" in names(added)
    # nanochat's listing code edited in the checkout (same commit): asked again, the edit is seen
    dataset = checkout / "nanochat" / "dataset.py"
    original = dataset.read_text()
    try:
        dataset.write_text(original.replace("return parquet_paths", "return parquet_paths[:1]", 1))
        assert "return parquet_paths[:1]" in dataset.read_text()
        edited = nanochat_files(str(checkout), VENV, str(base), str(data), cache)
        assert "cached" not in edited and names(edited) == ["shard_00000.parquet"]
    finally:
        dataset.write_text(original)


def test_a_failed_answer_is_never_cached(checkout: Path, tmp_path: Path) -> None:
    base, cache = tmp_path / "base", str(tmp_path / "cache")
    shard(base / "base_data", "shard_00000.parquet")
    venv = tmp_path / "broken-venv"  # a venv whose python fails (as a half-installed one would)
    (venv / "bin").mkdir(parents=True)
    (venv / "bin" / "python").write_text("#!/bin/sh\necho 'ModuleNotFoundError: No module named torch' >&2; exit 1\n")
    (venv / "bin" / "python").chmod(0o755)
    broken = nanochat_files(str(checkout), str(venv), str(base), str(base / "base_data"), cache)
    assert broken == {"ok": False, "error": "ModuleNotFoundError: No module named torch"}
    assert not os.path.exists(cache) or os.listdir(cache) == []
