"""The checkout at a pinned commit: clone, stay, move, refuse (against real local git repos)."""

from __future__ import annotations

import os
import subprocess

import pytest
from ansible.module_utils.arms_common import ArmsError
from ansible.module_utils.arms_git import ensure_checkout
from modtest import run_module


def sh(*args: str, cwd: str) -> str:
    env = {
        **os.environ,
        "GIT_AUTHOR_NAME": "t",
        "GIT_AUTHOR_EMAIL": "t@e",
        "GIT_COMMITTER_NAME": "t",
        "GIT_COMMITTER_EMAIL": "t@e",
        "GIT_AUTHOR_DATE": "2026-01-20T00:00:00Z",
        "GIT_COMMITTER_DATE": "2026-01-20T00:00:00Z",
    }
    return subprocess.run(["git", *args], cwd=cwd, env=env, check=True, capture_output=True, text=True).stdout.strip()


@pytest.fixture
def upstream(tmp_path) -> tuple[str, str, str]:
    repo = str(tmp_path / "upstream")
    os.makedirs(repo)
    sh("init", "-q", "-b", "master", cwd=repo)
    with open(os.path.join(repo, "a.sh"), "w") as fh:
        fh.write("one\n")
    sh("add", ".", cwd=repo)
    sh("commit", "-qm", "one", cwd=repo)
    first = sh("rev-parse", "HEAD", cwd=repo)
    with open(os.path.join(repo, "a.sh"), "w") as fh:
        fh.write("two\n")
    sh("commit", "-qam", "two", cwd=repo)
    sh("tag", "v2", cwd=repo)
    second = sh("rev-parse", "HEAD", cwd=repo)
    return repo, first, second


def test_clone_stay_and_move_keeping_local_repairs_at_the_same_pin(upstream, tmp_path) -> None:
    repo, first, second = upstream
    dest = str(tmp_path / "nanochat")
    r = ensure_checkout(repo, dest, first[:7])
    assert r.changed and r.cloned and r.after == first and r.commit_date == "2026-01-20"
    # a project repair edits a tracked file; the same pin must not undo it
    with open(os.path.join(dest, "a.sh"), "w") as fh:
        fh.write("repaired\n")
    r = ensure_checkout(repo, dest, first[:7])
    assert not r.changed
    assert open(os.path.join(dest, "a.sh")).read() == "repaired\n"
    # the pin moves: local edits are discarded and HEAD follows
    r = ensure_checkout(repo, dest, "v2")
    assert r.changed and r.moved and r.before == first and r.after == second
    assert open(os.path.join(dest, "a.sh")).read() == "two\n"


def test_check_mode_predicts_without_touching(upstream, tmp_path) -> None:
    repo, first, second = upstream
    dest = str(tmp_path / "nanochat")
    r = ensure_checkout(repo, dest, first, check_mode=True)
    assert r.changed and not os.path.exists(dest)
    ensure_checkout(repo, dest, first)
    r = ensure_checkout(repo, dest, second, check_mode=True)
    assert r.changed and r.after == second
    assert sh("rev-parse", "HEAD", cwd=dest) == first


def test_unknown_commit_fails_with_a_sentence_and_leaves_no_clone(upstream, tmp_path) -> None:
    repo, _, _ = upstream
    dest = str(tmp_path / "nanochat")
    with pytest.raises(ArmsError, match="is not a commit, tag or branch"):
        ensure_checkout(repo, dest, "deadbeef")
    assert not os.path.exists(dest)


def test_unreachable_repo_and_foreign_folder(tmp_path, capsys) -> None:
    res = run_module(
        "nanochat_checkout",
        {"repo": str(tmp_path / "nope"), "dest": str(tmp_path / "d"), "version": "HEAD"},
        capsys,
    )
    assert res["failed"] and "cannot be reached" in res["msg"]
    foreign = tmp_path / "busy"
    foreign.mkdir()
    (foreign / "x").write_text("mine")
    with pytest.raises(ArmsError, match="not a git checkout"):
        ensure_checkout(str(tmp_path / "nope"), str(foreign), "HEAD")


def test_a_new_repo_url_is_followed(upstream, tmp_path) -> None:
    repo, first, _ = upstream
    dest = str(tmp_path / "nanochat")
    ensure_checkout(repo, dest, first)
    fork = str(tmp_path / "fork")
    subprocess.run(["git", "clone", "-q", repo, fork], check=True)
    sh("commit", "--allow-empty", "-qm", "fork only", cwd=fork)
    fork_head = sh("rev-parse", "HEAD", cwd=fork)
    r = ensure_checkout(fork, dest, fork_head)
    assert r.changed and r.after == fork_head
    assert sh("remote", "get-url", "origin", cwd=dest) == fork


# --- option injection (issue 15): a value that begins with '-' never reaches git as an option ----------


@pytest.mark.parametrize("field", ["version", "repo"])
def test_an_option_in_the_commit_or_the_repo_is_refused_and_runs_nothing(upstream, tmp_path, field) -> None:
    repo, first, _ = upstream
    dest = str(tmp_path / "nanochat")
    ensure_checkout(repo, dest, first)  # a checkout that exists: the fetch path is reached too
    marker = tmp_path / "ran"
    hostile = f"--upload-pack=touch {marker};git-upload-pack"
    args = {"repo": repo, "dest": dest, "version": first, field: hostile}
    with pytest.raises(ArmsError, match="begins with '-'"):
        ensure_checkout(args["repo"], args["dest"], args["version"])
    fresh = str(tmp_path / "fresh")
    with pytest.raises(ArmsError, match="begins with '-'"):
        ensure_checkout(args["repo"], fresh, args["version"])
    assert not marker.exists()
    assert not os.path.exists(fresh)


def test_git_itself_is_told_where_options_end(upstream, tmp_path) -> None:
    """Below the refusal: a value that reached git anyway would be a name, never an option."""
    from ansible.module_utils import arms_git

    repo, first, _ = upstream
    dest = str(tmp_path / "nanochat")
    ensure_checkout(repo, dest, first)
    marker = tmp_path / "ran"
    hostile = f"--upload-pack=touch {marker};git-upload-pack"
    assert arms_git._fetch_and_resolve(dest, hostile) is None
    assert arms_git.git(["ls-remote", "--quiet", "--", hostile, "HEAD"], cwd=dest, check=False).returncode != 0
    assert not marker.exists()
