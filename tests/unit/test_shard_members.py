"""Several data dirs from one read of a shared source (prepare_random_subsets), on real parquet files.

What a user notices: each member's shards are the bytes the single form makes, the source is read once
for all of them, the shared validation rows are in no other member's shards, a killed run resumes to
the same bytes, a complete family does not touch the source, and bad members are refused up front.
"""

from __future__ import annotations

import glob
import json
import os
import shutil
import subprocess
import sys
import time
from typing import Any

import pyarrow.parquet as pq
import pytest
from ansible.module_utils.arms_common import ArmsError
from ansible.module_utils.arms_shard import (
    Member,
    Options,
    members_from_dicts,
    prepare_random_subset,
    prepare_random_subsets,
)
from ansible.module_utils.arms_source import resolve_source
from modtest import ROOT, run_module
from test_shard_resume import digests

SOURCE = {"rows": 3000, "files_per_dump": 3, "dumps": 2, "seed": 31, "text_bytes_mean": 400, "row_group_rows": 250}
SHARED = {"rows_per_shard": 90, "world_size": 4}
OWNER = {"seed": 7, "ratio": 0.3, "val_fraction": 0.1}
# the owner first (it makes the shared val shard), another seed, and another ratio of the owner's seed
SPECS: list[dict[str, Any]] = [
    {"name": "random30", **OWNER},
    {"name": "random30-s8", "seed": 8, "ratio": 0.3, "val_fraction": 0.1, "exclude_val_of": OWNER},
    {"name": "random50", "seed": 7, "ratio": 0.5, "val_fraction": 0.0, "exclude_val_of": OWNER},
]


def members(dataset: str, root: str, workers: int = 1, specs: list[dict[str, Any]] | None = None) -> list[Member]:
    out = []
    for spec in specs or SPECS:
        name = spec["name"]
        data_dir = os.path.join(root, name, "base_data")
        entry = {**spec, "data_dir": data_dir, "val_dir": os.path.join(root, name, "val")}
        out.append(Member(name, Options(dataset=dataset, workers=workers, **SHARED, **_opts(entry))))
    return out


def _opts(entry: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in entry.items() if k != "name"}


def single(dataset: str, root: str, spec: dict[str, Any], workers: int = 1) -> dict[str, Any]:
    """The same data dir made alone by the single form."""
    name = spec["name"]
    opts = Options(
        dataset=dataset,
        data_dir=os.path.join(root, name, "base_data"),
        val_dir=os.path.join(root, name, "val"),
        workers=workers,
        **SHARED,
        **_opts(spec),
    )
    return prepare_random_subset(opts)


def texts(folder: str, pattern: str = "*.parquet") -> set[str]:
    out: set[str] = set()
    for path in glob.glob(os.path.join(folder, pattern)):
        out |= set(pq.read_table(path, columns=["text"]).column("text").to_pylist())
    return out


def source_rows(dataset: str) -> int:
    return sum(pq.ParquetFile(p.path).metadata.num_rows for p in resolve_source(dataset).parts)


def manifest(data_dir: str) -> dict[str, Any]:
    with open(os.path.join(data_dir, "manifest.json"), encoding="utf-8") as fh:
        return json.load(fh)


