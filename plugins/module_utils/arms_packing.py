"""The data budget in the tokens real nanochat trains on, measured with nanochat's own loader.

nanochat's pretraining loader (``tokenizing_distributed_data_loader_with_state_bos_bestfit`` in
``nanochat/dataloader.py``, every commit from 43c29dd, 2026-01-13, to the bundle's HEAD) packs BOS-prefixed
documents best-fit into rows of ``max_seq_len + 1`` tokens and crops what does not fit: the tokens a
run consumes are not the tokens an arm holds one for one. Its docstring puts the loss at ~35% at
T=2048, and the rate depends on the arm's document lengths.

How a budget is measured (:func:`measure_budget`), on the host that holds the arm, with the python of
nanochat's venv (this file imports nanochat from the checkout it is given, never a copy):

1. The training files are nanochat's: every ``*.parquet`` of the data dir in sort order but the last
   (the last is the validation split), as ``nanochat/dataset.py`` lists them.
2. A deterministic sample of whole row groups (chosen with ``random.Random(seed)``) is read, ``text``
   column only, until it holds ``sample_docs`` documents (the whole arm when it is smaller).
3. The sample is written to a temporary folder as parquet and nanochat's loader itself is run over it,
   unchanged, as one process (rank 0 of 1), with the experiment's tokenizer (``tokenizer.pkl`` loaded by
   nanochat's ``RustBPETokenizer.from_directory``) at ``B=1, T=max_seq_len``, pass after pass (the loader
   is infinite and numbers its epochs). The rows are counted in steady state: the loader crops the
   SHORTEST buffered document when nothing fits, so documents longer than a row stay in its 1000-document
   buffer until it holds little else, and it only crops at its long-run rate once the buffer is full of
   them (:func:`warmup_docs`: three times buffer_size / the fraction of such documents, at least 5000
   documents). A real arm of millions of documents spends a negligible part of its first pass there; a
   sample is cycled through those documents first, then rows are counted from the loader's first step in
   one epoch to its first step in a later one, over at least 10000 documents, and averaged.
4. Tokens held are extrapolated by ROWS (documents): the sample's mean tokens a document (BOS
   included, as the loader prepends it) x the training rows the parquet footers count. The crop rate
   is the sample's: 1 - rows x (T + 1) / tokens held, and the whole arm yields
   held x (1 - crop rate) / (T + 1) rows a pass.
5. base_train counts a step's tokens as ``device_batch_size x max_seq_len x world_size`` x grad-accum
   steps = ``total_batch_size``: each row feeds T inputs (its T+1 tokens give T input/target pairs). So
   tokens the loader yields a pass = rows x T, and passes = num_iterations x total_batch_size / that.

Older loaders: before 43c29dd base_train used ``tokenizing_distributed_data_loader_with_state``, which
streams every token of every document into batches of B x T + 1 (nothing cropped). For such a checkout
the crop rate is 0 and one pass yields the tokens held (rule ``stream``); the tokenizer still counts them.
Between 43c29dd and e1dafc5 (2026-01-16) best-fit cropped the first buffered document instead of the
shortest: measuring with the checkout's own loader covers that difference as well (the same arm crops
64.5% at 43c29dd and 41.1% at b07604e in tests/unit/test_budget.py).

Under DDP every rank packs its own row groups with its own buffer, so the arm's yield a pass is the same
sum; a rank with a larger share than the mean (arms_rowgroups) wraps later, one with a smaller share
sooner: its passes are ``passes x mean share / its share``.

Measured in tests/unit/test_budget.py (real tokenizer trained by nanochat's RustBPETokenizer, T=512, a
fifth of a 10000-document arm sampled): predicted tokens a pass within 0.2% of what nanochat's loader
yields over the whole arm in a steady pass.

Where it runs (library/nanochat_data_budget.py): the CPU phase on the CPU node, for each random arm it
prepared, and the preflight on each arm's first host, for its data dir. :func:`measure_budget_cached` keeps
the figures beside the data dir (:func:`cache_path`) with what they were made from (:func:`budget_key`), so a
re-run with nothing changed reads them; the run's passes are added afterwards (:func:`with_passes`, the
tokens needed by nanochat's iteration rule), so the cache does not depend on the run's length. The
controller compares the arms with :func:`compare_passes` (arms_preflight.data_budget).
"""

