"""A deterministic synthetic dataset shaped like airtrain-ai/fineweb-edu-fortified, as local parquet.

The lab, the tests and the benchmark need the real dataset's *shape* without the network: the same
columns and types (the 384-float ``embedding`` included, so that "read only text and id" is really
exercised), the hub repo's layout ``<out>/data/<dump>/train-0000i-of-000NN.parquet`` ordered by crawl
dump, a README.md whose ``configs:`` block names one config per dump (as the hub card does), realistic
document lengths and row groups of ``row_group_rows`` rows.

Columns and types follow the dataset card (``dataset_info.features``): text, id, dump, url,
file_path, language, language_score, token_count, score, int_score, embedding (list<float32>, 384
values), count. The card lists no ``date`` column, so none is written.

Everything is vectorised with numpy/pyarrow (no per-row Python): a token stream drawn from a Zipf-like
vocabulary is cut into documents at token boundaries (so every text is valid UTF-8), ids are
``<urn:uuid:...>`` strings built from random bytes. Same arguments -> byte-identical files, whatever
``workers`` is: every file draws from its own generator seeded with (seed, dump index, file index).

:func:`write_eval_bundle` writes a tiny zip shaped like nanochat's CORE ``eval_bundle.zip``, which the lab's
CPU node places instead of downloading the real one.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import zipfile
from collections.abc import Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

EMBEDDING_DIM = 384
DEFAULT_TEXT_BYTES_MEAN = 4500  # the real card: ~71.7 GB / 10.8 M rows for CC-MAIN-2013-20, embedding included
TEXT_SIGMA = 1.0  # log-normal spread: ~80% of documents between 1 and 10 KB, a long tail above
TEXT_MIN_BYTES = 64
TEXT_MAX_BYTES = 400_000
DEFAULT_ROW_GROUP_ROWS = 1000
VOCAB_SIZE = 30_000
VOCAB_SEED = 20240601  # the vocabulary is the same for every seed: only the draws differ

# The first crawl dumps of FineWeb, in order; more are made up in the same pattern when asked for.
KNOWN_DUMPS = [
    "CC-MAIN-2013-20",
    "CC-MAIN-2013-48",
    "CC-MAIN-2014-10",
    "CC-MAIN-2014-15",
    "CC-MAIN-2014-23",
    "CC-MAIN-2014-35",
    "CC-MAIN-2014-41",
    "CC-MAIN-2014-42",
    "CC-MAIN-2014-49",
    "CC-MAIN-2014-52",
    "CC-MAIN-2015-06",
    "CC-MAIN-2015-11",
    "CC-MAIN-2015-14",
    "CC-MAIN-2015-18",
    "CC-MAIN-2015-22",
    "CC-MAIN-2015-27",
    "CC-MAIN-2015-32",
    "CC-MAIN-2015-35",
    "CC-MAIN-2015-40",
    "CC-MAIN-2015-48",
]

SCHEMA = pa.schema(
    [
        ("text", pa.string()),
        ("id", pa.string()),
        ("dump", pa.string()),
        ("url", pa.string()),
        ("file_path", pa.string()),
        ("language", pa.string()),
        ("language_score", pa.float64()),
        ("token_count", pa.int64()),
        ("score", pa.float64()),
        ("int_score", pa.int64()),
        ("embedding", pa.list_(pa.float32())),
        ("count", pa.int64()),
    ]
)

_HEX = np.frombuffer(b"0123456789abcdef", dtype=np.uint8)
_LETTERS = np.frombuffer(b"etaoinshrdlcumwfgypbvkjxqz", dtype=np.uint8)
_LETTER_P = np.array(
    [12.7, 9.1, 8.2, 7.5, 7.0, 6.7, 6.3, 6.1, 6.0, 4.3, 4.0, 2.8, 2.8, 2.4, 2.4, 2.2, 2.0, 2.0, 1.9, 1.5, 1.0,
     0.8, 0.2, 0.2, 0.1, 0.1]
)  # fmt: skip


def dump_names(n: int) -> list[str]:
    """The first ``n`` dump names, real ones first, then CC-MAIN-<year>-<week> continuing the pattern."""
    if n < 1:
        raise ValueError("dumps must be >= 1")
    names = list(KNOWN_DUMPS[:n])
    year, week = 2016, 7
    while len(names) < n:
        names.append(f"CC-MAIN-{year}-{week:02d}")
        week += 5
        if week > 50:
            year, week = year + 1, week - 50
    return names


@dataclass(frozen=True)
class _Vocab:
    table: np.ndarray  # (V, maxlen) uint8, token bytes padded with zeros
    lens: np.ndarray  # (V,) token lengths in bytes
    cdf: np.ndarray  # (V,) cumulative draw probabilities
    mean_len: float


_VOCAB: _Vocab | None = None


def _vocab() -> _Vocab:
    """Zipf-weighted ASCII words with a trailing space, some punctuation and a few UTF-8 words."""
    global _VOCAB
    if _VOCAB is not None:
        return _VOCAB
    rng = np.random.default_rng(VOCAB_SEED)
    n_words = VOCAB_SIZE
    wlen = np.clip(rng.geometric(0.2, n_words), 1, 14)
    maxlen = 24
    letters = rng.choice(_LETTERS, size=(n_words, maxlen), p=_LETTER_P / _LETTER_P.sum())
    cols = np.arange(maxlen)
    table = np.where(cols[None, :] < wlen[:, None], letters, 0).astype(np.uint8)
    table[np.arange(n_words), wlen] = ord(" ")
    lens = wlen + 1
    specials = [
        b". ",
        b", ",
        b".\n\n",
        b"caf\xc3\xa9 ",
        b"na\xc3\xafve ",
        b"\xe2\x80\x93 ",
        b"2024 ",
        b"(see ",
    ]
    sp = np.zeros((len(specials), maxlen), dtype=np.uint8)
    for i, s in enumerate(specials):
        sp[i, : len(s)] = np.frombuffer(s, dtype=np.uint8)
    table = np.vstack([table, sp])
    lens = np.concatenate([lens, [len(s) for s in specials]])
    weights = 1.0 / np.arange(1, n_words + 1) ** 1.05
    weights = weights / weights.sum() * 0.86
    special_w = np.array([0.07, 0.05, 0.012, 0.002, 0.002, 0.002, 0.001, 0.001])
    p = np.concatenate([weights, special_w])
    p = p / p.sum()
    cdf = np.cumsum(p)
    cdf[-1] = 1.0
    _VOCAB = _Vocab(table=table, lens=lens.astype(np.int64), cdf=cdf, mean_len=float((p * lens).sum()))
    return _VOCAB


def _texts(rng: np.random.Generator, n: int, text_bytes_mean: int) -> tuple[pa.Array, np.ndarray]:
    """``n`` documents cut from one token stream at token boundaries; also returns their byte lengths."""
    voc = _vocab()
    median = text_bytes_mean / np.exp(TEXT_SIGMA**2 / 2)
    want = np.clip(rng.lognormal(np.log(median), TEXT_SIGMA, n), TEXT_MIN_BYTES, TEXT_MAX_BYTES).astype(np.int64)
    total = int(want.sum())
    n_tokens = int(total / voc.mean_len * 1.05) + 64
    while True:
        ids = np.searchsorted(voc.cdf, rng.random(n_tokens), side="right")
        tlen = voc.lens[ids]
        if int(tlen.sum()) >= total:
            break
        n_tokens = int(n_tokens * 1.2)
    ends = np.cumsum(tlen)
    # cut after the first token that reaches each wanted cumulative length
    cuts = np.searchsorted(ends, np.cumsum(want), side="left")
    cut_ends = ends[np.minimum(cuts, len(ends) - 1)]
    offsets = np.concatenate([[0], cut_ends]).astype(np.int64)
    # documents need distinct boundaries: the log-normal minimum (64 bytes) is above any token length
    used = int(offsets[-1])
    keep_tokens = int(np.searchsorted(ends, used, side="left")) + 1
    toks = ids[:keep_tokens]
    mask = np.arange(voc.table.shape[1])[None, :] < voc.lens[toks][:, None]
    data = voc.table[toks][mask]
    assert data.size == used
    arr = pa.StringArray.from_buffers(n, pa.py_buffer(offsets.astype(np.int32)), pa.py_buffer(data.tobytes()))
    return arr, np.diff(offsets)


def _fixed_strings(rows: np.ndarray) -> pa.Array:
    """A string array from an (n, width) uint8 matrix, one row per value."""
    n, width = rows.shape
    offsets = (np.arange(n + 1, dtype=np.int32) * width).astype(np.int32)
    return pa.StringArray.from_buffers(n, pa.py_buffer(offsets), pa.py_buffer(np.ascontiguousarray(rows).tobytes()))


def _ids(rng: np.random.Generator, n: int) -> pa.Array:
    """``<urn:uuid:xxxxxxxx-xxxx-4xxx-yxxx-xxxxxxxxxxxx>`` (47 bytes), a version-4 UUID per row."""
    raw = rng.integers(0, 256, size=(n, 16), dtype=np.uint8)
    raw[:, 6] = (raw[:, 6] & 0x0F) | 0x40
    raw[:, 8] = (raw[:, 8] & 0x3F) | 0x80
    hexes = np.empty((n, 32), dtype=np.uint8)
    hexes[:, 0::2] = _HEX[raw >> 4]
    hexes[:, 1::2] = _HEX[raw & 0x0F]
    prefix = np.frombuffer(b"<urn:uuid:", dtype=np.uint8)
    out = np.empty((n, 47), dtype=np.uint8)
    out[:, :10] = prefix
    pos = 10
    for start, stop in ((0, 8), (8, 12), (12, 16), (16, 20), (20, 32)):
        width = stop - start
        out[:, pos : pos + width] = hexes[:, start:stop]
        pos += width
        if stop != 32:
            out[:, pos] = ord("-")
            pos += 1
    out[:, pos] = ord(">")
    return _fixed_strings(out)


def _hex_strings(rng: np.random.Generator, n: int, nbytes: int) -> pa.Array:
    raw = rng.integers(0, 256, size=(n, nbytes), dtype=np.uint8)
    out = np.empty((n, 2 * nbytes), dtype=np.uint8)
    out[:, 0::2] = _HEX[raw >> 4]
    out[:, 1::2] = _HEX[raw & 0x0F]
    return _fixed_strings(out)


def _word_list(rng: np.random.Generator, count: int) -> list[str]:
    voc = _vocab()
    picks = rng.integers(0, VOCAB_SIZE, size=count)
    return [voc.table[i, : voc.lens[i] - 1].tobytes().decode() for i in picks]


def _urls(rng: np.random.Generator, n: int) -> pa.Array:
    words = _word_list(rng, 600)
    domains = pa.array([f"https://www.{words[i]}{words[i + 300]}.com/" for i in range(300)])
    sections = pa.array(words[:200])
    zipf = 1.0 / np.arange(1, 301)
    dom = pa.array(rng.choice(300, size=n, p=zipf / zipf.sum()))
    sec = pa.array(rng.integers(0, 200, size=n))
    return pc.binary_join_element_wise(
        domains.take(dom), sections.take(sec), pa.scalar("/"), _hex_strings(rng, n, 6), pa.scalar(".html"), ""
    )


def _file_paths(rng: np.random.Generator, n: int, dump: str) -> pa.Array:
    segment = int(rng.integers(1368696381000, 1368696389999))
    names = pa.array(
        [
            f"s3://commoncrawl/crawl-data/{dump}/segments/{segment + i}/warc/"
            f"{dump}-{segment + i}-{i:05d}-ip-10-60-113-184.ec2.internal.warc.gz"
            for i in range(64)
        ]
    )
    return names.take(pa.array(np.sort(rng.integers(0, 64, size=n))))


def _embeddings(rng: np.random.Generator, n: int) -> pa.Array:
    vec = rng.standard_normal((n, EMBEDDING_DIM), dtype=np.float32)
    vec /= np.linalg.norm(vec, axis=1, keepdims=True)
    offsets = pa.array(np.arange(n + 1, dtype=np.int32) * EMBEDDING_DIM, pa.int32())
    return pa.ListArray.from_arrays(offsets, pa.array(vec.reshape(-1), pa.float32()))


def make_table(rng: np.random.Generator, n: int, dump: str, text_bytes_mean: int = DEFAULT_TEXT_BYTES_MEAN) -> pa.Table:
    """``n`` synthetic rows of ``dump`` in the dataset's schema."""
    text, nbytes = _texts(rng, n, text_bytes_mean)
    score = np.round(rng.uniform(2.5, 5.0, n), 6)
    columns = [
        text,
        _ids(rng, n),
        pa.repeat(pa.scalar(dump), n),
        _urls(rng, n),
        _file_paths(rng, n, dump),
        pa.repeat(pa.scalar("en"), n),
        pa.array(np.round(rng.uniform(0.65, 1.0, n), 6)),
        pa.array(np.maximum(1, (nbytes / rng.uniform(4.2, 4.8, n)).astype(np.int64))),
        pa.array(score),
        pa.array(np.rint(score).astype(np.int64)),
        _embeddings(rng, n),
        pa.array(rng.geometric(0.8, n).astype(np.int64)),
    ]
    return pa.Table.from_arrays(columns, schema=SCHEMA)


