"""The Azure sync against a real Azurite: what lands in the data dir, re-runs, changes, bad inputs."""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import random
from collections.abc import Iterator
from typing import Any

import ansible.module_utils.arms_azure as arms_azure
import pytest
from ansible.module_utils.arms_azure import JOURNAL_NAME, sync
from ansible.module_utils.arms_common import ArmsError
from ansible.module_utils.arms_manifest import (
    build_manifest,
    read_manifest,
    shard_entry,
    verify_data_dir,
    write_manifest,
)
from azurite import AzuriteServer, azurite_or_skip, other_parquet_bytes, running_azurite, shard_bytes, upload


@pytest.fixture(scope="module")
def azurite(tmp_path_factory: pytest.TempPathFactory) -> Iterator[AzuriteServer]:
    binary = azurite_or_skip()
    with running_azurite(str(tmp_path_factory.mktemp("azurite")), binary=binary) as server:
        yield server


_counter = iter(range(10_000))


def make_container(azurite: AzuriteServer, blobs: dict[str, bytes]) -> str:
    name = f"shards{next(_counter):04d}"
    upload(azurite, name, blobs)
    return name


def shards(n: int, prefix: str = "top/", **kw: Any) -> dict[str, bytes]:
    return {f"{prefix}shard_{i:05d}.parquet": shard_bytes(seed=i, **kw) for i in range(n)}


def run(azurite: AzuriteServer, container: str, data_dir: str, prefix: str = "top", **kw: Any) -> Any:
    kw.setdefault("retry_backoff", 0.05)
    kw.setdefault("max_retries", 2)
    return sync(container, data_dir, prefix=prefix, connection_string=azurite.connection_string, **kw)


def files_equal(data_dir: str, blobs: dict[str, bytes], prefix: str = "top/") -> None:
    for name, data in blobs.items():
        with open(os.path.join(data_dir, name[len(prefix) :]), "rb") as fh:
            assert hashlib.sha256(fh.read()).digest() == hashlib.sha256(data).digest(), name


def assert_mirrors(data_dir: str, blobs: dict[str, bytes]) -> None:
    """The data dir holds the blobs' bytes, and every shard matches its manifest (re-hashed)."""
    files_equal(data_dir, blobs)
    assert verify_data_dir(data_dir, read_manifest(data_dir), use_cache=False).passed


def synced(azurite: AzuriteServer, tmp_path: str, blobs: dict[str, bytes]) -> tuple[str, str]:
    """A container holding ``blobs`` and a data dir ``<tmp_path>/d`` synced from it once: (container, data dir)."""
    container = make_container(azurite, blobs)
    data_dir = os.path.join(tmp_path, "d")
    run(azurite, container, data_dir)
    return container, data_dir


def leftovers(data_dir: str) -> list[str]:
    return [e for e in os.listdir(data_dir) if e.endswith((".tmp", ".part")) or ".azsync-" in e]


def test_full_sync_lands_every_shard_verified_and_reports_the_rest(azurite: AzuriteServer, tmp_path: str) -> None:
    blobs = shards(6)
    extra = {"top/README.md": b"# about", "top/_SUCCESS": b"", "top/nested/shard_00099.parquet": shard_bytes(seed=99)}
    container = make_container(azurite, {**blobs, **extra, "elsewhere/shard_00000.parquet": shard_bytes(seed=7)})
    data_dir = os.path.join(tmp_path, "base_data")
    progress = os.path.join(tmp_path, "progress.json")
    lines: list[str] = []
    r = run(azurite, container, data_dir, progress_file=progress, echo=lines.append)
    assert r.changed and r.blobs == 6 and r.verified == 6 and r.already_present == 0
    assert r.downloaded == [f"shard_{i:05d}.parquet" for i in range(6)]
    assert r.bytes_downloaded == sum(len(b) for b in blobs.values())
    assert sorted(x["name"] for x in r.rejected) == sorted(extra)
    files_equal(data_dir, blobs)
    assert sorted(e for e in os.listdir(data_dir) if e.endswith(".parquet")) == r.downloaded
    assert leftovers(data_dir) == []
    manifest = read_manifest(data_dir)
    assert manifest["kind"] == "azure_blob"
    assert manifest["source"] == {"account": "devstoreaccount1", "container": container, "prefix": "top/"}
    assert manifest["params"] == {"download_mode": "bulk"}
    assert all(s["role"] == "train" and s["azure"]["etag"] and s["azure"]["md5"] for s in manifest["shards"])
    assert manifest["totals"]["rows"] == 6 * 64
    check = verify_data_dir(data_dir, manifest, use_cache=False)
    assert check.passed and not check.extra
    state = json.load(open(progress))
    assert state["finished"] and state["done"] == state["total"] == 6 and "MB/s" in state["line"]
    assert any("downloading" in line and "/6 blobs" in line for line in lines)


