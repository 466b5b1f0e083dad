"""Resolve a dataset source to the parquet files ("parts") that hold one split of it.

A source is either

* a local path: one parquet file, a glob (``/data/**/*.parquet``), or a folder. A folder that holds a
  dataset card (``README.md`` whose front matter has a ``configs:`` block, as hub repos do) is resolved
  exactly like a hub repo (configs, splits); any other folder is searched recursively for ``*.parquet``
  and its split is taken from the file and folder names (``train-*``, ``*/test/*``, ...; files named
  for no split are all ``train``), like the ``datasets`` library does. For a single file or a glob the
  user picked the files: ``split`` is not applied and ``config`` is refused.
* a Hugging Face hub dataset id ``owner/name``, read through ``huggingface_hub.HfFileSystem`` (HTTP
  range reads, so only the needed column chunks are fetched). The token comes from the caller or from
  ``HF_TOKEN``/``HUGGINGFACE_HUB_TOKEN``; it is handed to the file system object only, never put in
  process arguments, results or messages.

``config=None`` means every config of the dataset (their files, deduplicated). Only the columns asked
for are ever read: :func:`part_facts` reads the footer, :func:`open_parquet` opens the file; callers
pass ``columns=`` to pyarrow so that e.g. the 384-float ``embedding`` column is never fetched.
"""

from __future__ import annotations

import fnmatch
import glob as globmod
import os
import re
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

from ansible.module_utils.arms_common import ArmsError

HUB_ID_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*/[A-Za-z0-9][A-Za-z0-9._-]*$")
GLOB_CHARS = set("*?[")
# split keywords as the ``datasets`` library recognises them in file and folder names
SPLIT_KEYWORDS = {
    "train": ("train", "training"),
    "validation": ("validation", "valid", "val", "dev"),
    "test": ("test", "testing", "eval", "evaluation"),
}
FOOTER_THREADS = 16


@dataclass(frozen=True)
class Part:
    """One parquet file of the source. ``path`` is absolute (local) or an HfFileSystem path (hub)."""

    path: str
    hub: bool = False
    size: int | None = None


@dataclass
class Source:
    kind: str  # "local" | "hub"
    dataset: str  # absolute path (local) or owner/name (hub)
    config: str | None
    split: str
    parts: list[Part] = field(default_factory=list)

    def describe(self) -> dict[str, Any]:
        """What the manifest records as the source (no file list: that goes to stats)."""
        return {"kind": self.kind, "dataset": self.dataset, "config": self.config, "split": self.split}


@dataclass(frozen=True)
class PartFacts:
    rows: int
    row_groups: int
    columns: dict[str, str]  # name -> arrow type
    column_bytes: dict[str, int]  # name -> uncompressed bytes over all row groups (top-level columns)
    row_group_rows: list[int]
    rg_column_bytes: list[dict[str, int]]  # per row group: name -> uncompressed bytes

    def row_group_bytes(self, column: str) -> list[int]:
        """Uncompressed bytes of ``column`` in each row group (0 when absent)."""
        return [rg.get(column, 0) for rg in self.rg_column_bytes]


# ---------------------------------------------------------------------------------------------- tokens


def hf_token(explicit: str | None = None) -> str | None:
    """The token to use: the explicit one, else HF_TOKEN, else HUGGINGFACE_HUB_TOKEN, else None."""
    for value in (explicit, os.environ.get("HF_TOKEN"), os.environ.get("HUGGINGFACE_HUB_TOKEN")):
        if value:
            return value
    return None


_HUB_TOKEN: str | None = None
_HUB_FS: Any = None


def _make_hub_filesystem(token: str | None) -> Any:
    from huggingface_hub import HfFileSystem

    return HfFileSystem(token=token, skip_instance_cache=True)


# Tests replace this factory with one returning a local stand-in (there is no network here).
hub_filesystem_factory: Callable[[str | None], Any] = _make_hub_filesystem


def set_hub_token(token: str | None) -> None:
    """Remember the token for this process and the worker processes it forks."""
    global _HUB_TOKEN, _HUB_FS
    _HUB_TOKEN = token
    _HUB_FS = None


