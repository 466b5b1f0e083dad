"""What an Azure sync decides to do (arms_azure.plan_sync), from plain data: no Azurite, no files.

``verified`` are the recorded files whose bytes still match their record, ``adopted`` the unrecorded
files whose MD5 equals their blob's: what the sync found on disk. The plan is what the user sees in
the result: downloaded, already present, removed, and the parquet files nanochat would also read.
"""

from __future__ import annotations

from ansible.module_utils.arms_azure import BlobInfo, _Local, classify, plan_sync, record_matches


def blob(name: str, size: int = 100, etag: str = "e1", md5: str | None = "m1") -> BlobInfo:
    return BlobInfo(f"top/{name}", name, size, etag, "2026-01-01T00:00:00+00:00", md5)


def record(b: BlobInfo) -> dict:
    return {
        "name": b.rel,
        "bytes": b.size,
        "sha256": "s",
        "rows": 1,
        "row_groups": 1,
        "role": "train",
        "azure": b.facts(),
    }


A, B, C = blob("shard_00000.parquet", 300), blob("shard_00001.parquet", 200), blob("shard_00002.parquet", 100)


def plan(blobs: list[BlobInfo], local: _Local, verified: set[str] = frozenset(), adopted: dict | None = None):
    accepted, rejected = classify(blobs, local.protected)
    return plan_sync(accepted, rejected, local, set(verified), adopted or {})


def test_a_first_sync_fetches_everything_largest_first() -> None:
    p = plan([C, A, B], _Local({}, [], []))
    assert [b.rel for b in p.fetch] == ["shard_00000.parquet", "shard_00001.parquet", "shard_00002.parquet"]
    assert p.skip == [] and p.remove == [] and p.unmanaged == []


def test_a_second_sync_fetches_only_what_is_not_verified_or_adopted() -> None:
    local = _Local({A.rel: record(A), B.rel: record(B)}, [], [A.rel, B.rel, C.rel])
    p = plan([A, B, C], local, verified={A.rel}, adopted={C.rel: record(C)})
    assert [b.rel for b in p.fetch] == [B.rel]  # recorded, but its bytes no longer match
    assert p.skip == [A.rel] and sorted(p.adopt) == [C.rel]


def test_a_blob_gone_from_the_prefix_is_removed_but_nothing_else_is() -> None:
    val = {"name": "shard_val.parquet", "bytes": 5, "sha256": "v", "role": "val"}  # placed by another step
    gone = blob("shard_00009.parquet")
    local = _Local(
        {A.rel: record(A), gone.rel: record(gone)},
        [val],
        [A.rel, gone.rel, "shard_val.parquet", "mine.parquet", "notes.txt"],
    )
    p = plan([A, blob("shard_val.parquet")], local, verified={A.rel})
    assert p.remove == [gone.rel]
    assert p.unmanaged == ["mine.parquet"]  # the user's parquet: reported, never removed
    assert [r["name"] for r in p.rejected] == ["top/shard_val.parquet"]  # never overwrites the placed val shard
    assert p.fetch == [] and p.carried == [val]


def test_a_record_matches_only_the_same_version_of_the_blob() -> None:
    assert record_matches(record(A), A)
    assert not record_matches(None, A)
    assert not record_matches(record(A), blob(A.rel, 300, etag="e2"))
    assert not record_matches(record(A), blob(A.rel, 301))
    assert not record_matches(record(A), blob(A.rel, 300, md5="m2"))
    assert record_matches(record(blob(A.rel, 300, md5=None)), A)  # a record without MD5 still matches
