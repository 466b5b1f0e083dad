"""The nanochat checkout at a pinned commit.

A checkout is "at the pin" when HEAD is the commit the pin resolves to. The project's own repairs
(CRLF, TF32) edit tracked files, so a checkout at the pin is never reset; when the pin moves, those
edits are discarded (the repair roles re-apply them to the new commit).
"""

from __future__ import annotations

import os
import subprocess
from dataclasses import dataclass

from ansible.module_utils.arms_common import ArmsError


def git(args: list[str], cwd: str | None = None, check: bool = True) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "GIT_TERMINAL_PROMPT": "0", "LC_ALL": "C"}
    proc = subprocess.run(["git", *args], cwd=cwd, env=env, capture_output=True, text=True)
    if check and proc.returncode != 0:
        raise ArmsError(f"git {' '.join(args)} failed: {proc.stderr.strip() or proc.stdout.strip()}")
    return proc


def refuse_option_like(value: str, what: str) -> None:
    """Refuse a value git would read as an option (``--upload-pack=...`` runs a command on a local origin)."""
    if not isinstance(value, str) or not value.strip():
        raise ArmsError(f"{what} is empty; give a git URL or path for the repo, a sha, tag or branch for the commit.")
    if value.startswith("-"):
        raise ArmsError(
            f"{what} {value!r} begins with '-', which git would read as an option, not a name; give a git URL or "
            "path for the repo and a sha, tag or branch for the commit."
        )
    if any(ch in value for ch in "\n\r\0"):
        raise ArmsError(f"{what} {value!r} holds a line break or NUL; give it on one line.")


def head(dest: str) -> str | None:
    proc = git(["rev-parse", "--verify", "--quiet", "HEAD^{commit}"], cwd=dest, check=False)
    return proc.stdout.strip() or None


def resolve(dest: str, version: str) -> str | None:
    proc = git(["rev-parse", "--verify", "--quiet", "--end-of-options", f"{version}^{{commit}}"], cwd=dest, check=False)
    return proc.stdout.strip() or None


def commit_date(dest: str, sha: str) -> str:
    """The commit's committer date as YYYY-MM-DD (what the launcher's flag style keys on)."""
    return git(["show", "-s", "--format=%cs", "--end-of-options", sha], cwd=dest).stdout.strip()


def check_reachable(repo: str) -> None:
    refuse_option_like(repo, "experiment.nanochat.repo")
    proc = git(["ls-remote", "--quiet", "--", repo, "HEAD"], check=False)
    if proc.returncode != 0:
        lines = [ln.strip() for ln in proc.stderr.splitlines() if ln.strip()]
        why = next((ln for ln in lines if ln.startswith("fatal:")), lines[0] if lines else "no answer")
        raise ArmsError(
            f"the nanochat repo {repo} cannot be reached ({why}); check experiment.nanochat.repo and the "
            "host's network or credentials."
        )


@dataclass
class CheckoutResult:
    changed: bool
    cloned: bool
    moved: bool
    before: str | None
    after: str | None
    commit_date: str | None
    msg: str


def _fetch_and_resolve(dest: str, version: str) -> str | None:
    sha = resolve(dest, version)
    if sha:
        return sha
    git(["fetch", "--quiet", "--tags", "--end-of-options", "origin"], cwd=dest, check=False)
    sha = resolve(dest, version) or resolve(dest, f"origin/{version}")
    if sha:
        return sha
    # a full sha not on any ref; --end-of-options: a version is never read as an option of git fetch
    git(["fetch", "--quiet", "--end-of-options", "origin", version], cwd=dest, check=False)
    return resolve(dest, version)


def ensure_checkout(repo: str, dest: str, version: str, check_mode: bool = False) -> CheckoutResult:
    """Make ``dest`` a clone of ``repo`` with HEAD at ``version`` (sha, tag or branch)."""
    refuse_option_like(repo, "experiment.nanochat.repo")
    refuse_option_like(version, "experiment.nanochat.commit")
    is_repo = os.path.isdir(os.path.join(dest, ".git"))
    if not is_repo and os.path.exists(dest) and os.listdir(dest):
        raise ArmsError(f"{dest} exists and is not a git checkout; move it away or choose another nanochat_dir.")
    if not is_repo:
        check_reachable(repo)
        if check_mode:
            return CheckoutResult(True, True, True, None, None, None, f"would clone {repo} into {dest} at {version}")
        parent = os.path.dirname(os.path.abspath(dest))
        os.makedirs(parent, exist_ok=True)
        git(["clone", "--quiet", "--no-checkout", "--", repo, dest])
    before = head(dest)
    origin = git(["remote", "get-url", "origin"], cwd=dest, check=False).stdout.strip()
    if is_repo and origin != repo:
        # the experiment names another repository (a fork, a mirror): follow it
        if check_mode:
            return CheckoutResult(True, False, True, before, None, None, f"would switch origin {origin} -> {repo}")
        check_reachable(repo)
        git(["remote", "set-url", "--", "origin", repo], cwd=dest)
        git(["fetch", "--quiet", "--tags", "--force", "--end-of-options", "origin"], cwd=dest, check=False)
    sha = _fetch_and_resolve(dest, version)
    if not sha:
        if not is_repo and not check_mode:
            # leave nothing half-made behind: a fresh clone that cannot reach the pin is removed
            import shutil

            shutil.rmtree(dest, ignore_errors=True)
        raise ArmsError(
            f"{version!r} is not a commit, tag or branch of {repo}; fix experiment.nanochat.commit "
            "(a sha from `git log` of nanochat)."
        )
    date = commit_date(dest, sha)
    populated = bool(git(["ls-files", "--cached"], cwd=dest).stdout.strip())
    if before == sha and populated:
        return CheckoutResult(False, False, False, before, sha, date, f"nanochat is at {sha[:12]} ({date})")
    if check_mode:
        return CheckoutResult(True, not is_repo, True, before, sha, date, f"would move nanochat to {sha[:12]} ({date})")
    # the pin moved (or a fresh clone): discard the project's own edits and move
    git(["checkout", "--quiet", "--force", "--detach", sha], cwd=dest)  # sha: 40 hex digits from rev-parse
    return CheckoutResult(
        True,
        not is_repo,
        before != sha,
        before,
        sha,
        date,
        f"nanochat moved from {before[:12] if before else 'nothing'} to {sha[:12]} ({date})",
    )