from __future__ import annotations

import contextlib
import importlib
import inspect
import math
import os
import random
import sys
import tempfile
from collections.abc import Iterator, Mapping, Sequence
from types import SimpleNamespace
from typing import Any

from ansible.module_utils.arms_common import ArmsError

BESTFIT = "tokenizing_distributed_data_loader_with_state_bos_bestfit"
STREAM = "tokenizing_distributed_data_loader_with_state"
TEXT_COLUMN = "text"
DEFAULT_SAMPLE_DOCS = 20_000
DIST_ENV = ("RANK", "LOCAL_RANK", "WORLD_SIZE")
WARM_DOCS = 5000  # documents the loader goes through before rows are counted
MEASURE_DOCS = 10000  # documents the counted passes hold at least
# at most this many documents of warm-up (a few minutes): with very few long documents the buffer fills
# slowly, and the crop rate measured before it is full is a little low
MAX_WARM_DOCS = 200_000


def train_files(data_dir: str, val_last: bool = True) -> list[str]:
    """nanochat's training files of ``data_dir``: every ``*.parquet`` (not ``.tmp``) in sort order but the last.

    ``val_last=False`` for a folder that holds training shards only (the CPU node's prepared shards, whose
    validation shard is kept apart and becomes the last file on the arm's host): then every file trains.
    """
    if not os.path.isdir(data_dir):
        raise ArmsError(f"the data dir {data_dir} does not exist: prepare or fetch the arm's data first.")
    names = sorted(f for f in os.listdir(data_dir) if f.endswith(".parquet") and not f.endswith(".tmp"))
    if not val_last:
        if not names:
            raise ArmsError(f"{data_dir} holds no parquet file: prepare the arm's data again.")
        return [os.path.join(data_dir, n) for n in names]
    if len(names) < 2:
        raise ArmsError(
            f"{data_dir} holds {len(names)} parquet file(s): nanochat takes the last file as validation, so the "
            "arm has no training file and its loader would spin forever; prepare the arm's data again."
        )
    return [os.path.join(data_dir, n) for n in names[:-1]]


def load_nanochat(checkout: str, base_dir: str | None = None) -> SimpleNamespace:
    """nanochat's dataloader, dataset and tokenizer modules, imported from ``checkout``.

    ``base_dir`` is given to nanochat as ``NANOCHAT_BASE_DIR`` while it is imported (``nanochat/dataset.py``
    creates its data folder under it at import time). Raises ArmsError with a sentence when the checkout
    is not nanochat or its dependencies are missing (not nanochat's venv python), or when another
    nanochat was imported into this process before.
    """
    checkout = os.path.abspath(checkout)
    if not os.path.isfile(os.path.join(checkout, "nanochat", "dataloader.py")):
        raise ArmsError(f"{checkout} is not a nanochat checkout (no nanochat/dataloader.py); give the arm's checkout.")
    loaded = sys.modules.get("nanochat")
    if loaded is not None:
        where = os.path.abspath(os.path.dirname(os.path.dirname(getattr(loaded, "__file__", "") or "")))
        if where != checkout:
            raise ArmsError(
                f"this process already imported nanochat from {where}, not {checkout}; measure each checkout in "
                "its own process."
            )
    if checkout not in sys.path:
        sys.path.insert(0, checkout)
    saved = os.environ.get("NANOCHAT_BASE_DIR")
    if base_dir:
        os.environ["NANOCHAT_BASE_DIR"] = base_dir
    try:
        dataloader = importlib.import_module("nanochat.dataloader")
        dataset = importlib.import_module("nanochat.dataset")
        tokenizer = importlib.import_module("nanochat.tokenizer")
    except Exception as exc:  # ImportError, or anything nanochat raises at import
        raise ArmsError(
            f"could not import nanochat's loader from {checkout} ({type(exc).__name__}: {exc}); run this with the "
            "python of nanochat's venv (<venv>/bin/python), which has nanochat's dependencies."
        ) from None
    finally:
        if base_dir:
            if saved is None:
                os.environ.pop("NANOCHAT_BASE_DIR", None)
            else:
                os.environ["NANOCHAT_BASE_DIR"] = saved
    # the loader base_train itself uses (43c29dd defines both and switches base_train to best-fit)
    try:
        with open(os.path.join(checkout, "scripts", "base_train.py"), encoding="utf-8") as fh:
            train_code = fh.read()
    except OSError:
        train_code = ""
    if BESTFIT in train_code and hasattr(dataloader, BESTFIT):
        packing = "bestfit"
    elif STREAM in train_code and hasattr(dataloader, STREAM):
        packing = "stream"
    else:
        raise ArmsError(
            f"scripts/base_train.py at {checkout} trains with neither {BESTFIT} nor {STREAM} from "
            "nanochat/dataloader.py; this project knows no other loader: pin a commit it knows."
        )
    return SimpleNamespace(dataloader=dataloader, dataset=dataset, tokenizer=tokenizer, packing=packing)


