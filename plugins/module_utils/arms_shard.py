"""Random-subset sharding: keyed-hash sampling, a bounded-memory shuffle, shards in nanochat's format.

The pipeline (:func:`prepare_random_subset`) turns one split of a dataset (see ``arms_source``) into a
nanochat data dir: ``shard_00000.parquet``, ``shard_00001.parquet``, ... (+ ``shard_val.parquet``) and a
``manifest.json``.

Sampling rule (:data:`RULE`, recorded in the manifest): every row's id is hashed with BLAKE2b keyed by
the seed; the first 8 bytes decide whether the row is kept (and whether it is a validation row), the
last 8 bytes are its place in the shuffled output. The kept set therefore depends only on (seed, ratio,
ids): not on file order, worker count or interruptions.

Two passes, memory bounded whatever the dataset size:

1. *Sample and spill* (parallel over "units" = runs of row groups of a source file, ~256 MB of text
   each): read only the text, id (and extra) columns in record batches, hash the ids, keep the rows that
   pass, and append them to the unit's Arrow IPC spill file grouped by bucket (the top ``bits`` of the
   order key, 2**bits buckets sized so that one holds ~``BUCKET_TARGET_BYTES`` of kept text). A unit is
   done when its ``.json`` marker exists (written last, atomically).
2. *Sort and write* (parallel over runs of consecutive shards): the output order is "sort every kept row
   by its order key" (ties by text); since buckets are ranges of that key, shard i is rows
   [i*R, (i+1)*R) of the concatenation of the sorted buckets, so a worker only loads the one or two
   buckets a shard spans, computes their sort order, gathers each row group's rows and streams them to
   a temporary file that is fsynced, hashed and renamed.

Peak memory per worker: pass 1 one record batch (``BATCH_ROWS`` rows of the read columns) plus the spill
buffer (``SPILL_FLUSH_BYTES``); pass 2 one bucket (~``BUCKET_TARGET_BYTES`` of text) with its sort order
and one row group, two buckets where a shard crosses a bucket boundary. Neither grows with the dataset.

A killed run re-run with the same parameters reuses every finished unit and shard (the work dir keeps
the spill until the data dir is complete) and writes byte-identical shards, because every byte of a
shard is a pure function of the kept rows.
"""

from __future__ import annotations

import contextlib
import ctypes
import dataclasses
import hashlib
import json
import math
import multiprocessing
import os
import shutil
import signal
import time
from collections.abc import Callable, Iterator
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from dataclasses import dataclass, field
from fractions import Fraction
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.ipc as ipc
import pyarrow.parquet as pq
from ansible.module_utils.arms_common import (
    ArmsError,
    ProgressWriter,
    atomic_write_json,
    check_folder_for_writing,
    free_bytes,
    fsync_dir,
    human_bytes,
)
from ansible.module_utils.arms_datadir import claimed_folder, leftovers, sweep_leftovers, tmp_path
from ansible.module_utils.arms_manifest import (
    MANIFEST_NAME,
    VERIFY_CACHE_NAME,
    build_manifest,
    copy_atomically,
    read_manifest,
    remember_verified,
    sha256_file,
    shard_entry,
    verify_data_dir,
    write_manifest,
)
from ansible.module_utils.arms_shard_decide import (
    DEFAULT_FORCE_HINT,
    REFUSE,
    REPAIR,
    REPLACE,
    RESUME,
    REUSE,
    Decision,
    Found,
    Wanted,
    decide,
    decide_after_listing,
    prediction,
)
from ansible.module_utils.arms_source import (
    Part,
    PartFacts,
    Source,
    all_part_facts,
    check_columns,
    hf_token,
    is_hub_id,
    open_parquet,
    resolve_source,
    set_hub_token,
)

KIND = "random_subset"
VAL_KIND = "random_subset_val"
KEY_PREFIX = "nanochat-arms/random_subset:"
MAX_ROWS_PER_GROUP = 1024  # nanochat's own row groups
COMPRESSION = "zstd"
DEFAULT_COMPRESSION_LEVEL = 3  # what nanochat's own shards use
# one row group of nanochat's size: a worker's first batches fault its working set in, and 4096-row
# batches made that 0.2-0.4 s of kernel time per worker (benchmarks/bench_shard.py), for no gain after
BATCH_ROWS = 1024
SPILL_FLUSH_BYTES = 16 * 1024 * 1024  # kept rows buffered per worker before they go to its spill file
BUCKET_TARGET_BYTES = 128 * 1024 * 1024
UNIT_TARGET_BYTES = 256 * 1024 * 1024
TASKS_PER_WORKER = 4  # pass 2: runs of shards per worker, so that workers finish it together (_group_jobs)
VAL_NAME = "shard_val.parquet"
STATE_NAME = "state.json"
STATE_FORMAT = "nanochat-arms-random-subset-work/1"
# output bytes per kept text byte, upper bounds used only for the free-space estimate
SPILL_PER_TEXT_BYTE = 1.05  # the spill is uncompressed Arrow (speed over space): text + 8-byte key
OUTPUT_PER_TEXT_BYTE = 0.5  # zstd-3 shards of English web text are ~0.3x the raw text

RULE = (
    "h = BLAKE2b(digest_size=16, key=UTF-8 of 'nanochat-arms/random_subset:<seed>') of the UTF-8 bytes of the "
    "row's id (a non-string id is first cast to its text, e.g. decimal); u = h[0:8] and o = h[8:16] read as "
    "big-endian unsigned 64-bit integers; T = floor(ratio * 2^64), V = floor(val_fraction * T) (exact "
    "arithmetic on the binary values). A row is kept when u < T and its text is not null; a kept row with "
    "u < V is a validation row, the others are training rows. Each group is ordered by (o, text) and cut "
    "in that order: training rows into shards of rows_per_shard rows (a last shard of fewer than world_size "
    "rows is appended to the shard before it), validation rows into one shard_val.parquet."
)


EXCLUDE_RULE = (
    "With excludes_val_of {seed: s', ratio: r', val_fraction: f'}: a row whose id hashes under the key of s' "
    "to u' < V' = floor(f' * floor(r' * 2^64)) is a validation row of that member's shard_val.parquet and is "
    "not kept here (neither as a training nor as a validation row); the rule above decides the rest."
)


def shard_name(index: int) -> str:
    return f"shard_{index:05d}.parquet"


# ------------------------------------------------------------------------------------ sampling rule


def sample_key(seed: int) -> bytes:
    return f"{KEY_PREFIX}{int(seed)}".encode()


def thresholds(ratio: float, val_fraction: float = 0.0) -> tuple[int, int]:
    """(T, V) of the rule, exact: T = floor(ratio * 2^64), V = floor(val_fraction * T)."""
    t = math.floor(Fraction(ratio) * (1 << 64))
    v = math.floor(Fraction(val_fraction) * t)
    return t, v


def hash_ids(ids: pa.Array | pa.ChunkedArray, key: bytes) -> tuple[np.ndarray, np.ndarray]:
    """(u, o): the two 64-bit halves of the keyed BLAKE2b digest of each id, as uint64 arrays."""
    if isinstance(ids, pa.ChunkedArray):
        ids = ids.combine_chunks()
    if not (pa.types.is_string(ids.type) or pa.types.is_large_string(ids.type) or pa.types.is_binary(ids.type)):
        ids = ids.cast(pa.string())
    if pa.types.is_string(ids.type):
        ids = ids.cast(pa.binary())
    elif pa.types.is_large_string(ids.type):
        ids = ids.cast(pa.large_binary())
    values = ids.to_pylist()
    if not values:
        empty = np.zeros(0, dtype=np.uint64)
        return empty, empty
    # the keyed state is set up once and copied per id (a keyed call per id costs ~30% more)
    copy = hashlib.blake2b(key=key, digest_size=16).copy
    digests: list[bytes] = []
    append = digests.append
    for value in values:
        h = copy()
        h.update(value)
        append(h.digest())
    joined = b"".join(digests)
    halves = np.frombuffer(joined, dtype=">u8").reshape(-1, 2).astype(np.uint64)
    return halves[:, 0], halves[:, 1]


def sample_masks(u: np.ndarray, t: int, v: int) -> tuple[np.ndarray, np.ndarray]:
    """(kept, val) boolean masks for hash values ``u`` under thresholds (T, V)."""
    kept = np.ones(u.shape, dtype=bool) if t >= 1 << 64 else u < np.uint64(t)
    val = np.zeros(u.shape, dtype=bool) if v == 0 else (u < np.uint64(min(v, (1 << 64) - 1)))
    return kept, val & kept


def _arrow(values: np.ndarray, type_: pa.DataType) -> pa.Array:
    """A numpy array as an Arrow array without ``pa.array`` (which imports pandas: 0.3 s per process)."""
    values = np.ascontiguousarray(values)
    return pa.Array.from_buffers(type_, len(values), [None, pa.py_buffer(values)])


def bucket_of(o: np.ndarray, bits: int) -> np.ndarray:
    if bits <= 0:
        return np.zeros(o.shape, dtype=np.int64)
    return (o >> np.uint64(64 - bits)).astype(np.int64)


# ------------------------------------------------------------------------------- shard sizing rules


def row_group_sizes(rows: int, world_size: int) -> list[int]:
    """Row-group sizes of a shard: the smallest multiple of ``world_size`` groups with <= 1024 rows each.

    Groups differ by at most one row (the first ones are larger). Needs ``rows >= world_size`` so that
    every group, hence every rank, gets at least one row.
    """
    if world_size < 1:
        raise ValueError("world_size must be >= 1")
    if rows < world_size:
        raise ArmsError(f"a shard of {rows} rows cannot give each of {world_size} ranks a row group.")
    groups = world_size * math.ceil(rows / (MAX_ROWS_PER_GROUP * world_size))
    base, extra = divmod(rows, groups)
    return [base + 1] * extra + [base] * (groups - extra)


def plan_shards(rows: int, rows_per_shard: int, world_size: int) -> list[tuple[int, int]]:
    """[start, end) row ranges of the training shards; a tail shorter than ``world_size`` joins the shard before."""
    if rows < world_size:
        raise ArmsError(
            f"only {rows} training rows were kept, fewer than world_size {world_size}: every rank needs a row "
            "group; raise ratio or use a larger dataset."
        )
    bounds = [(start, min(start + rows_per_shard, rows)) for start in range(0, rows, rows_per_shard)]
    if len(bounds) > 1 and bounds[-1][1] - bounds[-1][0] < world_size:
        tail = bounds.pop()
        bounds[-1] = (bounds[-1][0], tail[1])
    return bounds


