"""Resolving a dataset (local path or hub id) to the parquet files of one config and split."""

from __future__ import annotations

import json
import os
import shutil
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from ansible.module_utils import arms_source
from ansible.module_utils.arms_common import ArmsError
from ansible.module_utils.arms_source import (
    all_part_facts,
    check_columns,
    open_parquet,
    part_facts,
    resolve_source,
)
from arms_fixture import make_fixture
from fsspec.implementations.dirfs import DirFileSystem
from fsspec.implementations.local import LocalFileSystem

DUMPS = ["CC-MAIN-2013-20", "CC-MAIN-2013-48"]


@pytest.fixture(scope="module")
def fortified(tmp_path_factory: pytest.TempPathFactory) -> str:
    out = str(tmp_path_factory.mktemp("src") / "fortified")
    make_fixture(out, 400, files_per_dump=2, dumps=2, seed=3, text_bytes_mean=400, row_group_rows=50)
    return out


def write_parquet(path: str, n: int = 3, **columns: list[Any]) -> None:
    os.makedirs(os.path.dirname(path), exist_ok=True)
    cols = columns or {"text": [f"t{i}" for i in range(n)], "id": [f"i{i}" for i in range(n)]}
    pq.write_table(pa.table(cols), path)


def rel(parts: list[arms_source.Part], root: str) -> list[str]:
    return [os.path.relpath(p.path, root) for p in parts]


def test_a_folder_with_a_dataset_card_resolves_configs_like_the_hub(fortified: str) -> None:
    every = resolve_source(fortified)
    assert every.kind == "local" and every.config is None
    assert rel(every.parts, fortified) == [f"data/{d}/train-0000{i}-of-00002.parquet" for d in DUMPS for i in (0, 1)]
    one = resolve_source(fortified, config="CC-MAIN-2013-48")
    assert rel(one.parts, fortified) == [f"data/CC-MAIN-2013-48/train-0000{i}-of-00002.parquet" for i in (0, 1)]


def test_unknown_config_and_split_name_what_exists(fortified: str) -> None:
    with pytest.raises(
        ArmsError, match=r"no config 'CC-MAIN-2099-01'; its configs are CC-MAIN-2013-20, CC-MAIN-2013-48"
    ):
        resolve_source(fortified, config="CC-MAIN-2099-01")
    with pytest.raises(ArmsError, match=r"no split 'test' in any config; it has train"):
        resolve_source(fortified, split="test")


def test_a_plain_folder_takes_splits_from_file_names(tmp_path: str) -> None:
    root = str(tmp_path)
    write_parquet(os.path.join(root, "a", "train-00000.parquet"))
    write_parquet(os.path.join(root, "a", "train-00001.parquet"))
    write_parquet(os.path.join(root, "b", "test-00000.parquet"))
    write_parquet(os.path.join(root, "validation", "part-0.parquet"))
    assert rel(resolve_source(root).parts, root) == ["a/train-00000.parquet", "a/train-00001.parquet"]
    assert rel(resolve_source(root, split="test").parts, root) == ["b/test-00000.parquet"]
    assert rel(resolve_source(root, split="validation").parts, root) == ["validation/part-0.parquet"]
    with pytest.raises(ArmsError, match="no split 'dev'; it has test, train, validation"):
        resolve_source(root, split="dev")
    with pytest.raises(ArmsError, match="defines no configs"):
        resolve_source(root, config="x")


def test_files_named_for_no_split_are_all_train(tmp_path: str) -> None:
    root = str(tmp_path)
    write_parquet(os.path.join(root, "shard_00000.parquet"))
    write_parquet(os.path.join(root, "sub", "shard_00001.parquet"))
    assert rel(resolve_source(root).parts, root) == ["shard_00000.parquet", "sub/shard_00001.parquet"]


def test_a_file_and_a_glob_are_taken_as_given(fortified: str) -> None:
    path = os.path.join(fortified, "data", DUMPS[0], "train-00000-of-00002.parquet")
    assert [p.path for p in resolve_source(path).parts] == [path]
    globbed = resolve_source(os.path.join(fortified, "data", "*", "train-00001-*.parquet"))
    assert [os.path.basename(os.path.dirname(p.path)) for p in globbed.parts] == DUMPS
    with pytest.raises(ArmsError, match="not to one file"):
        resolve_source(path, config=DUMPS[0])
    with pytest.raises(ArmsError, match="matches no parquet file"):
        resolve_source(os.path.join(fortified, "nothing-*.parquet"))


@pytest.mark.parametrize("dataset", ["/no/such/folder", "./missing.parquet", "not a dataset"])
def test_a_missing_local_path_is_a_sentence(dataset: str) -> None:
    with pytest.raises(ArmsError, match="neither an existing local path nor a hub dataset id"):
        resolve_source(dataset)


def test_an_empty_folder_is_a_sentence(tmp_path: str) -> None:
    with pytest.raises(ArmsError, match="holds no parquet file"):
        resolve_source(str(tmp_path))


def test_footer_facts_and_missing_columns(fortified: str) -> None:
    src = resolve_source(fortified)
    facts = all_part_facts(src.parts)
    assert sum(f.rows for f in facts) == 400
    assert facts[0].row_groups == 2 and facts[0].row_group_rows == [50, 50]
    assert 0 < facts[0].column_bytes["text"] < facts[0].column_bytes["embedding"] * 2
    assert sum(facts[0].row_group_bytes("text")) == facts[0].column_bytes["text"]
    check_columns(src.parts, facts, {"text": "text_column", "id": "id_column"})
    with pytest.raises(ArmsError, match=r"has no column 'content' \(named by text_column\); it has count, dump"):
        check_columns(src.parts, facts, {"content": "text_column"})
    with pytest.raises(ArmsError, match=r"has no column 'doc_id' \(named by id_column\)"):
        check_columns(src.parts, facts, {"text": "text_column", "doc_id": "id_column"})


