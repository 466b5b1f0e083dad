"""Azurite killed for real (SIGKILL) in the middle of a sync: nothing half-written, and it completes.

The kill is triggered from the sync's own "blob finished" callback, so it lands mid-sync every time
(no timing): the other worker is in the middle of a blob fetched in many small ranges.
"""

from __future__ import annotations

import hashlib
import os
import threading
from collections.abc import Iterator
from typing import Any

import pytest
from ansible.module_utils.arms_azure import sync
from ansible.module_utils.arms_common import ArmsError
from ansible.module_utils.arms_manifest import read_manifest, verify_data_dir
from azurite import AzuriteServer, azurite_or_skip, running_azurite, shard_bytes, upload

N = 12
BLOBS = {f"top/shard_{i:05d}.parquet": shard_bytes(rows=600, text_bytes=1000, seed=i) for i in range(N)}  # ~600 KB
SMALL_RANGES = {"max_single_get_size": 64 * 1024, "max_chunk_get_size": 32 * 1024, "chunk_concurrency": 2}


@pytest.fixture
def azurite(tmp_path_factory: pytest.TempPathFactory) -> Iterator[AzuriteServer]:
    binary = azurite_or_skip()
    with running_azurite(str(tmp_path_factory.mktemp("azurite-kill")), binary=binary) as server:
        upload(server, "killme", BLOBS, persist=True)  # metadata on disk before anything is killed
        yield server


def run(server: AzuriteServer, data_dir: str, **kw: Any) -> Any:
    return sync(
        "killme",
        data_dir,
        prefix="top",
        connection_string=server.connection_string,
        concurrency=2,
        **SMALL_RANGES,
        **kw,
    )


def local_files(data_dir: str) -> list[str]:
    return sorted(e for e in os.listdir(data_dir) if e.endswith(".parquet"))


def assert_files_are_the_blobs(data_dir: str, names: list[str]) -> None:
    for name in names:
        with open(os.path.join(data_dir, name), "rb") as fh:
            assert hashlib.sha256(fh.read()).digest() == hashlib.sha256(BLOBS["top/" + name]).digest(), name


def test_killed_azurite_fails_cleanly_and_the_rerun_completes(azurite: AzuriteServer, tmp_path: str) -> None:
    data_dir = os.path.join(tmp_path, "base_data")
    done: list[str] = []

    def kill_after_first(name: str) -> None:
        done.append(name)
        if len(done) == 1:
            azurite.kill()

    with pytest.raises(ArmsError) as err:
        run(azurite, data_dir, max_retries=1, retry_backoff=0.05, on_blob_done=kill_after_first)
    msg = str(err.value)
    assert "could not reach account devstoreaccount1" in msg and "finished files are kept" in msg
    assert azurite.account_key not in msg
    # nothing half-written: only complete shards, no temporary file, no manifest claiming anything
    present = local_files(data_dir)
    assert 1 <= len(present) < N
    assert_files_are_the_blobs(data_dir, present)
    assert [e for e in os.listdir(data_dir) if e.endswith(".tmp")] == []
    assert read_manifest(data_dir) is None

    azurite.start()  # same port, same blobs
    r = run(azurite, data_dir)
    assert r.changed and r.blobs == N and r.verified == N
    assert sorted(r.downloaded) == sorted(set(BLOBS_NAMES) - set(present))  # finished files were not fetched again
    assert r.already_present == len(present)
    assert local_files(data_dir) == BLOBS_NAMES
    assert_files_are_the_blobs(data_dir, BLOBS_NAMES)
    check = verify_data_dir(data_dir, read_manifest(data_dir), use_cache=False)
    assert check.passed and check.hashed == N and not check.extra


def test_azurite_restarted_while_the_sync_retries_and_the_same_run_completes(
    azurite: AzuriteServer, tmp_path: str
) -> None:
    data_dir = os.path.join(tmp_path, "base_data")
    killed = threading.Event()

    def kill_and_restart_later(name: str) -> None:
        if not killed.is_set():
            killed.set()
            azurite.kill()
            threading.Timer(1.0, azurite.start).start()

    r = run(azurite, data_dir, max_retries=6, retry_backoff=0.2, on_blob_done=kill_and_restart_later)
    assert killed.is_set()
    assert sorted(r.downloaded) == BLOBS_NAMES and r.verified == N
    assert_files_are_the_blobs(data_dir, BLOBS_NAMES)
    assert verify_data_dir(data_dir, read_manifest(data_dir), use_cache=False).passed


BLOBS_NAMES = sorted(name.split("/", 1)[1] for name in BLOBS)