# ------------------------------------------------------------------------------------------ options


@dataclass
class Options:
    dataset: str
    data_dir: str
    config: str | None = None
    split: str = "train"
    ratio: float = 0.165
    seed: int = 42
    rows_per_shard: int = 14000
    world_size: int = 8
    val_fraction: float = 0.0
    val_dir: str | None = None
    text_column: str = "text"
    id_column: str = "id"
    extra_columns: list[str] = field(default_factory=list)
    workers: int = 0
    force: bool = False
    hf_token: str | None = field(default=None, repr=False)
    progress_file: str | None = None
    work_dir: str | None = None
    min_free_bytes_factor: float = 1.2
    compression_level: int = DEFAULT_COMPRESSION_LEVEL
    # {seed, ratio, val_fraction} of the member whose validation shard the experiment uses: its validation
    # rows are dropped from this data dir (EXCLUDE_RULE). None: today's rule alone.
    exclude_val_of: dict[str, Any] | None = None

    def exclusion(self) -> dict[str, Any] | None:
        """``exclude_val_of`` as recorded in the manifest's params (numbers normalised, the rule in words)."""
        if not self.exclude_val_of:
            return None
        ex = self.exclude_val_of
        return {
            "seed": int(ex["seed"]),
            "ratio": float(ex["ratio"]),
            "val_fraction": float(ex["val_fraction"]),
            "rule": EXCLUDE_RULE,
        }

    def params(self) -> dict[str, Any]:
        """What produced the shards: compared with the manifest to refuse mixing."""
        params = self._params()
        exclusion = self.exclusion()
        if exclusion is not None:  # only then: a data dir made without it keeps today's params
            params["excludes_val_of"] = exclusion
        return params

    def _params(self) -> dict[str, Any]:
        return {
            "ratio": float(self.ratio),
            "seed": int(self.seed),
            "rows_per_shard": int(self.rows_per_shard),
            "world_size": int(self.world_size),
            "val_fraction": float(self.val_fraction),
            "text_column": self.text_column,
            "id_column": self.id_column,
            "extra_columns": list(self.extra_columns),
            "compression": f"{COMPRESSION}-{int(self.compression_level)}",
            "rule": RULE,
        }

    def paths(self) -> tuple[str, str, str]:
        data_dir = os.path.abspath(os.path.expanduser(self.data_dir))
        parent, base = os.path.split(data_dir.rstrip(os.sep))
        val_dir = (
            os.path.abspath(os.path.expanduser(self.val_dir)) if self.val_dir else os.path.join(parent, "arms_val")
        )
        # the work area is always a folder of its own (it is removed whole on success)
        work_root = os.path.abspath(os.path.expanduser(self.work_dir)) if self.work_dir else parent
        return data_dir, val_dir, os.path.join(work_root, f".arms-work-{base}")


def validate_options(opts: Options) -> None:
    """ArmsError for any argument that is wrong on its face (before anything is read or written)."""
    if not isinstance(opts.ratio, (int, float)) or not 0 < opts.ratio <= 1:
        raise ArmsError(f"ratio must be in (0, 1] (a fraction of the rows to keep), got {opts.ratio}.")
    if not isinstance(opts.rows_per_shard, int) or opts.rows_per_shard < 1:
        raise ArmsError(f"rows_per_shard must be an integer >= 1, got {opts.rows_per_shard}.")
    if not isinstance(opts.world_size, int) or opts.world_size < 1:
        raise ArmsError(f"world_size must be an integer >= 1 (GPUs x nodes of the arm), got {opts.world_size}.")
    if opts.rows_per_shard < opts.world_size:
        raise ArmsError(
            f"rows_per_shard ({opts.rows_per_shard}) must be at least world_size ({opts.world_size}) so that "
            "every rank gets a row group of every shard."
        )
    if not isinstance(opts.val_fraction, (int, float)) or not 0 <= opts.val_fraction < 1:
        raise ArmsError(f"val_fraction must be in [0, 1) (0 = no validation shard), got {opts.val_fraction}.")
    if opts.workers < 0:
        raise ArmsError(f"workers must be >= 0 (0 = all cores), got {opts.workers}.")
    if not isinstance(opts.compression_level, int) or not 1 <= opts.compression_level <= 22:
        raise ArmsError(f"compression_level must be a zstd level from 1 to 22, got {opts.compression_level}.")
    if opts.min_free_bytes_factor < 0:
        raise ArmsError(f"min_free_bytes_factor must be >= 0, got {opts.min_free_bytes_factor}.")
    if not opts.data_dir:
        raise ArmsError("data_dir is empty; expected the folder nanochat reads (e.g. ~/.cache/nanochat/base_data).")
    if not opts.text_column or not opts.id_column:
        raise ArmsError("text_column and id_column must name columns of the dataset.")
    for col in opts.extra_columns:
        if col in ("text", "_o"):
            raise ArmsError(f"extra_columns cannot contain {col!r}: the output already has a text column.")
    if len(set(opts.extra_columns)) != len(opts.extra_columns):
        raise ArmsError("extra_columns lists a column twice.")
    if opts.exclude_val_of is not None:
        _validate_exclusion(opts)


def _validate_exclusion(opts: Options) -> None:
    ex = opts.exclude_val_of
    shape = "exclude_val_of must be {seed: <int>, ratio: <(0, 1]>, val_fraction: <(0, 1)>}"
    if not isinstance(ex, dict) or set(ex) != {"seed", "ratio", "val_fraction"}:
        raise ArmsError(f"{shape} (the val owner's sampling), got {ex!r}.")
    seed, ratio, vf = ex["seed"], ex["ratio"], ex["val_fraction"]
    if isinstance(seed, bool) or not isinstance(seed, int):
        raise ArmsError(f"{shape}: its seed {seed!r} is not an integer.")
    if isinstance(ratio, bool) or not isinstance(ratio, (int, float)) or not 0 < ratio <= 1:
        raise ArmsError(f"{shape}: its ratio {ratio!r} is not in (0, 1].")
    if isinstance(vf, bool) or not isinstance(vf, (int, float)) or not 0 < vf < 1:
        raise ArmsError(
            f"{shape}: its val_fraction {vf!r} is not in (0, 1) (without validation rows there is nothing to exclude)."
        )
    if (int(seed), float(ratio), float(vf)) == (int(opts.seed), float(opts.ratio), float(opts.val_fraction)):
        raise ArmsError(
            f"exclude_val_of names this data dir's own sampling (seed {seed}, ratio {ratio}, val_fraction {vf}): "
            "it would drop its own validation rows; the val owner itself takes no exclude_val_of."
        )


def _source_description(opts: Options) -> dict[str, Any]:
    """The manifest's ``source`` for these options, without listing the source (cheap, offline)."""
    if is_hub_id(opts.dataset):
        return {"kind": "hub", "dataset": opts.dataset, "config": opts.config, "split": opts.split}
    return {
        "kind": "local",
        "dataset": os.path.abspath(os.path.expanduser(opts.dataset)),
        "config": opts.config,
        "split": opts.split,
    }


# ------------------------------------------------------------------------------------- worker plumbing

_PROGRESS_Q: Any = None
_PROGRESS_CB: Callable[[int, int, int], None] | None = None


def _init_worker(queue: Any) -> None:
    global _PROGRESS_Q
    _PROGRESS_Q = queue
    try:  # die with the parent: a killed run must not leave workers writing behind its back
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass
    pa.set_cpu_count(1)


def _cpu_timed(fn: Callable[[Any], Any], job: Any) -> tuple[Any, float, int]:
    """``fn(job)``, the CPU seconds it took and the process that ran it (the parent cannot see a worker's CPU)."""
    started = time.process_time()
    result = fn(job)
    return result, time.process_time() - started, os.getpid()


def _report(rows: int, nbytes: int, kept: int) -> None:
    if _PROGRESS_Q is not None:
        try:
            _PROGRESS_Q.put_nowait((rows, nbytes, kept))
        except Exception:
            pass
    elif _PROGRESS_CB is not None:
        _PROGRESS_CB(rows, nbytes, kept)


# ------------------------------------------------------------------------------- pass 1: sample + spill


@dataclass(frozen=True)
class SpillTarget:
    """One member's share of a unit: its key and thresholds, where its kept rows are spilled.

    ``exclude`` is (key, V) of another member whose validation rows this member must not keep: a row whose
    id hashes under that key to u < V is dropped (``Options.exclude_val_of``).
    """

    member: int  # the member's place in the run (0 for a single data dir)
    unit: int  # the unit's number in the member's own layout (its spill file and marker)
    spill_dir: str
    key: bytes
    t: int
    v: int
    bits: int
    exclude: tuple[bytes, int] | None = None


@dataclass(frozen=True)
class UnitJob:
    """One read of a unit of the source, sampled for every target (member) that still needs it."""

    index: int
    part: Part
    row_groups: tuple[int, ...]
    text_column: str
    id_column: str
    extra_columns: tuple[str, ...]
    targets: tuple[SpillTarget, ...]


def _unit_paths(spill_dir: str, index: int) -> tuple[str, str]:
    stem = os.path.join(spill_dir, f"u{index:06d}")
    return stem + ".arrow", stem + ".json"


def _spill_schema(part_schema: pa.Schema, extras: tuple[str, ...]) -> pa.Schema:
    # text is always ``string`` (a record batch of BATCH_ROWS documents stays far below 2 GB)
    fields = [pa.field("text", pa.string()), pa.field("_o", pa.uint64())]
    fields += [part_schema.field(name) for name in extras]
    return pa.schema(fields)


