"""The data dir manifest: what sharding, the Azure sync, transfer and preflight all trust.

``manifest.json`` sits in an arm's data dir (``$NANOCHAT_BASE_DIR/base_data``) and lists every
shard nanochat will read, with rows, bytes, row groups and sha256. Format (version 1)::

    {
      "format": "nanochat-arms-manifest/1",
      "tool_version": "0.1.0",
      "kind": "random_subset" | "azure_blob" | ...,
      "source": {...},          # where the data came from (dataset/config/split, or container/prefix)
      "params": {...},          # what produced it (ratio, seed, rows_per_shard, rule, ...)
      "shards": [{"name": "shard_00000.parquet", "rows": 14000, "bytes": 1234, "row_groups": 8,
                  "sha256": "...", "role": "train" | "val"}, ...],   # sorted by name
      "totals": {"shards": 2, "rows": 28000, "bytes": 2468, "train_rows": ..., "val_rows": ...},
      "stats": {...}            # free-form facts (realised fraction, rows read, ...)
    }

Verification keeps a cache (``.manifest-verified.json``: name -> size, mtime_ns, sha256) so a
re-run does not re-hash files that have not been touched since they were last verified.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
from dataclasses import dataclass, field
from typing import Any

from ansible.module_utils.arms_common import TOOL_VERSION, ArmsError, atomic_write_json, fsync_dir
from ansible.module_utils.arms_datadir import tmp_path
from ansible.module_utils.arms_names import file_name_problem

MANIFEST_NAME = "manifest.json"
VERIFY_CACHE_NAME = ".manifest-verified.json"
FORMAT = "nanochat-arms-manifest/1"
HASH_CHUNK = 4 * 1024 * 1024


def sha256_file(path: str) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        while chunk := fh.read(HASH_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def parquet_facts(path: str) -> dict[str, Any]:
    """Rows, row groups and column names of a parquet file (footer only; pyarrow imported lazily)."""
    import pyarrow.parquet as pq

    meta = pq.ParquetFile(path).metadata
    return {
        "rows": meta.num_rows,
        "row_groups": meta.num_row_groups,
        "columns": [meta.schema.column(i).name for i in range(meta.num_columns)],
    }


def shard_entry(path: str, role: str = "train", sha256: str | None = None) -> dict[str, Any]:
    """The manifest entry of one shard on disk."""
    facts = parquet_facts(path)
    return {
        "name": os.path.basename(path),
        "rows": facts["rows"],
        "row_groups": facts["row_groups"],
        "bytes": os.path.getsize(path),
        "sha256": sha256 or sha256_file(path),
        "role": role,
    }


def build_manifest(
    kind: str,
    source: dict[str, Any],
    params: dict[str, Any],
    shards: list[dict[str, Any]],
    stats: dict[str, Any] | None = None,
) -> dict[str, Any]:
    shards = sorted(shards, key=lambda s: s["name"])
    totals = {
        "shards": len(shards),
        "rows": sum(s["rows"] for s in shards),
        "bytes": sum(s["bytes"] for s in shards),
        "train_rows": sum(s["rows"] for s in shards if s.get("role", "train") == "train"),
        "val_rows": sum(s["rows"] for s in shards if s.get("role") == "val"),
    }
    return {
        "format": FORMAT,
        "tool_version": TOOL_VERSION,
        "kind": kind,
        "source": source,
        "params": params,
        "shards": shards,
        "totals": totals,
        "stats": stats or {},
    }


def manifest_path(data_dir: str) -> str:
    return os.path.join(data_dir, MANIFEST_NAME)


def read_manifest(data_dir: str, force_hint: str = "re-run with force") -> dict[str, Any] | None:
    """The manifest of ``data_dir``, or None when there is none. Raises ArmsError when malformed.

    ``force_hint`` is how the caller's user replaces an unreadable one (``pass --force`` on a CLI).
    """
    path = manifest_path(data_dir)
    if not os.path.exists(path):
        return None
    try:
        with open(path, encoding="utf-8") as fh:
            data = json.load(fh)
    except (OSError, ValueError) as exc:
        raise ArmsError(f"{path} is not a readable manifest ({exc}); remove it or {force_hint}.") from exc
    if not isinstance(data, dict) or data.get("format") != FORMAT or not isinstance(data.get("shards"), list):
        raise ArmsError(f"{path} is not a nanochat-arms manifest (expected format {FORMAT!r}).")
    problems = shard_entry_problems(data["shards"])
    if problems:
        shown = "; ".join(problems[:3]) + (f"; and {len(problems) - 3} more" if len(problems) > 3 else "")
        raise ArmsError(
            f"{path} cannot be trusted: {shown}. Every shard of a manifest is a plain file name in its data dir "
            "with its bytes and sha256; nothing was removed or changed. Replace the manifest (re-run the prepare, "
            "download or transfer step)."
        )
    return data


def shard_entry_problems(shards: list[Any]) -> list[str]:
    """What is wrong with the shard entries of a manifest, checked before any entry is acted on.

    Manifests travel between hosts (the CPU node's reaches the GPU nodes), so a name like
    ``../victim.txt`` must never become a path to remove or overwrite.
    """
    problems = []
    seen: set[str] = set()
    for i, shard in enumerate(shards):
        if not isinstance(shard, dict):
            problems.append(f"shard {i} is not a mapping")
            continue
        name = shard.get("name")
        problem = file_name_problem(name)
        if problem:
            problems.append(f"shard {i}: {problem}")
            continue
        if name in seen:
            problems.append(f"shard {name!r} is listed twice")
        seen.add(name)
        size = shard.get("bytes")
        if not isinstance(size, int) or isinstance(size, bool) or size < 0:
            problems.append(f"shard {name!r} has no byte count")
        if not isinstance(shard.get("sha256"), str):
            problems.append(f"shard {name!r} has no sha256")
    return problems


def write_manifest(data_dir: str, manifest: dict[str, Any]) -> None:
    atomic_write_json(manifest_path(data_dir), manifest)


def _load_cache(data_dir: str) -> dict[str, list[Any]]:
    try:
        with open(os.path.join(data_dir, VERIFY_CACHE_NAME), encoding="utf-8") as fh:
            data = json.load(fh)
        return data if isinstance(data, dict) else {}
    except (OSError, ValueError):
        return {}


def remember_verified(data_dir: str, name: str, sha256: str) -> None:
    """Record that ``name`` had ``sha256`` at its current size and mtime (after writing it)."""
    cache = _load_cache(data_dir)
    st = os.stat(os.path.join(data_dir, name))
    cache[name] = [st.st_size, st.st_mtime_ns, sha256]
    atomic_write_json(os.path.join(data_dir, VERIFY_CACHE_NAME), cache)


@dataclass
class Verification:
    ok: list[str] = field(default_factory=list)
    missing: list[str] = field(default_factory=list)
    wrong_size: list[str] = field(default_factory=list)
    wrong_hash: list[str] = field(default_factory=list)
    extra: list[str] = field(default_factory=list)
    hashed: int = 0  # files actually re-hashed (the rest came from the cache)

    @property
    def bad(self) -> list[str]:
        return sorted(self.missing + self.wrong_size + self.wrong_hash)

    @property
    def passed(self) -> bool:
        return not self.bad

    def summary(self) -> str:
        parts = [f"{len(self.ok)} verified"]
        for label, names in (
            ("missing", self.missing),
            ("wrong size", self.wrong_size),
            ("wrong sha256", self.wrong_hash),
            ("not in manifest", self.extra),
        ):
            if names:
                shown = ", ".join(names[:5]) + (f" and {len(names) - 5} more" if len(names) > 5 else "")
                parts.append(f"{len(names)} {label} ({shown})")
        return "; ".join(parts)

    def to_json(self) -> dict[str, Any]:
        return {
            "verified": len(self.ok),
            "missing": self.missing,
            "wrong_size": self.wrong_size,
            "wrong_hash": self.wrong_hash,
            "extra": self.extra,
            "hashed": self.hashed,
        }


def verify_data_dir(data_dir: str, manifest: dict[str, Any], *, use_cache: bool = True) -> Verification:
    """Check every shard of ``manifest`` in ``data_dir`` by size and sha256.

    With ``use_cache`` a file whose size and mtime match the verification cache is not re-hashed;
    ``use_cache=False`` re-hashes everything (what ``skip_download``/``prepare_mode: skip`` use
    when asked for a deep check). ``extra`` lists parquet files nanochat would read that the
    manifest does not name: they change what an arm trains on.
    """
    result = Verification()
    cache = _load_cache(data_dir) if use_cache else {}
    new_cache = dict(cache)
    names = set()
    for shard in manifest["shards"]:
        name = shard["name"]
        names.add(name)
        path = os.path.join(data_dir, name)
        try:
            st = os.stat(path)
        except FileNotFoundError:
            result.missing.append(name)
            continue
        if st.st_size != shard["bytes"]:
            result.wrong_size.append(name)
            continue
        cached = cache.get(name)
        if cached and cached[0] == st.st_size and cached[1] == st.st_mtime_ns and cached[2] == shard["sha256"]:
            result.ok.append(name)
            continue
        digest = sha256_file(path)
        result.hashed += 1
        if digest != shard["sha256"]:
            result.wrong_hash.append(name)
            new_cache.pop(name, None)
            continue
        new_cache[name] = [st.st_size, st.st_mtime_ns, digest]
        result.ok.append(name)
    for entry in sorted(os.listdir(data_dir)) if os.path.isdir(data_dir) else []:
        if entry.endswith(".parquet") and entry not in names:
            result.extra.append(entry)
    if new_cache != cache and os.path.isdir(data_dir):
        try:
            atomic_write_json(os.path.join(data_dir, VERIFY_CACHE_NAME), new_cache)
        except OSError:
            pass  # read-only data dir: verification still holds, only the cache is lost
    return result


def copy_atomically(src: str, dest: str) -> None:
    """Copy ``src`` to ``dest`` through a hidden temporary name in ``dest``'s folder, fsync, rename.

    The temporary name (arms_datadir.tmp_name) never ends in ``.parquet`` (nanochat reads every ``*.parquet``
    of its data dir), and is removed when the copy fails (a full disk, Ctrl-C).
    """
    import shutil

    folder = os.path.dirname(os.path.abspath(dest))
    tmp = tmp_path(os.path.abspath(dest))
    try:
        shutil.copyfile(src, tmp)
        with open(tmp, "rb") as fh:
            os.fsync(fh.fileno())
        os.replace(tmp, dest)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise
    fsync_dir(folder)


def place_val_shard(data_dir: str, val_file: str, name: str = "shard_val.parquet", check_mode: bool = False) -> bool:
    """Put the shared validation shard into an arm's data dir and record it in the manifest.

    The shard is copied (atomically) as ``name`` - a name that sorts after every ``shard_NNNNN`` so
    nanochat takes it as its validation split - and its manifest entry gets ``role: val``. Returns
    whether anything changed. The arm's manifest must exist (the arm's data step writes it).
    """
    manifest = read_manifest(data_dir)
    if manifest is None:
        raise ArmsError(
            f"{data_dir} has no manifest.json: fetch or prepare the arm's data before placing the val shard."
        )
    if not os.path.exists(val_file):
        raise ArmsError(f"the shared val shard {val_file} is missing: run the random arm's prepare step first.")
    digest = sha256_file(val_file)
    dest = os.path.join(data_dir, name)
    current = next((s for s in manifest["shards"] if s["name"] == name), None)
    on_disk = os.path.exists(dest) and os.path.getsize(dest) == os.path.getsize(val_file)
    in_place = current and current.get("sha256") == digest and current.get("role") == "val" and on_disk
    if in_place and sha256_file(dest) == digest:
        return False
    if check_mode:
        return True
    try:
        copy_atomically(val_file, dest)
    except OSError as exc:
        raise ArmsError(
            f"the shared val shard could not be copied to {dest} ({exc.strerror or exc}); nothing half-written was "
            "left there. Free space on that disk (or fix its permissions) and run again."
        ) from None
    entry = shard_entry(dest, role="val", sha256=digest)
    shards = [s for s in manifest["shards"] if s["name"] != name] + [entry]
    # the arm's own shards are all training data now: only the shared shard is val
    for s in shards:
        if s["name"] != name and s.get("role") == "val":
            s["role"] = "train"
    updated = build_manifest(manifest["kind"], manifest["source"], manifest["params"], shards, manifest.get("stats"))
    write_manifest(data_dir, updated)
    remember_verified(data_dir, name, digest)
    return True


def require_complete(data_dir: str, *, deep: bool = False) -> dict[str, Any]:
    """The manifest of ``data_dir`` when the folder is whole; ArmsError with a sentence otherwise.

    A data dir is used (transferred, trained on) only whole: a prep or download killed midway leaves
    finished shards and no ``manifest.json``, and nanochat reads such a folder without a word. Whole
    means: a manifest, every shard it lists present with its byte count, and no ``*.parquet`` file it does
    not list (nanochat would read that too). Sizes are checked from ``stat``; ``deep`` also re-hashes
    every shard against its sha256 (through :func:`verify_data_dir` and its cache).
    """
    rerun = "re-run the arm's data step (prepare, download or transfer: it resumes and writes the manifest last)"
    manifest = read_manifest(data_dir)
    parquet = sorted(e for e in os.listdir(data_dir) if e.endswith(".parquet")) if os.path.isdir(data_dir) else []
    if manifest is None:
        held = f"{len(parquet)} parquet file(s) ({', '.join(parquet[:3])}{', ...' if len(parquet) > 3 else ''})"
        raise ArmsError(
            f"{data_dir} has no {MANIFEST_NAME} but holds {held}: that is what a prep or download killed midway "
            f"leaves, and nanochat would train on it without a word; {rerun}."
            if parquet
            else f"{data_dir} has no {MANIFEST_NAME} and no shard: {rerun}."
        )
    listed = {s["name"]: s for s in manifest["shards"]}
    missing = sorted(n for n in listed if not os.path.isfile(os.path.join(data_dir, n)))
    resized = sorted(
        n for n in listed if n not in missing and os.path.getsize(os.path.join(data_dir, n)) != listed[n]["bytes"]
    )
    extra = sorted(n for n in parquet if n not in listed)
    if deep and not (missing or resized):
        resized = verify_data_dir(data_dir, manifest, use_cache=False).wrong_hash
    problems = []
    for label, names in (
        ("listed in the manifest but absent", missing),
        ("of another size or sha256 than the manifest says", resized),
        ("not in the manifest (nanochat would read them too)", extra),
    ):
        if names:
            problems.append(f"{len(names)} shard(s) {label}: {', '.join(names[:5])}{' ...' if len(names) > 5 else ''}")
    if problems:
        raise ArmsError(f"{data_dir} is not whole: {'; '.join(problems)}; {rerun}, or move stray files away.")
    return manifest
