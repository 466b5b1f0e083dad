"""Distributed tokenizing data loader over the parquet shards.

Rank r of W reads row groups r, r+W, r+2W, ... of each file of its split (train = all files but
the last, val = the last file), tokenizes the documents with a BOS token in front, packs them into
(B, T) batches and starts a new epoch after the last file: it never ends.
Stand-in written by nanochat-arms; not nanochat's code.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import numpy as np
import pyarrow.parquet as pq
import torch

from nanochat.common import get_dist_info
from nanochat.dataset import DATA_DIR, list_parquet_files, split_files
from nanochat.tokenizer import Tokenizer


def check_every_rank_gets_data(split: str, paths: list[str], world_size: int) -> list[int]:
    """Row-group counts of ``paths``; fails where nanochat's own loader would spin forever (see the comments)."""
    if not paths:
        if not list_parquet_files():
            raise RuntimeError(f"No parquet files found in {DATA_DIR}: put the shards there before training")
        # nanochat itself hangs here: with a single parquet file the train split is empty and the
        # loader loops over nothing forever. The stand-in says so instead.
        raise RuntimeError(
            f"The train split is empty: {DATA_DIR} holds a single parquet file, which is the validation "
            "split (the last file in name order); nanochat's loader would wait forever here. "
            "Add at least one more shard."
        )
    counts = [pq.ParquetFile(p).metadata.num_row_groups for p in paths]
    starved = [r for r in range(world_size) if not any(n > r for n in counts)]
    if starved:
        # nanochat itself hangs here too: a rank with no row group in any file never yields a batch.
        raise RuntimeError(
            f"Rank {starved[0]} of {world_size} gets no row group of the {split} split: its files have "
            f"{max(counts)} row group(s) at most but rank r reads row groups r, r+{world_size}, ...; "
            f"nanochat's loader would wait forever here. Every file needs at least {world_size} row groups."
        )
    return counts


def _row_groups(
    split: str, rank: int, world_size: int, resume_state: dict[str, Any] | None
) -> Iterator[tuple[str, dict[str, int]]]:
    """(file, {pq_idx, rg_idx, epoch}) of this rank's row groups, epoch after epoch, forever."""
    paths = split_files(split)
    counts = check_every_rank_gets_data(split, paths, world_size)
    epoch, first_pq, first_rg = 1, 0, None
    if resume_state is not None:
        epoch, first_pq = int(resume_state["epoch"]), int(resume_state["pq_idx"])
        # the state is rank 0's (rank 0 reads row groups 0, W, 2W, ...): every rank moves on to the
        # next round of row groups, as that one was (partly) consumed
        first_rg = int(resume_state["rg_idx"]) + world_size + rank
    while True:
        for pq_idx in range(first_pq, len(paths)):
            start = first_rg if first_rg is not None else rank
            first_rg = None
            for rg_idx in range(start, counts[pq_idx], world_size):
                yield paths[pq_idx], {"pq_idx": pq_idx, "rg_idx": rg_idx, "epoch": epoch}
        first_pq = 0
        epoch += 1


def tokenizing_distributed_data_loader(
    tokenizer: Tokenizer,
    B: int,
    T: int,
    split: str,
    device: torch.device | str = "cpu",
    resume_state_dict: dict[str, Any] | None = None,
) -> Iterator[tuple[torch.Tensor, torch.Tensor, dict[str, int]]]:
    """Yield (inputs, targets, state) forever; state = {pq_idx, rg_idx, epoch} of the last row group read."""
    _, rank, _, world_size = get_dist_info()
    needed = B * T + 1
    bos = tokenizer.get_bos_token_id()
    pending = np.zeros(0, dtype=np.int64)
    state: dict[str, int] = {"pq_idx": 0, "rg_idx": rank, "epoch": 1}
    row_groups = _row_groups(split, rank, world_size, resume_state_dict)
    files: dict[str, pq.ParquetFile] = {}
    # Tokens of row groups already seen, so the lab's small data costs nothing to re-read in later
    # epochs (nanochat reads and tokenizes again; only the stand-in's speed differs). Up to ~256 MB.
    cache: dict[tuple[int, int], np.ndarray] = {}
    cached_tokens = 0
    while True:
        while len(pending) < needed:
            path, state = next(row_groups)
            key = (state["pq_idx"], state["rg_idx"])
            tokens = cache.get(key)
            if tokens is None:
                pf = files.get(path) or files.setdefault(path, pq.ParquetFile(path))
                texts = pf.read_row_group(state["rg_idx"], columns=["text"]).column("text").to_pylist()
                rows = tokenizer.encode(texts, prepend=bos)
                tokens = np.fromiter((t for row in rows for t in row), dtype=np.int64)
                if cached_tokens + len(tokens) <= 32_000_000:
                    cache[key] = tokens
                    cached_tokens += len(tokens)
            pending = np.concatenate([pending, tokens])
        chunk = torch.from_numpy(pending[:needed].copy())
        pending = pending[needed:]
        inputs = chunk[:-1].view(B, T).to(device)
        targets = chunk[1:].view(B, T).to(device)
        yield inputs, targets, dict(state)