class _SpillWriter:
    """A unit's spill file: kept rows buffered, then written grouped by bucket, with an index of its batches."""

    def __init__(self, path: str, schema: pa.Schema) -> None:
        self.writer = ipc.new_file(path, schema)
        self.index: list[list[int]] = []  # [group, batch number, rows]
        self.counts: dict[int, int] = {}
        self.buffer: list[tuple[pa.Table, np.ndarray]] = []
        self.buffered = 0
        self.batches_written = 0

    def add(self, sub: pa.Table, groups: np.ndarray) -> None:
        self.buffer.append((sub, groups))
        self.buffered += sub.nbytes
        if self.buffered >= SPILL_FLUSH_BYTES:
            self.flush()

    def flush(self) -> None:
        # every buffered table is already sorted by group: a group's rows are one contiguous slice of
        # each, so coalescing a group is a plain copy of a few slices (no gather)
        if not self.buffer:
            return
        present = np.unique(np.concatenate([b[1] for b in self.buffer]))
        for g in present.tolist():
            pieces = []
            for sub, groups in self.buffer:
                a = int(np.searchsorted(groups, g, side="left"))
                b = int(np.searchsorted(groups, g, side="right"))
                if b > a:
                    pieces.append(sub.slice(a, b - a))
            table = pa.concat_tables(pieces)
            if table.nbytes < len(pieces) * 256 * 1024:  # many small pieces (many buckets): coalesce them
                table = table.combine_chunks()
            for rb in table.to_batches():
                if rb.num_rows:
                    self.writer.write_batch(rb)
                    self.index.append([g, self.batches_written, rb.num_rows])
                    self.batches_written += 1
            self.counts[g] = self.counts.get(g, 0) + table.num_rows
        self.buffer, self.buffered = [], 0

    def close(self) -> None:
        self.flush()
        self.writer.close()

    def abandon(self) -> None:
        try:
            self.writer.close()
        except Exception:
            pass


STAT_KEYS = ("rows_read", "rows_null_text", "train_rows", "val_rows", "text_bytes_read", "kept_bytes")


class _Hashes:
    """The ids of one record batch hashed once per key (members of one seed, or a member and the val owner)."""

    def __init__(self, ids: pa.Array | pa.ChunkedArray) -> None:
        self.ids = ids
        self.by_key: dict[bytes, tuple[np.ndarray, np.ndarray]] = {}

    def get(self, key: bytes) -> tuple[np.ndarray, np.ndarray]:
        if key not in self.by_key:
            self.by_key[key] = hash_ids(self.ids, key)
        return self.by_key[key]


def _sample_batch(
    batch: pa.RecordBatch,
    job: UnitJob,
    target: SpillTarget,
    spill_schema: pa.Schema,
    stats: dict[str, int],
    hashes: _Hashes,
    valid: np.ndarray | None,
) -> tuple[pa.Table, np.ndarray] | None:
    """One target's kept rows of one record batch, sorted by group (bucket; val buckets after train), and their groups.

    ``valid`` is the batch's non-null text mask (None: no null text).
    """
    n = batch.num_rows
    text = batch.column(job.text_column)
    u, o = hashes.get(target.key)
    kept, val = sample_masks(u, target.t, target.v)
    if valid is not None:
        stats["rows_null_text"] += int(n - valid.sum())
        kept &= valid
        val &= valid
    if target.exclude is not None:
        owner_u, _ = hashes.get(target.exclude[0])
        _, owner_val = sample_masks(owner_u, 1 << 64, target.exclude[1])
        if valid is not None:
            owner_val &= valid
        dropped = kept & owner_val
        stats["rows_excluded_val"] = stats.get("rows_excluded_val", 0) + int(dropped.sum())
        kept &= ~owner_val
        val &= kept
    stats["rows_read"] += n
    stats["text_bytes_read"] += int(text.nbytes)
    idx = np.flatnonzero(kept)
    if not len(idx):
        return None
    groups = bucket_of(o[idx], target.bits) + np.where(val[idx], 1 << target.bits, 0)
    order = np.argsort(groups, kind="stable")
    idx, groups = idx[order], groups[order]
    take = _arrow(idx.astype(np.int64), pa.int64())
    kept_text = text.take(take)
    if not pa.types.is_string(kept_text.type):
        kept_text = kept_text.cast(pa.string())
    cols = [kept_text, _arrow(o[idx], pa.uint64())]
    cols += [batch.column(name).take(take) for name in job.extra_columns]
    sub = pa.Table.from_arrays(cols, schema=spill_schema)
    n_val = int(val[idx].sum())
    stats["val_rows"] += n_val
    stats["train_rows"] += len(idx) - n_val
    stats["kept_bytes"] += int(sub.column(0).nbytes)
    return sub, groups


def spill_unit(job: UnitJob) -> list[dict[str, Any]]:
    """Pass 1 for one unit: read it once; for each target sample its rows and spill the kept ones grouped by
    bucket into the target's spill dir. Returns each target's result (its stats, bucket counts and spill index).

    Every target's spill file is renamed into place and its marker written only after the whole unit was
    read, one target after the other: a run killed in between leaves some targets' units done (kept on
    resume, per target) and the others' not started.
    """
    pf = open_parquet(job.part)
    schema = pf.schema_arrow
    text_type = schema.field(job.text_column).type
    if not (pa.types.is_string(text_type) or pa.types.is_large_string(text_type)):
        raise ArmsError(
            f"{job.part.path}: column {job.text_column!r} holds {text_type}, expected strings (text_column)."
        )
    read_cols = list(dict.fromkeys([job.text_column, job.id_column, *job.extra_columns]))
    spill_schema = _spill_schema(schema, job.extra_columns)
    paths = [_unit_paths(target.spill_dir, target.unit) for target in job.targets]
    tmps = [tmp_path(arrow_path) for arrow_path, _ in paths]
    all_stats: list[dict[str, int]] = [dict.fromkeys(STAT_KEYS, 0) for _ in job.targets]
    spills: list[_SpillWriter] = []
    try:
        for tmp in tmps:
            spills.append(_SpillWriter(tmp, spill_schema))
        for batch in pf.iter_batches(
            batch_size=BATCH_ROWS, row_groups=list(job.row_groups), columns=read_cols, use_threads=False
        ):
            ids = batch.column(job.id_column)
            if ids.null_count:
                raise ArmsError(
                    f"{job.part.path} has {ids.null_count} rows without an id in column {job.id_column!r}; "
                    "the sampling rule needs an id on every row: set id_column to a column that always has one."
                )
            text = batch.column(job.text_column)
            valid = text.is_valid().to_numpy(zero_copy_only=False) if text.null_count else None
            hashes = _Hashes(ids)
            kept = 0
            for target, stats, spill in zip(job.targets, all_stats, spills, strict=True):
                kept_before = stats["train_rows"] + stats["val_rows"]
                sampled = _sample_batch(batch, job, target, spill_schema, stats, hashes, valid)
                if sampled is not None:
                    spill.add(*sampled)
                kept += stats["train_rows"] + stats["val_rows"] - kept_before
            _report(batch.num_rows, int(text.nbytes), kept)
        for spill in spills:
            spill.close()
    except BaseException:
        for spill in spills:
            spill.abandon()
        for tmp in tmps:
            if os.path.exists(tmp):
                os.unlink(tmp)
        raise
    results = []
    for target, (arrow_path, json_path), tmp, stats, spill in zip(
        job.targets, paths, tmps, all_stats, spills, strict=True
    ):
        fd = os.open(tmp, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, arrow_path)
        result = {
            "unit": target.unit,
            "member": target.member,
            "stats": stats,
            "counts": {str(k): v for k, v in sorted(spill.counts.items())},
            "index": spill.index,
        }
        atomic_write_json(json_path, {k: v for k, v in result.items() if k != "member"})
        results.append(result)
    return results


# ----------------------------------------------------------------------------- pass 2: sort + write


@dataclass(frozen=True)
class BucketRef:
    group: int
    offset: int  # first row of this bucket in its stream's order
    rows: int
    sources: tuple[tuple[str, tuple[int, ...]], ...]  # (spill file, batch numbers)


@dataclass(frozen=True)
class ShardJob:
    name: str
    start: int
    end: int
    buckets: tuple[BucketRef, ...]  # the buckets overlapping [start, end), in order
    role: str
    data_dir: str
    world_size: int
    extra_columns: tuple[str, ...]
    compression_level: int = DEFAULT_COMPRESSION_LEVEL
    force_hint: str = DEFAULT_FORCE_HINT  # how the caller's user sets force, for a spill changed behind its back


_BUCKET_CACHE: dict[BucketRef, tuple[pa.Table, pa.Array]] = {}


def _sort_keys(table: pa.Table) -> list[tuple[str, str]]:
    keys = [("_o", "ascending"), ("text", "ascending")]
    for f in table.schema:
        if f.name in ("_o", "text"):
            continue
        t = f.type
        if (
            pa.types.is_integer(t)
            or pa.types.is_floating(t)
            or pa.types.is_string(t)
            or pa.types.is_large_string(t)
            or pa.types.is_boolean(t)
        ):
            keys.append((f.name, "ascending"))
    return keys


def load_bucket(ref: BucketRef, force_hint: str = DEFAULT_FORCE_HINT) -> tuple[pa.Table, pa.Array]:
    """One bucket's rows from every unit's spill (one contiguous table) and the permutation that sorts
    them by (o, text, sortable extras). Cached, one bucket at a time.

    The rows themselves are gathered later, only those a shard needs: a bucket shared by two shards
    written by two workers is sorted twice (cheap) but copied once.
    """
    cached = _BUCKET_CACHE.get(ref)
    if cached is not None:
        return cached
    _BUCKET_CACHE.clear()
    batches: list[pa.RecordBatch] = []
    schema = None
    for path, numbers in ref.sources:
        with pa.memory_map(path) as source:
            reader = ipc.open_file(source)
            schema = reader.schema
            batches += [reader.get_batch(i) for i in numbers]
    if schema is None:
        raise ArmsError(
            f"bucket {ref.group} has no spill data although {ref.rows} rows were counted; {force_hint} to start over."
        )
    table = pa.Table.from_batches(batches, schema=schema).combine_chunks()
    if table.num_rows != ref.rows:
        raise ArmsError(
            f"the work dir's spill for bucket {ref.group} holds {table.num_rows} rows, expected {ref.rows}; "
            f"it was changed behind this run's back: {force_hint} to start over."
        )
    order = pc.sort_indices(table, sort_keys=_sort_keys(table))
    _BUCKET_CACHE[ref] = (table, order)
    return table, order


def _rows(job: ShardJob, start: int, end: int) -> pa.Table:
    """Rows [start, end) of the job's stream (in output order), from the buckets that hold them."""
    pieces = []
    for ref in job.buckets:
        lo, hi = max(start, ref.offset), min(end, ref.offset + ref.rows)
        if lo >= hi:
            continue
        table, order = load_bucket(ref, job.force_hint)
        pieces.append(table.take(order.slice(lo - ref.offset, hi - lo)))
    table = pa.concat_tables(pieces) if len(pieces) > 1 else pieces[0]
    cols = [table.column("text")] + [table.column(c) for c in job.extra_columns]
    return pa.Table.from_arrays(cols, names=["text", *job.extra_columns])


