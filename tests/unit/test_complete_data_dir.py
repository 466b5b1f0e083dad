"""A data dir is used only whole: a prep SIGKILLed midway (the real sharding CLI) is refused, a finished one is not."""

from __future__ import annotations

import glob
import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest
from ansible.module_utils.arms_common import ArmsError
from ansible.module_utils.arms_manifest import require_complete
from test_shard_resume import SOURCE, cli, start_and_kill  # noqa: F401  (SOURCE: the resume tests' source)


@pytest.fixture(scope="module")
def finished(source: str, tmp_path_factory: pytest.TempPathFactory) -> str:
    root = str(tmp_path_factory.mktemp("done"))
    proc = subprocess.run(cli(source, root, 2), capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    return os.path.join(root, "data")


def test_a_prep_killed_midway_is_refused_then_accepted_once_finished(source: str, tmp_path: Path) -> None:
    root = str(tmp_path)
    data_dir = os.path.join(root, "data")
    cmd = cli(source, root, 2)
    start_and_kill(cmd, lambda: len(glob.glob(os.path.join(data_dir, "shard_0*.parquet"))) >= 3, whole_group=True)
    with pytest.raises(ArmsError) as err:
        require_complete(data_dir)
    msg = str(err.value)
    # the shards are written largest run first, so which ones a kill leaves varies: the sentence names the first
    held = sorted(name for name in os.listdir(data_dir) if name.endswith(".parquet"))
    assert msg.startswith(f"{data_dir} has no manifest.json but holds {len(held)} parquet file(s) ({held[0]}")
    assert "killed midway" in msg and "re-run the arm's data step" in msg
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=300)  # the re-run resumes and finishes
    assert proc.returncode == 0, proc.stderr
    manifest = require_complete(data_dir, deep=True)
    assert len(manifest["shards"]) == len(glob.glob(os.path.join(data_dir, "*.parquet")))


def copy(finished: str, tmp_path: Path) -> str:
    dest = str(tmp_path / "data")
    shutil.copytree(finished, dest)
    return dest


def test_a_listed_shard_that_is_gone_is_refused(finished: str, tmp_path: Path) -> None:
    data_dir = copy(finished, tmp_path)
    os.unlink(os.path.join(data_dir, "shard_00004.parquet"))
    with pytest.raises(ArmsError, match=re.escape("1 shard(s) listed in the manifest but absent: shard_00004.parquet")):
        require_complete(data_dir)


def test_a_stray_parquet_file_is_refused(finished: str, tmp_path: Path) -> None:
    data_dir = copy(finished, tmp_path)
    shutil.copyfile(os.path.join(data_dir, "shard_00000.parquet"), os.path.join(data_dir, "shard_99999.parquet"))
    with pytest.raises(ArmsError, match=re.escape("not in the manifest (nanochat would read them too)")):
        require_complete(data_dir)


def test_a_shard_of_another_size_or_content_is_refused(finished: str, tmp_path: Path) -> None:
    data_dir = copy(finished, tmp_path)
    path = os.path.join(data_dir, "shard_00001.parquet")
    with open(path, "ab") as fh:
        fh.write(b"x")
    with pytest.raises(
        ArmsError, match=re.escape("of another size or sha256 than the manifest says: shard_00001.parquet")
    ):
        require_complete(data_dir)
    data_dir = copy(finished, tmp_path / "b")
    path = os.path.join(data_dir, "shard_00002.parquet")
    raw = bytearray(Path(path).read_bytes())
    raw[100] ^= 0xFF  # same size, other bytes: only the deep check sees it
    Path(path).write_bytes(bytes(raw))
    require_complete(data_dir)
    with pytest.raises(ArmsError, match=re.escape("shard_00002.parquet")):
        require_complete(data_dir, deep=True)


def test_an_empty_or_absent_folder_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ArmsError, match=re.escape("has no manifest.json and no shard")):
        require_complete(str(tmp_path / "nothing"))
