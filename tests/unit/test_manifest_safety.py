"""A manifest names plain files in its data dir; copies into a data dir leave no temporary parquet (issue 15)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from ansible.module_utils.arms_common import ArmsError
from ansible.module_utils.arms_manifest import FORMAT, read_manifest
from modtest import run_module

ROOT = Path(__file__).resolve().parents[2]


def write_manifest(data_dir: Path, shards: list[dict]) -> None:
    data_dir.mkdir(parents=True, exist_ok=True)
    manifest = {"format": FORMAT, "kind": "random_subset", "source": {}, "params": {}, "shards": shards}
    (data_dir / "manifest.json").write_text(json.dumps(manifest))


def entry(name: str, size: int = 5) -> dict:
    return {"name": name, "bytes": size, "sha256": "0" * 64, "rows": 1, "row_groups": 1, "role": "train"}


@pytest.mark.parametrize("name", ["../victim.txt", "/abs/victim.txt", "a/b.parquet", "", ".", "..", "x\\..\\y"])
def test_a_manifest_naming_anything_but_a_plain_file_is_refused(tmp_path: Path, name: str) -> None:
    write_manifest(tmp_path / "data", [entry("shard_00000.parquet"), entry(name)])
    with pytest.raises(ArmsError, match=r"cannot be trusted.*plain file name"):
        read_manifest(str(tmp_path / "data"))


def test_remove_bad_never_reaches_outside_the_data_dir_and_acts_on_no_entry(tmp_path: Path, capsys) -> None:
    """The reproduction of the review: ../victim.txt named in a manifest, run through remove_bad=true."""
    data = tmp_path / "data"
    victim = tmp_path / "victim.txt"
    victim.write_text("not yours")
    write_manifest(data, [entry("shard_00000.parquet"), entry("../victim.txt")])
    (data / "shard_00000.parquet").write_text("wrong size, would be removed by a trusted manifest")
    res = run_module("nanochat_data_verify", {"data_dir": str(data), "remove_bad": True}, capsys)
    assert res["failed"] and "cannot be trusted" in res["msg"] and "../victim.txt" in res["msg"]
    assert victim.read_text() == "not yours"
    # checked before acting on ANY entry: the bad shard the manifest names is left alone too
    assert (data / "shard_00000.parquet").exists()


def test_entries_without_size_or_hash_or_listed_twice_are_refused(tmp_path: Path) -> None:
    write_manifest(tmp_path / "d1", [{"name": "shard_00000.parquet"}])
    with pytest.raises(ArmsError, match=r"no byte count.*no sha256"):
        read_manifest(str(tmp_path / "d1"))
    write_manifest(tmp_path / "d2", [entry("shard_00000.parquet"), entry("shard_00000.parquet")])
    with pytest.raises(ArmsError, match="listed twice"):
        read_manifest(str(tmp_path / "d2"))


PLACE_VAL_WITH_A_FULL_DISK = """
import resource, signal, sys
sys.path.insert(0, {scripts!r})
import _arms_path  # noqa: F401
from ansible.module_utils.arms_common import ArmsError
from ansible.module_utils.arms_manifest import place_val_shard
signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # a write past the limit fails with EFBIG, as on a full disk
resource.setrlimit(resource.RLIMIT_FSIZE, (16384, 16384))
try:
    place_val_shard({data!r}, {val!r})
except ArmsError as exc:
    print("ArmsError:", exc)
"""


def test_a_val_shard_copy_that_fails_leaves_no_temporary_file_and_says_so(tmp_path: Path) -> None:
    """A copy cut short by the disk: no ``.tmp-shard_val.parquet`` (nanochat would read it), a sentence."""
    data = tmp_path / "data"
    write_manifest(data, [entry("shard_00000.parquet")])
    val = tmp_path / "val" / "shard_val.parquet"
    val.parent.mkdir()
    val.write_bytes(os.urandom(200_000))
    code = PLACE_VAL_WITH_A_FULL_DISK.format(scripts=str(ROOT / "scripts"), data=str(data), val=str(val))
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert "ArmsError: the shared val shard could not be copied" in proc.stdout, proc.stdout + proc.stderr
    assert "Traceback" not in proc.stderr
    assert sorted(os.listdir(data)) == ["manifest.json"]


def test_the_val_shard_lands_under_its_name_with_no_temporary_file(tmp_path: Path, capsys) -> None:
    pa = pytest.importorskip("pyarrow")
    pq = pytest.importorskip("pyarrow.parquet")
    data = tmp_path / "data"
    write_manifest(data, [])
    val = tmp_path / "shard_val.parquet"
    pq.write_table(pa.table({"text": ["a", "b"]}), val)
    res = run_module("nanochat_place_val", {"data_dir": str(data), "val_file": str(val)}, capsys)
    assert res["changed"], res
    assert sorted(os.listdir(data)) == [".manifest-verified.json", "manifest.json", "shard_val.parquet"]


def test_a_folder_without_its_manifest_is_named_as_a_killed_prep_and_never_passed(tmp_path: Path, capsys) -> None:
    # what a prep killed midway leaves: finished shards, the manifest (written last) missing
    data = tmp_path / "base_data"
    data.mkdir()
    (data / "shard_00000.parquet").write_text("a finished shard")
    res = run_module("nanochat_data_verify", {"data_dir": str(data), "fail_on_extra": True}, capsys)
    assert res["failed"] and res["manifest"] is False
    assert f"{data} has no manifest.json but holds 1 parquet file(s) (shard_00000.parquet)" in res["msg"]
    assert "killed midway" in res["msg"]
    (data / "shard_00000.parquet").unlink()
    res = run_module("nanochat_data_verify", {"data_dir": str(data)}, capsys)
    assert res["failed"] and f"{data} has no manifest.json and no shard" in res["msg"]
    # the receiving side, before anything was sent, accepts a folder with no manifest yet
    res = run_module("nanochat_data_verify", {"data_dir": str(data), "allow_missing_manifest": True}, capsys)
    assert not res.get("failed") and res["manifest"] is False