def test_rerun_downloads_nothing_and_does_not_rehash(azurite: AzuriteServer, tmp_path: str) -> None:
    blobs = shards(4)
    container, data_dir = synced(azurite, tmp_path, blobs)
    before = {e: os.stat(os.path.join(data_dir, e)).st_mtime_ns for e in os.listdir(data_dir)}
    calls: list[str] = []
    real = arms_azure.verify_data_dir

    def spy(d: str, m: dict[str, Any], *, use_cache: bool = True) -> Any:
        res = real(d, m, use_cache=use_cache)
        calls.append(f"hashed {res.hashed}")
        return res

    arms_azure.verify_data_dir = spy
    try:
        r = run(azurite, container, data_dir)
    finally:
        arms_azure.verify_data_dir = real
    assert not r.changed and r.downloaded == [] and r.bytes_downloaded == 0
    assert r.already_present == 4 and r.verified == 4
    assert calls == ["hashed 0"]  # trusted the verification cache
    assert {e: os.stat(os.path.join(data_dir, e)).st_mtime_ns for e in before} == before
    assert "downloaded 0" in r.msg


def test_changed_blob_is_fetched_again_and_removed_blob_is_removed(azurite: AzuriteServer, tmp_path: str) -> None:
    blobs = shards(4)
    container, data_dir = synced(azurite, tmp_path, blobs)
    new = shard_bytes(seed=1234)
    upload(azurite, container, {"top/shard_00002.parquet": new}, create=False)
    cc = azurite.service_client().get_container_client(container)  # type: ignore[attr-defined]
    cc.delete_blob("top/shard_00003.parquet")
    r = run(azurite, container, data_dir)
    assert r.changed and r.downloaded == ["shard_00002.parquet"] and r.removed == ["shard_00003.parquet"]
    assert r.already_present == 2 and r.blobs == 3
    assert not os.path.exists(os.path.join(data_dir, "shard_00003.parquet"))
    with open(os.path.join(data_dir, "shard_00002.parquet"), "rb") as fh:
        assert fh.read() == new
    manifest = read_manifest(data_dir)
    assert [s["name"] for s in manifest["shards"]] == [f"shard_{i:05d}.parquet" for i in range(3)]
    entry = next(s for s in manifest["shards"] if s["name"] == "shard_00002.parquet")
    assert entry["sha256"] == hashlib.sha256(new).hexdigest()
    assert verify_data_dir(data_dir, manifest, use_cache=False).passed


def test_val_shard_from_another_step_is_carried_over_and_never_touched(azurite: AzuriteServer, tmp_path: str) -> None:
    blobs = shards(3)
    container, data_dir = synced(azurite, tmp_path, blobs)
    val = os.path.join(data_dir, "shard_val.parquet")
    with open(val, "wb") as fh:
        fh.write(shard_bytes(seed=555))
    manifest = read_manifest(data_dir)
    shards_ = [*manifest["shards"], shard_entry(val, role="val")]
    write_manifest(data_dir, build_manifest("azure_blob", manifest["source"], manifest["params"], shards_))
    val_stat = os.stat(val)
    # the container also gets a blob of that name, and one shard changes
    upload(
        azurite,
        container,
        {"top/shard_val.parquet": shard_bytes(seed=9), "top/shard_00000.parquet": shard_bytes(seed=77)},
        create=False,
    )
    r = run(azurite, container, data_dir)
    assert r.downloaded == ["shard_00000.parquet"]
    assert [x["name"] for x in r.rejected] == ["top/shard_val.parquet"]
    assert "did not come from Azure" in r.rejected[0]["reason"]
    assert os.stat(val).st_mtime_ns == val_stat.st_mtime_ns
    manifest = read_manifest(data_dir)
    roles = {s["name"]: s["role"] for s in manifest["shards"]}
    assert roles == {
        "shard_00000.parquet": "train",
        "shard_00001.parquet": "train",
        "shard_00002.parquet": "train",
        "shard_val.parquet": "val",
    }
    assert manifest["totals"]["val_rows"] == 64
    assert verify_data_dir(data_dir, manifest, use_cache=False).passed


