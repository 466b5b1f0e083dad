"""The CORE eval bundle placed as real nanochat (b07604e) leaves it, from a local zip of the same shape."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
import zipfile
from pathlib import Path
from typing import Any

import pytest
from ansible.module_utils.arms_common import ArmsError
from ansible.module_utils.arms_eval_bundle import (
    RECORD,
    bundle_problems,
    bundle_url,
    check_bundle,
    core_metric_on,
    place_bundle,
)
from ansible.module_utils.arms_preflight import compare
from arms_fixture import write_eval_bundle
from modtest import run_module
from nanochat_real import nanochat_at_pin

HERE = os.path.dirname(os.path.abspath(__file__))
# what evaluate_core does when <base>/eval_bundle is missing, run from nanochat's own code (its own process:
# base_eval imports torch._dynamo, which does not load beside Ansible's module_utils)
NANOCHAT_FETCH = """
import sys
import nanochat_real
nanochat_real.hf_tokenizers_importable()
from scripts import base_eval
from nanochat.common import get_base_dir
get_base_dir()
base_eval.download_file_with_lock(sys.argv[1], "eval_bundle.zip", postprocess_fn=base_eval.place_eval_bundle)
"""

# the shape of nanochat's eval_bundle.zip: one eval_bundle/ folder with the files evaluate_core reads
FILES = {
    "eval_bundle/core.yaml": "icl_tasks:\n- label: jeopardy\n  dataset_uri: world_knowledge/jeopardy_all.jsonl\n",
    "eval_bundle/eval_meta_data.csv": "Eval Task,Random baseline\njeopardy,0\n",
    "eval_bundle/eval_data/world_knowledge/jeopardy_all.jsonl": '{"context": "Q", "continuation": "A"}\n',
}


def make_zip(path: Path, files: dict[str, str] = FILES) -> str:
    with zipfile.ZipFile(path, "w") as zf:
        for name, text in files.items():
            zf.writestr(name, text)
    return hashlib.sha256(path.read_bytes()).hexdigest()


def tree(folder: Path) -> dict[str, bytes]:
    return {
        str(p.relative_to(folder)): p.read_bytes()
        for p in sorted(folder.rglob("*"))
        if p.is_file() and p.name != RECORD
    }


@pytest.fixture(scope="module")
def checkout(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return nanochat_at_pin(tmp_path_factory)


def test_placed_exactly_where_and_as_nanochat_leaves_it_so_it_never_downloads(checkout: Path, tmp_path: Path) -> None:
    zip_path = tmp_path / "eval_bundle.zip"
    sha = make_zip(zip_path)
    ours, theirs = tmp_path / "ours", tmp_path / "theirs"
    result = place_bundle(str(ours), str(zip_path))
    assert result["changed"] and result["sha256"] == sha and result["files"] == 3
    # nanochat's own fetch: evaluate_core's download_file_with_lock + place_eval_bundle, the URL a local file
    env = {**os.environ, "NANOCHAT_BASE_DIR": str(theirs), "PYTHONPATH": f"{checkout}{os.pathsep}{HERE}"}
    proc = subprocess.run([sys.executable, "-c", NANOCHAT_FETCH, zip_path.as_uri()], cwd=checkout, env=env, text=True)
    assert proc.returncode == 0
    # eval_bundle.zip and eval_bundle/... byte for byte (nanochat also leaves its empty download lock file)
    assert tree(ours) == {k: v for k, v in tree(theirs).items() if k != "eval_bundle.zip.lock"}
    assert sorted(os.listdir(ours)) == ["eval_bundle", "eval_bundle.zip"]
    # evaluate_core downloads only when this folder is missing
    assert os.path.exists(os.path.join(str(ours), "eval_bundle"))


def test_a_second_run_changes_nothing_and_check_reports_the_checksum(tmp_path: Path) -> None:
    zip_path = tmp_path / "b.zip"
    sha = make_zip(zip_path)
    base = str(tmp_path / "base")
    assert place_bundle(base, str(zip_path))["changed"]
    before = os.stat(os.path.join(base, "eval_bundle", "core.yaml")).st_mtime_ns
    assert place_bundle(base, str(zip_path)) == {**place_bundle(base, str(zip_path)), "changed": False}
    assert place_bundle(base, "file:///nonexistent/never-fetched.zip", expected_sha256=sha)["changed"] is False
    assert os.stat(os.path.join(base, "eval_bundle", "core.yaml")).st_mtime_ns == before
    assert check_bundle(base, sha) == {**check_bundle(base, sha), "matches": True, "sha256": sha, "problems": []}
    other = check_bundle(base, "0" * 64)
    assert not other["matches"] and f"holds the bundle of a zip with sha256 {sha[:12]}" in other["problems"][0]


def test_a_changed_or_missing_bundle_is_reported_and_replaced_whole(tmp_path: Path) -> None:
    zip_path = tmp_path / "b.zip"
    sha = make_zip(zip_path)
    base = str(tmp_path / "base")
    assert not check_bundle(base)["matches"] and "base_train would download" in check_bundle(base)["problems"][0]
    place_bundle(base, zip_path.as_uri())  # a file:// URL stands in for nanochat's download URL
    (Path(base) / "eval_bundle" / "core.yaml").write_text("truncated")
    found = check_bundle(base, sha)
    assert not found["matches"] and "e.g. core.yaml" in found["problems"][0]
    assert place_bundle(base, str(zip_path))["changed"]
    assert check_bundle(base, sha)["matches"] and (Path(base) / "eval_bundle" / "core.yaml").read_text().startswith(
        "icl"
    )


def test_a_bundle_with_another_checksum_or_shape_is_refused_and_nothing_is_placed(tmp_path: Path) -> None:
    zip_path = tmp_path / "b.zip"
    make_zip(zip_path)
    base = tmp_path / "base"
    with pytest.raises(ArmsError, match="not the expected 000000000000 \\(the CPU node's\\)"):
        place_bundle(str(base), str(zip_path), expected_sha256="0" * 64)
    flat = tmp_path / "flat.zip"
    make_zip(flat, {k.removeprefix("eval_bundle/"): v for k, v in FILES.items()})
    with pytest.raises(ArmsError, match="does not hold an eval_bundle/ folder"):
        place_bundle(str(base), str(flat))
    assert not base.exists() or sorted(os.listdir(base)) == []
    with pytest.raises(ArmsError, match=r"could not download the eval bundle from file:///nowhere\.zip"):
        place_bundle(str(base), "file:///nowhere.zip")


def test_the_url_is_read_from_nanochats_own_code(checkout: Path) -> None:
    url = bundle_url(str(checkout))
    assert url.startswith("https://") and url.endswith("/eval_bundle.zip")


def test_the_module_places_checks_and_predicts_in_check_mode(tmp_path: Path, capsys: Any) -> None:
    zip_path = tmp_path / "b.zip"
    sha = make_zip(zip_path)
    base = str(tmp_path / "base")
    predicted = run_module("nanochat_eval_bundle", {"base_dir": base, "src": str(zip_path)}, capsys, check_mode=True)
    assert predicted["changed"] and not os.path.exists(base)
    placed = run_module("nanochat_eval_bundle", {"base_dir": base, "src": str(zip_path)}, capsys)
    assert placed["changed"] and placed["sha256"] == sha
    again = run_module("nanochat_eval_bundle", {"base_dir": base, "src": str(zip_path), "expected_sha256": sha}, capsys)
    assert again["changed"] is False
    checked = run_module("nanochat_eval_bundle", {"base_dir": base, "state": "check", "expected_sha256": sha}, capsys)
    assert checked["matches"] and not checked.get("failed")
    bad = run_module(
        "nanochat_eval_bundle", {"base_dir": base, "src": str(zip_path), "expected_sha256": "1" * 64}, capsys
    )
    assert bad["failed"] and "every arm host must evaluate CORE on the same bundle" in bad["msg"]


@pytest.mark.parametrize(
    ("flags", "on"),
    [
        ({}, True),  # nanochat's default: every 2000 steps (and at the last step)
        ({"max-seq-len": 64}, True),
        ({"core-metric-every": -1}, False),  # the lab
        ({"core_metric_every": "0"}, False),
        ({"core-metric-every": 2000}, True),
        (["--core-metric-every=500"], True),
    ],
)
def test_the_bundle_is_needed_when_the_flags_leave_the_core_metric_on(flags: Any, on: bool) -> None:
    assert core_metric_on(flags) is on


def test_a_url_is_fetched_once_by_the_cpu_node(tmp_path: Path) -> None:
    zip_path = tmp_path / "b.zip"
    sha = make_zip(zip_path)
    base = str(tmp_path / "base")
    assert place_bundle(base, zip_path.as_uri())["sha256"] == sha
    zip_path.unlink()  # a second fetch would fail now: it does not happen
    again = place_bundle(base, zip_path.as_uri())
    assert again["changed"] is False and again["sha256"] == sha
    assert check_bundle(base)["source"] == zip_path.as_uri()


def test_check_mode_predicts_a_zip_that_has_not_arrived_yet(tmp_path: Path, capsys: Any) -> None:
    args = {"base_dir": str(tmp_path / "base"), "src": str(tmp_path / "not-yet.zip"), "expected_sha256": "a" * 64}
    predicted = run_module("nanochat_eval_bundle", args, capsys, check_mode=True)
    assert predicted["changed"] and not predicted.get("failed") and not (tmp_path / "base").exists()


def test_with_the_core_metric_off_nothing_is_placed_unless_always(tmp_path: Path, capsys: Any) -> None:
    zip_path = tmp_path / "b.zip"
    sha = make_zip(zip_path)
    base = str(tmp_path / "base")
    off = {"base_dir": base, "src": str(zip_path), "extra_flags": {"core-metric-every": -1}}
    skipped = run_module("nanochat_eval_bundle", off, capsys)
    assert skipped["needed"] is False and skipped["changed"] is False and not os.path.exists(base)
    assert "the CORE metric is off" in skipped["msg"]
    assert run_module("nanochat_eval_bundle", {**off, "state": "check"}, capsys)["needed"] is False
    placed = run_module("nanochat_eval_bundle", {**off, "always": True}, capsys)
    assert placed["needed"] and placed["changed"] and placed["sha256"] == sha
    on = run_module("nanochat_eval_bundle", {**off, "extra_flags": {"eval-every": 250}}, capsys)
    assert on["needed"] and on["changed"] is False


def test_the_preflight_refuses_an_arm_host_without_the_cpu_nodes_bundle(tmp_path: Path) -> None:
    zip_path, other_zip = tmp_path / "b.zip", tmp_path / "other.zip"
    make_zip(zip_path)
    make_zip(other_zip, {**FILES, "eval_bundle/core.yaml": "icl_tasks: []\n"})
    cpu, good, other, changed, missing = (str(tmp_path / n) for n in ("cpu", "good", "other", "changed", "missing"))
    for base, src in ((cpu, zip_path), (good, zip_path), (other, other_zip), (changed, zip_path)):
        place_bundle(base, str(src))
    (Path(changed) / "eval_bundle" / "core.yaml").write_text("edited by hand")
    reference = {**check_bundle(cpu), "host": "cpu"}
    repair = "ansible-playbook playbooks/data.yml -i inventory/lab/ --tags eval"
    held = [(h, "arm", check_bundle(b)) for h, b in (("good", good), ("other", other), ("changed", changed))]
    problems = bundle_problems(reference, [*held, ("missing", "arm", check_bundle(missing))], repair)
    assert len(problems) == 3 and all(p.endswith(repair) for p in problems)
    assert problems[0].startswith(f"other (arm): {other}/eval_bundle holds the eval bundle ")
    assert "not the CPU node's" in problems[0]
    assert problems[1].startswith(f"changed (arm): {changed}/eval_bundle differs from the bundle placed there")
    assert problems[2].startswith(f"missing (arm): {missing}/eval_bundle is missing")
    assert bundle_problems(reference, held[:1], repair) == []
    (cpu_problem,) = bundle_problems({**check_bundle(missing), "host": "cpu"}, held, repair)
    assert cpu_problem.startswith("cpu (the CPU node): ") and "The CORE metric is on" in cpu_problem


def test_compare_checks_the_bundle_only_when_given(tmp_path: Path) -> None:
    from test_preflight_checks import ARMS, HOSTS_OF, MODEL_10_STEPS, PIN, host_facts

    zip_path = tmp_path / "b.zip"
    make_zip(zip_path)
    place_bundle(str(tmp_path / "cpu"), str(zip_path))
    place_bundle(str(tmp_path / "gpu-a"), str(zip_path))
    facts = {h: {**host_facts(h), "eval_bundle": check_bundle(str(tmp_path / h))} for h in ("gpu-a", "gpu-b")}
    kw = {
        "arms": ARMS,
        "hosts_of": HOSTS_OF,
        "model": MODEL_10_STEPS,
        "pin_sha": PIN,
        "commit_date": None,
        "check_gpus": False,
    }
    assert compare(facts, **kw)["problems"] == []
    reference = {**check_bundle(str(tmp_path / "cpu")), "host": "cpu"}
    (problem,) = compare(facts, **kw, eval_bundle=reference)["problems"]
    assert problem.startswith("gpu-b (random): ") and "--tags eval" in problem


# what evaluate_core reads, run by nanochat's own code with its per-task evaluation stubbed (no model here)
NANOCHAT_CORE = """
import json
import nanochat_real
nanochat_real.hf_tokenizers_importable()
from scripts import base_eval
seen = []
def evaluate_task(model, tokenizer, data, device, task_meta):
    seen.append([task_meta["task_type"], task_meta["num_fewshot"], len(data)])
    return 1.0
