"""No rank starves: which row groups each rank of a run reads, from the parquet footers alone.

Real nanochat (``_document_batches`` in ``nanochat/dataloader.py``, the same rule in every era from the
first commit to the bundle's HEAD): the data dir's ``*.parquet`` files (not ``.tmp``) in sort order, the
last one the validation split and all others training; in each file rank r of W reads row groups
r, r + W, r + 2W, ... and nothing else, then goes to the next file, and starts over at the first training
file forever (a new epoch). A rank whose row-group index starts past a file's last group just skips the
file, printing nothing. So:

- a rank with no row group in ANY training file loops over the files forever without a document:
  training never prints a step line (a single-file arm is the extreme case: no training file at all);
- a rank with no row group in the validation file hangs the same way at the first evaluation (step 0);
- a training file with fewer row groups than W starves nobody by itself (the other files feed those
  ranks), but it makes the ranks' shares unequal.

Unequal shares: ranks consume their data at the same pace (one micro-batch each a step), so the rank
with the least data wraps to a new epoch first and repeats data while others have not seen theirs. The
spread is (largest share - smallest share) / mean share, in rows. The runbook's shards of 14000 rows
written with nanochat's 1024-row groups have 14 groups (13 x 1024 + 1 x 688); at W=8 ranks 0-4 read
groups {r, r+8} = 2048 rows, rank 5 reads groups 5 and 13 = 1024 + 688 = 1712 rows, ranks 6 and 7 read one
group = 1024 rows: spread (2048 - 1024) / 1750 = 58.5%. (This project's own shards have a multiple of W
row groups of near-equal size: spread ~0.)
"""

from __future__ import annotations

import json
import os
import subprocess
from collections.abc import Mapping, Sequence
from typing import Any

from ansible.module_utils.arms_common import ArmsError

DEFAULT_UNEVEN_TOLERANCE = 0.1


def nanochat_files(data_dir: str) -> list[str]:
    """The files nanochat reads from ``data_dir``, in its order: ``*.parquet`` (not ``.tmp``), sorted by name."""
    if not os.path.isdir(data_dir):
        raise ArmsError(f"the data dir {data_dir} does not exist: prepare or fetch the arm's data first.")
    names = sorted(f for f in os.listdir(data_dir) if f.endswith(".parquet") and not f.endswith(".tmp"))
    return [os.path.join(data_dir, n) for n in names]


def row_group_rows(path: str) -> list[int]:
    """Rows of each row group of ``path``, from its footer only (no data page is read)."""
    import pyarrow.parquet as pq

    try:
        meta = pq.ParquetFile(path).metadata
    except Exception as exc:  # a truncated or non-parquet file
        raise ArmsError(f"{path} is not a readable parquet file ({exc}); fetch or prepare it again.") from None
    return [meta.row_group(i).num_rows for i in range(meta.num_row_groups)]


# row groups of each file named in argv, in a Python that has pyarrow (a run's own venv: nanochat reads parquet)
_COUNT_PROBE = (
    "import json, sys\n"
    "import pyarrow.parquet as pq\n"
    "print(json.dumps([pq.ParquetFile(p).metadata.num_row_groups for p in sys.argv[1:]]))\n"
)


