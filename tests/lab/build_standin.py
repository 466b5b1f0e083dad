#!/usr/bin/env python3
"""Build the stand-in nanochat git repo that the two-node lab checks out.

    python tests/lab/build_standin.py DEST [--force]

DEST becomes a git repo with ONE commit, tagged ``standin``, on branch ``master``: the template tree
``standin/`` next to this file, as is. It honours nanochat's interface as of the pinned b07604e
(dashed argparse flags, ``runs/*.sh`` with LF endings and their run bits, the TF32 line
``torch.set_float32_matmul_precision("high")``, ``base_data``) and trains under torchrun with gloo on
CPU, which real nanochat cannot: see ``standin/README.md``.

Author, committer, date and file modes are fixed and git runs without the user's config, so the
commit id is the same on every machine and run.

Idempotent: the repo is built in a temporary folder next to DEST and moved into place; when DEST
already is that repo (same tag, same commit) nothing changes. A DEST that is something else is
refused, unless it is an older build of the stand-in (a git repo whose every commit is the
stand-in's, such as the one-commit-per-era builds of before) and ``--force`` is given.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile

TEMPLATE_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), "standin")
BRANCH = "master"
TAG = "standin"
DATE = "2026-03-03T18:00:00+00:00"  # the day of b07604e, whose interface the stand-in honours
SUBJECT = "stand-in nanochat: several processes and two nodes (torchrun with gloo on CPU)"
AUTHOR_NAME = "nanochat-arms stand-in"
AUTHOR_EMAIL = "standin@nanochat-arms.invalid"


class StandinError(Exception):
    """A build problem, said as a sentence a user can act on."""


# ----------------------------------------------------------------------------- the tree
def template_files(template_dir: str = TEMPLATE_DIR) -> list[str]:
    """Relative paths of the template's files, sorted (caches and hidden files left out)."""
    found: list[str] = []
    for root, dirs, files in os.walk(template_dir):
        dirs[:] = sorted(d for d in dirs if not d.startswith(".") and d != "__pycache__")
        for name in sorted(files):
            if not name.startswith(".") and not name.endswith((".pyc", ".pyo")):
                found.append(os.path.relpath(os.path.join(root, name), template_dir).replace(os.sep, "/"))
    if not found:
        raise StandinError(f"The stand-in template {template_dir} has no files: is the checkout complete?")
    return sorted(found)


def render(template_dir: str = TEMPLATE_DIR) -> dict[str, tuple[bytes, int]]:
    """{repo path: (bytes, mode)} of the commit: LF endings everywhere, run bits on the shell scripts."""
    tree: dict[str, tuple[bytes, int]] = {}
    for rel in template_files(template_dir):
        with open(os.path.join(template_dir, *rel.split("/")), "rb") as fh:
            data = fh.read().replace(b"\r\n", b"\n")
        tree[rel] = (data, 0o755 if rel.endswith(".sh") else 0o644)
    return tree