def write_shard(job: ShardJob) -> dict[str, Any]:
    """Write one shard: row groups per :func:`row_group_sizes`, temp name, fsync, sha256, rename."""
    final = os.path.join(job.data_dir, job.name)
    tmp = tmp_path(final)
    sizes = row_group_sizes(job.end - job.start, job.world_size)
    writer = None
    try:
        pos = job.start
        for size in sizes:
            table = _rows(job, pos, pos + size)
            if writer is None:
                writer = pq.ParquetWriter(
                    tmp,
                    table.schema,
                    compression=COMPRESSION,
                    compression_level=job.compression_level,
                    use_dictionary=False,
                    write_statistics=False,
                )
            writer.write_table(table, row_group_size=size)
            pos += size
        assert writer is not None
        writer.close()
        writer = None
        fd = os.open(tmp, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
        digest = sha256_file(tmp)
        os.replace(tmp, final)
    except BaseException:
        if writer is not None:
            try:
                writer.close()
            except Exception:
                pass
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
    return {
        "name": job.name,
        "rows": job.end - job.start,
        "row_groups": len(sizes),
        "sha256": digest,
        "role": job.role,
    }


def write_shards(jobs: list[ShardJob]) -> list[dict[str, Any]]:
    """Write a run of consecutive shards (they share buckets, loaded and sorted once)."""
    _BUCKET_CACHE.clear()
    try:
        return [{**write_shard(job), "data_dir": job.data_dir} for job in jobs]
    finally:
        _BUCKET_CACHE.clear()


# --------------------------------------------------------------------------------------- the run


@dataclass
class _Plan:
    parts: list[Part]
    facts: list[PartFacts]
    units: list[tuple[int, tuple[int, ...]]]  # (part index, row groups)
    bits: int
    total_rows: int
    text_bytes: int
    file_bytes: int


def _plan_units(facts: list[PartFacts], text_column: str) -> list[tuple[int, tuple[int, ...]]]:
    units = []
    for pi, fact in enumerate(facts):
        run: list[int] = []
        run_bytes = 0
        for rg, nbytes in enumerate(fact.row_group_bytes(text_column)):
            run.append(rg)
            run_bytes += nbytes
            if run_bytes >= UNIT_TARGET_BYTES:
                units.append((pi, tuple(run)))
                run, run_bytes = [], 0
        if run or not units or units[-1][0] != pi:
            units.append((pi, tuple(run)))
    return units


def _unit_bytes(fact: PartFacts, row_groups: tuple[int, ...], text_column: str) -> int:
    per_rg = fact.row_group_bytes(text_column)
    return sum(per_rg[r] for r in row_groups)


def _choose_bits(kept_bytes: float) -> int:
    if kept_bytes <= BUCKET_TARGET_BYTES:
        return 0
    return min(16, math.ceil(math.log2(kept_bytes / BUCKET_TARGET_BYTES)))


def _nearest_existing(path: str) -> str:
    probe = path
    while not os.path.exists(probe):
        parent = os.path.dirname(probe)
        if parent == probe:
            break
        probe = parent
    return probe


def _check_writable(path: str, what: str) -> None:
    check_folder_for_writing(path, what)


def _make_dir(path: str, what: str) -> None:
    try:
        os.makedirs(path, exist_ok=True)
        probe = tmp_path(os.path.join(path, "write-probe"))
        with open(probe, "wb") as fh:
            fh.write(b"ok")
        os.unlink(probe)
    except OSError as exc:
        raise ArmsError(f"{what} {path} is not writable ({exc.strerror or exc}); pick a writable path.") from None


def _our_files(data_dir: str) -> list[str]:
    """Files in ``data_dir`` that a random-subset run owns (removed by force)."""
    if not os.path.isdir(data_dir):
        return []
    out = [n for n in os.listdir(data_dir) if n.endswith(".parquet") or n in (MANIFEST_NAME, VERIFY_CACHE_NAME)]
    # temporary files by arms_datadir's rule: only regular files with a name this project makes
    return [os.path.join(data_dir, n) for n in out + leftovers(data_dir)]


def _wipe(data_dir: str, work_dir: str, val_dir: str) -> None:
    for path in _our_files(data_dir):
        os.unlink(path)
    shutil.rmtree(work_dir, ignore_errors=True)
    for name in (VAL_NAME, MANIFEST_NAME, VERIFY_CACHE_NAME):
        path = os.path.join(val_dir, name)
        if os.path.exists(path):
            os.unlink(path)


def _read_state(work_dir: str) -> dict[str, Any] | None:
    try:
        with open(os.path.join(work_dir, STATE_NAME), encoding="utf-8") as fh:
            data = json.load(fh)
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) and data.get("format") == STATE_FORMAT else None


def _val_artifact_ok(val_dir: str, manifest: dict[str, Any]) -> bool:
    val = [s for s in manifest["shards"] if s.get("role") == "val"]
    if not val:
        return True
    try:
        vm = read_manifest(val_dir)
    except ArmsError:
        return False
    if not vm or [s.get("sha256") for s in vm["shards"]] != [val[0]["sha256"]]:
        return False
    return verify_data_dir(val_dir, vm).passed


def _write_val_artifact(
    data_dir: str, val_dir: str, entry: dict[str, Any], source: dict[str, Any], params: dict[str, Any]
) -> str:
    os.makedirs(val_dir, exist_ok=True)
    target = os.path.join(val_dir, VAL_NAME)
    copy_atomically(os.path.join(data_dir, VAL_NAME), target)  # its temporary name goes away on error
    remember_verified(val_dir, VAL_NAME, entry["sha256"])
    write_manifest(val_dir, build_manifest(VAL_KIND, source, params, [dict(entry)], {"from": data_dir}))
    return target


def _result(
    changed: bool,
    data_dir: str,
    manifest: dict[str, Any],
    val_dir: str,
    resumed: bool,
    msg: str,
    **extra: Any,
) -> dict[str, Any]:
    stats = manifest.get("stats", {})
    has_val = any(s.get("role") == "val" for s in manifest["shards"])
    return {
        "changed": changed,
        "data_dir": data_dir,
        "manifest": os.path.join(data_dir, MANIFEST_NAME),
        "shards": len(manifest["shards"]),
        "train_rows": manifest["totals"]["train_rows"],
        "val_rows": manifest["totals"]["val_rows"],
        "rows_read": stats.get("rows_read", 0),
        "realised_fraction": stats.get("realised_fraction", 0.0),
        "val_shard": os.path.join(data_dir, VAL_NAME) if has_val else None,
        "val_artifact": os.path.join(val_dir, VAL_NAME) if has_val else None,
        "resumed": resumed,
        "msg": msg,
        **extra,
    }


def _workers(n: int) -> int:
    if n > 0:
        return n
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:
        return os.cpu_count() or 1


def prepare_random_subset(
    opts: Options,
    *,
    check_mode: bool = False,
    echo: Callable[[str], None] | None = None,
    force_hint: str = DEFAULT_FORCE_HINT,
) -> dict[str, Any]:
    """Make (or check, or resume) the data dir described by ``opts``. Returns the module's result dict.

    Reads what is there, decides (arms_shard_decide), then acts: check mode predicts from the same decision.
    ``force_hint`` is how the caller's user sets force (``pass --force``, the task's ``force: true``): every
    refusal names it. Raises ArmsError with a sentence for anything the user has to fix.
    """
    validate_options(opts)
    results, _ = _prepare(
        [Member("", opts)], check_mode=check_mode, echo=echo, force_hint=force_hint, progress_file=opts.progress_file
    )
    return results[0]


def prepare_random_subsets(
    members: list[Member],
    *,
    check_mode: bool = False,
    echo: Callable[[str], None] | None = None,
    force_hint: str = DEFAULT_FORCE_HINT,
    progress_file: str | None = None,
) -> dict[str, Any]:
    """Several data dirs sampled from one source (the members of a family) in one read of the source.

    Every member's data dir is what :func:`prepare_random_subset` makes for its options, byte for byte:
    pass 1 reads each unit of the source once and spills each member's kept rows into the member's own
    work dir; pass 2 writes each member's shards and manifest. Members whose data dir is complete are
    verified and left alone; when all are, the source is not read. Every member is validated and decided
    before anything is written (a refusal names the member). ``progress_file`` follows the whole job (rows
    of the source read once, then the shards of every member); a member's own ``progress_file`` mirrors it.

    Returns ``{changed, msg (one line per member: "<name>: <its msg>"), members: [{name, **its result}],
    source_rows_read, source_units_read}``; the last two count what this run read of the source (0 when
    every member was complete).
    """
    validate_members(members)
    results, read = _prepare(
        members, check_mode=check_mode, echo=echo, force_hint=force_hint, progress_file=progress_file
    )
    return {
        "changed": any(r["changed"] for r in results),
        "msg": "\n".join(f"{m.name}: {r['msg']}" for m, r in zip(members, results, strict=True)),
        "members": [{"name": m.name, **r} for m, r in zip(members, results, strict=True)],
        "source_rows_read": read["rows"],
        "source_units_read": read["units"],
    }


@dataclass(frozen=True)
class Member:
    """One data dir of a run over a shared source: its name (the arm, "" for the single form) and its options."""

    name: str
    opts: Options


MEMBER_KEYS = (
    "name",
    "seed",
    "ratio",
    "val_fraction",
    "data_dir",
    "val_dir",
    "progress_file",
    "exclude_val_of",
    "rows_per_shard",  # optional: the task's rows_per_shard otherwise (pass 2 is per member)
)
# the single form's per-data-dir options: with members each member gives its own
SINGLE_ONLY = ("data_dir", "ratio", "seed", "val_fraction", "val_dir", "exclude_val_of")


def _number(value: Any, kind: type, what: str) -> Any:
    """``value`` as an int or a float (a templated string of one accepted), else ArmsError naming ``what``."""
    if isinstance(value, bool):
        raise ArmsError(f"{what} is {value!r}, expected a number.")
    if isinstance(value, (int, float)) and (kind is float or isinstance(value, int)):
        return kind(value)
    if isinstance(value, str):
        try:
            return kind(value.strip())
        except ValueError:
            pass
    raise ArmsError(f"{what} is {value!r}, expected {'an integer' if kind is int else 'a number'}.")