def test_large_blobs_come_in_parallel_ranges_byte_identical(azurite: AzuriteServer, tmp_path: str) -> None:
    blobs = shards(3, rows=400, text_bytes=1000)  # ~400 KB each: many 32 KB ranges after a 64 KB first GET
    container = make_container(azurite, blobs)
    data_dir = os.path.join(tmp_path, "d")
    r = run(
        azurite, container, data_dir, chunk_concurrency=4, max_single_get_size=64 * 1024, max_chunk_get_size=32 * 1024
    )
    assert r.downloaded == sorted(n.split("/")[-1] for n in blobs)
    assert_mirrors(data_dir, blobs)


def test_unrecorded_files_matching_content_md5_are_adopted_not_fetched(azurite: AzuriteServer, tmp_path: str) -> None:
    blobs = shards(3)
    container, data_dir = synced(azurite, tmp_path, blobs)
    os.unlink(os.path.join(data_dir, "manifest.json"))
    os.unlink(os.path.join(data_dir, JOURNAL_NAME))
    with open(os.path.join(data_dir, "shard_00001.parquet"), "r+b") as fh:  # same size, other bytes
        fh.seek(100)
        fh.write(b"XXXX")
    r = run(azurite, container, data_dir)
    assert r.adopted == ["shard_00000.parquet", "shard_00002.parquet"]
    assert r.downloaded == ["shard_00001.parquet"]
    assert_mirrors(data_dir, blobs)


def test_content_md5_is_compared_only_when_asked(azurite: AzuriteServer, tmp_path: str) -> None:
    # a blob whose recorded Content-MD5 is not its bytes' (what a corrupted download would look like)
    from azure.storage.blob import ContentSettings

    blobs = shards(2)
    container = make_container(azurite, blobs)
    bc = azurite.service_client().get_blob_client(container, "top/shard_00001.parquet")  # type: ignore[attr-defined]
    bc.set_http_headers(content_settings=ContentSettings(content_md5=bytearray(16)))
    with pytest.raises(ArmsError, match=r"shard_00001.parquet .*failed verification on every attempt.*Content-MD5"):
        run(azurite, container, os.path.join(tmp_path, "md5"), verify_content_md5=True, max_retries=1)
    assert leftovers(os.path.join(tmp_path, "md5")) == []
    # the default hashes each byte once (sha256 for the manifest): the bytes themselves are the blob's
    data_dir = os.path.join(tmp_path, "d")
    r = run(azurite, container, data_dir)
    assert r.downloaded == ["shard_00000.parquet", "shard_00001.parquet"]
    assert_mirrors(data_dir, blobs)


def test_deep_verify_catches_what_the_cache_cannot(azurite: AzuriteServer, tmp_path: str) -> None:
    blobs = shards(2)
    container, data_dir = synced(azurite, tmp_path, blobs)
    path = os.path.join(data_dir, "shard_00001.parquet")
    st = os.stat(path)
    with open(path, "r+b") as fh:
        fh.seek(200)
        fh.write(b"ZZZZ")
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns))  # same size and mtime: the cache is fooled
    assert run(azurite, container, data_dir).downloaded == []
    r = run(azurite, container, data_dir, deep_verify=True)
    assert r.downloaded == ["shard_00001.parquet"]
    files_equal(data_dir, blobs)


def test_stale_temporary_files_are_cleaned_and_other_files_left_alone(azurite: AzuriteServer, tmp_path: str) -> None:
    blobs = shards(2)
    container = make_container(azurite, blobs)
    data_dir = os.path.join(tmp_path, "d")
    os.makedirs(data_dir)
    stale = os.path.join(data_dir, ".shard_00000.parquet.azsync-deadbeef.tmp")
    mine = {".keep": b"x", "notes.txt": b"y", "my_own.parquet": shard_bytes(seed=3)}
    for name, data in {**mine, os.path.basename(stale): b"partial"}.items():
        with open(os.path.join(data_dir, name), "wb") as fh:
            fh.write(data)
    r = run(azurite, container, data_dir)
    assert not os.path.exists(stale)
    for name, data in mine.items():
        with open(os.path.join(data_dir, name), "rb") as fh:
            assert fh.read() == data
    assert r.unmanaged == ["my_own.parquet"] and "WARNING" in r.msg


