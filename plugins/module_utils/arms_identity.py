"""What a run was made from: its identity, recorded at launch and compared before a run is reused.

A finished or live run is this experiment's result only while it was made from what the experiment
declares now. When the nanochat pin moves, the tokenizer is retrained or the data changes, an old
run must not be presented as the new experiment's result. The identity of a run is:

- ``commit``: the checkout's HEAD, and ``source_edits``: the files that differ from it (the TF32
  patch, CRLF repairs), so a patched and an unpatched checkout differ;
- ``flags``: the exact ``scripts.base_train`` flags (without the resume step, which changes on a
  resume of the same run), and the ``launcher`` with its process count;
- ``tokenizer``: the sha256 of ``<base_dir>/tokenizer/tokenizer.pkl``;
- ``data``: a digest of the data manifest's training shards (name and sha256 of each) and ``val``:
  the val shard's name and sha256.

:func:`current_identity` reads it on the host, :func:`identity_changes` says what differs, one
sentence part per field, for the refusal and for collect's "stale" mark.
"""

from __future__ import annotations

import hashlib
import os
import subprocess
from collections.abc import Mapping, Sequence
from typing import Any

from ansible.module_utils.arms_common import ArmsError
from ansible.module_utils.arms_manifest import read_manifest, sha256_file

FIELDS = ("commit", "source_edits", "launcher", "flags", "tokenizer", "data", "val")
# flags that change between launches of one and the same run
_VOLATILE_FLAGS = ("--resume-from-step", "--resume_from_step")


def _git(chdir: str, *args: str) -> str:
    try:
        proc = subprocess.run(["git", "-C", chdir, *args], capture_output=True, text=True, timeout=60, check=False)
    except (OSError, subprocess.TimeoutExpired):
        return ""
    return proc.stdout.strip() if proc.returncode == 0 else ""


def _sha256(path: str) -> str:
    """The file's sha256, or "" when there is none (no tokenizer yet)."""
    try:
        return sha256_file(path)
    except OSError:
        return ""


def stable_flags(flags: Sequence[str]) -> list[str]:
    """The flags that identify a run (resume steps dropped)."""
    return [f for f in flags if f.split("=", 1)[0] not in _VOLATILE_FLAGS]


def data_identity(data_dir: str) -> tuple[str, str]:
    """(digest of the training shards' names and sha256, "name sha256" of the val shard) of the
    data dir's manifest; ("", "") without a readable one (the preflight says why)."""
    try:
        manifest = read_manifest(data_dir)
    except ArmsError:
        manifest = None
    shards = manifest["shards"] if manifest else []
    train = sorted(f"{s.get('name')} {s.get('sha256')}" for s in shards if s.get("role", "train") != "val")
    val = [f"{s.get('name')} {s.get('sha256')}" for s in shards if s.get("role") == "val"]
    return hashlib.sha256("\n".join(train).encode()).hexdigest(), (val[-1] if val else "")


def current_identity(
    *, chdir: str, base_dir: str, data_dir: str, flags: Sequence[str], launcher: str, processes: int
) -> dict[str, Any]:
    """The identity a run started now would have (see the module docstring)."""
    # content edits only: the CRLF repair gives every script a run bit, which is no change of code
    edits = _git(chdir, "-c", "core.fileMode=false", "diff", "--name-only", "HEAD")
    data, val = data_identity(data_dir)
    return {
        "commit": _git(chdir, "rev-parse", "HEAD"),
        "source_edits": sorted(line for line in edits.splitlines() if line),
        "launcher": f"{launcher} x{processes}",
        "flags": stable_flags(flags),
        "tokenizer": _sha256(os.path.join(base_dir, "tokenizer", "tokenizer.pkl")),
        "data": data,
        "val": val,
    }


def _short(value: Any) -> str:
    if isinstance(value, list):
        return " ".join(str(v) for v in value) or "none"
    text = str(value or "none")
    return text[:12] if len(text) == 64 or len(text) == 40 else text


def identity_changes(recorded: Mapping[str, Any] | None, current: Mapping[str, Any]) -> list[str]:
    """What differs between a run's recorded identity and the current one, as sentence parts.

    A run recorded before runs carried an identity gives one part saying so: nothing shows it was
    made from this experiment.
    """
    if not recorded:
        return ["the run recorded no identity (it was started by an older nanochat-arms or by hand)"]
    out = []
    for name in FIELDS:
        was, now = recorded.get(name), current.get(name)
        if name == "flags":
            was, now = stable_flags(was or []), stable_flags(now or [])
            if was != now:
                gone = [f for f in was if f not in now]
                new = [f for f in now if f not in was]
                out.append(f"base_train flags {_short(gone)} -> {_short(new)}")
            continue
        if was != now:
            label = {
                "commit": "nanochat commit",
                "source_edits": "edits to the checkout",
                "launcher": "launcher",
                "tokenizer": "tokenizer (sha256)",
                "data": "training data (manifest digest)",
                "val": "val shard",
            }[name]
            out.append(f"{label} {_short(was)} -> {_short(now)}")
    return out