def members_from_dicts(common: dict[str, Any], members: Any) -> list[Member]:
    """Members from the module's ``members`` (dicts of :data:`MEMBER_KEYS`) and the options they share.

    ``common`` holds the task's other options; the single form's per-data-dir ones (:data:`SINGLE_ONLY`)
    must be unset there. Numbers given as text (templated) are read as numbers.
    """
    if not isinstance(members, list) or not members:
        raise ArmsError("members must be a non-empty list of {name, seed, ratio, data_dir, ...}, one per data dir.")
    clash = [k for k in SINGLE_ONLY if common.get(k) is not None]
    if clash:
        raise ArmsError(f"{', '.join(clash)} cannot be given with members: each member gives its own in its entry.")
    names = set(Options.__dataclass_fields__) - set(SINGLE_ONLY) - {"progress_file"}
    shared = {k: v for k, v in common.items() if k in names and v is not None}
    out = []
    for i, entry in enumerate(members):
        if not isinstance(entry, dict):
            raise ArmsError(f"members[{i}] is {entry!r}, expected a dict with name, seed, ratio and data_dir.")
        unknown = sorted(set(entry) - set(MEMBER_KEYS))
        if unknown:
            raise ArmsError(
                f"members[{i}] has unknown keys {', '.join(unknown)}; a member takes {', '.join(MEMBER_KEYS)}."
            )
        missing = [k for k in ("name", "seed", "ratio", "data_dir") if entry.get(k) in (None, "")]
        if missing:
            raise ArmsError(
                f"members[{i}] lacks {', '.join(missing)}; every member needs name, seed, ratio and data_dir."
            )
        name = entry["name"]
        if not isinstance(name, str) or not name.strip() or any(c in name for c in "\n\r"):
            raise ArmsError(f"members[{i}]'s name {name!r} is not a one-line name; give the arm's name.")
        exclude = entry.get("exclude_val_of")
        if isinstance(exclude, dict) and set(exclude) == {"seed", "ratio", "val_fraction"}:
            exclude = {
                "seed": _number(exclude["seed"], int, f"member {name}: exclude_val_of.seed"),
                "ratio": _number(exclude["ratio"], float, f"member {name}: exclude_val_of.ratio"),
                "val_fraction": _number(exclude["val_fraction"], float, f"member {name}: exclude_val_of.val_fraction"),
            }
        own = dict(shared)
        if entry.get("rows_per_shard") is not None:
            own["rows_per_shard"] = _number(entry["rows_per_shard"], int, f"member {name}: rows_per_shard")
        opts = Options(
            **own,
            data_dir=str(entry["data_dir"]),
            val_dir=str(entry["val_dir"]) if entry.get("val_dir") else None,
            seed=_number(entry["seed"], int, f"member {name}: seed"),
            ratio=_number(entry["ratio"], float, f"member {name}: ratio"),
            val_fraction=_number(entry.get("val_fraction") or 0.0, float, f"member {name}: val_fraction"),
            progress_file=str(entry["progress_file"]) if entry.get("progress_file") else None,
            exclude_val_of=exclude or None,
        )
        out.append(Member(name, opts))
    return out


def validate_members(members: list[Member]) -> None:
    """ArmsError for members that are wrong on their face or would write into each other's folders."""
    if not members:
        raise ArmsError("members is empty; give at least one {name, seed, ratio, data_dir}.")
    seen_names: set[str] = set()
    for m in members:
        if m.name in seen_names:
            raise ArmsError(f"member {m.name} appears twice; each member names one arm and one data dir.")
        seen_names.add(m.name)
        for what, path in (("data_dir", m.opts.data_dir), ("val_dir", m.opts.val_dir)):
            if path and ".." in path.split(os.sep):
                raise ArmsError(
                    f"member {m.name}: {what} {path} climbs out of the folder it names ('..'); give the path it means."
                )
        try:
            validate_options(m.opts)
        except ArmsError as exc:
            raise ArmsError(f"member {m.name}: {exc}") from None
    claimed: list[tuple[str, str, str]] = []  # (real path, member, what)
    for m in members:
        data_dir, val_dir, work_dir = (os.path.realpath(p) for p in m.opts.paths())
        claims = [(data_dir, "data_dir"), (work_dir, "work dir")]
        if m.opts.val_fraction > 0:
            claims.append((val_dir, "val_dir"))
        for path, what in claims:
            for other_path, other, other_what in claimed:
                if other == m.name:
                    continue
                if path == other_path or path.startswith(other_path + os.sep) or other_path.startswith(path + os.sep):
                    raise ArmsError(
                        f"members {other} and {m.name} would write into the same folder ({other_what} {other_path}, "
                        f"{what} {path}); give each member a data_dir (and val_dir) of its own."
                    )
        claimed += [(path, m.name, what) for path, what in claims]


@dataclass
class _Work:
    """A member as the run goes: what it wants, what is there, what to do and (once planned) its layout."""

    member: Member
    wanted: Wanted
    found: Found
    decision: Decision
    plan: _Plan | None = None
    layout: _Layout | None = None
    spill_dir: str = ""
    created: bool = False


def _refuse_any(works: list[_Work]) -> None:
    for w in works:
        if w.decision.action == REFUSE:
            name = w.member.name
            raise ArmsError(f"{name}: {w.decision.refusal}" if name else w.decision.refusal)


def _prepare(
    members: list[Member],
    *,
    check_mode: bool,
    echo: Callable[[str], None] | None,
    force_hint: str,
    progress_file: str | None,
) -> tuple[list[dict[str, Any]], dict[str, int]]:
    """Every member's result (in order) and what was read of the source ({rows, units})."""
    started = time.time()
    works = []
    for m in members:
        wanted = _wanted(m.opts)
        found = inspect_data_dir(wanted, force=m.opts.force, deep=not check_mode, force_hint=force_hint)
        works.append(_Work(m, wanted, found, decide(found, wanted, force=m.opts.force, force_hint=force_hint)))
    _refuse_any(works)
    # a complete data dir never needs the source; check mode predicts a repair without it
    todo = [w for w in works if w.decision.action != REUSE and not (check_mode and w.decision.action == REPAIR)]
    read = {"rows": 0, "units": 0}
    source, plan, parts = None, None, []
    if todo:
        source, plan = _read_source(todo[0].member.opts)
        parts = [[p.path, p.size] for p in source.parts]
        for w in todo:
            opts = w.member.opts
            w.decision = decide_after_listing(
                w.decision, w.found, parts, w.wanted, force=opts.force, force_hint=force_hint
            )
        _refuse_any(todo)
        for w in todo:
            opts = w.member.opts
            w.plan = _member_plan(plan, opts)
            w.layout = _layout(w.decision, w.found.state, w.plan, w.wanted.work_dir)
            # where first, then how much: a data_dir on /proc is not "not enough free disk"
            _check_writable(w.wanted.data_dir, "data_dir")
            _check_writable(w.wanted.work_dir, "work_dir")
            if opts.val_fraction > 0:
                _check_writable(w.wanted.val_dir, "val_dir")
        _check_space(todo)
    results: dict[int, dict[str, Any]] = {}
    for i, w in enumerate(works):
        if w in todo:
            if check_mode:
                assert w.plan is not None
                results[i] = _estimated_result(w.decision, w.wanted, w.member.opts, w.plan)
        elif check_mode:
            results[i] = _predicted_result(w.decision, w.wanted, w.found.manifest)
        else:
            results[i] = _reuse(w.decision, w.wanted, w.found)
    if todo and not check_mode:
        assert source is not None and plan is not None
        done, read = _execute(
            todo, source, plan, parts, echo=echo, started=started, force_hint=force_hint, progress_file=progress_file
        )
        for w, res in zip(todo, done, strict=True):
            results[works.index(w)] = res
    return [results[i] for i in range(len(works))], read


def _member_plan(plan: _Plan, opts: Options) -> _Plan:
    """The source's plan for one member: its buckets follow its own ratio."""
    return dataclasses.replace(plan, bits=_choose_bits(plan.text_bytes * opts.ratio))


# ---------------------------------------------------------------------------------- reading what is there


def _wanted(opts: Options) -> Wanted:
    data_dir, val_dir, work_dir = opts.paths()
    return Wanted(KIND, _source_description(opts), opts.params(), data_dir, work_dir, val_dir)


def inspect_data_dir(wanted: Wanted, *, force: bool, deep: bool, force_hint: str = DEFAULT_FORCE_HINT) -> Found:
    """What the data dir and the work dir hold. ``deep`` verifies shards by sha256 (cached); else by size.

    Reads only this host's files, never the source. A manifest that cannot be read is refused (naming
    ``force_hint``) unless ``force``, which replaces it.
    """
    data_dir = wanted.data_dir
    manifest = _try_read_manifest(data_dir) if force else read_manifest(data_dir, force_hint=force_hint)
    if manifest is None:
        parquet = sorted(n for n in os.listdir(data_dir) if n.endswith(".parquet")) if os.path.isdir(data_dir) else []
        return Found(state=_read_state(wanted.work_dir), parquet=tuple(parquet))
    if manifest.get("kind") != wanted.kind or manifest.get("source") != wanted.source:
        return Found(manifest=manifest)
    if manifest.get("params") != wanted.params:
        return Found(manifest=manifest)
    if deep:
        check = verify_data_dir(data_dir, manifest)
        bad, extra = check.bad, check.extra
        summary = check.summary()
    else:
        bad, extra = _stat_check(data_dir, manifest), _extra_parquet(data_dir, manifest)
        summary = f"{len(manifest['shards']) - len(bad)} present by size"
    val_ok = bool(bad) or _val_artifact_ok(wanted.val_dir, manifest)
    return Found(manifest=manifest, bad=tuple(bad), extra=tuple(extra), val_ok=val_ok, checked=summary)


def _try_read_manifest(data_dir: str) -> dict[str, Any] | None:
    try:
        return read_manifest(data_dir)
    except ArmsError:
        return {"kind": None, "source": None, "params": None, "shards": []}


def _stat_check(data_dir: str, manifest: dict[str, Any]) -> list[str]:
    bad = []
    for shard in manifest["shards"]:
        path = os.path.join(data_dir, shard["name"])
        if not os.path.isfile(path) or os.path.getsize(path) != shard["bytes"]:
            bad.append(shard["name"])
    return bad