def load_tokenizer(nc: SimpleNamespace, tokenizer_dir: str) -> Any:
    """The experiment's tokenizer as nanochat loads it (``RustBPETokenizer.from_directory``)."""
    if not os.path.isfile(os.path.join(tokenizer_dir, "tokenizer.pkl")):
        raise ArmsError(
            f"no tokenizer.pkl in {tokenizer_dir}: train the experiment's tokenizer (scripts.tok_train) and copy it "
            "to this host first."
        )
    try:
        return nc.tokenizer.RustBPETokenizer.from_directory(tokenizer_dir)
    except Exception as exc:
        raise ArmsError(f"nanochat could not load the tokenizer in {tokenizer_dir} ({exc}); train it again.") from None


@contextlib.contextmanager
def _nanochat_reads(dataset: Any, folder: str) -> Iterator[None]:
    """nanochat's loader lists ``folder`` (its ``dataset.DATA_DIR``), as rank 0 of 1, while the block runs."""
    saved_dir = dataset.DATA_DIR
    saved_env = {k: os.environ.pop(k) for k in DIST_ENV if k in os.environ}
    dataset.DATA_DIR = folder
    try:
        yield
    finally:
        dataset.DATA_DIR = saved_dir
        os.environ.update(saved_env)


def loader_buffer_size(nc: SimpleNamespace) -> int:
    """The loader's document buffer (its ``buffer_size`` default: 1000 at every best-fit commit)."""
    param = inspect.signature(getattr(nc.dataloader, BESTFIT)).parameters.get("buffer_size")
    return int(param.default) if param is not None and isinstance(param.default, int) else 1000


def warmup_docs(nc: SimpleNamespace, long_fraction: float) -> int:
    """Documents the loader must go through before its rows a pass are steady.

    A document longer than a row (T + 1 tokens) never fits, and the loader crops the SHORTEST buffered
    document when nothing fits: long documents stay in its buffer until it holds almost nothing else.
    The buffer fills with them after about buffer_size / (fraction of long documents) documents, and
    only then does the loader crop at the rate it keeps for the rest of a long run. Three times that.
    """
    if long_fraction <= 0:
        return WARM_DOCS
    return min(MAX_WARM_DOCS, max(WARM_DOCS, math.ceil(3 * loader_buffer_size(nc) / long_fraction)))


def rows_per_pass(nc: SimpleNamespace, tokenizer: Any, folder: str, max_seq_len: int, docs: int, warm: int) -> float:
    """Rows of ``max_seq_len + 1`` tokens nanochat's best-fit loader yields a pass over ``folder``'s training
    files (``docs`` documents), in steady state: after ``warm`` documents went by (whole passes), the rows
    from the loader's first step in one epoch to its first step in a later one, over passes holding at least
    10000 documents, averaged. The loader's state says which epoch its latest document came from.
    """
    start = 1 + max(1, math.ceil(warm / max(docs, 1)))
    passes = max(1, math.ceil(MEASURE_DOCS / max(docs, 1)))
    stop = start + passes
    with _nanochat_reads(nc.dataset, folder):
        loader = getattr(nc.dataloader, BESTFIT)(tokenizer, 1, int(max_seq_len), split="train", device="cpu")
        first: dict[int, int] = {}
        for rows, (_inputs, _targets, state) in enumerate(loader, 1):
            first.setdefault(int(state["epoch"]), rows)
            if stop in first:
                break
    return (first[stop] - first[start]) / passes


