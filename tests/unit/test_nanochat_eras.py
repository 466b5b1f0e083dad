"""The source repairs (TF32 line, CRLF scripts) on the REAL nanochat, at every era a rule covers.

The real repository is the git bundle in ../shared/nanochat/ beside this checkout (CI puts a
read-only copy of shared/ there; ARMS_NANOCHAT_BUNDLE overrides the place). It is cloned once per
session; each test checks the commit it needs out into its own worktree, so the files, line
numbers and modes are nanochat's own, not a stand-in's.
"""

from __future__ import annotations

import ast
import os
import stat
import subprocess
from pathlib import Path

import pytest
from ansible.module_utils.arms_common import ArmsError
from ansible.module_utils.arms_patch import SCRIPT_PATTERNS, TF32_FIXED, crlf_apply, tf32_apply, tf32_plan
from ansible.module_utils.arms_preflight import _tf32_state
from modtest import ROOT, run_module

HEAD = "92d63d4"  # the bundle's master tip (2026-07-03)
COMMON = "nanochat/common.py"

# commits whose nanochat/common.py sets TF32 through the new API: (commit, line, the line's code)
NEEDS_PATCH = [
    ("eb7bbc1", 173, 'torch.backends.cuda.matmul.fp32_precision = "tf32"'),  # 2026-01-04, first argparse commit
    ("d6c4f3b", 173, 'torch.backends.fp32_precision = "tf32"'),  # 2026-01-30, the second new-API form
    ("0a23f87~1", 173, 'torch.backends.fp32_precision = "tf32"'),  # the last commit before the fix
]
# commits that already call set_float32_matmul_precision("high"); from 0a23f87 on with the API's doc
# URL in the line's comment (the URL names the API: the old patch crashed on it)
ALREADY_FIXED = ["c6abcdf", "0a23f87", "b07604e", HEAD]
# shell scripts: at the root (and dev/runcpu.sh) until 2026-01-18, in runs/ after
CRLF_ERAS = ["c6abcdf", "eb7bbc1", "3b50b77", "d6c4f3b", "b07604e", HEAD]


def bundle_path() -> Path:
    env = os.environ.get("ARMS_NANOCHAT_BUNDLE")
    return Path(env) if env else Path(ROOT).parent / "shared" / "nanochat" / "nanochat.bundle"


def git(repo: Path, *args: str) -> str:
    proc = subprocess.run(
        ["git", "-C", str(repo), "-c", "core.autocrlf=false", *args], capture_output=True, text=True, check=False
    )
    assert proc.returncode == 0, f"git {' '.join(args)} failed in {repo}: {proc.stderr}"
    return proc.stdout


_CLONES: dict[str, Path] = {}


def clone_nanochat(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One clone of the bundle per session (test_flags_from_code.py shares it through this function)."""
    bundle = bundle_path()
    if str(bundle) not in _CLONES:
        if not bundle.is_file():
            pytest.fail(
                f"the real nanochat bundle is not at {bundle}: put shared/nanochat/nanochat.bundle beside the "
                "checkout or point ARMS_NANOCHAT_BUNDLE at it"
            )
        dest = tmp_path_factory.mktemp("nanochat-bundle") / "nanochat"
        proc = subprocess.run(
            ["git", "-c", "core.autocrlf=false", "clone", "-q", "--no-checkout", str(bundle), str(dest)],
            capture_output=True,
            text=True,
            check=False,
        )
        assert proc.returncode == 0, f"cloning {bundle} failed: {proc.stderr}"
        git(dest, "config", "core.autocrlf", "false")
        _CLONES[str(bundle)] = dest
    return _CLONES[str(bundle)]


def show(repo: Path, commit: str, path: str) -> str:
    """A file's text at a commit, its line endings untranslated."""
    proc = subprocess.run(["git", "-C", str(repo), "show", f"{commit}:{path}"], capture_output=True, check=False)
    assert proc.returncode == 0, f"git show {commit}:{path} failed: {proc.stderr.decode(errors='replace')}"
    return proc.stdout.decode("utf-8")


def worktree(repo: Path, commit: str, dest: Path) -> Path:
    git(repo, "worktree", "add", "-q", "--detach", str(dest), commit)
    return dest


@pytest.fixture(scope="session")
def nanochat(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return clone_nanochat(tmp_path_factory)


def test_the_bundle_is_the_history_these_eras_come_from(nanochat: Path) -> None:
    assert git(nanochat, "rev-parse", "--short=7", "HEAD").strip() == HEAD
    assert int(git(nanochat, "rev-list", "--count", "HEAD")) == 441


@pytest.mark.parametrize(("commit", "line_no", "code"), NEEDS_PATCH)
def test_new_api_line_is_rewritten_once_and_the_file_still_parses(
    nanochat: Path, commit: str, line_no: int, code: str
) -> None:
    before = show(nanochat, commit, COMMON)
    assert before.splitlines()[line_no - 1].strip().startswith(code)  # the era is what this test says

    plan = tf32_plan(before)
    assert plan.changed and plan.state == "patched" and plan.lines == [line_no]
    old, new = before.splitlines(), plan.after.splitlines()
    assert len(new) == len(old)
    assert [i + 1 for i, (a, b) in enumerate(zip(old, new, strict=True)) if a != b] == [line_no]
    assert new[line_no - 1] == old[line_no - 1].replace(code, TF32_FIXED)  # indent and comment kept
    assert plan.after.count(TF32_FIXED) == 1
    assert "fp32_precision =" not in plan.after
    ast.parse(plan.after)  # still Python

    again = tf32_plan(plan.after)
    assert not again.changed and again.state == "already_fixed" and again.after == plan.after


@pytest.mark.parametrize(("commit", "line_no", "code"), NEEDS_PATCH)
def test_tf32_module_on_a_real_checkout(
    nanochat: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str], commit: str, line_no: int, code: str
) -> None:
    wt = worktree(nanochat, commit, tmp_path / "nanochat")
    path = wt / COMMON
    before = path.read_bytes()
    assert _tf32_state(str(wt)) == "needs_patch"  # the preflight's probe

    res = run_module("nanochat_tf32", {"path": str(wt)}, capsys, check_mode=True)
    assert res["changed"] and res["state"] == "patched" and res["lines"] == [line_no]
    assert res["diff"]["before"] != res["diff"]["after"]
    assert path.read_bytes() == before  # check mode wrote nothing

    res = run_module("nanochat_tf32", {"path": str(wt)}, capsys)
    assert res["changed"] and res["state"] == "patched" and res["lines"] == [line_no]
    assert git(wt, "diff", "--numstat").split() == ["1", "1", COMMON]  # one line out, one line in
    assert path.read_text().count(TF32_FIXED) == 1
    ast.parse(path.read_text())
    assert _tf32_state(str(wt)) == "already_fixed"

    res = run_module("nanochat_tf32", {"path": str(wt)}, capsys)
    assert not res["changed"] and res["state"] == "already_fixed"
    assert git(wt, "diff", "--numstat").split() == ["1", "1", COMMON]


@pytest.mark.parametrize("commit", ALREADY_FIXED)
def test_already_fixed_commits_are_left_unchanged(
    nanochat: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str], commit: str
) -> None:
    text = show(nanochat, commit, COMMON)
    plan = tf32_plan(text)
    assert not plan.changed and plan.state == "already_fixed" and plan.after == text

    wt = worktree(nanochat, commit, tmp_path / "nanochat")
    assert _tf32_state(str(wt)) == "already_fixed"  # the preflight's probe no longer says "unknown"
    res = run_module("nanochat_tf32", {"path": str(wt)}, capsys)
    assert not res.get("failed"), res.get("msg")
    assert not res["changed"] and res["state"] == "already_fixed" and res["lines"] == []
    assert git(wt, "status", "--porcelain") == ""