@dataclass(frozen=True)
class FileSpec:
    path: str
    rows: int
    dump: str
    dump_index: int
    file_index: int


def plan_files(out: str, rows: int, files_per_dump: int, dumps: int) -> list[FileSpec]:
    """Where each file goes and how many rows it holds (rows spread as evenly as possible, in dump order)."""
    if rows < 1 or files_per_dump < 1 or dumps < 1:
        raise ValueError("rows, files_per_dump and dumps must all be >= 1")
    names = dump_names(dumps)
    n_files = dumps * files_per_dump
    base, extra = divmod(rows, n_files)
    specs = []
    k = 0
    for d, dump in enumerate(names):
        for f in range(files_per_dump):
            specs.append(
                FileSpec(
                    path=os.path.join(out, "data", dump, f"train-{f:05d}-of-{files_per_dump:05d}.parquet"),
                    rows=base + (1 if k < extra else 0),
                    dump=dump,
                    dump_index=d,
                    file_index=f,
                )
            )
            k += 1
    return specs


def write_file(spec: FileSpec, seed: int, text_bytes_mean: int, row_group_rows: int) -> dict[str, Any]:
    """Write one file (temporary name, then rename); returns its path, rows and bytes."""
    rng = np.random.default_rng([seed, spec.dump_index, spec.file_index])
    os.makedirs(os.path.dirname(spec.path), exist_ok=True)
    tmp = spec.path + ".tmp"
    with pq.ParquetWriter(tmp, SCHEMA, compression="snappy") as writer:
        done = 0
        while done < spec.rows:
            n = min(row_group_rows, spec.rows - done)
            writer.write_table(make_table(rng, n, spec.dump, text_bytes_mean), row_group_size=n)
            done += n
        if spec.rows == 0:
            writer.write_table(SCHEMA.empty_table())
    os.replace(tmp, spec.path)
    return {"path": spec.path, "rows": spec.rows, "bytes": os.path.getsize(spec.path)}