def _sample_row_groups(paths: Sequence[str], sample_docs: int, seed: int) -> tuple[list[tuple[str, int]], int, int]:
    """Row groups (path, index) chosen at random with ``seed`` until they hold ``sample_docs`` rows; total rows."""
    import pyarrow.parquet as pq

    groups: list[tuple[str, int, int]] = []
    for path in paths:
        meta = pq.ParquetFile(path).metadata
        if TEXT_COLUMN not in meta.schema.names:
            raise ArmsError(f"{path} has no {TEXT_COLUMN!r} column, the only column nanochat's loader reads.")
        groups += [(path, rg, meta.row_group(rg).num_rows) for rg in range(meta.num_row_groups)]
    total = sum(g[2] for g in groups)
    order = list(range(len(groups)))
    random.Random(seed).shuffle(order)
    chosen: list[tuple[str, int]] = []
    rows = 0
    for i in order:
        if rows >= sample_docs:
            break
        path, rg, n = groups[i]
        chosen.append((path, rg))
        rows += n
    return chosen, rows, total


def _write_sample(groups: Sequence[tuple[str, int]], folder: str) -> None:
    """The sampled row groups' text as one training file, plus a one-row file nanochat takes as val."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    files: dict[str, Any] = {}
    tables = []
    for path, rg in groups:
        handle = files.setdefault(path, pq.ParquetFile(path))
        tables.append(handle.read_row_group(rg, columns=[TEXT_COLUMN]).select([TEXT_COLUMN]))
    table = pa.concat_tables(tables)
    pq.write_table(table, os.path.join(folder, "shard_00000.parquet"), row_group_size=1024)
    pq.write_table(table.slice(0, 1), os.path.join(folder, "shard_00001.parquet"))


def _count_tokens(tokenizer: Any, folder: str, row_capacity: int) -> tuple[int, int]:
    """Tokens of the sample as the loader sees them (every document with a BOS token in front), and how
    many documents are longer than a row."""
    import pyarrow.parquet as pq

    bos = tokenizer.get_bos_token_id()
    total = longer = 0
    pf = pq.ParquetFile(os.path.join(folder, "shard_00000.parquet"))
    for rg in range(pf.num_row_groups):
        texts = pf.read_row_group(rg, columns=[TEXT_COLUMN]).column(0).to_pylist()
        lengths = [len(ids) for ids in tokenizer.encode(texts, prepend=bos)]
        total += sum(lengths)
        longer += sum(1 for n in lengths if n > row_capacity)
    return total, longer


def measure_budget(
    *,
    checkout: str,
    tokenizer_dir: str,
    data_dir: str,
    max_seq_len: int = 2048,
    sample_docs: int = DEFAULT_SAMPLE_DOCS,
    seed: int = 42,
    num_iterations: int | None = None,
    total_batch_size: int | None = None,
    val_last: bool = True,
) -> dict[str, Any]:
    """An arm's data budget in nanochat's own tokens (see the module docstring for the method).

    Returns a JSON-able dict: ``tokens_held`` (whole arm, extrapolated by rows), ``loader_rows_per_pass``
    and ``loader_tokens_per_pass`` (rows x T, base_train's unit), ``crop_rate``, the sample's figures,
    ``packing`` (``bestfit`` or ``stream``) and, with ``num_iterations`` and ``total_batch_size``,
    ``tokens_needed`` and ``passes`` (how many times the run goes over the arm's data). ``val_last``: see
    :func:`train_files`.
    """
    if max_seq_len < 1 or sample_docs < 1:
        raise ArmsError(f"max_seq_len ({max_seq_len}) and sample_docs ({sample_docs}) must be positive.")
    paths = train_files(data_dir, val_last=val_last)
    nc = load_nanochat(checkout, base_dir=os.path.dirname(os.path.abspath(tokenizer_dir)))
    tokenizer = load_tokenizer(nc, tokenizer_dir)
    groups, sampled_rows, train_rows = _sample_row_groups(paths, sample_docs, seed)
    if train_rows == 0:
        raise ArmsError(f"the training files of {data_dir} hold no rows: prepare the arm's data again.")
    with tempfile.TemporaryDirectory(prefix="arms-budget-") as tmp:
        _write_sample(groups, tmp)
        capacity = max_seq_len + 1
        sample_tokens, longer = _count_tokens(tokenizer, tmp, capacity)
        warm = warmup_docs(nc, longer / sampled_rows) if nc.packing == "bestfit" else 0
        rows = rows_per_pass(nc, tokenizer, tmp, max_seq_len, sampled_rows, warm) if warm else None
    if rows is None:  # the streaming loader: every token is trained on
        crop_rate = 0.0
        rule = "stream: the checkout's loader streams every token (no packing, nothing cropped)"
    else:
        crop_rate = max(0.0, 1.0 - rows * capacity / sample_tokens)
        rule = (
            f"bestfit: nanochat's own loader over a sample of {sampled_rows:,} of {train_rows:,} training rows "
            f"({len(groups)} row groups, seed {seed}); tokens held extrapolated by rows"
        )
    held = int(round(sample_tokens / sampled_rows * train_rows))
    # best-fit: a row takes T + 1 tokens and feeds T; streaming: a step takes B x T + 1 tokens and feeds B x T
    arm_rows = held * (1.0 - crop_rate) / capacity if rows is not None else held / max_seq_len
    out: dict[str, Any] = {
        "data_dir": data_dir,
        "packing": nc.packing,
        "max_seq_len": int(max_seq_len),
        "train_files": len(paths),
        "train_rows": train_rows,
        "sample_rows": sampled_rows,
        "sample_row_groups": len(groups),
        "sample_tokens": sample_tokens,
        "sample_loader_rows": round(rows, 2) if rows is not None else None,
        "tokens_per_doc": round(sample_tokens / sampled_rows, 3),
        "longer_than_a_row": round(longer / sampled_rows, 4),
        "warmup_docs": warm,
        "tokens_held": held,
        "crop_rate": round(crop_rate, 6),
        "loader_rows_per_pass": int(arm_rows),
        "loader_tokens_per_pass": int(arm_rows * max_seq_len),
        "seed": seed,
        "rule": rule,
    }
    if num_iterations is not None and total_batch_size is not None:
        return with_passes(out, int(num_iterations) * int(total_batch_size))
    return out


def with_passes(budget: Mapping[str, Any], tokens_needed: int | None) -> dict[str, Any]:
    """``budget`` with ``tokens_needed`` and ``passes`` (tokens needed / tokens the loader yields a pass)."""
    out = dict(budget)
    if tokens_needed is None:
        out.pop("tokens_needed", None)
        out.pop("passes", None)
        return out
    per_pass = int(out.get("loader_tokens_per_pass") or 0)
    out["tokens_needed"] = int(tokens_needed)
    out["passes"] = round(int(tokens_needed) / per_pass, 4) if per_pass else None
    return out


# ---------------------------------------------------------------------------------------------
# the cache beside the data: a re-run with nothing changed reads the figures instead of measuring
# ---------------------------------------------------------------------------------------------

CACHE_SUFFIX = ".budget.json"
# bump when measure_budget's figures change meaning: every cached measurement is then taken again
METHOD_VERSION = 1
# nanochat's code the figures depend on: how base_train picks its loader, the loader, its files and tokenizer
LOADER_CODE = ("scripts/base_train.py", "nanochat/dataloader.py", "nanochat/dataset.py", "nanochat/tokenizer.py")


def cache_path(data_dir: str) -> str:
    """Where the measured budget of ``data_dir`` is kept: beside it (``<data_dir>.budget.json``), never in it
    (nanochat reads the folder, and the manifest checks refuse extra files there)."""
    return os.path.abspath(data_dir).rstrip(os.sep) + CACHE_SUFFIX


def _sha256_of(paths: Sequence[str]) -> str:
    """One sha256 over the contents of ``paths`` in order (a missing file counts as its absence)."""
    import hashlib

    digest = hashlib.sha256()
    for path in paths:
        digest.update(os.path.basename(path).encode() + b"\0")
        try:
            with open(path, "rb") as fh:
                while chunk := fh.read(1 << 20):
                    digest.update(chunk)
        except FileNotFoundError:
            digest.update(b"\0missing\0")
    return digest.hexdigest()


def _manifest_sha256s(data_dir: str) -> dict[str, str]:
    """name -> sha256 from the data dir's manifest.json ({} when there is none or it is unreadable)."""
    import json

    try:
        with open(os.path.join(data_dir, "manifest.json"), encoding="utf-8") as fh:
            shards = json.load(fh).get("shards") or []
        return {str(s["name"]): str(s["sha256"]) for s in shards if s.get("name") and s.get("sha256")}
    except (OSError, ValueError, AttributeError, TypeError):
        return {}


def budget_key(
    *,
    checkout: str,
    tokenizer_dir: str,
    data_dir: str,
    max_seq_len: int,
    sample_docs: int,
    seed: int,
    val_last: bool,
) -> dict[str, Any]:
    """What a measurement is made from: the training files (their sha256 from the manifest, else size and
    mtime), the tokenizer, nanochat's loader code, the sequence length and the sample. Cheap: only the
    tokenizer and four source files are read. Not where the files are, nor whether a val file follows them:
    the CPU node's prepared shards and the arm host's copy (the val shard last) have the same key."""
    sha = _manifest_sha256s(data_dir)
    files = []
    for path in train_files(data_dir, val_last=val_last):
        name = os.path.basename(path)
        if name in sha:
            files.append([name, sha[name]])
        else:
            st = os.stat(path)
            files.append([name, f"{st.st_size}:{st.st_mtime_ns}"])
    return {
        "method": METHOD_VERSION,
        "train_files": files,
        "tokenizer": _sha256_of([os.path.join(tokenizer_dir, "tokenizer.pkl")]),
        "loader": _sha256_of([os.path.join(checkout, p) for p in LOADER_CODE]),
        "max_seq_len": int(max_seq_len),
        "sample_docs": int(sample_docs),
        "seed": int(seed),
    }


def read_cache(path: str, key: Mapping[str, Any]) -> dict[str, Any] | None:
    """The budget cached at ``path`` when it was measured from ``key``; None otherwise."""
    import json

    try:
        with open(path, encoding="utf-8") as fh:
            cached = json.load(fh)
    except (OSError, ValueError):
        return None
    if not isinstance(cached, dict) or cached.get("key") != key or not isinstance(cached.get("budget"), dict):
        return None
    return dict(cached["budget"])


def measure_budget_cached(
    *,
    checkout: str,
    tokenizer_dir: str,
    data_dir: str,
    max_seq_len: int = 2048,
    sample_docs: int = DEFAULT_SAMPLE_DOCS,
    seed: int = 42,
    val_last: bool = True,
    cache: bool = True,
    check_mode: bool = False,
) -> dict[str, Any]:
    """:func:`measure_budget` (without passes), read from :func:`cache_path` when it was measured from the same
    inputs (:func:`budget_key`), else measured and cached (atomically).

    In check mode nothing is measured or written: the cached budget when there is one, else none.
    Returns {"budget": dict or None, "source": "cache" | "measured" | "check_mode", "cache_file": path or None}.
    """
    from ansible.module_utils.arms_common import atomic_write_json

    args = {"max_seq_len": int(max_seq_len), "sample_docs": int(sample_docs), "seed": int(seed), "val_last": val_last}
    key = budget_key(checkout=checkout, tokenizer_dir=tokenizer_dir, data_dir=data_dir, **args)
    path = cache_path(data_dir)
    cached = read_cache(path, key) if cache else None
    if cached is not None:
        return {"budget": cached, "source": "cache", "cache_file": path}
    if check_mode:
        return {"budget": None, "source": "check_mode", "cache_file": None}
    budget = measure_budget(checkout=checkout, tokenizer_dir=tokenizer_dir, data_dir=data_dir, **args)
    if not cache:
        return {"budget": budget, "source": "measured", "cache_file": None}
    atomic_write_json(path, {"key": key, "budget": budget})
    return {"budget": budget, "source": "measured", "cache_file": path}


# ---------------------------------------------------------------------------------------------
# the run's side: sequence length and tokens needed from the experiment, and the figures as a sentence
# ---------------------------------------------------------------------------------------------


def seq_len_of(model: Mapping[str, Any] | None) -> int:
    """The experiment's ``--max-seq-len`` (its model's extra flags), else nanochat's default 2048."""
    from ansible.module_utils.arms_flags import DEFAULT_MAX_SEQ_LEN, int_flag, normalize_flags

    return int_flag(normalize_flags((model or {}).get("extra_flags") or {}), "max_seq_len", DEFAULT_MAX_SEQ_LEN)


def tokens_needed(model: Mapping[str, Any], commit_date: str | None) -> dict[str, Any]:
    """The tokens the run consumes (``arms_budget.planned_tokens``: iterations x total batch size) for the
    experiment's ``model`` at a commit of ``commit_date``."""
    from ansible.module_utils.arms_budget import planned_tokens

    return planned_tokens(
        depth=int(model["depth"]),
        total_batch_size=int(model["total_batch_size"]),
        extra_flags=model.get("extra_flags") or {},
        commit_date=commit_date or None,
    )


def budget_line(name: str, budget: Mapping[str, Any]) -> str:
    """One arm's measured figures as the preflight and the CPU phase say them."""
    held, per_pass = short_tokens(budget["tokens_held"]), short_tokens(budget["loader_tokens_per_pass"])
    line = (
        f"{name}: {held} tokens held, {per_pass} a pass "
        f"(nanochat's loader crops {float(budget['crop_rate']):.1%} at T={budget['max_seq_len']})"
    )
    if budget.get("passes") is not None:
        needed = short_tokens(budget["tokens_needed"])
        line += f", {float(budget['passes']):.2f} passes over its data ({needed} tokens needed)"
    return line


def _figures(name: str, budget: Mapping[str, Any]) -> str:
    return (
        f"{name} makes {budget['passes']:.2f} passes ({short_tokens(budget['tokens_needed'])} tokens needed, "
        f"{short_tokens(budget['loader_tokens_per_pass'])} a pass after cropping {float(budget['crop_rate']):.0%} of "
        f"{short_tokens(budget['tokens_held'])} held)"
    )


def short_tokens(n: float) -> str:
    for unit, size in (("T", 1e12), ("G", 1e9), ("M", 1e6), ("K", 1e3)):
        if abs(n) >= size:
            return f"{n / size:.1f}{unit}"
    return f"{n:.0f}"


def compare_passes(
    budgets: Mapping[str, Mapping[str, Any]],
    *,
    tolerance: float = 0.1,
    allow_unequal_repeats: bool = False,
) -> dict[str, Any]:
    """Refuse arms that would repeat their data a different number of times, on measured figures.

    ``budgets``: arm name -> :func:`measure_budget` result (with ``passes``). The meaning of
    ``tolerance`` is ``arms_repeat_tolerance``'s: effective passes (max(passes, 1): under one pass
    nothing repeats) may differ by a factor of at most 1 + tolerance. Beyond it, ArmsError with a
    sentence naming both arms and their figures, unless ``allow_unequal_repeats`` (then a warning).
    Returns {"arms": {name: {passes, crop_rate, ...}}, "warnings": [...], "comparable": bool}.
    """
    rows: dict[str, dict[str, Any]] = {}
    warnings: list[str] = []
    for name, b in budgets.items():
        if b.get("passes") is None or not b.get("loader_tokens_per_pass"):
            raise ArmsError(f"arm {name}'s data yields no training tokens a pass: prepare or fetch its data first.")
        rows[name] = {
            k: b[k] for k in ("passes", "crop_rate", "tokens_held", "loader_tokens_per_pass", "tokens_needed")
        }
        if b["passes"] > 1.0:
            warnings.append(f"arm {name} will repeat data: {_figures(name, b)}; nanochat starts a new epoch silently.")
    comparable = True
    if len(rows) > 1:
        eff = {n: max(float(r["passes"]), 1.0) for n, r in rows.items()}
        low = min(eff, key=lambda n: eff[n])
        high = max(eff, key=lambda n: eff[n])
        if eff[high] > eff[low] * (1.0 + tolerance) and not math.isclose(eff[high], eff[low]):
            comparable = False
            sentence = (
                f"arms repeat their data differently: {_figures(high, budgets[high])} and "
                f"{_figures(low, budgets[low])}, beyond arms_repeat_tolerance {tolerance:.0%}; the comparison would "
                f"measure repetition, not data: give {high} more data or train fewer iterations for every arm."
            )
            if not allow_unequal_repeats:
                raise ArmsError(sentence)
            warnings.append(sentence + " (allowed by arms_allow_unequal_repeats)")
    return {"arms": rows, "warnings": warnings, "comparable": comparable}