def test_a_file_that_is_not_parquet_is_a_sentence(tmp_path: str) -> None:
    path = os.path.join(str(tmp_path), "broken.parquet")
    with open(path, "wb") as fh:
        fh.write(b"not parquet at all")
    with pytest.raises(ArmsError, match="is not a readable parquet file"):
        part_facts(resolve_source(path).parts[0])


# ----------------------------------------------------------------------------------- the hub path
# There is no network here: the hub's HfFileSystem is replaced by a file system over a local folder
# laid out as the hub's ``datasets/<owner>/<name>/...``. Everything else (card parsing, globbing,
# footers, range reads through a file object) is the code that runs against the real hub.


class FakeHub:
    def __init__(self, root: str) -> None:
        self.root = root
        self.tokens: list[str | None] = []

    def __call__(self, token: str | None) -> Any:
        self.tokens.append(token)
        return DirFileSystem(path=self.root, fs=LocalFileSystem())


@pytest.fixture
def hub(fortified: str, tmp_path: str, monkeypatch: pytest.MonkeyPatch) -> FakeHub:
    root = os.path.join(str(tmp_path), "hub")
    shutil.copytree(fortified, os.path.join(root, "datasets", "airtrain-ai", "fineweb-edu-fortified"))
    fake = FakeHub(root)
    monkeypatch.setattr(arms_source, "hub_filesystem_factory", fake)
    monkeypatch.delenv("HF_TOKEN", raising=False)
    monkeypatch.delenv("HUGGINGFACE_HUB_TOKEN", raising=False)
    arms_source.set_hub_token(None)
    return fake


def test_hub_id_resolves_configs_and_reads_only_through_the_file_system(hub: FakeHub) -> None:
    src = resolve_source("airtrain-ai/fineweb-edu-fortified", config="CC-MAIN-2013-20", token="hf_explicit")
    assert src.kind == "hub" and src.describe()["dataset"] == "airtrain-ai/fineweb-edu-fortified"
    assert [p.path for p in src.parts] == [
        f"datasets/airtrain-ai/fineweb-edu-fortified/data/CC-MAIN-2013-20/train-0000{i}-of-00002.parquet"
        for i in (0, 1)
    ]
    assert all(p.hub and p.size for p in src.parts)
    assert hub.tokens == ["hf_explicit"]
    table = open_parquet(src.parts[0]).read(columns=["text", "id"])
    assert table.num_rows == 100 and table.column_names == ["text", "id"]


def test_hub_token_comes_from_the_environment(hub: FakeHub, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HUGGINGFACE_HUB_TOKEN", "hf_from_env")
    resolve_source("airtrain-ai/fineweb-edu-fortified")
    assert hub.tokens == ["hf_from_env"]


def test_unknown_hub_dataset_config_and_split_are_sentences(hub: FakeHub) -> None:
    with pytest.raises(ArmsError, match="hub dataset someone/nothing does not exist or is not visible"):
        resolve_source("someone/nothing")
    with pytest.raises(ArmsError, match="hub dataset airtrain-ai/fineweb-edu-fortified has no config 'x'"):
        resolve_source("airtrain-ai/fineweb-edu-fortified", config="x")
    with pytest.raises(ArmsError, match="has no split 'test'"):
        resolve_source("airtrain-ai/fineweb-edu-fortified", split="test")


def test_hub_failures_never_show_the_token(monkeypatch: pytest.MonkeyPatch) -> None:
    class Failing:
        def exists(self, path: str) -> bool:
            raise ConnectionError("401 for token hf_SECRETVALUE at https://example.invalid")

    monkeypatch.setattr(arms_source, "hub_filesystem_factory", lambda token: Failing())
    with pytest.raises(ArmsError) as err:
        resolve_source("owner/name", token="hf_SECRETVALUE")
    assert "hf_SECRETVALUE" not in str(err.value)
    assert "could not list hub dataset owner/name" in str(err.value)


def test_a_hub_dataset_is_sharded_exactly_like_the_same_files_on_disk(
    hub: FakeHub, fortified: str, tmp_path: str
) -> None:
    from ansible.module_utils.arms_shard import Options, prepare_random_subset

    common = {"ratio": 0.5, "rows_per_shard": 40, "world_size": 2, "val_fraction": 0.1}
    local = prepare_random_subset(
        Options(dataset=fortified, data_dir=os.path.join(str(tmp_path), "a", "d"), workers=1, **common)
    )
    remote = prepare_random_subset(
        Options(
            dataset="airtrain-ai/fineweb-edu-fortified",
            data_dir=os.path.join(str(tmp_path), "b", "d"),
            workers=2,  # forked workers open the hub through their own file system object
            hf_token="hf_worker_token",
            **common,
        )
    )
    assert json.load(open(remote["manifest"]))["source"]["kind"] == "hub"
    assert "hf_worker_token" not in open(remote["manifest"]).read()
    for name in sorted(os.listdir(local["data_dir"])):
        if name.endswith(".parquet"):
            with (
                open(os.path.join(local["data_dir"], name), "rb") as a,
                open(os.path.join(remote["data_dir"], name), "rb") as b,
            ):
                assert a.read() == b.read(), name
    assert hub.tokens == ["hf_worker_token"]  # (the workers made their own, in their own processes)