base_eval.evaluate_task = evaluate_task
out = base_eval.evaluate_core(None, None, "cpu")
print(json.dumps({"core": out["core_metric"], "seen": seen}))
"""


def test_the_labs_tiny_bundle_is_one_nanochat_reads_and_the_same_bytes_every_time(
    checkout: Path, tmp_path: Path
) -> None:
    first = write_eval_bundle(str(tmp_path / "a" / "eval_bundle.zip"))
    assert write_eval_bundle(str(tmp_path / "b" / "eval_bundle.zip")) == first
    base = tmp_path / "base"
    assert place_bundle(str(base), str(tmp_path / "a" / "eval_bundle.zip"))["sha256"] == first
    env = {**os.environ, "NANOCHAT_BASE_DIR": str(base), "PYTHONPATH": f"{checkout}{os.pathsep}{HERE}"}
    proc = subprocess.run(
        [sys.executable, "-c", NANOCHAT_CORE], cwd=checkout, env=env, text=True, capture_output=True, check=False
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    assert out["core"] == 1.0  # every task scored, each against its random baseline from eval_meta_data.csv
    assert out["seen"] == [["language_modeling", 1, 3], ["multiple_choice", 1, 3], ["schema", 0, 3]]
    assert "eval_bundle.zip.lock" not in os.listdir(base)  # download_file_with_lock never ran: nothing downloaded