# ----------------------------------------------------------------------------- git
def git(repo: str, *args: str, env: dict[str, str] | None = None) -> str:
    """Run git in ``repo`` without the user's or the system's config (so ids do not depend on them)."""
    full_env = {k: v for k, v in os.environ.items() if not k.startswith("GIT_")}
    full_env.update({"GIT_CONFIG_NOSYSTEM": "1", "GIT_CONFIG_GLOBAL": os.devnull, "LC_ALL": "C"})
    full_env.update(env or {})
    cmd = [
        "git",
        "-c", "core.autocrlf=false",
        "-c", "core.safecrlf=false",
        "-c", "core.fileMode=true",
        "-c", "commit.gpgSign=false",
        "-c", "tag.gpgSign=false",
        "-c", f"core.hooksPath={os.devnull}",
        "-C", repo,
        *args,
    ]  # fmt: skip
    proc = subprocess.run(cmd, env=full_env, capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        raise StandinError(f"`git {' '.join(args)}` failed in {repo}: {proc.stderr.strip() or proc.stdout.strip()}")
    return proc.stdout


def _build_into(repo: str) -> dict[str, str]:
    git(repo, "init", "-q", f"--initial-branch={BRANCH}")
    for rel, (data, mode) in render().items():
        path = os.path.join(repo, *rel.split("/"))
        os.makedirs(os.path.dirname(path), exist_ok=True)
        with open(path, "wb") as fh:
            fh.write(data)
        os.chmod(path, mode)  # whatever the template's mode and the umask
    git(repo, "add", "-A")
    who = {"NAME": AUTHOR_NAME, "EMAIL": AUTHOR_EMAIL, "DATE": DATE}
    env = {f"GIT_{role}_{key}": value for role in ("AUTHOR", "COMMITTER") for key, value in who.items()}
    git(repo, "commit", "-q", "--no-verify", "-m", SUBJECT, env=env)
    git(repo, "tag", TAG)
    return {TAG: git(repo, "rev-parse", "HEAD").strip()}


def existing_tags(dest: str) -> dict[str, str]:
    """{tag: commit} of the git repo at ``dest`` ({} when ``dest`` has no .git of its own)."""
    if not os.path.isdir(os.path.join(dest, ".git")):
        return {}
    out = git(dest, "for-each-ref", "--format=%(refname:short) %(objectname)", "refs/tags")
    return dict(line.split(" ", 1) for line in out.splitlines() if line.strip())


def is_older_build(dest: str) -> bool:
    """Whether ``dest`` is a git repo whose commits (on every ref, at least one) are all the stand-in's."""
    if not os.path.isdir(os.path.join(dest, ".git")):
        return False
    try:
        authors = set(git(dest, "log", "--all", "--format=%ae %ce").split())
    except StandinError:  # a repo without commits, or a broken one
        return False
    return authors == {AUTHOR_EMAIL}


def build(dest: str, force: bool = False) -> dict[str, str]:
    """Create the stand-in repo at ``dest`` (or leave it as it is when it already is that repo).

    Returns {tag: commit sha}. ``force`` replaces an older build of the stand-in; anything else at
    ``dest`` is refused with a StandinError.
    """
    dest = os.path.abspath(dest)
    if os.path.exists(dest) and not os.path.isdir(dest):
        raise StandinError(f"{dest} is a file, not a folder: give a new or empty folder for the stand-in repo")
    parent = os.path.dirname(dest)
    os.makedirs(parent, exist_ok=True)
    tmp: str | None = tempfile.mkdtemp(prefix=f".{os.path.basename(dest)}.build-", dir=parent)
    try:
        tags = _build_into(tmp)
        if os.path.isdir(dest) and os.listdir(dest):
            if existing_tags(dest) == tags:
                return tags  # already that repo (whatever is checked out there): nothing to do
            older_build = is_older_build(dest)
            if older_build and not force:
                raise StandinError(
                    f"{dest} holds an older build of the stand-in (other commits or tags): pass --force to replace it"
                )
            if not older_build:
                raise StandinError(
                    f"{dest} already exists and is not the stand-in repo: remove it or choose another folder"
                )
            shutil.rmtree(dest)
        elif os.path.isdir(dest):
            os.rmdir(dest)
        os.chmod(tmp, 0o755)  # mkdtemp made it private; the lab's host accounts clone from it
        os.rename(tmp, dest)
        tmp = None
        return tags
    finally:
        if tmp is not None:
            shutil.rmtree(tmp, ignore_errors=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Build the stand-in nanochat git repo (one commit, tag 'standin').")
    parser.add_argument("dest", help="folder for the repo (created; left alone when it already is that repo)")
    parser.add_argument("--force", action="store_true", help="replace an older build of the stand-in at DEST")
    args = parser.parse_args(argv)
    try:
        tags = build(args.dest, force=args.force)
    except (StandinError, OSError) as exc:
        print(f"build_standin: {exc}", file=sys.stderr)
        return 1
    for tag, sha in tags.items():
        print(f"{tag}  {sha}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
