"""The nanochat_random_subset module: its documented interface, check mode, results and failures."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
import yaml
from arms_fixture import make_fixture
from modtest import ROOT, documented_options, load_module, run_module

NAME = "nanochat_random_subset"


@pytest.fixture(scope="module")
def source(tmp_path_factory: pytest.TempPathFactory) -> str:
    out = str(tmp_path_factory.mktemp("src") / "fortified")
    make_fixture(out, 1200, files_per_dump=1, dumps=2, seed=4, text_bytes_mean=500, row_group_rows=200)
    return out


def args(source: str, root: str, **extra: object) -> dict[str, object]:
    return {
        "dataset": source,
        "data_dir": os.path.join(root, "base_data"),
        "ratio": 0.4,
        "rows_per_shard": 60,
        "world_size": 4,
        "val_fraction": 0.1,
        "workers": 1,
        **extra,
    }


def test_documentation_matches_the_argument_spec_and_the_playbooks_interface() -> None:
    mod = load_module(NAME)
    _, argspec = documented_options(NAME)
    assert argspec["hf_token"].get("no_log") is True
    # the names the lead's playbook calls
    for name in ("dataset", "config", "split", "ratio", "seed", "data_dir", "rows_per_shard", "world_size",
                 "val_fraction", "val_dir", "text_column", "id_column", "extra_columns", "workers", "force",
                 "hf_token", "progress_file", "work_dir"):  # fmt: skip
        assert name in argspec
    returned = yaml.safe_load(mod.RETURN)
    for key in ("data_dir", "manifest", "shards", "train_rows", "val_rows", "rows_read", "realised_fraction",
                "val_shard", "val_artifact", "resumed", "msg"):  # fmt: skip
        assert key in returned
    assert isinstance(yaml.safe_load(mod.EXAMPLES), list)
    assert "BLAKE2b" in mod.DOCUMENTATION and "tiny tail" in mod.DOCUMENTATION


def test_renders_with_ansible_doc() -> None:
    doc = os.path.join(os.path.dirname(sys.executable), "ansible-doc")
    proc = subprocess.run([doc, "-M", os.path.join(ROOT, "library"), NAME], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    assert "rows_per_shard" in proc.stdout and "world_size" in proc.stdout


def test_check_mode_writes_nothing_then_a_run_then_unchanged(
    source: str, tmp_path: str, capsys: pytest.CaptureFixture[str]
) -> None:
    root = str(tmp_path)
    predicted = run_module(NAME, args(source, root), capsys, check_mode=True)
    assert predicted["changed"] and not predicted.get("failed")
    assert predicted["msg"].startswith("would write")
    assert os.listdir(root) == []

    done = run_module(NAME, args(source, root), capsys)
    assert done["changed"] and not done.get("failed")
    assert done["shards"] == len([n for n in os.listdir(done["data_dir"]) if n.endswith(".parquet")])
    assert done["val_shard"] == os.path.join(root, "base_data", "shard_val.parquet")
    assert done["val_artifact"] == os.path.join(root, "arms_val", "shard_val.parquet")
    assert 0.35 < done["realised_fraction"] < 0.45 and done["rows_read"] == 1200
    assert done["resumed"] is False
    assert json.load(open(done["manifest"]))["totals"]["rows"] == done["train_rows"] + done["val_rows"]

    again = run_module(NAME, args(source, root), capsys)
    assert not again["changed"] and again["train_rows"] == done["train_rows"]
    checked = run_module(NAME, args(source, root), capsys, check_mode=True)
    assert not checked["changed"]


def test_failures_are_sentences_without_traceback_or_token(
    source: str, tmp_path: str, capsys: pytest.CaptureFixture[str]
) -> None:
    root = str(tmp_path)
    token = "hf_ModuleTestSecret123"
    bad = run_module(NAME, args(source, root, text_column="content", hf_token=token), capsys)
    assert bad["failed"]
    assert "has no column 'content' (named by text_column)" in bad["msg"]
    assert "Traceback" not in bad["msg"]
    assert os.listdir(root) == []

    ok = run_module(NAME, args(source, root, hf_token=token), capsys)
    assert ok["changed"] and token not in json.dumps(ok)
    refused = run_module(NAME, args(source, root, ratio=0.2), capsys)
    # a playbook user reads the task argument to set, not a CLI flag or the Python API's spelling
    assert (
        refused["failed"]
        and "run it again with -e arms_force_prepare=true (the task's force) to replace it" in refused["msg"]
    )
    assert "--force" not in refused["msg"] and "force=true" not in refused["msg"]
    forced = run_module(NAME, args(source, root, ratio=0.2, force=True), capsys)
    assert forced["changed"] and not forced.get("failed")


def test_a_ratio_out_of_range_fails_before_anything_is_read(tmp_path: str, capsys: pytest.CaptureFixture[str]) -> None:
    result = run_module(NAME, {"dataset": "owner/name", "data_dir": str(tmp_path), "ratio": 1.5}, capsys)
    assert result["failed"] and result["msg"].startswith("ratio must be in (0, 1]")