def _write_file_args(args: tuple[FileSpec, int, int, int]) -> dict[str, Any]:
    return write_file(*args)


def readme_text(dumps: Sequence[str]) -> str:
    """The dataset card's front matter: one config per dump, split ``train``, like the hub repo's."""
    lines = ["---", "language:", "- en", "license: odc-by", "configs:"]
    for dump in dumps:
        lines += [
            f"- config_name: {dump}",
            "  data_files:",
            "  - split: train",
            f"    path: data/{dump}/train-*",
        ]
    lines += [
        "---",
        "",
        "Synthetic stand-in for airtrain-ai/fineweb-edu-fortified, made by nanochat-arms.",
        "",
    ]
    return "\n".join(lines)


def make_fixture(
    out: str,
    rows: int,
    *,
    files_per_dump: int = 2,
    dumps: int = 3,
    seed: int = 0,
    text_bytes_mean: int = DEFAULT_TEXT_BYTES_MEAN,
    row_group_rows: int = DEFAULT_ROW_GROUP_ROWS,
    workers: int = 1,
) -> list[dict[str, Any]]:
    """Write the whole dataset under ``out``; returns one {path, rows, bytes} per file, in dump order."""
    if text_bytes_mean < TEXT_MIN_BYTES:
        raise ValueError(f"text_bytes_mean must be >= {TEXT_MIN_BYTES}")
    if row_group_rows < 1:
        raise ValueError("row_group_rows must be >= 1")
    specs = plan_files(out, rows, files_per_dump, dumps)
    os.makedirs(out, exist_ok=True)
    with open(os.path.join(out, "README.md"), "w", encoding="utf-8") as fh:
        fh.write(readme_text(dump_names(dumps)))
    jobs = [(s, seed, text_bytes_mean, row_group_rows) for s in specs]
    if workers <= 1 or len(specs) == 1:
        return [_write_file_args(j) for j in jobs]
    with ProcessPoolExecutor(max_workers=min(workers, len(specs))) as pool:
        return list(pool.map(_write_file_args, jobs))


