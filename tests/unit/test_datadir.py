"""One housekeeping rule for the data folders (arms_datadir): what a killed run leaves is swept, nothing else.

The leftovers are made for real where that is cheap: a process SIGKILLed inside ``atomic_write_json`` leaves
the ``.tmp-*.part`` that mkstemp named beside ``.manifest-verified.json``. The next prepare (a real run on
real parquet files) and the next Azure sync (a real Azurite) sweep them, and every file of the user's,
however similar its name, stays byte for byte.
"""

from __future__ import annotations

import dataclasses
import hashlib
import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from ansible.module_utils.arms_azure import sync
from ansible.module_utils.arms_common import ArmsError
from ansible.module_utils.arms_datadir import (
    is_leftover_name,
    leftovers,
    locked_folder,
    sweep_leftovers,
    tmp_name,
)
from ansible.module_utils.arms_shard import Options, prepare_random_subset
from arms_fixture import make_fixture
from azurite import AzuriteServer, azurite_or_skip, running_azurite, shard_bytes, upload
from modtest import ROOT

# names this project's code made, the older forms included
OURS = [
    ".shard_00003.parquet.arms-0123abcd.tmp",
    ".manifest.json.arms-deadbeef.tmp",
    ".tmp-k2_x9q0z.part",
    ".shard_00000.parquet.azsync-deadbeef.tmp",
    ".shard_00001.parquet.tmp",
    ".shard_val.parquet.tmp",
    ".tmp-shard_val.parquet.4242.part",
    ".arms-write-probe-77",
]
# the user's files that merely look like ours
LOOKALIKES = [
    ".tmp-notes.part",
    ".tmp-ABCDEFGH.part",
    ".tmp-abcdefghi.part",
    "tmp-abcdefgh.part",
    "draft.tmp",
    ".draft.tmp",
    ".shard_00000.parquet.tmp.bak",
    "shard_00000.parquet.azsync-deadbeef.tmp",
    ".notes.arms-xyz.tmp",
    ".shard_00000.parquet.arms-0123abcd.tmp.keep",
    ".arms-write-probe-",
    "my.part",
]

KILLED_WRITE = """
import os, signal, sys
sys.path.insert(0, {scripts!r})
import _arms_path  # noqa: F401
from ansible.module_utils.arms_common import atomic_write_json
os.replace = lambda src, dst: os.kill(os.getpid(), signal.SIGKILL)  # killed between write and rename
atomic_write_json(os.path.join({folder!r}, ".manifest-verified.json"), {{"shard_00000.parquet": [1, 2, "ab"]}})
"""


def write_files(folder: str, names: list[str]) -> dict[str, bytes]:
    out = {}
    for name in names:
        data = f"the user's {name}\n".encode()
        with open(os.path.join(folder, name), "wb") as fh:
            fh.write(data)
        out[name] = data
    return out


def killed_atomic_write(folder: str) -> str:
    """Run atomic_write_json into ``folder`` in a process SIGKILLed before its rename; the name it left."""
    before = set(os.listdir(folder))
    code = KILLED_WRITE.format(scripts=os.path.join(ROOT, "scripts"), folder=folder)
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, timeout=60)
    assert proc.returncode == -signal.SIGKILL, proc.stderr
    (left,) = set(os.listdir(folder)) - before
    return left


def assert_untouched(folder: str, files: dict[str, bytes]) -> None:
    for name, data in files.items():
        with open(os.path.join(folder, name), "rb") as fh:
            assert fh.read() == data, name


# ------------------------------------------------------------------------------------------ the rule


def test_temporary_names_are_hidden_never_parquet_and_recognised_as_ours() -> None:
    names = {tmp_name("shard_00000.parquet") for _ in range(20)}
    assert len(names) == 20  # two writers of one file never share a temporary file
    for name in names:
        assert name.startswith(".shard_00000.parquet.arms-") and not name.endswith(".parquet")
        assert is_leftover_name(name)


def test_the_sweeper_removes_only_our_leftovers(tmp_path: Path) -> None:
    folder = str(tmp_path)
    write_files(folder, OURS)
    user = write_files(folder, [*LOOKALIKES, "shard_00000.parquet", "manifest.json", ".manifest-verified.json"])
    os.mkdir(os.path.join(folder, ".tmp-abcdefgh.part"))  # a folder with our name is not our file
    target = tmp_path.parent / f"{tmp_path.name}-target.txt"
    target.write_text("linked")
    os.symlink(target, os.path.join(folder, ".shard_00004.parquet.arms-00000000.tmp"))  # nor is a symlink
    assert leftovers(folder) == sorted(OURS)
    assert sorted(sweep_leftovers(folder)) == sorted(OURS)
    assert_untouched(folder, user)
    assert os.path.isdir(os.path.join(folder, ".tmp-abcdefgh.part"))
    assert os.path.islink(os.path.join(folder, ".shard_00004.parquet.arms-00000000.tmp"))
    assert target.read_text() == "linked"
    assert sweep_leftovers(folder) == []


