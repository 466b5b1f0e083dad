"""The synthetic fineweb-edu-fortified stand-in: its shape, its determinism, its CLI."""

from __future__ import annotations

import hashlib
import os
import re
import subprocess
import sys

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from ansible.module_utils.arms_source import _card_configs, resolve_source
from arms_fixture import EMBEDDING_DIM, SCHEMA, dump_names, make_fixture
from modtest import ROOT


def digest_tree(root: str) -> dict[str, str]:
    out = {}
    for folder, _, files in os.walk(root):
        for name in files:
            path = os.path.join(folder, name)
            with open(path, "rb") as fh:
                out[os.path.relpath(path, root)] = hashlib.sha256(fh.read()).hexdigest()
    return out


@pytest.fixture(scope="module")
def fixture_dir(tmp_path_factory: pytest.TempPathFactory) -> str:
    out = str(tmp_path_factory.mktemp("fx") / "fortified")
    make_fixture(out, 3000, files_per_dump=2, dumps=3, seed=5, text_bytes_mean=3000, row_group_rows=500)
    return out


def test_layout_is_the_hub_repos_ordered_by_dump(fixture_dir: str) -> None:
    dumps = dump_names(3)
    assert dumps == ["CC-MAIN-2013-20", "CC-MAIN-2013-48", "CC-MAIN-2014-10"]
    for dump in dumps:
        files = sorted(os.listdir(os.path.join(fixture_dir, "data", dump)))
        assert files == ["train-00000-of-00002.parquet", "train-00001-of-00002.parquet"]
        for name in files:
            table = pq.read_table(os.path.join(fixture_dir, "data", dump, name), columns=["dump"])
            assert set(table["dump"].to_pylist()) == {dump}
    with open(os.path.join(fixture_dir, "README.md"), encoding="utf-8") as fh:
        configs = _card_configs(fh.read())
    assert configs == {d: {"train": [f"data/{d}/train-*"]} for d in dumps}


def test_schema_row_groups_and_values_look_like_the_dataset(fixture_dir: str) -> None:
    path = os.path.join(fixture_dir, "data", "CC-MAIN-2013-20", "train-00000-of-00002.parquet")
    pf = pq.ParquetFile(path)
    assert pf.schema_arrow.names == SCHEMA.names
    assert [str(f.type) for f in pf.schema_arrow][:10] == [
        "string", "string", "string", "string", "string", "string", "double", "int64", "double", "int64",
    ]  # fmt: skip
    assert pa.types.is_list(pf.schema_arrow.field("embedding").type)
    assert pf.metadata.num_rows == 500 and pf.metadata.num_row_groups == 1
    table = pf.read()
    emb = table["embedding"].combine_chunks()
    assert emb.type.value_type == pa.float32()
    assert set(np.diff(emb.offsets.to_numpy())) == {EMBEDDING_DIM}
    ids = table["id"].to_pylist()
    assert len(set(ids)) == len(ids)
    assert all(
        re.fullmatch(r"<urn:uuid:[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}>", i) for i in ids
    )
    assert all(u.startswith("https://") for u in table["url"].to_pylist())
    assert set(table["language"].to_pylist()) == {"en"}
    assert table["int_score"].to_pylist() == [round(s) for s in table["score"].to_pylist()]


def test_text_lengths_are_realistic_and_valid_utf8(fixture_dir: str) -> None:
    src = resolve_source(fixture_dir)
    texts = [t for p in src.parts for t in pq.read_table(p.path, columns=["text"])["text"].to_pylist()]
    lengths = np.array([len(t.encode("utf-8")) for t in texts])
    assert len(texts) == 3000 and all(t for t in texts)
    assert 0.85 * 3000 < lengths.mean() < 1.15 * 3000
    assert np.mean((lengths >= 1000) & (lengths <= 10_000)) > 0.6  # mostly 1-10 KB ...
    assert lengths.max() > 4 * np.median(lengths)  # ... with a long tail
    assert any("é" in t for t in texts)  # multi-byte characters survive the cutting


def test_same_arguments_give_byte_identical_files_whatever_the_workers(tmp_path: str) -> None:
    a, b, c = (os.path.join(str(tmp_path), n) for n in "abc")
    make_fixture(a, 600, files_per_dump=2, dumps=2, seed=11, text_bytes_mean=800, workers=1)
    make_fixture(b, 600, files_per_dump=2, dumps=2, seed=11, text_bytes_mean=800, workers=2)
    make_fixture(c, 600, files_per_dump=2, dumps=2, seed=12, text_bytes_mean=800, workers=1)
    assert digest_tree(a) == digest_tree(b)
    da, dc = digest_tree(a), digest_tree(c)
    assert da.keys() == dc.keys() and all(da[k] != dc[k] for k in da if k.endswith(".parquet"))


def test_cli_writes_the_dataset_and_refuses_bad_numbers(tmp_path: str) -> None:
    script = os.path.join(ROOT, "scripts", "make_fixture_dataset.py")
    out = os.path.join(str(tmp_path), "cli")
    args = ["--out", out, "--rows", "120", "--files-per-dump", "1", "--dumps", "2", "--seed", "1"]
    proc = subprocess.run([sys.executable, script, *args, "--text-bytes-mean", "500"], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    assert "wrote 2 files, 120 rows" in proc.stdout
    assert sorted(os.listdir(os.path.join(out, "data"))) == ["CC-MAIN-2013-20", "CC-MAIN-2013-48"]
    bad = subprocess.run([sys.executable, script, "--out", out, "--rows", "0"], capture_output=True, text=True)
    assert bad.returncode == 1 and "error:" in bad.stderr and "Traceback" not in bad.stderr