def row_group_counts(paths: Sequence[str], python: str | None = None) -> dict[str, int]:
    """Row groups of each file (by name), from the footers: with ``python`` (a venv's interpreter, e.g. the
    run's own, for a caller without pyarrow: the status on a host's system Python) or in this process."""
    if not python:
        return {os.path.basename(p): len(row_group_rows(p)) for p in paths}
    try:
        proc = subprocess.run(
            [python, "-c", _COUNT_PROBE, *paths], capture_output=True, text=True, timeout=300, check=False
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise ArmsError(f"could not run {python} to read the parquet footers ({exc}).") from None
    if proc.returncode != 0:
        last = (proc.stderr.strip().splitlines() or ["no output"])[-1]
        raise ArmsError(f"{python} could not read the parquet footers of {len(paths)} file(s): {last}")
    return {os.path.basename(p): int(n) for p, n in zip(paths, json.loads(proc.stdout), strict=True)}


def rank_rows(groups: Sequence[int], world_size: int) -> list[int]:
    """Rows each rank reads from one file: rank r gets row groups r, r + W, r + 2W, ..."""
    return [sum(groups[r::world_size]) for r in range(world_size)]


def _ranks(ranks: Sequence[int]) -> str:
    return f"rank {ranks[0]}" if len(ranks) == 1 else "ranks " + ", ".join(str(r) for r in ranks)


def _have(ranks: Sequence[int]) -> str:
    return "has" if len(ranks) == 1 else "have"


def check_ranks(
    paths: Sequence[str],
    world_size: int,
    *,
    uneven_tolerance: float = DEFAULT_UNEVEN_TOLERANCE,
    footers: dict[str, list[int]] | None = None,
) -> dict[str, Any]:
    """Whether every rank of ``world_size`` gets data from ``paths`` (nanochat's files, in its order).

    ``footers`` (name -> rows of each row group) may stand in for reading the files. Returns
    {"problems": [sentence, ...] (the run would hang), "warnings": [...], "shares": [train rows a rank],
    "spread": (max - min) / mean of the shares, "val_groups": int, "files": {name: row groups}}.
    """
    if world_size < 1:
        raise ArmsError(f"world_size must be at least 1 (GPUs x nodes of the arm), got {world_size}.")
    names = [os.path.basename(p) for p in paths]
    groups = {os.path.basename(p): (footers or {}).get(os.path.basename(p)) or row_group_rows(p) for p in paths}
    problems: list[str] = []
    warnings: list[str] = []
    out: dict[str, Any] = {"problems": problems, "warnings": warnings, "world_size": world_size}
    out["files"] = {n: len(groups[n]) for n in names}
    if len(names) < 2:
        problems.append(
            f"the arm has {len(names)} parquet file{'' if len(names) == 1 else 's'}"
            f"{' (' + names[0] + ')' if names else ''}: nanochat takes the last file as validation, so no file is "
            "left to train on and every rank's loader would spin forever, printing nothing; the arm needs training "
            "shards and a validation shard."
        )
        return out
    train, val = names[:-1], names[-1]
    shares = [0] * world_size
    for name in train:
        for r, rows in enumerate(rank_rows(groups[name], world_size)):
            shares[r] += rows
    fed = [sum(1 for n in train if len(groups[n]) > r) for r in range(world_size)]
    starving = [r for r in range(world_size) if fed[r] == 0]
    if starving:
        fewest = min(train, key=lambda n: len(groups[n]))
        problems.append(
            f"{_ranks(starving)} of {world_size} {_have(starving)} no row group in {fewest} "
            f"({len(groups[fewest])} row groups){' nor in any other training file' if len(train) > 1 else ''}: "
            "nanochat's loader would spin forever on them and training would never print a step line; re-shard "
            f"the arm's data with at least {world_size} row groups a file."
        )
    val_groups = len(groups[val])
    if val_groups < world_size:
        idle = list(range(val_groups, world_size))
        problems.append(
            f"{_ranks(idle)} of {world_size} {_have(idle)} no row group in {val} ({val_groups} row group"
            f"{'' if val_groups == 1 else 's'}), the validation file: they would hang at the first evaluation, "
            f"printing nothing; write the validation shard with at least {world_size} row groups."
        )
    short = [n for n in train if len(groups[n]) < world_size]
    if short and not starving:
        warnings.append(
            f"{len(short)} training file(s) have fewer row groups than the {world_size} ranks (e.g. {short[0]}: "
            f"{len(groups[short[0]])}); ranks {len(groups[short[0]])}-{world_size - 1} read nothing from it."
        )
    mean = sum(shares) / world_size
    spread = (max(shares) - min(shares)) / mean if mean else 0.0
    out.update(shares=shares, spread=round(spread, 4), val_groups=val_groups)
    if not starving and spread > uneven_tolerance:
        low, high = shares.index(min(shares)), shares.index(max(shares))
        warnings.append(
            f"ranks get unequal shares of the training rows: rank {high} reads {max(shares):,} rows and rank {low} "
            f"{min(shares):,} ({spread:.0%} of the mean share {mean:,.0f} apart), so rank {low} starts repeating "
            f"its data first; shards whose row-group count is a multiple of {world_size} share evenly."
        )
    return out


def check_data_dir(data_dir: str, world_size: int, **kw: Any) -> dict[str, Any]:
    """:func:`check_ranks` on the files nanochat reads from ``data_dir``."""
    return check_ranks(nanochat_files(data_dir), world_size, **kw)


def starvation_cause(paths: Sequence[str], world_size: int, counts: Mapping[str, int] | None = None) -> str | None:
    """For a run that printed no step line: "rank N has no row group in FILE" when the files explain it, else None.

    base_train takes its first training batch right after printing the model config, then evaluates at
    step 0 before the first step line: a rank with no row group in any training file hangs at the first,
    one with none in the validation file at the second; both leave the log silent after the config, and
    the other ranks wait for them in their first collective. Training files are looked at first. ``counts``
    (name -> row groups, :func:`row_group_counts`) may stand in for reading the files here.
    """
    names = [os.path.basename(p) for p in paths]
    if len(names) < 2:
        return f"the data dir holds {len(names)} parquet file(s), so nanochat has no training file to read"
    groups = dict(counts) if counts is not None else row_group_counts(paths)
    train, val = names[:-1], names[-1]
    for r in range(world_size):
        if all(groups[n] <= r for n in train):
            fewest = min(train, key=lambda n: groups[n])
            others = " nor in any other training file" if len(train) > 1 else ""
            return f"rank {r} has no row group in {fewest} ({groups[fewest]} row groups){others}"
    if groups[val] < world_size:
        return f"rank {groups[val]} has no row group in {val} ({groups[val]} row groups, the validation file)"
    return None
