#!/usr/bin/env python3
"""Build the stand-in nanochat git repo that the lab and the tests check out.

    python tests/lab/build_standin.py DEST [--force]

DEST becomes a git repo with one commit per era of nanochat's interface that matters to this
project (see ../shared/nanochat-interface.md), each tagged, on branch ``master``:

    era-underscore  2026-01-08  argparse with underscored flags, *.sh at the repo root,
                                TF32 via torch.backends.cuda.matmul.fp32_precision = "tf32"
    era-cuda-matmul 2026-01-20  dashed flags, *.sh in runs/, same TF32 line
    era-fp32        2026-02-01  TF32 via torch.backends.fp32_precision = "tf32" (the lab's pin)
    era-fixed       2026-03-03  TF32 via torch.set_float32_matmul_precision("high"), bf16_mfu
    era-climbmix    2026-03-05  default data dir base_data_climbmix (base_data only as fallback)

Authors, committers, dates and file modes are fixed and git runs without the user's config, so the
commit ids are the same on every machine and run. The shell scripts are committed with CRLF line
endings and without the execute bit (as if copied through Windows), kept that way by a
``.gitattributes`` of ``*.sh -text``.

The commits are rendered from the template tree ``standin/`` next to this file. Lines between
``# standin-only: TAG [TAG ...]`` and ``# standin-end`` are kept only in the listed eras (the marker
lines themselves never reach the repo); in era-underscore every dashed flag the scripts define is
written with underscores, in the scripts and in the shell files alike.

Idempotent: the repo is built in a temporary folder next to DEST and moved into place; when DEST
already is that repo (same tags, same commits) nothing changes. A DEST that is something else is
refused, unless it is an older build of the stand-in and ``--force`` is given.
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import subprocess
import sys
import tempfile
from dataclasses import dataclass

TEMPLATE_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), "standin")
BRANCH = "master"
AUTHOR_NAME = "nanochat-arms stand-in"
AUTHOR_EMAIL = "standin@nanochat-arms.invalid"
GITATTRIBUTES = "# shell scripts are stored exactly as written: CRLF, as if copied through Windows\n*.sh -text\n"


class StandinError(Exception):
    """A build problem, said as a sentence a user can act on."""


@dataclass(frozen=True)
class Era:
    tag: str
    date: str
    subject: str
    underscored_flags: bool = False
    scripts_at_root: bool = False


ERAS: tuple[Era, ...] = (
    Era(
        "era-underscore",
        "2026-01-08T12:00:00+00:00",
        "argparse flags with underscores; shell scripts at the repo root; TF32 via the cuda.matmul API",
        underscored_flags=True,
        scripts_at_root=True,
    ),
    Era(
        "era-cuda-matmul",
        "2026-01-20T12:00:00+00:00",
        "argparse flags with dashes; shell scripts move to runs/",
    ),
    Era("era-fp32", "2026-02-01T12:00:00+00:00", "TF32 via torch.backends.fp32_precision"),
    Era(
        "era-fixed",
        "2026-03-03T12:00:00+00:00",
        "TF32 via torch.set_float32_matmul_precision; step line says bf16_mfu; total batch size auto",
    ),
    Era(
        "era-climbmix",
        "2026-03-05T12:00:00+00:00",
        "default data dir base_data_climbmix, base_data as fallback",
    ),
)
ERA_TAGS: tuple[str, ...] = tuple(era.tag for era in ERAS)

ONLY_RE = re.compile(r"^\s*# standin-only:(?P<tags>.*)$")
END_RE = re.compile(r"^\s*# standin-end\s*$")
FLAG_DEF_RE = re.compile(r"""add_argument\(\s*["']--(?P<flag>[a-z0-9]+(?:-[a-z0-9]+)+)["']""")


# ----------------------------------------------------------------------------- rendering
def template_files(template_dir: str = TEMPLATE_DIR) -> list[str]:
    """Relative paths of the template's files, sorted (caches and hidden files left out)."""
    found: list[str] = []
    for root, dirs, files in os.walk(template_dir):
        dirs[:] = sorted(d for d in dirs if not d.startswith(".") and d != "__pycache__")
        for name in sorted(files):
            if not name.startswith(".") and not name.endswith((".pyc", ".pyo")):
                found.append(os.path.relpath(os.path.join(root, name), template_dir))
    if not found:
        raise StandinError(f"The stand-in template {template_dir} has no files: is the checkout complete?")
    return sorted(found)


def read_template(rel: str, template_dir: str = TEMPLATE_DIR) -> str:
    with open(os.path.join(template_dir, rel), "rb") as fh:
        return fh.read().decode("utf-8").replace("\r\n", "\n")


def select_era_lines(text: str, tag: str, name: str) -> str:
    """Keep the lines meant for era ``tag``: see the module docstring for the markers."""
    out: list[str] = []
    keep, block_start = True, 0
    for lineno, line in enumerate(text.split("\n"), 1):
        only = ONLY_RE.match(line)
        if only:
            tags = only.group("tags").split()
            unknown = sorted(set(tags) - set(ERA_TAGS))
            if block_start or not tags or unknown:
                raise StandinError(
                    f"{name}:{lineno}: a standin-only marker needs known era tags ({', '.join(ERA_TAGS)}) "
                    f"and cannot nest; got {only.group('tags').strip()!r}"
                )
            keep, block_start = tag in tags, lineno
        elif END_RE.match(line):
            if not block_start:
                raise StandinError(f"{name}:{lineno}: standin-end without a standin-only marker before it")
            keep, block_start = True, 0
        elif keep:
            out.append(line)
    if block_start:
        raise StandinError(f"{name}:{block_start}: standin-only marker without a standin-end after it")
    return "\n".join(out)


def defined_flags(template_dir: str = TEMPLATE_DIR) -> list[str]:
    """Every dashed flag the template's scripts define (``--max-seq-len`` -> ``max-seq-len``)."""
    flags = {
        m.group("flag")
        for rel in template_files(template_dir)
        if rel.endswith(".py")
        for m in FLAG_DEF_RE.finditer(read_template(rel, template_dir))
    }
    return sorted(flags, key=lambda f: (-len(f), f))


def underscore_flags(text: str, flags: list[str]) -> str:
    """Write the known dashed flags with underscores (the argparse style of 2026-01-04..01-12)."""
    if not flags:
        return text
    pattern = re.compile(r"--(" + "|".join(re.escape(f) for f in flags) + r")(?![A-Za-z0-9_-])")
    return pattern.sub(lambda m: "--" + m.group(1).replace("-", "_"), text)


def render_era(era: Era, template_dir: str = TEMPLATE_DIR) -> dict[str, bytes]:
    """{repo path: bytes} of the commit of ``era``."""
    flags = defined_flags(template_dir)
    tree: dict[str, bytes] = {".gitattributes": GITATTRIBUTES.encode()}
    for rel in template_files(template_dir):
        text = select_era_lines(read_template(rel, template_dir), era.tag, rel)
        if era.underscored_flags:
            text = underscore_flags(text, flags)
        path = rel.replace(os.sep, "/")
        if path.endswith(".sh"):
            if era.scripts_at_root:
                path = os.path.basename(path)
            text = text.replace("\n", "\r\n")
        if path in tree:
            raise StandinError(f"Two template files render to {path} in {era.tag}: rename one of them")
        tree[path] = text.encode("utf-8")
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


def _write_tree(repo: str, tree: dict[str, bytes]) -> None:
    for name in os.listdir(repo):
        if name == ".git":
            continue
        path = os.path.join(repo, name)
        if os.path.isdir(path) and not os.path.islink(path):
            shutil.rmtree(path)
        else:
            os.unlink(path)
    for rel, data in tree.items():
        path = os.path.join(repo, *rel.split("/"))
        os.makedirs(os.path.dirname(path), exist_ok=True)
        with open(path, "wb") as fh:
            fh.write(data)
        os.chmod(path, 0o644)  # never executable, whatever the template's mode


def _build_into(repo: str) -> dict[str, str]:
    git(repo, "init", "-q", f"--initial-branch={BRANCH}")
    tags: dict[str, str] = {}
    for era in ERAS:
        _write_tree(repo, render_era(era))
        git(repo, "add", "-A")
        env = {
            "GIT_AUTHOR_NAME": AUTHOR_NAME,
            "GIT_AUTHOR_EMAIL": AUTHOR_EMAIL,
            "GIT_AUTHOR_DATE": era.date,
            "GIT_COMMITTER_NAME": AUTHOR_NAME,
            "GIT_COMMITTER_EMAIL": AUTHOR_EMAIL,
            "GIT_COMMITTER_DATE": era.date,
        }
        git(repo, "commit", "-q", "--no-verify", "-m", f"{era.tag}: {era.subject}", env=env)
        git(repo, "tag", era.tag)
        tags[era.tag] = git(repo, "rev-parse", "HEAD").strip()
    return tags


def existing_tags(dest: str) -> dict[str, str]:
    """{tag: commit} of the git repo at ``dest`` ({} when ``dest`` has no .git of its own)."""
    if not os.path.isdir(os.path.join(dest, ".git")):
        return {}
    out = git(dest, "for-each-ref", "--format=%(refname:short) %(objectname)", "refs/tags")
    return dict(line.split(" ", 1) for line in out.splitlines() if line.strip())


def build(dest: str, force: bool = False) -> dict[str, str]:
    """Create the stand-in repo at ``dest`` (or leave it as it is when it already is that repo).

    Returns {tag: commit sha}. ``force`` replaces an older build of the stand-in (a repo with the
    era tags but other commits); anything else at ``dest`` is refused with a StandinError.
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
            have = existing_tags(dest)
            if have == tags:
                return tags  # already that repo (whatever is checked out there): nothing to do
            older_build = set(ERA_TAGS) <= set(have)
            if older_build and not force:
                raise StandinError(
                    f"{dest} holds an older build of the stand-in (other commits under the era tags): "
                    "pass --force to replace it"
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
    parser = argparse.ArgumentParser(description="Build the stand-in nanochat git repo (one tagged commit per era).")
    parser.add_argument("dest", help="folder for the repo (created; left alone when it already is that repo)")
    parser.add_argument("--force", action="store_true", help="replace an older build of the stand-in at DEST")
    args = parser.parse_args(argv)
    try:
        tags = build(args.dest, force=args.force)
    except (StandinError, OSError) as exc:
        print(f"build_standin: {exc}", file=sys.stderr)
        return 1
    width = max(len(t) for t in tags)
    for tag, sha in tags.items():
        print(f"{tag:<{width}}  {sha}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