def hub_fs() -> Any:
    """This process's hub file system (made lazily, so a forked worker makes its own)."""
    global _HUB_FS
    if _HUB_FS is None or getattr(_HUB_FS, "_arms_pid", None) != os.getpid():
        _HUB_FS = hub_filesystem_factory(_HUB_TOKEN)
        try:
            _HUB_FS._arms_pid = os.getpid()
        except AttributeError:
            pass
    return _HUB_FS


def _scrub(text: str) -> str:
    return text.replace(_HUB_TOKEN, "***") if _HUB_TOKEN else text


# ---------------------------------------------------------------------------------------- resolution


def is_hub_id(dataset: str) -> bool:
    """``owner/name`` that is not an existing local path."""
    return bool(HUB_ID_RE.match(dataset)) and not os.path.exists(os.path.expanduser(dataset))


def resolve_source(dataset: str, config: str | None = None, split: str = "train", token: str | None = None) -> Source:
    """The parts of ``dataset`` (hub id or local path) for ``config``/``split``. Raises ArmsError."""
    if not dataset or not dataset.strip():
        raise ArmsError("dataset is empty; expected a hub dataset id like owner/name or a local parquet path.")
    expanded = os.path.expanduser(dataset)
    if os.path.isfile(expanded):
        if config:
            raise ArmsError(
                f"config {config!r} applies to a hub dataset or a dataset folder, not to one file ({dataset})."
            )
        path = os.path.abspath(expanded)
        return Source("local", path, None, split, [Part(path, size=os.path.getsize(path))])
    if os.path.isdir(expanded):
        return _resolve_local_folder(os.path.abspath(expanded), config, split)
    if GLOB_CHARS & set(expanded):
        if config:
            raise ArmsError(
                f"config {config!r} applies to a hub dataset or a dataset folder, not to a glob ({dataset})."
            )
        paths = sorted(
            os.path.abspath(p)
            for p in globmod.glob(expanded, recursive=True)
            if p.endswith(".parquet") and os.path.isfile(p)
        )
        if not paths:
            raise ArmsError(f"the glob {dataset} matches no parquet file; check the pattern (use ** for subfolders).")
        return Source(
            "local", os.path.abspath(expanded), None, split, [Part(p, size=os.path.getsize(p)) for p in paths]
        )
    if HUB_ID_RE.match(dataset):
        return _resolve_hub(dataset, config, split, token)
    raise ArmsError(
        f"dataset {dataset!r} is neither an existing local path nor a hub dataset id; "
        "expected owner/name, a parquet file, a folder or a glob."
    )


class _Tree:
    """The few file-system operations resolution needs, over a local folder or a hub repo."""

    def __init__(self, root: str, fs: Any | None) -> None:
        self.root = root.rstrip("/")
        self.fs = fs  # None = local

    def read_text(self, rel: str) -> str | None:
        if self.fs is None:
            path = os.path.join(self.root, rel)
            if not os.path.isfile(path):
                return None
            with open(path, encoding="utf-8") as fh:
                return fh.read()
        path = f"{self.root}/{rel}"
        if not self.fs.isfile(path):
            return None
        with self.fs.open(path, "rb") as fh:
            return fh.read().decode("utf-8")

    def parquet_files(self) -> list[str]:
        """Every parquet file under the root, relative, sorted."""
        if self.fs is None:
            out = []
            for folder, dirs, files in os.walk(self.root):
                dirs[:] = [d for d in dirs if not d.startswith(".")]
                for name in files:
                    if name.endswith(".parquet"):
                        out.append(os.path.relpath(os.path.join(folder, name), self.root).replace(os.sep, "/"))
            return sorted(out)
        found = self.fs.find(self.root)
        prefix = self.root + "/"
        return sorted(p[len(prefix) :] for p in found if p.endswith(".parquet") and p.startswith(prefix))

    def part(self, rel: str, size: int | None) -> Part:
        if self.fs is None:
            path = os.path.join(self.root, rel)
            return Part(path, size=os.path.getsize(path))
        return Part(f"{self.root}/{rel}", hub=True, size=size)


