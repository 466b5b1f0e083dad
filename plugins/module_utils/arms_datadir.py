"""A data folder's housekeeping, one rule for the shard writer and the Azure sync: lock, temp names, sweeping.

A data folder (``$NANOCHAT_BASE_DIR/base_data``, a val folder, a shard run's work dir) is written by one
run at a time, through hidden temporary names that become the real file by a rename. A run killed midway
leaves those temporary files behind; the next run sweeps them before it writes anything.

* :func:`locked_folder` takes the folder's lock: an exclusive ``flock`` on the folder itself, so no lock
  file is added to the user's folder and a prepare and an Azure sync of the same folder exclude each other.
  The kernel drops it when the holder dies, however it dies.
* :func:`tmp_name` is the one temporary name: ``.<final name>.arms-<8 hex>.tmp``. Hidden and not ending in
  ``.parquet``, so nanochat (which reads every ``*.parquet`` of its data dir) never reads a half-written
  shard, and random, so two writers of one name never share a temporary file.
* :func:`sweep_leftovers` removes what a killed run of this project leaves, and nothing else. A data
  folder is the user's: only a regular file whose whole name is one of :data:`LEFTOVER_PATTERNS` (names
  this project's code makes, the older ones included) is removed; a folder, a symlink or a file whose name
  merely looks similar (``.tmp-notes.part``, ``draft.tmp``, ``.shard_00000.parquet.tmp.bak``) stays. It is
  called with the lock held, so no live writer of this project owns a name it removes.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import os
import re
import secrets
import stat
from collections.abc import Iterator

from ansible.module_utils.arms_common import ArmsError

TMP_MARK = ".arms-"
TMP_SUFFIX = ".tmp"

# Whole names (re.fullmatch) of the temporary files this project's code writes into a data folder.
LEFTOVER_PATTERNS: tuple[re.Pattern[str], ...] = (
    re.compile(r"\..+\.arms-[0-9a-f]{8}\.tmp"),  # tmp_name (shards, Azure downloads, spill files, probes)
    re.compile(r"\.tmp-[a-z0-9_]{8}\.part"),  # arms_common.atomic_write_bytes: mkstemp(prefix=".tmp-", suffix=".part")
    re.compile(r"\.tmp-.+\.parquet\.[0-9]+\.part"),  # arms_manifest.copy_atomically before tmp_name
    re.compile(r"\..+\.parquet\.azsync-[0-9a-f]{8}\.tmp"),  # the Azure sync before tmp_name
    re.compile(r"\.shard_(?:[0-9]{5}|val)\.parquet\.tmp"),  # the shard writer before tmp_name
    re.compile(r"\.arms-write-probe-[0-9]+"),  # the shard writer's write probe before tmp_name
)


def tmp_name(final: str) -> str:
    """The hidden temporary name, in the same folder, of a file that becomes ``final`` by a rename."""
    return f".{final}{TMP_MARK}{secrets.token_hex(4)}{TMP_SUFFIX}"


def tmp_path(path: str) -> str:
    """:func:`tmp_name` of ``path``'s file name, in ``path``'s folder."""
    folder, name = os.path.split(path)
    return os.path.join(folder, tmp_name(name))


def is_leftover_name(name: str) -> bool:
    """Whether ``name`` is a temporary name this project's code makes (the name alone; see sweep_leftovers)."""
    return any(p.fullmatch(name) for p in LEFTOVER_PATTERNS)


def leftovers(folder: str) -> list[str]:
    """Names in ``folder`` that :func:`sweep_leftovers` would remove: leftover names that are regular files."""
    try:
        names = sorted(os.listdir(folder))
    except FileNotFoundError:
        return []
    out = []
    for name in names:
        if not is_leftover_name(name):
            continue
        try:
            if stat.S_ISREG(os.lstat(os.path.join(folder, name)).st_mode):
                out.append(name)
        except FileNotFoundError:
            continue
    return out


def sweep_leftovers(folder: str) -> list[str]:
    """Remove the temporary files a killed run left in ``folder``; returns their names. Hold the lock."""
    removed = []
    for name in leftovers(folder):
        with contextlib.suppress(FileNotFoundError):
            os.unlink(os.path.join(folder, name))
            removed.append(name)
    return removed


@contextlib.contextmanager
def locked_folder(folder: str) -> Iterator[None]:
    """Hold ``folder``'s lock for the block; ArmsError at once when another run holds it."""
    fd = os.open(folder, os.O_RDONLY | os.O_DIRECTORY)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as exc:
            if exc.errno in (errno.EWOULDBLOCK, errno.EAGAIN):
                raise ArmsError(
                    f"another run is writing to {folder} right now (a prepare or an Azure sync of this folder "
                    "holds its lock); wait for it to finish or stop it, then run again."
                ) from None
            raise
        yield
    finally:
        os.close(fd)


@contextlib.contextmanager
def claimed_folder(folder: str) -> Iterator[list[str]]:
    """Lock ``folder`` and sweep what a killed run left there; yields the names swept."""
    with locked_folder(folder):
        yield sweep_leftovers(folder)