def _extra_parquet(data_dir: str, manifest: dict[str, Any]) -> list[str]:
    names = {s["name"] for s in manifest["shards"]}
    return [n for n in sorted(os.listdir(data_dir)) if n.endswith(".parquet") and n not in names]


def _read_source(opts: Options) -> tuple[Source, _Plan]:
    """The source's parts and footers, its columns checked, and the work planned from them."""
    set_hub_token(hf_token(opts.hf_token))
    source = resolve_source(opts.dataset, opts.config, opts.split, token=opts.hf_token)
    facts = all_part_facts(source.parts)
    needed = {opts.text_column: "text_column", opts.id_column: "id_column"}
    for col in opts.extra_columns:
        needed.setdefault(col, "extra_columns")
    check_columns(source.parts, facts, needed)
    for part, fact in zip(source.parts, facts, strict=True):
        if fact.columns[opts.text_column] not in ("string", "large_string"):
            raise ArmsError(
                f"{part.path}: column {opts.text_column!r} holds {fact.columns[opts.text_column]}, not text; "
                "set text_column to the column with the documents."
            )
    return source, _make_plan(source, facts, opts)


@dataclass(frozen=True)
class _Layout:
    """Units and buckets of the work: the interrupted run's when resuming (with its finished units), else the plan's."""

    bits: int
    units: list[tuple[int, tuple[int, ...]]]
    done: set[int]
    fresh: bool


def _layout(decision: Decision, state: dict[str, Any] | None, plan: _Plan, work_dir: str) -> _Layout:
    if decision.action == RESUME and state is not None:
        units = [(int(u[0]), tuple(u[1])) for u in state["units"]]
        return _Layout(int(state["bits"]), units, _done_units(work_dir), False)
    return _Layout(plan.bits, plan.units, set(), True)


# ------------------------------------------------------------------------------------- check mode


def _predicted_result(decision: Decision, wanted: Wanted, manifest: dict[str, Any] | None) -> dict[str, Any]:
    """Check mode's result for reuse and repair: the manifest's figures, the decision's words."""
    assert manifest is not None
    changed, msg = prediction(decision, wanted)
    resumed = decision.action == REPAIR
    return _result(changed, wanted.data_dir, manifest, wanted.val_dir, resumed, msg)


def _estimated_result(decision: Decision, wanted: Wanted, opts: Options, plan: _Plan) -> dict[str, Any]:
    """Check mode's result for prepare, resume and replace: the decision's words, figures estimated from the plan."""
    _, what = prediction(decision, wanted)
    est_kept = plan.total_rows * opts.ratio
    n_shards = max(1, round(est_kept * (1 - opts.val_fraction) / opts.rows_per_shard))
    with_val = opts.val_fraction > 0
    return {
        "changed": True,
        "data_dir": wanted.data_dir,
        "manifest": os.path.join(wanted.data_dir, MANIFEST_NAME),
        "shards": n_shards + (1 if with_val else 0),
        "train_rows": int(est_kept * (1 - opts.val_fraction)),
        "val_rows": int(est_kept * opts.val_fraction),
        "rows_read": 0,
        "realised_fraction": 0.0,
        "val_shard": os.path.join(wanted.data_dir, VAL_NAME) if with_val else None,
        "val_artifact": os.path.join(wanted.val_dir, VAL_NAME) if with_val else None,
        "resumed": decision.action == RESUME,
        "msg": (
            f"{what}: about {n_shards} shards, ~{int(est_kept)} of {plan.total_rows} rows "
            f"(~{human_bytes(plan.text_bytes * opts.ratio)} of text) from {len(plan.parts)} parquet files"
        ),
    }


# ------------------------------------------------------------------------------------------ acting


def _reuse(decision: Decision, wanted: Wanted, found: Found) -> dict[str, Any]:
    """The shards are right: remove foreign files (force), restore the val artifact, sweep a killed run's leftovers."""
    manifest = found.manifest
    assert manifest is not None
    data_dir, val_dir = wanted.data_dir, wanted.val_dir
    changes = []
    with claimed_folder(data_dir) as swept:
        for name in decision.remove:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(os.path.join(data_dir, name))
            changes.append(f"removed {name}")
        if decision.restore_val:
            val = next(e for e in manifest["shards"] if e.get("role") == "val")
            _write_val_artifact(data_dir, val_dir, val, wanted.source, wanted.params)
            changes.append(f"restored the validation artifact in {val_dir}")
        shutil.rmtree(wanted.work_dir, ignore_errors=True)
    summary = f"{data_dir} is complete and verified ({found.checked})"
    if swept:  # temporary files are no data: sweeping them is not a change to report as one
        summary += f"; swept {len(swept)} temporary files a killed run left"
    return _result(bool(changes), data_dir, manifest, val_dir, False, summary + "".join(f"; {c}" for c in changes))


def _execute(
    works: list[_Work],
    source: Source,
    plan: _Plan,
    parts: list[list[Any]],
    *,
    echo: Callable[[str], None] | None,
    started: float,
    force_hint: str,
    progress_file: str | None,
) -> tuple[list[dict[str, Any]], dict[str, int]]:
    """Write (prepare, resume, repair or replace) every member's data dir, under their locks, in one read."""
    with contextlib.ExitStack() as locks:
        for w in works:
            w.created = not os.path.exists(w.wanted.data_dir)
            _make_dir(w.wanted.data_dir, "data_dir")
            locks.enter_context(claimed_folder(w.wanted.data_dir))
        for w in works:
            data_dir, work_dir, val_dir = w.wanted.data_dir, w.wanted.work_dir, w.wanted.val_dir
            assert w.plan is not None and w.layout is not None
            if w.decision.action == REPLACE:
                _wipe(data_dir, work_dir, val_dir)
                w.layout = _Layout(w.plan.bits, w.plan.units, set(), True)
            for name in w.decision.repair + w.decision.remove:
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(os.path.join(data_dir, name))
            sweep_leftovers(val_dir)
            w.spill_dir = _prepare_work_dir(work_dir)
            if w.layout.fresh:
                state = {"format": STATE_FORMAT, "source": w.wanted.source, "params": w.wanted.params, "parts": parts}
                state |= {"units": [[u[0], list(u[1])] for u in w.layout.units], "bits": w.layout.bits}
                atomic_write_json(os.path.join(work_dir, STATE_NAME), state)
        try:
            outputs, read = _run(works, source, plan, echo, progress_file, force_hint)
        except ArmsError:
            # bad input found while reading: leave nothing half-written behind
            for w in works:
                data_dir = w.wanted.data_dir
                shutil.rmtree(w.wanted.work_dir, ignore_errors=True)
                if not os.listdir(data_dir) and w.created:
                    os.rmdir(data_dir)
                elif not w.decision.repair and w.found.manifest is None:
                    for path in _our_files(data_dir):
                        os.unlink(path)
            raise
        results = []
        for w, (entries, stats) in zip(works, outputs, strict=True):
            assert w.layout is not None
            manifest = _write_outputs(entries, stats, w.wanted, source, plan, started)
            fresh = w.layout.fresh
            resumed = bool(not fresh or w.decision.repair or stats.get("shards_reused", 0))
            msg = _done_message(manifest, stats, w.wanted.data_dir, fresh)
            results.append(_result(True, w.wanted.data_dir, manifest, w.wanted.val_dir, resumed, msg))
    return results, read


def _prepare_work_dir(work_dir: str) -> str:
    """The work dir and its spill folder exist, without a killed run's temporary files; returns the spill folder."""
    _make_dir(work_dir, "work_dir")
    spill_dir = os.path.join(work_dir, "spill")
    os.makedirs(spill_dir, exist_ok=True)
    sweep_leftovers(spill_dir)
    return spill_dir


def _write_outputs(
    entries: list[dict[str, Any]],
    stats: dict[str, Any],
    wanted: Wanted,
    source: Source,
    plan: _Plan,
    started: float,
) -> dict[str, Any]:
    """The manifest (last: it says the data dir is complete), the val artifact; the work dir goes."""
    entries.sort(key=lambda e: e["name"])
    stats["seconds"] = round(time.time() - started, 3)
    stats["rows_per_second"] = round(stats["rows_read"] / max(stats["seconds"], 1e-9), 1)
    stats["source_files"] = len(source.parts)
    stats["source_bytes"] = plan.file_bytes
    manifest = build_manifest(KIND, wanted.source, wanted.params, entries, stats)
    write_manifest(wanted.data_dir, manifest)
    val_entries = [e for e in entries if e["role"] == "val"]
    if val_entries:
        _write_val_artifact(wanted.data_dir, wanted.val_dir, val_entries[0], wanted.source, wanted.params)
    shutil.rmtree(wanted.work_dir, ignore_errors=True)
    return manifest


def _done_message(manifest: dict[str, Any], stats: dict[str, Any], data_dir: str, fresh: bool) -> str:
    reused = stats.get("shards_reused", 0)
    entries = manifest["shards"]
    n_val = sum(1 for e in entries if e.get("role") == "val")
    totals = manifest["totals"]
    return (
        f"{len(entries) - n_val} training shards{' + shard_val.parquet' if n_val else ''} in {data_dir} "
        f"({len(entries) - reused} written{f', {reused} kept from an earlier run' if reused else ''}"
        f"{', resumed' if not fresh else ''}): {totals['train_rows']} training"
        f"{' + ' + str(totals['val_rows']) + ' validation' if n_val else ''} rows kept of {stats['rows_read']} "
        f"read (realised fraction {stats['realised_fraction']:.4f}) in {stats['seconds']:.1f}s"
    )


def _make_plan(source: Source, facts: list[PartFacts], opts: Options) -> _Plan:
    total_rows = sum(f.rows for f in facts)
    text_bytes = sum(f.column_bytes.get(opts.text_column, 0) for f in facts)
    file_bytes = sum(p.size or 0 for p in source.parts)
    if total_rows == 0:
        raise ArmsError(f"{source.dataset} (split {source.split!r}) has no rows; expected a non-empty dataset.")
    return _Plan(
        parts=source.parts,
        facts=facts,
        units=_plan_units(facts, opts.text_column),
        bits=_choose_bits(text_bytes * opts.ratio),
        total_rows=total_rows,
        text_bytes=text_bytes,
        file_bytes=file_bytes,
    )