# ---------------------------------------------------------------------------------------------
# the CORE eval bundle, tiny
# ---------------------------------------------------------------------------------------------

# One task of each type nanochat's CORE evaluation knows (scripts/base_eval.py's evaluate_core and
# nanochat/core_eval.py at b07604e), in the real bundle's layout: eval_bundle/core.yaml (icl_tasks with
# label, dataset_uri, num_fewshot, icl_task_type, continuation_delimiter), eval_bundle/eval_meta_data.csv
# (the real header; evaluate_core reads "Eval Task" and "Random baseline") and eval_bundle/eval_data/
# <category>/<task>.jsonl in each type's item format.
EVAL_BUNDLE_CORE_YAML = """icl_tasks:
- label: jeopardy
  dataset_uri: world_knowledge/jeopardy_all.jsonl
  num_fewshot: [1]
  icl_task_type: language_modeling
  continuation_delimiter: "\\nAnswer: "
- label: arc_easy
  dataset_uri: world_knowledge/arc_easy.jsonl
  num_fewshot: [1]
  icl_task_type: multiple_choice
  continuation_delimiter: "\\nAnswer: "
- label: winograd
  dataset_uri: language_understanding/winograd_wsc.jsonl
  num_fewshot: [0]
  icl_task_type: schema
"""
EVAL_BUNDLE_META_CSV = (
    "Eval Task,Task Category,Task Type,#shots,#datapoints,Random baseline,Centered Metric?,Description\n"
    "jeopardy,world knowledge,language modeling,1,3,0,,lab stand-in\n"
    "arc_easy,world knowledge,multiple choice,1,3,25,,lab stand-in\n"
    "winograd,language understanding,schema,0,3,50,,lab stand-in\n"
)
_EVAL_ITEMS = {
    "world_knowledge/jeopardy_all.jsonl": [
        {"context": "This river flows through Paris.", "continuation": "the Seine"},
        {"context": "The chemical symbol for gold.", "continuation": "Au"},
        {"context": "The largest planet of the solar system.", "continuation": "Jupiter"},
    ],
    "world_knowledge/arc_easy.jsonl": [
        {
            "query": "Question: What do plants need to make food?",
            "choices": ["light", "sand", "rock", "salt"],
            "gold": 0,
        },
        {
            "query": "Question: Which is a liquid at room temperature?",
            "choices": ["iron", "water", "wood", "ice"],
            "gold": 1,
        },
        {
            "query": "Question: What pulls objects toward Earth?",
            "choices": ["wind", "light", "gravity", "sound"],
            "gold": 2,
        },
    ],
    "language_understanding/winograd_wsc.jsonl": [
        {
            "context_options": [
                "The cup did not fit in the box because the cup",
                "The cup did not fit in the box because the box",
            ],
            "continuation": "was too big.",
            "gold": 0,
        },
        {
            "context_options": ["The man lifted the boy because the man", "The man lifted the boy because the boy"],
            "continuation": "was strong.",
            "gold": 0,
        },
        {
            "context_options": [
                "The ball broke the window because the ball",
                "The ball broke the window because the window",
            ],
            "continuation": "was fragile.",
            "gold": 1,
        },
    ],
}
# a fixed time for every member: the same zip, byte for byte, on every run (its sha256 is what hosts compare)
_ZIP_TIME = (2026, 1, 1, 0, 0, 0)