def test_an_unreadable_manifest_is_replaced(azurite: AzuriteServer, tmp_path: str) -> None:
    container = make_container(azurite, shards(2))
    data_dir = os.path.join(tmp_path, "d")
    run(azurite, container, data_dir)
    with open(os.path.join(data_dir, "manifest.json"), "w") as fh:
        fh.write("{ half a manifest")
    r = run(azurite, container, data_dir)
    assert r.changed and r.downloaded == [] and r.already_present == 2
    assert verify_data_dir(data_dir, read_manifest(data_dir), use_cache=False).passed


def test_check_mode_predicts_and_writes_nothing(azurite: AzuriteServer, tmp_path: str) -> None:
    blobs = shards(3)
    container = make_container(azurite, blobs)
    data_dir = os.path.join(tmp_path, "d")
    r = run(azurite, container, data_dir, check_mode=True, progress_file=os.path.join(tmp_path, "p.json"))
    assert r.changed and r.downloaded == [f"shard_{i:05d}.parquet" for i in range(3)]
    assert r.bytes_downloaded == sum(len(b) for b in blobs.values())
    assert not os.path.exists(data_dir) and not os.path.exists(os.path.join(tmp_path, "p.json"))
    run(azurite, container, data_dir)
    r = run(azurite, container, data_dir, check_mode=True)
    assert not r.changed and r.downloaded == [] and r.already_present == 3


# ---- bad input: a sentence, and nothing half-written ------------------------------------------


def assert_clean(data_dir: str) -> None:
    if os.path.exists(data_dir):
        assert leftovers(data_dir) == []
        assert not os.path.exists(os.path.join(data_dir, "manifest.json"))


def test_missing_container(azurite: AzuriteServer, tmp_path: str) -> None:
    data_dir = os.path.join(tmp_path, "d")
    with pytest.raises(ArmsError, match=r"container 'nosuchcontainer' does not exist in account devstoreaccount1"):
        run(azurite, "nosuchcontainer", data_dir)
    assert not os.path.exists(data_dir)


def test_prefix_with_no_blobs_and_prefix_with_no_shards(azurite: AzuriteServer, tmp_path: str) -> None:
    container = make_container(azurite, {**shards(1), "docs/README.md": b"x", "docs/sub/a.parquet": shard_bytes()})
    data_dir = os.path.join(tmp_path, "d")
    with pytest.raises(ArmsError, match=r"there are no blobs under prefix 'tpo/'.*check the prefix"):
        run(azurite, container, data_dir, prefix="tpo")
    with pytest.raises(ArmsError, match=r"none of the 2 blobs under prefix 'docs/'.*not a \.parquet file"):
        run(azurite, container, data_dir, prefix="docs")
    assert not os.path.exists(data_dir)


def test_wrong_credentials_are_a_sentence_without_the_secret(azurite: AzuriteServer, tmp_path: str) -> None:
    container = make_container(azurite, shards(1))
    wrong_key = "d3Jvbmcga2V5IGZvciB0ZXN0aW5nIG9ubHkgMTIzNDU2Nzg5MGFiY2RlZg=="
    with pytest.raises(ArmsError) as err:
        sync(
            container,
            os.path.join(tmp_path, "d"),
            prefix="top",
            account_url=azurite.account_url,
            account_key=wrong_key,
            max_retries=0,
        )
    msg = str(err.value)
    assert "refused the credentials" in msg and "HTTP 403" in msg
    assert wrong_key not in msg
    assert not os.path.exists(os.path.join(tmp_path, "d"))


def test_parquet_blob_without_text_column_fails_naming_it(azurite: AzuriteServer, tmp_path: str) -> None:
    container = make_container(azurite, {**shards(3), "top/shard_00003.parquet": other_parquet_bytes()})
    data_dir = os.path.join(tmp_path, "d")
    with pytest.raises(ArmsError, match=r"blob 'top/shard_00003.parquet' .* is not a nanochat shard: it has no 'text'"):
        run(azurite, container, data_dir)
    assert_clean(data_dir)
    assert not os.path.exists(os.path.join(data_dir, "shard_00003.parquet"))


def test_large_non_shard_is_refused_from_its_footer_before_download(azurite: AzuriteServer, tmp_path: str) -> None:
    import io

    import pyarrow as pa
    import pyarrow.parquet as pq

    texts = [random.Random(i).randbytes(600).hex() for i in range(300)]  # ~360 KB, incompressible
    buf = io.BytesIO()
    pq.write_table(pa.table({"body": texts}), buf, compression="none")
    big_other = buf.getvalue()
    assert len(big_other) > 300_000
    container = make_container(azurite, {"top/shard_00000.parquet": big_other})
    data_dir = os.path.join(tmp_path, "d")
    seen: list[int] = []
    real = arms_azure._Reporter.add_bytes
    arms_azure._Reporter.add_bytes = lambda self, n: seen.append(n)  # type: ignore[method-assign]
    try:
        with pytest.raises(ArmsError, match=r"is not a nanochat shard: it has no 'text' column \(columns: body\)"):
            run(azurite, container, data_dir, max_single_get_size=64 * 1024)
    finally:
        arms_azure._Reporter.add_bytes = real  # type: ignore[method-assign]
    assert seen == []  # not a byte of the body was fetched
    assert_clean(data_dir)