def _done_units(work_dir: str) -> set[int]:
    spill_dir = os.path.join(work_dir, "spill")
    if not os.path.isdir(spill_dir):
        return set()
    done = set()
    for name in os.listdir(spill_dir):
        if name.startswith("u") and name.endswith(".json"):
            idx = int(name[1:-5])
            if os.path.exists(_unit_paths(spill_dir, idx)[0]):
                done.add(idx)
    return done


def _check_space(works: list[_Work]) -> None:
    """Refuse when the spill and the shards of every member to write do not fit, summed by file system."""
    by_device: dict[int, list[Any]] = {}
    ratios: list[float] = []
    factor = works[0].member.opts.min_free_bytes_factor
    text_bytes = 0
    for w in works:
        opts, plan, layout = w.member.opts, w.plan, w.layout
        assert plan is not None and layout is not None
        data_dir, work_dir = w.wanted.data_dir, w.wanted.work_dir
        wipe = w.decision.action == REPLACE
        text_bytes = plan.text_bytes
        ratios.append(opts.ratio)
        todo_text = 0
        for i, (pi, rgs) in enumerate(layout.units):
            if i in layout.done:
                continue
            per_rg = plan.facts[pi].row_group_bytes(opts.text_column)
            todo_text += sum(per_rg[r] for r in rgs)
        spill_need = todo_text * opts.ratio * SPILL_PER_TEXT_BYTE
        out_need = plan.text_bytes * opts.ratio * OUTPUT_PER_TEXT_BYTE
        if not wipe and os.path.isdir(data_dir):
            have = sum(
                os.path.getsize(os.path.join(data_dir, n)) for n in os.listdir(data_dir) if n.endswith(".parquet")
            )
            out_need = max(0.0, out_need - have)
        out_need += plan.text_bytes * opts.ratio * opts.val_fraction * OUTPUT_PER_TEXT_BYTE  # the val artifact copy
        for path, need in ((data_dir, out_need), (work_dir, spill_need)):
            dev = os.stat(_nearest_existing(path)).st_dev
            by_device.setdefault(dev, [path, 0.0])[1] += need
    ratio = f"ratio {ratios[0]}" if len(ratios) == 1 else f"the ratios {', '.join(str(r) for r in ratios)} summed"
    for path, need in by_device.values():
        free = free_bytes(path)
        if free < need * factor:
            raise ArmsError(
                f"not enough free disk for {path}: about {human_bytes(need * factor)} needed "
                f"({human_bytes(need)} estimated from the source's {human_bytes(text_bytes)} of text x {ratio}, "
                f"x margin {factor}), {human_bytes(free)} free; free space or point "
                "data_dir/work_dir at a larger disk."
            )


def _buckets_for(
    counts: dict[int, int], sources: dict[int, list[tuple[str, list[int]]]], first: int, n_buckets: int
) -> list[BucketRef]:
    refs = []
    offset = 0
    for g in range(first, first + n_buckets):
        rows = counts.get(g, 0)
        if rows:
            refs.append(BucketRef(g, offset, rows, tuple((p, tuple(b)) for p, b in sources.get(g, []))))
        offset += rows
    return refs


@dataclass
class _Pool:
    """The worker processes of a run (None for one worker: everything runs in this process)."""

    workers: int
    pool: ProcessPoolExecutor | None = None
    queue: Any = None
    cpu_by_worker: dict[int, float] = field(default_factory=dict)  # the current pass's job CPU seconds, by pid

    def count(self, cpu: float, pid: int) -> None:
        self.cpu_by_worker[pid] = self.cpu_by_worker.get(pid, 0.0) + cpu

    def pass_stats(self, name: str) -> dict[str, float]:
        """The pass's CPU seconds, all workers and the busiest one's, and starts the next pass's count.

        On an idle machine a pass lasts about as long as its busiest worker computes: the gap between
        the two figures (over the number of workers) is what the pass's balance costs, whatever the load.
        """
        cpu = self.cpu_by_worker
        self.cpu_by_worker = {}
        return {
            f"{name}_cpu_seconds": round(sum(cpu.values()), 3),
            f"{name}_busiest_cpu_seconds": round(max(cpu.values(), default=0.0), 3),
        }

    @classmethod
    def start(cls, workers: int) -> _Pool:
        if workers <= 1:
            return cls(workers)
        ctx = multiprocessing.get_context("fork")
        queue = ctx.Queue()
        pool = ProcessPoolExecutor(max_workers=workers, mp_context=ctx, initializer=_init_worker, initargs=(queue,))
        return cls(workers, pool, queue)

    def close(self, *, cancel: bool) -> None:
        if self.pool is not None:
            self.pool.shutdown(wait=True, cancel_futures=cancel)
            self.pool = None
        if self.queue is not None:
            self.queue.close()
            self.queue = None


class _MirroredProgress(ProgressWriter):
    """The job's progress file, copied to each member's own progress file (when a member names one)."""

    def __init__(self, path: str | None, mirrors: list[str | None], **kwargs: Any) -> None:
        super().__init__(path, **kwargs)
        self.mirrors = list(dict.fromkeys(m for m in mirrors if m and m != path))
        for mirror in self.mirrors:
            os.makedirs(os.path.dirname(os.path.abspath(mirror)), exist_ok=True)

    def flush(self) -> None:
        super().flush()
        for mirror in self.mirrors:
            atomic_write_json(mirror, self.state.to_json())


def _run(
    works: list[_Work],
    source: Source,
    plan: _Plan,
    echo: Callable[[str], None] | None,
    progress_file: str | None,
    force_hint: str = DEFAULT_FORCE_HINT,
) -> tuple[list[tuple[list[dict[str, Any]], dict[str, Any]]], dict[str, int]]:
    """Pass 1 (one read of every unit some member still needs, sampled for each), every member's shard plan,
    pass 2 (every member's shards not there). Returns each member's (entries, stats) and what was read."""
    workers = _Pool.start(_workers(works[0].member.opts.workers))
    mirrors = [w.member.opts.progress_file for w in works]
    progress = _MirroredProgress(
        progress_file, mirrors, phase="sampling", unit="rows", total=plan.total_rows, echo=echo
    )
    try:
        pass1_started = time.time()
        results, read = _sample_units(works, source, plan, progress, workers)
        pass1: dict[str, Any] = {"pass1_seconds": round(time.time() - pass1_started, 3)}
        pass1 |= workers.pass_stats("pass1")  # what binds a pass, measured so that a shared machine barely moves it
        planned = []
        for w, member_results in zip(works, results, strict=True):
            assert w.layout is not None
            opts = w.member.opts
            stats, counts, sources = _totals(member_results, len(w.layout.units), w.spill_dir, opts.exclude_val_of)
            stats |= pass1
            stats["buckets"] = 1 << w.layout.bits
            stats["workers"] = workers.workers
            jobs = _shard_jobs(opts, stats, counts, sources, w.layout.bits, w.wanted.data_dir, force_hint)
            planned.append((w.wanted.data_dir, stats, jobs))
        entries = _write_pass(planned, progress, workers)
        pass2: dict[str, Any] = {"pass2_seconds": round(time.time() - pass1_started - pass1["pass1_seconds"], 3)}
        pass2 |= workers.pass_stats("pass2")
        for _, stats, _ in planned:
            stats |= pass2
        progress.finish(phase="done")
        return [(e, stats) for e, (_, stats, _) in zip(entries, planned, strict=True)], read
    except BaseException:
        workers.close(cancel=True)
        raise
    finally:
        workers.close(cancel=False)


def _sample_units(
    works: list[_Work],
    source: Source,
    plan: _Plan,
    progress: ProgressWriter,
    workers: _Pool,
) -> tuple[list[dict[int, dict[str, Any]]], dict[str, int]]:
    """Pass 1: each member's unit results (its stats, bucket counts and spill index), the finished ones read
    back; a unit of the source is read once for every member that still needs it. Also {rows, units} read."""
    global _PROGRESS_CB
    opts0 = works[0].member.opts
    kept_seen = 0

    def on_progress(rows: int, nbytes: int, kept: int) -> None:
        nonlocal kept_seen
        kept_seen += kept
        progress.advance(rows, nbytes, extra={"kept": kept_seen, "shards written": 0})

    results: list[dict[int, dict[str, Any]]] = [{} for _ in works]
    needed: dict[tuple[int, tuple[int, ...]], list[SpillTarget]] = {}
    read_back: dict[tuple[int, tuple[int, ...]], tuple[int, int]] = {}  # a finished unit's rows and text bytes
    kept_back = 0
    for mi, w in enumerate(works):
        assert w.layout is not None
        opts = w.member.opts
        t, v = thresholds(opts.ratio, opts.val_fraction)
        key = sample_key(opts.seed)
        ex = opts.exclude_val_of
        exclude = (sample_key(ex["seed"]), thresholds(ex["ratio"], ex["val_fraction"])[1]) if ex else None
        for ui, (pi, rgs) in enumerate(w.layout.units):
            if ui in w.layout.done:
                with open(_unit_paths(w.spill_dir, ui)[1], encoding="utf-8") as fh:
                    results[mi][ui] = json.load(fh)
                st = results[mi][ui]["stats"]
                read_back[(pi, rgs)] = (st["rows_read"], st["text_bytes_read"])
                kept_back += st["train_rows"] + st["val_rows"]
            else:
                target = SpillTarget(mi, ui, w.spill_dir, key, t, v, w.layout.bits, exclude)
                needed.setdefault((pi, rgs), []).append(target)
    for unit, (rows, nbytes) in read_back.items():
        if unit not in needed:  # no member reads it again: it counts as read
            on_progress(rows, nbytes, 0)
    on_progress(0, 0, kept_back)
    progress.update(force=True)
    # the largest units first, so the workers finish pass 1 together (the order changes no byte: every
    # unit spills to its own files and pass 2 reads them by unit number)
    order = sorted(needed, key=lambda u: -_unit_bytes(plan.facts[u[0]], u[1], opts0.text_column))
    columns = (opts0.text_column, opts0.id_column, tuple(opts0.extra_columns))
    jobs = [UnitJob(n, source.parts[u[0]], u[1], *columns, tuple(needed[u])) for n, u in enumerate(order)]
    read = {"rows": 0, "units": 0}

    def keep(res: list[dict[str, Any]]) -> None:
        read["units"] += 1
        read["rows"] += res[0]["stats"]["rows_read"]
        for r in res:
            results[r.pop("member")][r["unit"]] = r

    if workers.pool is not None:
        for res, cpu, pid in _run_pool(workers.pool, spill_unit, jobs, workers.queue, on_progress):
            keep(res)
            workers.count(cpu, pid)
        return results, read
    _PROGRESS_CB = on_progress
    try:
        for job in jobs:
            res, cpu, pid = _cpu_timed(spill_unit, job)
            keep(res)
            workers.count(cpu, pid)
    finally:
        _PROGRESS_CB = None
    return results, read