def _card_configs(text: str | None) -> dict[str, dict[str, list[str]]] | None:
    """``{config: {split: [patterns]}}`` from a dataset card's front matter, or None without configs."""
    if not text or not text.startswith("---"):
        return None
    end = text.find("\n---", 3)
    if end < 0:
        return None
    try:
        import yaml
    except ImportError:
        raise ArmsError(
            "reading the dataset card (README.md) needs PyYAML, which this Python lacks; install pyyaml "
            "(it comes with huggingface_hub) or point dataset at the parquet files."
        ) from None
    try:
        meta = yaml.safe_load(text[3:end])
    except yaml.YAMLError:
        return None
    configs = meta.get("configs") if isinstance(meta, dict) else None
    if not isinstance(configs, list) or not configs:
        return None
    out: dict[str, dict[str, list[str]]] = {}
    for entry in configs:
        if not isinstance(entry, dict):
            continue
        name = str(entry.get("config_name", "default"))
        files = entry.get("data_files")
        splits: dict[str, list[str]] = {}
        if isinstance(files, str):
            splits["train"] = [files]
        elif isinstance(files, list):
            for item in files:
                if isinstance(item, str):
                    splits.setdefault("train", []).append(item)
                elif isinstance(item, dict) and "path" in item:
                    paths = item["path"] if isinstance(item["path"], list) else [item["path"]]
                    splits.setdefault(str(item.get("split", "train")), []).extend(str(p) for p in paths)
        elif isinstance(files, dict):
            for split_name, paths in files.items():
                splits[str(split_name)] = [str(p) for p in (paths if isinstance(paths, list) else [paths])]
        out[name] = splits
    return out or None


def _split_of(rel: str) -> str | None:
    """The split a file belongs to by its name or folders (None when it names no split)."""
    parts = rel.lower().split("/")
    for split_name, words in SPLIT_KEYWORDS.items():
        for word in words:
            if any(p == word for p in parts[:-1]):
                return split_name
            if re.match(rf"^{word}([-_.\d]|$)", parts[-1]) or re.search(rf"[-_]{word}([-_.]|$)", parts[-1]):
                return split_name
    return None


def _match(files: list[str], pattern: str) -> list[str]:
    pattern = pattern.lstrip("./")
    return [f for f in files if fnmatch.fnmatchcase(f, pattern) or fnmatch.fnmatchcase(f, pattern + "/*")]


def _resolve_tree(tree: _Tree, where: str, config: str | None, split: str) -> list[str]:
    files = tree.parquet_files()
    if not files:
        raise ArmsError(f"{where} holds no parquet file; expected a dataset stored as parquet.")
    configs = _card_configs(tree.read_text("README.md"))
    if configs is None:
        if config not in (None, "default"):
            raise ArmsError(
                f"{where} defines no configs (its README.md has no configs: block); drop config {config!r}."
            )
        by_split: dict[str, list[str]] = {}
        for f in files:
            by_split.setdefault(_split_of(f) or "train", []).append(f)
        if split not in by_split:
            raise ArmsError(f"{where} has no split {split!r}; it has {', '.join(sorted(by_split))}.")
        return by_split[split]
    if config is not None and config not in configs:
        known = sorted(configs)
        shown = ", ".join(known[:8]) + (f" and {len(known) - 8} more" if len(known) > 8 else "")
        raise ArmsError(f"{where} has no config {config!r}; its configs are {shown} (or leave config unset for all).")
    chosen = [config] if config is not None else sorted(configs)
    picked: set[str] = set()
    with_split = 0
    for name in chosen:
        patterns = configs[name].get(split)
        if patterns is None:
            continue
        with_split += 1
        for pattern in patterns:
            picked.update(_match(files, pattern))
    if with_split == 0:
        splits = sorted({s for name in chosen for s in configs[name]})
        raise ArmsError(
            f"{where} has no split {split!r} in {'config ' + repr(config) if config else 'any config'}; "
            f"it has {', '.join(splits)}."
        )
    if not picked:
        raise ArmsError(
            f"{where}: the data_files of split {split!r} match no parquet file; the dataset card and files disagree."
        )
    return sorted(picked)