def test_a_killed_atomic_write_leaves_a_name_the_sweeper_knows(tmp_path: Path) -> None:
    left = killed_atomic_write(str(tmp_path))
    assert left.startswith(".tmp-") and left.endswith(".part")
    assert leftovers(str(tmp_path)) == [left]


def test_the_lock_refuses_a_second_holder_and_dies_with_its_holder(tmp_path: Path) -> None:
    folder = str(tmp_path)
    holder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            f"import fcntl, os, time\nfd = os.open({folder!r}, os.O_RDONLY)\n"
            "fcntl.flock(fd, fcntl.LOCK_EX)\nprint('held', flush=True)\ntime.sleep(60)",
        ],
        stdout=subprocess.PIPE,
    )
    try:
        assert holder.stdout is not None and holder.stdout.readline() == b"held\n"
        with (
            pytest.raises(ArmsError, match=r"another run is writing to .* right now .*wait for it to finish"),
            locked_folder(folder),
        ):
            pass
    finally:
        holder.kill()
        holder.wait()
    with locked_folder(folder):  # the kernel dropped the killed holder's lock
        pass


# ------------------------------------------------------------------------------- the next real run


def digests(folder: str) -> dict[str, str]:
    out = {}
    for name in sorted(os.listdir(folder)):
        if name.endswith(".parquet"):
            with open(os.path.join(folder, name), "rb") as fh:
                out[name] = hashlib.sha256(fh.read()).hexdigest()
    return out


def test_the_next_prepare_sweeps_a_killed_runs_leftovers_and_nothing_else(tmp_path: Path) -> None:
    source = str(tmp_path / "src")
    make_fixture(source, 1500, files_per_dump=2, dumps=2, seed=3, text_bytes_mean=300, row_group_rows=100)
    opts = Options(
        dataset=source,
        data_dir=str(tmp_path / "data"),
        ratio=0.4,
        seed=1,
        rows_per_shard=150,
        world_size=2,
        val_fraction=0.1,
        workers=1,
    )
    first = prepare_random_subset(opts)
    data_dir, val_dir = first["data_dir"], os.path.dirname(first["val_artifact"])
    shards = digests(data_dir)
    left = [killed_atomic_write(data_dir), *OURS[:2]]
    write_files(data_dir, OURS[:2])
    user = write_files(data_dir, LOOKALIKES)
    write_files(val_dir, [".shard_val.parquet.arms-00c0ffee.tmp"])

    again = prepare_random_subset(opts)
    assert not again["changed"] and "swept 3 temporary files a killed run left" in again["msg"]
    assert not any(os.path.exists(os.path.join(data_dir, n)) for n in left)
    assert_untouched(data_dir, user)
    assert digests(data_dir) == shards
    # a run that writes (here: one shard damaged, so a repair) sweeps the val folder too
    with open(os.path.join(data_dir, "shard_00000.parquet"), "r+b") as fh:
        fh.write(b"XXXX")
    repaired = prepare_random_subset(opts)
    assert repaired["changed"] and digests(data_dir) == shards
    assert leftovers(data_dir) == [] and leftovers(val_dir) == []
    assert_untouched(data_dir, user)
    # force replaces what a run owns, whole: the user's look-alikes (and a folder with our name) stay
    os.mkdir(os.path.join(data_dir, ".tmp-abcdefgh.part"))
    forced = prepare_random_subset(dataclasses.replace(opts, seed=2, force=True))
    assert forced["changed"] and digests(data_dir) != shards
    assert_untouched(data_dir, user)
    assert os.path.isdir(os.path.join(data_dir, ".tmp-abcdefgh.part"))


@pytest.fixture(scope="module")
def azurite(tmp_path_factory: pytest.TempPathFactory) -> Iterator[AzuriteServer]:
    binary = azurite_or_skip()
    with running_azurite(str(tmp_path_factory.mktemp("azurite-datadir")), binary=binary) as server:
        yield server


def test_the_next_azure_sync_sweeps_a_killed_runs_leftovers_and_nothing_else(
    azurite: AzuriteServer, tmp_path: Path
) -> None:
    blobs = {f"top/shard_{i:05d}.parquet": shard_bytes(seed=i) for i in range(3)}
    upload(azurite, "sweep", blobs)
    data_dir = str(tmp_path / "base_data")

    def run() -> dict:
        return sync("sweep", data_dir, prefix="top", connection_string=azurite.connection_string).to_json()

    first = run()
    assert first["changed"] and len(first["downloaded"]) == 3
    left = [killed_atomic_write(data_dir)]
    write_files(data_dir, OURS[:1] + OURS[3:4])
    left += [OURS[0], OURS[3]]
    user = write_files(data_dir, [".tmp-notes.part", "draft.tmp", "shard_00000.parquet.azsync-deadbeef.tmp"])
    again = run()
    assert not again["changed"] and again["downloaded"] == [] and again["verified"] == 3
    assert not any(os.path.exists(os.path.join(data_dir, n)) for n in left)
    assert_untouched(data_dir, user)