def _totals(
    results: dict[int, dict[str, Any]], n_units: int, spill_dir: str, exclude_val_of: dict[str, Any] | None = None
) -> tuple[dict[str, Any], dict[int, int], dict[int, list[tuple[str, list[int]]]]]:
    """(summed stats, rows per bucket, each bucket's spill batches by unit file), in unit order.

    With ``exclude_val_of`` the stats also count ``rows_excluded_val`` (the val owner's rows not kept).
    """
    keys = STAT_KEYS + (("rows_excluded_val",) if exclude_val_of else ())
    stats: dict[str, Any] = dict.fromkeys(keys, 0)
    counts: dict[int, int] = {}
    sources: dict[int, list[tuple[str, list[int]]]] = {}
    for i in range(n_units):
        res = results[i]
        for k in stats:
            stats[k] += res["stats"].get(k, 0)
        by_group: dict[int, list[int]] = {}
        for g, batch_no, _rows in res["index"]:
            by_group.setdefault(g, []).append(batch_no)
        arrow_path = _unit_paths(spill_dir, i)[0]
        for g, numbers in by_group.items():
            sources.setdefault(g, []).append((arrow_path, numbers))
        for g, c in res["counts"].items():
            counts[int(g)] = counts.get(int(g), 0) + c
    stats["rows_kept"] = stats["train_rows"] + stats["val_rows"]
    stats["realised_fraction"] = round(stats["rows_kept"] / stats["rows_read"], 6) if stats["rows_read"] else 0.0
    return stats, counts, sources


def _shard_jobs(
    opts: Options,
    stats: dict[str, Any],
    counts: dict[int, int],
    sources: dict[int, list[tuple[str, list[int]]]],
    bits: int,
    data_dir: str,
    force_hint: str,
) -> list[ShardJob]:
    """Every shard of the output (the val shard last) with the buckets it spans; refuses too few rows."""
    n_buckets = 1 << bits
    n_train, n_val = stats["train_rows"], stats["val_rows"]
    bounds = plan_shards(n_train, opts.rows_per_shard, opts.world_size)
    if opts.val_fraction > 0 and n_val < opts.world_size:
        raise ArmsError(
            f"val_fraction {opts.val_fraction} kept only {n_val} validation rows, fewer than world_size "
            f"{opts.world_size}: every rank needs a row group of the validation shard; raise val_fraction."
        )
    if opts.val_fraction == 0 and len(bounds) < 2:
        raise ArmsError(
            f"the {n_train} kept rows make a single shard, and nanochat reads the last file as validation, "
            "leaving no training data; lower rows_per_shard or set val_fraction."
        )
    train_refs = _buckets_for(counts, sources, 0, n_buckets)
    val_refs = _buckets_for(counts, sources, n_buckets, n_buckets)
    common = {
        "data_dir": data_dir,
        "world_size": opts.world_size,
        "extra_columns": tuple(opts.extra_columns),
        "compression_level": opts.compression_level,
        "force_hint": force_hint,
    }
    jobs: list[ShardJob] = []
    for i, (lo, hi) in enumerate(bounds):
        refs = tuple(r for r in train_refs if r.offset < hi and r.offset + r.rows > lo)
        jobs.append(ShardJob(shard_name(i), lo, hi, refs, role="train", **common))
    if n_val:
        jobs.append(ShardJob(VAL_NAME, 0, n_val, tuple(val_refs), role="val", **common))
    return jobs


def _write_pass(
    planned: list[tuple[str, dict[str, Any], list[ShardJob]]], progress: ProgressWriter, workers: _Pool
) -> list[list[dict[str, Any]]]:
    """Pass 2: for each (data dir, stats, shard jobs) the entries of every shard, those an earlier run finished
    kept, the others written."""
    per_dir: dict[str, list[dict[str, Any]]] = {}
    todo: list[ShardJob] = []
    for data_dir, stats, shard_jobs in planned:
        entries = per_dir.setdefault(data_dir, [])
        for job in shard_jobs:  # written by the interrupted run, or intact in a repaired dir
            existing = _existing_entry(data_dir, job)
            if existing is not None:
                entries.append(existing)
            else:
                todo.append(job)
        stats["shards_reused"] = len(entries)
    written = sum(len(e) for e in per_dir.values())
    progress.update(
        force=True,
        phase="writing shards",
        unit="shards",
        done=written,
        total=sum(len(jobs) for _, _, jobs in planned),
        bytes_done=0,
        started=time.time(),
        extra={"kept": sum(stats["rows_kept"] for _, stats, _ in planned), "shards written": written},
    )
    # runs of consecutive shards of one data dir (they share its buckets), the largest first over all
    batches: list[list[ShardJob]] = []
    for data_dir, _, _ in planned:
        batches += _group_jobs([j for j in todo if j.data_dir == data_dir], workers.workers)
    batches.sort(key=lambda group: -sum(j.end - j.start for j in group))  # stable: one member keeps its order

    def on_shard(res: list[dict[str, Any]]) -> None:
        nonlocal written
        for entry in res:
            data_dir = entry.pop("data_dir")
            path = os.path.join(data_dir, entry["name"])
            full = {**entry, "bytes": os.path.getsize(path)}
            remember_verified(data_dir, entry["name"], entry["sha256"])
            per_dir[data_dir].append(full)
            written += 1
            progress.advance(1, full["bytes"], extra={"shards written": written})

    if workers.pool is not None and len(batches) > 1:
        for res, cpu, pid in _run_pool(workers.pool, write_shards, batches, None, None):
            on_shard(res)
            workers.count(cpu, pid)
    else:
        for batch in batches:
            res, cpu, pid = _cpu_timed(write_shards, batch)
            on_shard(res)
            workers.count(cpu, pid)
    for data_dir in per_dir:
        fsync_dir(data_dir)
    return [per_dir[data_dir] for data_dir, _, _ in planned]


def _existing_entry(data_dir: str, job: ShardJob) -> dict[str, Any] | None:
    """The manifest entry of a shard an earlier (interrupted) run of the same plan finished, else None.

    Shards are renamed into place only when complete, so one that exists is trusted once its rows and
    row groups match the plan (a mismatch, which only a hand edit can cause, is removed and rewritten).
    """
    path = os.path.join(data_dir, job.name)
    if not os.path.isfile(path):
        return None
    sha = None
    try:
        with open(os.path.join(data_dir, VERIFY_CACHE_NAME), encoding="utf-8") as fh:
            cached = json.load(fh).get(job.name)
        st = os.stat(path)
        if cached and cached[0] == st.st_size and cached[1] == st.st_mtime_ns:
            sha = cached[2]
    except (OSError, ValueError, AttributeError):
        sha = None
    try:
        entry = shard_entry(path, role=job.role, sha256=sha)
    except Exception:
        entry = None
    rows = job.end - job.start
    if entry is None or entry["rows"] != rows or entry["row_groups"] != len(row_group_sizes(rows, job.world_size)):
        os.unlink(path)
        return None
    if sha is None:
        remember_verified(data_dir, job.name, entry["sha256"])
    return entry


def _group_jobs(todo: list[ShardJob], workers: int) -> list[list[ShardJob]]:
    """Runs of consecutive shards, at least ``TASKS_PER_WORKER`` per worker (one in all for a single worker).

    A shard is the smallest piece of pass 2 (one file, one zstd stream), so the pass ends when the
    worker with the most left ends: with runs of k shards the others may idle for up to k shards.
    A run loads each bucket it spans once (a shard that starts in the bucket the previous one ended
    in finds it cached), so every run boundary costs one more load of a bucket (a copy out of the
    memory-mapped spill and a sort of the keys: 0.02-0.15 s against ~0.5 s of zstd writing for a
    shard of 14000 web documents). Runs of two per worker (11 shards of the 4 GB benchmark on two
    workers: runs of 3, 3, 3, 2) left one worker ~1.6 shards of CPU longer in the pass than the other
    (3.9 s against 2.9 s); four per worker keep the gap within one shard for a few bucket reloads. The
    largest runs go first (the val shard may be the biggest), so the last to start are the smallest.
    """
    if not todo:
        return []
    val = [j for j in todo if j.role == "val"]
    train = [j for j in todo if j.role == "train"]
    per_task = len(train) if workers <= 1 else len(train) // (TASKS_PER_WORKER * workers)
    per_task = max(1, per_task)
    groups: list[list[ShardJob]] = [[j] for j in val]
    for i in range(0, len(train), per_task):
        groups.append(train[i : i + per_task])
    groups.sort(key=lambda group: -sum(j.end - j.start for j in group))  # stable: ties keep shard order
    return groups


def _run_pool(
    pool: ProcessPoolExecutor,
    fn: Callable[[Any], Any],
    jobs: list[Any],
    queue: Any,
    on_progress: Callable[[int, int, int], None] | None,
) -> Iterator[Any]:
    """Submit ``jobs``, yield (result, CPU seconds, worker pid) as they finish, forwarding worker progress; first error
    cancels the rest."""
    futures: list[Future[Any]] = [pool.submit(_cpu_timed, fn, job) for job in jobs]
    pending = set(futures)
    try:
        while pending:
            done, pending = wait(pending, timeout=0.5, return_when=FIRST_COMPLETED)
            _drain(queue, on_progress)
            for fut in done:
                yield fut.result()
        _drain(queue, on_progress)
    finally:
        for fut in pending:
            fut.cancel()


def _drain(queue: Any, on_progress: Callable[[int, int, int], None] | None) -> None:
    if queue is None or on_progress is None:
        return
    while True:
        try:
            rows, nbytes, kept = queue.get_nowait()
        except Exception:
            return
        on_progress(rows, nbytes, kept)


def options_from_dict(args: dict[str, Any]) -> Options:
    """Options from module/CLI arguments (unknown keys and None values ignored: the defaults apply)."""
    names = set(Options.__dataclass_fields__)
    return Options(**{k: v for k, v in args.items() if k in names and v is not None})
