"""Random-subset sharding end to end on real parquet files: format, rule, determinism, refusals, bad input."""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import shutil
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from ansible.module_utils.arms_common import ArmsError
from ansible.module_utils.arms_shard import Options, prepare_random_subset
from ansible.module_utils.arms_source import resolve_source

BASE = {"ratio": 0.3, "seed": 7, "rows_per_shard": 100, "world_size": 4, "workers": 1}


SOURCE = {"rows": 3000, "files_per_dump": 2, "dumps": 3, "seed": 21, "text_bytes_mean": 700, "row_group_rows": 250}


@pytest.fixture(scope="module")
def baseline(source: str, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """One reference run (val shard included) that several tests compare against."""
    root = str(tmp_path_factory.mktemp("base"))
    result = run(source, root, val_fraction=0.1)
    return {"root": root, "result": result, "files": file_digests(result["data_dir"])}


def run(dataset: str, root: str, data: str = "data", **changes: Any) -> dict[str, Any]:
    args = {**BASE, "val_dir": os.path.join(root, "val"), **changes}
    return prepare_random_subset(Options(dataset=dataset, data_dir=os.path.join(root, data), **args))


def file_digests(folder: str) -> dict[str, str]:
    out = {}
    for name in sorted(os.listdir(folder)):
        if name.endswith(".parquet"):
            with open(os.path.join(folder, name), "rb") as fh:
                out[name] = hashlib.sha256(fh.read()).hexdigest()
    return out


def nanochat_files(data_dir: str) -> list[str]:
    """nanochat/dataset.py: every *.parquet (not .tmp) sorted by name; the last one is validation."""
    names = sorted(n for n in os.listdir(data_dir) if n.endswith(".parquet") and not n.endswith(".tmp"))
    return [os.path.join(data_dir, n) for n in names]


def source_rows(dataset: str) -> pa.Table:
    parts = resolve_source(dataset).parts
    return pa.concat_tables([pq.read_table(p.path, columns=["text", "id"]) for p in parts])


def leftovers(root: str) -> list[str]:
    found = []
    for folder, _, files in os.walk(root):
        found += [os.path.join(folder, f) for f in files]
    return found


# ------------------------------------------------------------------------------------------- format


def test_shards_read_back_the_way_nanochat_reads_them(baseline: dict[str, Any]) -> None:
    result = baseline["result"]
    files = nanochat_files(result["data_dir"])
    assert os.path.basename(files[-1]) == "shard_val.parquet" == os.path.basename(result["val_shard"])
    assert [os.path.basename(f) for f in files[:-1]] == [f"shard_{i:05d}.parquet" for i in range(len(files) - 1)]
    world = BASE["world_size"]
    train_texts, val_texts = [], []
    for path in files:
        pf = pq.ParquetFile(path)
        assert pf.schema_arrow.names == ["text"] and pf.schema_arrow.field("text").type == pa.string()
        assert pf.metadata.row_group(0).column(0).compression == "ZSTD"
        groups = pf.metadata.num_row_groups
        assert groups % world == 0 and groups >= world
        for rank in range(world):  # nanochat/dataloader.py: rank r takes row groups r, r+W, ...
            rows = [pf.read_row_group(g, columns=["text"]).num_rows for g in range(rank, groups, world)]
            assert rows and min(rows) > 0
        texts = pf.read(columns=["text"])["text"].to_pylist()
        (val_texts if path == files[-1] else train_texts).extend(texts)
    sizes = [pq.ParquetFile(f).metadata.num_rows for f in files[:-1]]
    assert all(s == BASE["rows_per_shard"] for s in sizes[:-1]) and 0 < sizes[-1] < 2 * BASE["rows_per_shard"]
    assert len(train_texts) == result["train_rows"] and len(val_texts) == result["val_rows"] > 0
    assert not set(train_texts) & set(val_texts)
    manifest = json.load(open(result["manifest"]))
    assert manifest["params"]["ratio"] == 0.3 and "BLAKE2b" in manifest["params"]["rule"]
    assert [s["name"] for s in manifest["shards"]] == [os.path.basename(f) for f in files]
    assert manifest["stats"]["rows_read"] == 3000
    with open(result["val_artifact"], "rb") as a, open(result["val_shard"], "rb") as b:
        assert a.read() == b.read()
    assert (
        json.load(open(os.path.join(os.path.dirname(result["val_artifact"]), "manifest.json")))["shards"][0]["role"]
        == "val"
    )


def test_output_is_the_documented_rule_applied_to_the_source(source: str, baseline: dict[str, Any]) -> None:
    from test_shard_rule import rule_by_hand

    rows = source_rows(source)
    t = int(0.3 * 2**64)
    v = int(0.1 * t)
    train, val = [], []
    for text, id_ in zip(rows["text"].to_pylist(), rows["id"].to_pylist(), strict=True):
        u, o = rule_by_hand(id_, 7)
        if u < t:
            (val if u < v else train).append((o, text))
    data_dir = baseline["result"]["data_dir"]
    files = nanochat_files(data_dir)
    got_train = [x for f in files[:-1] for x in pq.read_table(f)["text"].to_pylist()]
    got_val = pq.read_table(files[-1])["text"].to_pylist()
    assert got_train == [text for _, text in sorted(train)]
    assert got_val == [text for _, text in sorted(val)]
    assert baseline["result"]["realised_fraction"] == pytest.approx((len(train) + len(val)) / 3000, abs=1e-6)
    # shuffled across the whole output: the first shard mixes every crawl dump
    dumps = {d for d in range(3)}
    first = set(pq.read_table(files[0])["text"].to_pylist())
    by_dump = [set(pq.read_table(p.path, columns=["text"])["text"].to_pylist()) for p in resolve_source(source).parts]
    assert {i // 2 for i, texts in enumerate(by_dump) if texts & first} == dumps


def test_same_bytes_for_any_file_order_and_worker_count(source: str, baseline: dict[str, Any], tmp_path: str) -> None:
    # the same rows, in reverse order, cut into 5 differently named files of a plain folder
    rows = pa.concat_tables([pq.read_table(p.path) for p in resolve_source(source).parts][::-1])
    rows = rows.take(pa.array(np.arange(rows.num_rows)[::-1]))
    other = os.path.join(str(tmp_path), "reordered")
    os.makedirs(other)
    for i, chunk in enumerate(np.array_split(np.arange(rows.num_rows), 5)):
        pq.write_table(rows.take(pa.array(chunk)), os.path.join(other, f"z{4 - i}.parquet"), row_group_size=333)
    result = run(other, str(tmp_path), val_fraction=0.1, workers=2)
    assert result["train_rows"] == baseline["result"]["train_rows"]
    assert file_digests(result["data_dir"]) == baseline["files"]
    four = run(other, str(tmp_path), data="data4", val_fraction=0.1, workers=4)
    assert file_digests(four["data_dir"]) == baseline["files"]
    # each pass's CPU seconds, all workers and the busiest one's: what benchmarks/bench_shard.py says binds
    stats = json.load(open(four["manifest"]))["stats"]
    for p in ("pass1", "pass2"):
        assert 0 < stats[f"{p}_busiest_cpu_seconds"] <= stats[f"{p}_cpu_seconds"]


# ------------------------------------------------------------------------ idempotence and refusals


def test_a_complete_data_dir_is_unchanged_without_reading_the_source(source: str, tmp_path: str) -> None:
    first = run(source, str(tmp_path))
    assert first["changed"] and not first["resumed"]
    moved = source + ".away"
    os.rename(source, moved)
    try:
        again = run(source, str(tmp_path))
    finally:
        os.rename(moved, source)
    assert not again["changed"]
    assert "complete and verified" in again["msg"]
    assert again["train_rows"] == first["train_rows"] and again["rows_read"] == 3000
    assert not os.path.exists(os.path.join(str(tmp_path), ".arms-work-data"))


def test_a_dataset_at_another_path_is_named_once_in_the_refusal(source: str, tmp_path: str) -> None:
    run(source, str(tmp_path))
    elsewhere = os.path.join(str(tmp_path), "copy-of-dataset")
    shutil.copytree(source, elsewhere)
    with pytest.raises(ArmsError) as err:
        run(elsewhere, str(tmp_path))
    msg = str(err.value)
    assert f"dataset {source!r} -> {elsewhere!r}" in msg
    assert msg.count(elsewhere) == 1, msg
    assert "force=true" in msg


def test_other_parameters_are_refused_and_force_replaces_the_data_dir_whole(source: str, tmp_path: str) -> None:
    first = run(source, str(tmp_path))
    n_first = first["shards"]
    with pytest.raises(ArmsError, match=r"made with other parameters \(ratio 0.3 -> 0.6.*force=true"):
        run(source, str(tmp_path), ratio=0.6)
    with pytest.raises(ArmsError, match="seed 7 -> 8"):
        run(source, str(tmp_path), seed=8)
    with pytest.raises(ArmsError, match="world_size 4 -> 8"):
        run(source, str(tmp_path), world_size=8)
    assert len(nanochat_files(first["data_dir"])) == n_first  # untouched
    forced = run(source, str(tmp_path), ratio=0.15, force=True)
    assert forced["changed"] and forced["shards"] < n_first
    manifest = json.load(open(forced["manifest"]))
    assert manifest["params"]["ratio"] == 0.15
    assert [os.path.basename(f) for f in nanochat_files(forced["data_dir"])] == [s["name"] for s in manifest["shards"]]


def test_parquet_files_this_module_did_not_write_are_refused(source: str, tmp_path: str) -> None:
    data_dir = os.path.join(str(tmp_path), "data")
    os.makedirs(data_dir)
    pq.write_table(pa.table({"text": ["climbmix doc"]}), os.path.join(data_dir, "shard_00000.parquet"))
    with open(os.path.join(data_dir, "notes.txt"), "w") as fh:
        fh.write("keep me")
    with pytest.raises(ArmsError, match=r"holds parquet files this run did not make \(shard_00000\.parquet\)"):
        run(source, str(tmp_path))
    result = run(source, str(tmp_path), force=True)
    assert result["changed"]
    assert "climbmix doc" not in pq.read_table(os.path.join(data_dir, "shard_00000.parquet"))["text"].to_pylist()
    assert os.path.exists(os.path.join(data_dir, "notes.txt"))  # force replaces the shards, not other files


def test_missing_or_damaged_shards_are_rewritten_identically(
    source: str, baseline: dict[str, Any], tmp_path: str
) -> None:
    root = str(tmp_path)
    result = run(source, root, val_fraction=0.1)
    data_dir = result["data_dir"]
    os.unlink(os.path.join(data_dir, "shard_00001.parquet"))
    with open(os.path.join(data_dir, "shard_00002.parquet"), "r+b") as fh:
        fh.seek(100)
        fh.write(b"\0" * 16)
    kept = os.stat(os.path.join(data_dir, "shard_00003.parquet")).st_mtime_ns
    repaired = run(source, root, val_fraction=0.1)
    assert repaired["changed"] and repaired["resumed"]
    assert "2 written" in repaired["msg"]
    assert file_digests(data_dir) == baseline["files"]
    assert os.stat(os.path.join(data_dir, "shard_00003.parquet")).st_mtime_ns == kept


def test_the_embedding_column_is_never_read(source: str, baseline: dict[str, Any], tmp_path: str) -> None:
    copy = os.path.join(str(tmp_path), "src")
    shutil.copytree(source, copy)
    for part in resolve_source(copy).parts:
        meta = pq.ParquetFile(part.path).metadata
        leaf = [meta.schema.column(i).path for i in range(meta.num_columns)].index("embedding.list.element")
        with open(part.path, "r+b") as fh:
            for g in range(meta.num_row_groups):
                col = meta.row_group(g).column(leaf)
                fh.seek(col.dictionary_page_offset if col.has_dictionary_page else col.data_page_offset)
                fh.write(b"\xff" * col.total_compressed_size)  # garbage: reading it would fail
    with pytest.raises(Exception):  # noqa: B017 - the file really is broken for a reader of that column
        pq.read_table(resolve_source(copy).parts[0].path, columns=["embedding"])
    result = run(copy, str(tmp_path), val_fraction=0.1)
    assert file_digests(result["data_dir"]) == baseline["files"]


def test_extra_columns_are_copied_after_text(source: str, tmp_path: str) -> None:
    result = run(source, str(tmp_path), extra_columns=["id", "url"])
    table = pq.read_table(nanochat_files(result["data_dir"])[0])
    assert table.column_names == ["text", "id", "url"]
    assert all(i.startswith("<urn:uuid:") for i in table["id"].to_pylist())


def test_progress_state_file_says_what_was_done(source: str, tmp_path: str) -> None:
    progress = os.path.join(str(tmp_path), "progress.json")
    lines: list[str] = []
    result = prepare_random_subset(
        Options(dataset=source, data_dir=os.path.join(str(tmp_path), "d"), progress_file=progress, **BASE),
        echo=lines.append,
    )
    state = json.load(open(progress))
    assert state["finished"] and state["phase"] == "done"
    assert state["done"] == state["total"] == result["shards"]
    assert state["extra"]["kept"] == result["train_rows"]
    assert "MB/s" in state["line"] and "eta" in state["line"]
    assert any(line.startswith("sampling:") for line in lines) and any("shards" in line for line in lines)


def test_check_mode_predicts_and_writes_nothing(source: str, tmp_path: str) -> None:
    root = str(tmp_path)
    would = prepare_random_subset(
        Options(dataset=source, data_dir=os.path.join(root, "data"), val_dir=os.path.join(root, "val"), **BASE),
        check_mode=True,
    )
    assert would["changed"] and would["msg"].startswith(f"would write {root}/data: about")
    assert 600 < would["train_rows"] < 1200
    assert os.listdir(root) == []
    run(source, root)
    done = prepare_random_subset(Options(dataset=source, data_dir=os.path.join(root, "data"), **BASE), check_mode=True)
    assert not done["changed"] and "complete" in done["msg"]


def test_a_second_run_on_the_same_data_dir_is_refused_while_one_holds_it(source: str, tmp_path: str) -> None:
    data_dir = os.path.join(str(tmp_path), "data")
    os.makedirs(data_dir)
    fd = os.open(data_dir, os.O_RDONLY)
    fcntl.flock(fd, fcntl.LOCK_EX)
    try:
        with pytest.raises(ArmsError, match=r"another run is writing to .*data right now"):
            run(source, str(tmp_path))
    finally:
        os.close(fd)


# ---------------------------------------------------------------------------------------- bad input


@pytest.mark.parametrize(
    ("changes", "words"),
    [
        ({"text_column": "content"}, r"has no column 'content' \(named by text_column\)"),
        ({"text_column": "token_count"}, r"column 'token_count' holds int64, not text"),
        ({"id_column": "doc_id"}, r"has no column 'doc_id' \(named by id_column\)"),
        ({"extra_columns": ["nope"]}, r"has no column 'nope' \(named by extra_columns\)"),
        ({"config": "CC-MAIN-1999-01"}, "has no config 'CC-MAIN-1999-01'"),
        ({"split": "test"}, "has no split 'test'"),
        ({"ratio": 0.0}, r"ratio must be in \(0, 1\]"),
        ({"ratio": 1.01}, r"ratio must be in \(0, 1\]"),
        ({"rows_per_shard": 0}, "rows_per_shard must be an integer >= 1"),
        ({"min_free_bytes_factor": 1e12}, "not enough free disk for .* free; free space or point"),
        ({"world_size": 1024, "rows_per_shard": 1024}, "fewer than world_size 1024"),
        ({"val_fraction": 0.0005}, "kept only .* validation rows, fewer than world_size"),
        ({"rows_per_shard": 5000}, "single shard"),
    ],
)
def test_bad_input_is_a_sentence_and_leaves_nothing_behind(
    source: str, tmp_path: str, changes: dict[str, Any], words: str
) -> None:
    root = os.path.join(str(tmp_path), "root")
    os.makedirs(root)
    with pytest.raises(ArmsError, match=words):
        run(source, root, **changes)
    assert leftovers(root) == []


def test_an_unwritable_data_dir_is_a_sentence(source: str, tmp_path: str) -> None:
    blocker = os.path.join(str(tmp_path), "a-file")
    with open(blocker, "w") as fh:
        fh.write("x")
    with pytest.raises(ArmsError, match=r"data_dir .* cannot be created: .* is a file, not a folder"):
        prepare_random_subset(Options(dataset=source, data_dir=os.path.join(blocker, "data"), **BASE))


def test_rows_without_an_id_are_found_while_reading_and_the_partial_work_is_removed(tmp_path: str) -> None:
    src = os.path.join(str(tmp_path), "src")
    os.makedirs(src)
    n = 400
    pq.write_table(
        pa.table({"text": [f"doc {i}" for i in range(n)], "id": [f"id-{i}" for i in range(n)]}),
        os.path.join(src, "a.parquet"),
    )
    pq.write_table(
        pa.table({"text": ["x", "y"], "id": pa.array(["id-x", None], pa.string())}), os.path.join(src, "b.parquet")
    )
    root = os.path.join(str(tmp_path), "root")
    os.makedirs(root)
    with pytest.raises(ArmsError, match=r"b\.parquet has 1 rows without an id in column 'id'"):
        run(src, root, ratio=0.5, rows_per_shard=50)
    assert leftovers(root) == []


def test_output_does_not_depend_on_buckets_units_or_spill_flushes(
    source: str, baseline: dict[str, Any], tmp_path: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The memory bound's knobs, turned down so a tiny dataset uses many buckets, units and flushes."""
    from ansible.module_utils import arms_shard

    monkeypatch.setattr(arms_shard, "BUCKET_TARGET_BYTES", 16 * 1024)  # ~16 buckets
    monkeypatch.setattr(arms_shard, "UNIT_TARGET_BYTES", 100 * 1024)  # several units per file
    monkeypatch.setattr(arms_shard, "SPILL_FLUSH_BYTES", 8 * 1024)  # a flush every batch or so
    monkeypatch.setattr(arms_shard, "BATCH_ROWS", 64)
    result = run(source, str(tmp_path), val_fraction=0.1)
    manifest = json.load(open(result["manifest"]))
    assert manifest["stats"]["buckets"] >= 16
    assert file_digests(result["data_dir"]) == baseline["files"]