def _resolve_local_folder(folder: str, config: str | None, split: str) -> Source:
    tree = _Tree(folder, None)
    rels = _resolve_tree(tree, folder, config, split)
    return Source("local", folder, config, split, [tree.part(r, None) for r in rels])


def _resolve_hub(repo: str, config: str | None, split: str, token: str | None) -> Source:
    set_hub_token(hf_token(token))
    fs = hub_fs()
    root = f"datasets/{repo}"
    try:
        if not fs.exists(root):
            raise ArmsError(
                f"the hub dataset {repo} does not exist or is not visible with the current token; "
                "check the id (owner/name) and, for a gated or private dataset, set hf_token."
            )
        tree = _Tree(root, fs)
        rels = _resolve_tree(tree, f"hub dataset {repo}", config, split)
        sizes = {}
        try:
            for rel in rels:
                sizes[rel] = int(fs.info(f"{root}/{rel}").get("size") or 0) or None
        except Exception:  # sizes only feed estimates
            sizes = {}
        return Source("hub", repo, config, split, [tree.part(r, sizes.get(r)) for r in rels])
    except ArmsError:
        raise
    except Exception as exc:
        raise ArmsError(
            f"could not list hub dataset {repo} ({type(exc).__name__}: {_scrub(str(exc))[:300]}); "
            "check the network, the id and hf_token."
        ) from None


# ------------------------------------------------------------------------------------------- reading


def open_parquet(part: Part) -> Any:
    """A ``pyarrow.parquet.ParquetFile`` for ``part`` (hub parts through range reads)."""
    import pyarrow.parquet as pq

    if not part.hub:
        return pq.ParquetFile(part.path)
    # no read-ahead cache: pre_buffer already coalesces the wanted column chunks into few range
    # requests, and a block cache would also fetch the neighbouring (embedding) bytes
    handle = hub_fs().open(part.path, "rb", cache_type="none")
    return pq.ParquetFile(handle, pre_buffer=True)


def part_facts(part: Part) -> PartFacts:
    """Rows, row groups, columns and per-column uncompressed bytes of one part, from its footer."""
    try:
        pf = open_parquet(part)
        meta = pf.metadata
        schema = pf.schema_arrow
    except ArmsError:
        raise
    except Exception as exc:
        raise ArmsError(
            f"{part.path} is not a readable parquet file ({type(exc).__name__}: {_scrub(str(exc))[:200]})."
        ) from None
    columns = {f.name: str(f.type) for f in schema}
    col_bytes: dict[str, int] = dict.fromkeys(columns, 0)
    rg_rows = []
    rg_bytes: list[dict[str, int]] = []
    for i in range(meta.num_row_groups):
        rg = meta.row_group(i)
        rg_rows.append(rg.num_rows)
        here: dict[str, int] = {}
        for j in range(rg.num_columns):
            col = rg.column(j)
            top = col.path_in_schema.split(".")[0]
            here[top] = here.get(top, 0) + col.total_uncompressed_size
        rg_bytes.append(here)
        for top, nbytes in here.items():
            if top in col_bytes:
                col_bytes[top] += nbytes
    return PartFacts(meta.num_rows, meta.num_row_groups, columns, col_bytes, rg_rows, rg_bytes)


def all_part_facts(parts: list[Part]) -> list[PartFacts]:
    """Footers of every part (threads: over the network each is a round trip)."""
    if len(parts) <= 1 or not any(p.hub for p in parts):
        return [part_facts(p) for p in parts]
    with ThreadPoolExecutor(max_workers=min(FOOTER_THREADS, len(parts))) as pool:
        return list(pool.map(part_facts, parts))


def check_columns(parts: list[Part], facts: list[PartFacts], needed: dict[str, str]) -> None:
    """ArmsError naming the first part that lacks a needed column (``needed``: column -> the option naming it)."""
    for part, fact in zip(parts, facts, strict=True):
        for column, option in needed.items():
            if column not in fact.columns:
                have = ", ".join(sorted(fact.columns))
                raise ArmsError(
                    f"{part.path} has no column {column!r} (named by {option}); it has {have}: "
                    f"set {option} to one of those."
                )