def test_parquet_named_blob_that_is_not_parquet(azurite: AzuriteServer, tmp_path: str) -> None:
    container = make_container(azurite, {"top/shard_00000.parquet": b"this is a text file, not parquet" * 10})
    data_dir = os.path.join(tmp_path, "d")
    with pytest.raises(ArmsError, match=r"'top/shard_00000.parquet' .*not a readable parquet file"):
        run(azurite, container, data_dir)
    assert_clean(data_dir)


def test_not_enough_disk(azurite: AzuriteServer, tmp_path: str, monkeypatch: pytest.MonkeyPatch) -> None:
    # a full disk cannot be produced here without privileges: the one fault that is faked
    container = make_container(azurite, shards(2))
    monkeypatch.setattr(arms_azure, "free_bytes", lambda path: 1000)
    data_dir = os.path.join(tmp_path, "d")
    with pytest.raises(ArmsError, match=r"not enough disk space in .*: 2 blobs to fetch need .* only 1.0 KB free"):
        run(azurite, container, data_dir)
    assert not os.path.exists(data_dir)


def test_a_second_sync_into_the_same_dir_is_refused(azurite: AzuriteServer, tmp_path: str) -> None:
    container = make_container(azurite, shards(1))
    data_dir = os.path.join(tmp_path, "d")
    os.makedirs(data_dir)
    fd = os.open(data_dir, os.O_RDONLY)
    fcntl.flock(fd, fcntl.LOCK_EX)
    try:
        with pytest.raises(ArmsError, match=r"another run is writing to .* right now"):
            run(azurite, container, data_dir)
    finally:
        os.close(fd)
    assert run(azurite, container, data_dir).downloaded == ["shard_00000.parquet"]


# ---- skip_download -----------------------------------------------------------------------------


def test_skip_download_verifies_and_fails_loudly_on_bad_files(azurite: AzuriteServer, tmp_path: str) -> None:
    container = make_container(azurite, shards(3))
    data_dir = os.path.join(tmp_path, "d")
    run(azurite, container, data_dir)
    # no credentials needed: nothing remote is contacted
    r = sync(container, data_dir, prefix="top", skip_download=True, env={})
    assert not r.changed and r.verified == 3 and r.downloaded == [] and "nothing downloaded" in r.msg
    path = os.path.join(data_dir, "shard_00001.parquet")
    with open(path, "r+b") as fh:
        fh.seek(50)
        fh.write(b"corrupt")
    os.unlink(os.path.join(data_dir, "shard_00002.parquet"))
    with pytest.raises(ArmsError) as err:
        sync(container, data_dir, prefix="top", skip_download=True)
    msg = str(err.value)
    assert "2 of 3 shards" in msg and "missing: shard_00002.parquet" in msg
    assert "wrong sha256: shard_00001.parquet" in msg and "run without skip_download" in msg
    # the normal sync repairs exactly those
    assert run(azurite, container, data_dir).downloaded == ["shard_00001.parquet", "shard_00002.parquet"]
    assert sync(container, data_dir, prefix="top", skip_download=True, deep_verify=True).verified == 3


def test_skip_download_needs_a_manifest_of_this_container(azurite: AzuriteServer, tmp_path: str) -> None:
    data_dir = os.path.join(tmp_path, "d")
    with pytest.raises(ArmsError, match=r"has no manifest\.json"):
        sync("quratingfiltered", data_dir, skip_download=True)
    container = make_container(azurite, shards(1))
    run(azurite, container, data_dir)
    with pytest.raises(ArmsError, match=f"from container '{container}' prefix 'top/', not container 'other1'"):
        sync("other1", data_dir, prefix="top", skip_download=True)
    with open(os.path.join(data_dir, "stray.parquet"), "wb") as fh:
        fh.write(shard_bytes(seed=5))
    with pytest.raises(ArmsError, match=r"1 parquet files not in the manifest would also be read by nanochat \(stray"):
        sync(container, data_dir, prefix="top", skip_download=True)