def test_the_fixed_line_carries_the_api_name_in_its_comment(nanochat: Path) -> None:
    # the reason the old patch crashed: keep the era honest so the tests above mean something
    lines = [ln for ln in show(nanochat, "b07604e", COMMON).splitlines() if TF32_FIXED in ln]
    assert len(lines) == 1 and "set_float32_matmul_precision.html" in lines[0].split("#", 1)[1]


@pytest.mark.parametrize(
    "unknown",
    [
        "torch.backends.cuda.matmul.allow_tf32 = True",
        'torch.backends.fp32_precision = "ieee"',
        'torch.set_float32_matmul_precision("medium")',
    ],
)
def test_unknown_tf32_form_on_a_real_file_fails_with_a_sentence(
    nanochat: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str], unknown: str
) -> None:
    wt = worktree(nanochat, "d6c4f3b", tmp_path / "nanochat")
    path = wt / COMMON
    edited = path.read_text().replace('torch.backends.fp32_precision = "tf32"', unknown)
    path.write_text(edited)

    with pytest.raises(ArmsError) as err:
        tf32_apply(str(wt))
    msg = str(err.value)
    assert msg.startswith("nanochat/common.py line 173 ") and unknown in msg
    assert "expects" in msg and "by hand" in msg  # what was expected, what to do

    res = run_module("nanochat_tf32", {"path": str(wt)}, capsys, check_mode=True)
    assert res["failed"] and "line 173" in res["msg"] and "Traceback" not in res["msg"]
    res = run_module("nanochat_tf32", {"path": str(wt)}, capsys)
    assert res["failed"] and res["msg"] == msg
    assert path.read_text() == edited  # nothing written
    assert _tf32_state(str(wt)) == "unknown"


@pytest.mark.parametrize("commit", CRLF_ERAS)
def test_crlf_scripts_of_every_era_come_back_lf_and_executable(
    nanochat: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str], commit: str
) -> None:
    scripts = sorted(p for p in git(nanochat, "ls-tree", "-r", "--name-only", commit).split() if p.endswith(".sh"))
    assert scripts, f"{commit} has no shell script"
    wt = worktree(nanochat, commit, tmp_path / "nanochat")
    for rel in scripts:  # what a copy through Windows leaves: CRLF, no run bit
        path = wt / rel
        path.write_bytes(path.read_bytes().replace(b"\n", b"\r\n"))
        os.chmod(path, 0o644)

    predicted = run_module("nanochat_crlf", {"path": str(wt)}, capsys, check_mode=True)
    assert predicted["changed"] and predicted["converted"] == scripts
    assert all(b"\r\n" in (wt / rel).read_bytes() for rel in scripts)  # check mode wrote nothing

    res = run_module("nanochat_crlf", {"path": str(wt)}, capsys)
    assert res["changed"] and res["converted"] == scripts and res["scripts"] == scripts
    for rel in scripts:
        path = wt / rel
        assert path.read_bytes() == show(nanochat, commit, rel).encode(), f"{rel} is not nanochat's LF text again"
        assert stat.S_IMODE(os.stat(path).st_mode) == 0o755, f"{rel} is not executable"
    res = run_module("nanochat_crlf", {"path": str(wt)}, capsys)
    assert not res["changed"] and res["converted"] == [] and res["made_executable"] == []
    assert not crlf_apply(str(wt), list(SCRIPT_PATTERNS)).changed