@pytest.fixture(scope="module")
def singles(source: str, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """Every member made alone (single form, one worker): the bytes a members run must reproduce."""
    root = str(tmp_path_factory.mktemp("singles"))
    results = {spec["name"]: single(source, root, spec) for spec in SPECS}
    files = {name: digests(r["data_dir"]) for name, r in results.items()}
    return {"root": root, "results": results, "files": files}


@pytest.fixture(scope="module")
def together(source: str, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    root = str(tmp_path_factory.mktemp("together"))
    return {"root": root, "result": prepare_random_subsets(members(source, root), progress_file=f"{root}/p.json")}


# ------------------------------------------------------------------------------------ same bytes, one read


@pytest.mark.parametrize("workers", [1, 2])
def test_each_member_is_byte_identical_to_the_single_form(
    source: str, singles: dict[str, Any], tmp_path: str, workers: int
) -> None:
    result = prepare_random_subsets(members(source, str(tmp_path), workers))
    assert result["changed"] and [m["name"] for m in result["members"]] == [s["name"] for s in SPECS]
    for got in result["members"]:
        name = got["name"]
        assert digests(got["data_dir"]) == singles["files"][name], f"{name}: other bytes than the single form"
        alone = singles["results"][name]
        assert (got["train_rows"], got["val_rows"], got["shards"]) == (
            alone["train_rows"],
            alone["val_rows"],
            alone["shards"],
        )
        assert manifest(got["data_dir"])["params"] == manifest(alone["data_dir"])["params"]
    # the owner's validation artifact is the one other arms receive: the same file as made alone
    owner = result["members"][0]
    assert digests(os.path.dirname(owner["val_artifact"])) == {
        "shard_val.parquet": singles["files"]["random30"]["shard_val.parquet"]
    }


def test_a_member_without_exclusion_is_todays_data_dir(source: str, singles: dict[str, Any], tmp_path: str) -> None:
    # the owner (and any single data dir) has no excludes_val_of: its params are those made before this option
    params = manifest(singles["results"]["random30"]["data_dir"])["params"]
    assert "excludes_val_of" not in params
    assert set(params) == {
        "ratio",
        "seed",
        "rows_per_shard",
        "world_size",
        "val_fraction",
        "text_column",
        "id_column",
        "extra_columns",
        "compression",
        "rule",
    }
    one = prepare_random_subsets(members(source, str(tmp_path), specs=SPECS[:1]))
    assert digests(one["members"][0]["data_dir"]) == singles["files"]["random30"]


def test_the_source_is_read_once_for_all_members(source: str, together: dict[str, Any]) -> None:
    result = together["result"]
    rows = source_rows(source)
    files = len(resolve_source(source).parts)
    # one read: the rows of the source once, each unit (here: each small file) once, not once per member
    assert result["source_rows_read"] == rows
    assert result["source_units_read"] == files
    for member in result["members"]:
        assert member["rows_read"] == rows  # each member's manifest still describes the whole source it sampled
    lines = result["msg"].splitlines()
    assert [line.split(":")[0] for line in lines] == [s["name"] for s in SPECS]
    progress = json.load(open(os.path.join(together["root"], "p.json"), encoding="utf-8"))
    assert progress["finished"] and progress["phase"] == "done"
    assert progress["total"] == sum(m["shards"] for m in result["members"])


def test_the_owners_validation_rows_are_in_no_other_members_shards(
    source: str, together: dict[str, Any], singles: dict[str, Any], tmp_path: str
) -> None:
    result = together["result"]
    owner, others = result["members"][0], result["members"][1:]
    val = texts(owner["data_dir"], "shard_val.parquet")
    assert len(val) == owner["val_rows"] > 0
    for member in others:
        assert not val & texts(member["data_dir"]), f"{member['name']} trains on the shared validation rows"
        m = manifest(member["data_dir"])
        assert {k: m["params"]["excludes_val_of"][k] for k in OWNER} == OWNER
        assert m["stats"]["rows_excluded_val"] > 0
    # without the exclusion the other seed would hold about ratio of them (and ratio 0.5 at the owner's
    # seed, all of them): the exclusion is what keeps them out
    plain = single(source, str(tmp_path), {k: v for k, v in SPECS[1].items() if k != "exclude_val_of"})
    assert len(val & texts(plain["data_dir"])) > 0
    wider = single(source, str(tmp_path), {k: v for k, v in SPECS[2].items() if k != "exclude_val_of"})
    assert val <= texts(wider["data_dir"])


def test_a_data_dir_made_without_the_exclusion_is_refused_as_other_parameters(source: str, tmp_path: str) -> None:
    root = str(tmp_path)
    single(source, root, {k: v for k, v in SPECS[1].items() if k != "exclude_val_of"})
    with pytest.raises(ArmsError, match=r"^random30-s8: .* holds shards made with other parameters \(excludes_val_of"):
        prepare_random_subsets(members(source, root))
    # refused before anything is written: no other member's data dir was started
    assert not os.path.exists(os.path.join(root, "random30"))


# ---------------------------------------------------------------------------------------- complete, resume


def test_a_complete_family_does_not_read_the_source(source: str, tmp_path: str) -> None:
    copy = os.path.join(str(tmp_path), "src")
    shutil.copytree(source, copy)
    root = os.path.join(str(tmp_path), "out")
    first = prepare_random_subsets(members(copy, root))
    shutil.rmtree(copy)  # a re-run that needed the source would now fail
    again = prepare_random_subsets(members(copy, root))
    assert not again["changed"] and again["source_rows_read"] == 0 and again["source_units_read"] == 0
    for before, after in zip(first["members"], again["members"], strict=True):
        assert not after["changed"] and "is complete and verified" in after["msg"]
        assert after["train_rows"] == before["train_rows"]


def test_only_the_incomplete_member_is_made_and_the_others_are_left_alone(
    source: str, singles: dict[str, Any], tmp_path: str
) -> None:
    root = str(tmp_path)
    prepare_random_subsets(members(source, root, specs=SPECS[:2]))
    result = prepare_random_subsets(members(source, root))
    changed = {m["name"]: m["changed"] for m in result["members"]}
    assert changed == {"random30": False, "random30-s8": False, "random50": True}
    assert result["source_rows_read"] == source_rows(source)
    assert digests(result["members"][2]["data_dir"]) == singles["files"]["random50"]


# many small shards so that the run lasts long enough to be killed while writing them
KILL_SHARED = {"rows_per_shard": 8, "world_size": 2}

RUNNER = """
import json, sys
sys.path.insert(0, {scripts!r})
import _arms_path  # noqa: F401
from ansible.module_utils.arms_shard import Member, Options, prepare_random_subsets
specs = json.loads(sys.argv[1])
ms = [Member(s.pop("name"), Options(**s)) for s in specs]
print(json.dumps(prepare_random_subsets(ms)))
"""


def _kill_specs(source: str, root: str) -> list[dict[str, Any]]:
    out = []
    for spec in SPECS:
        name = spec["name"]
        out.append(
            {
                **spec,
                **KILL_SHARED,
                "dataset": source,
                "workers": 1,
                "data_dir": os.path.join(root, name, "base_data"),
                "val_dir": os.path.join(root, name, "val"),
            }
        )
    return out


def _in_process(specs: list[dict[str, Any]]) -> dict[str, Any]:
    ms = [Member(s["name"], Options(**{k: v for k, v in s.items() if k != "name"})) for s in specs]
    return prepare_random_subsets(ms)


def test_a_killed_run_resumes_to_the_same_bytes(source: str, tmp_path: str) -> None:
    ref_root = os.path.join(str(tmp_path), "ref")
    reference = _in_process(_kill_specs(source, ref_root))
    want = {m["name"]: digests(m["data_dir"]) for m in reference["members"]}
    assert sum(len(files) for files in want.values()) > 300

    root = os.path.join(str(tmp_path), "run")
    specs = _kill_specs(source, root)
    runner = os.path.join(str(tmp_path), "runner.py")
    with open(runner, "w", encoding="utf-8") as fh:
        fh.write(RUNNER.format(scripts=os.path.join(ROOT, "scripts")))
    proc = subprocess.Popen([sys.executable, runner, json.dumps(specs)], stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    first = os.path.join(root, "random30", "base_data")
    deadline = time.time() + 60
    try:
        while len(glob.glob(os.path.join(first, "shard_0*.parquet"))) < 3:
            assert proc.poll() is None, f"the run ended before it could be killed: {proc.stderr.read()!r}"
            assert time.time() < deadline, "the run never reached the point to kill it at"
            time.sleep(0.005)
    finally:
        proc.kill()
        proc.wait()
    # killed while writing the first member's shards: every member's spill is done, no manifest yet
    assert not os.path.exists(os.path.join(first, "manifest.json"))
    # and one member had not spilled one unit yet (as a kill in pass 1 between two members leaves it)
    spill = os.path.join(root, "random30-s8", ".arms-work-base_data", "spill")
    os.unlink(os.path.join(spill, "u000002.json"))
    os.unlink(os.path.join(spill, "u000002.arrow"))

    result = _in_process(specs)
    assert result["changed"] and all(m["resumed"] for m in result["members"])
    assert result["source_units_read"] == 1  # only the unit that member lacked, and only for it
    assert {m["name"]: digests(m["data_dir"]) for m in result["members"]} == want
    assert not glob.glob(os.path.join(root, "*", ".arms-work-*"))


# ---------------------------------------------------------------------------------------------- refusals

BAD = [
    ({"ratio": 1.5}, r"^member random30-s8: ratio must be in \(0, 1\]"),
    ({"name": "random30"}, r"^member random30 appears twice"),
    ({"data_dir": "{root}/random30/base_data"}, r"would write into the same folder"),
    ({"data_dir": "{root}/random30/base_data/inner"}, r"would write into the same folder"),
    ({"data_dir": "{root}/x/../escaped/base_data"}, r"climbs out of the folder it names"),
    ({"exclude_val_of": {"seed": 8, "ratio": 0.3, "val_fraction": 0.1}}, r"names this data dir's own sampling"),
    ({"exclude_val_of": {"seed": 7, "ratio": 0.3, "val_fraction": 0}}, r"val_fraction 0 is not in \(0, 1\)"),
    ({"exclude_val_of": {"seed": 7}}, r"exclude_val_of must be \{seed"),
]


@pytest.mark.parametrize(("change", "sentence"), BAD)
def test_bad_members_are_refused_before_anything_is_written(
    source: str, tmp_path: str, change: dict[str, Any], sentence: str
) -> None:
    root = str(tmp_path)
    ms = members(source, root)
    bad_spec = {**SPECS[1], **{k: v.format(root=root) if isinstance(v, str) else v for k, v in change.items()}}
    if "data_dir" in bad_spec:
        bad = Member(bad_spec["name"], Options(dataset=source, **SHARED, **_opts(bad_spec)))
    else:
        bad = members(source, root, specs=[bad_spec])[0]
    with pytest.raises(ArmsError, match=sentence):
        prepare_random_subsets([ms[0], bad, ms[2]])
    assert os.listdir(root) == []


def test_members_from_the_task_refuse_single_form_options_and_read_templated_numbers(source: str) -> None:
    with pytest.raises(ArmsError, match=r"^data_dir, seed cannot be given with members"):
        members_from_dicts({"dataset": source, "data_dir": "/x", "seed": 3}, [{"name": "a"}])
    with pytest.raises(ArmsError, match=r"members\[0\] lacks seed, ratio, data_dir"):
        members_from_dicts({"dataset": source}, [{"name": "a"}])
    with pytest.raises(ArmsError, match=r"members\[0\] has unknown keys color"):
        members_from_dicts({"dataset": source}, [{"name": "a", "seed": 1, "ratio": 0.1, "data_dir": "/d", "color": 1}])
    got = members_from_dicts(
        {"dataset": source, "rows_per_shard": 10, "world_size": 2},
        [
            {
                "name": "a",
                "seed": "43",
                "ratio": "0.25",
                "data_dir": "/d",
                "exclude_val_of": {"seed": "42", "ratio": "0.25", "val_fraction": "0.01"},
            }
        ],
    )
    assert got[0].opts.seed == 43 and got[0].opts.ratio == 0.25 and got[0].opts.rows_per_shard == 10
    assert got[0].opts.exclude_val_of == {"seed": 42, "ratio": 0.25, "val_fraction": 0.01}
    own = members_from_dicts(
        {"dataset": source, "rows_per_shard": 10},
        [{"name": "a", "seed": 1, "ratio": 0.1, "data_dir": "/d", "rows_per_shard": "7"}],
    )
    assert own[0].opts.rows_per_shard == 7  # a member's own rows_per_shard (the playbook passes each arm's)


def test_the_module_takes_members_and_reports_each(
    source: str, singles: dict[str, Any], tmp_path: str, capsys: pytest.CaptureFixture[str]
) -> None:
    root = str(tmp_path)
    entries = [
        {
            **spec,
            "data_dir": os.path.join(root, spec["name"], "base_data"),
            "val_dir": os.path.join(root, spec["name"], "val"),
        }
        for spec in SPECS
    ]
    args = {"dataset": source, "workers": 1, **SHARED, "members": entries, "progress_file": f"{root}/job.json"}
    done = run_module("nanochat_random_subset", args, capsys)
    assert done["changed"] and not done.get("failed")
    assert [m["name"] for m in done["members"]] == [s["name"] for s in SPECS]
    assert {m["name"]: digests(m["data_dir"]) for m in done["members"]} == singles["files"]
    again = run_module("nanochat_random_subset", args, capsys)
    assert not again["changed"] and again["source_rows_read"] == 0
    mixed = run_module("nanochat_random_subset", {**args, "ratio": 0.2}, capsys)
    assert mixed["failed"] and mixed["msg"].startswith("ratio cannot be given with members")