def eval_bundle_files() -> dict[str, str]:
    """Member name -> text of the tiny eval bundle (``eval_bundle/...``)."""
    files = {"eval_bundle/core.yaml": EVAL_BUNDLE_CORE_YAML, "eval_bundle/eval_meta_data.csv": EVAL_BUNDLE_META_CSV}
    for uri, items in _EVAL_ITEMS.items():
        files[f"eval_bundle/eval_data/{uri}"] = "".join(json.dumps(item) + "\n" for item in items)
    return files


def write_eval_bundle(path: str) -> str:
    """Write a zip shaped like nanochat's eval_bundle.zip at ``path`` (atomically, byte-identical every time);
    returns its sha256. The lab's CPU node places it instead of downloading the real one."""
    buf = io.BytesIO()
    # stored, not deflated: the bytes depend on nothing but the files (no zlib version)
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_STORED) as zf:
        for name, text in eval_bundle_files().items():
            info = zipfile.ZipInfo(name, date_time=_ZIP_TIME)
            info.external_attr = 0o644 << 16
            zf.writestr(info, text)
    data = buf.getvalue()
    folder = os.path.dirname(os.path.abspath(path))
    os.makedirs(folder, exist_ok=True)
    tmp = os.path.join(folder, f".tmp-{os.path.basename(path)}")
    with open(tmp, "wb") as fh:
        fh.write(data)
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, path)
    return hashlib.sha256(data).hexdigest()
