"""The pretraining data: parquet shards with a ``text`` column in the data dir.

Every ``*.parquet`` file in the data dir, sorted by name, is data; the LAST one is the validation
split, all others are training. Stand-in written by nanochat-arms; not nanochat's code.
"""

from __future__ import annotations

import os
from collections.abc import Iterator

import pyarrow.parquet as pq

from nanochat.common import get_base_dir

base_dir = get_base_dir()
DATA_DIR = os.path.join(base_dir, "base_data")


def list_parquet_files(data_dir: str | None = None) -> list[str]:
    """Full paths of the data dir's parquet files, sorted by name (unfinished .tmp files skipped)."""
    data_dir = DATA_DIR if data_dir is None else data_dir
    names = sorted(f for f in os.listdir(data_dir) if f.endswith(".parquet") and not f.endswith(".tmp"))
    return [os.path.join(data_dir, f) for f in names]


def split_files(split: str, data_dir: str | None = None) -> list[str]:
    """The files of one split: 'train' = all but the last file, 'val' = the last file."""
    if split not in ("train", "val"):
        raise ValueError(f"split must be 'train' or 'val', not {split!r}")
    paths = list_parquet_files(data_dir)
    return paths[:-1] if split == "train" else paths[-1:]


def parquets_iter_batched(split: str, start: int = 0, step: int = 1) -> Iterator[list[str]]:
    """Yield the texts of row groups start, start+step, ... of every file of the split, in order."""
    for path in split_files(split):
        pf = pq.ParquetFile(path)
        for rg_idx in range(start, pf.num_row_groups, step):
            yield pf.read_row_group(rg_idx, columns=["text"]).column("text").to_pylist()
