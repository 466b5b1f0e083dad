"""The sampling rule and the shard-sizing rules of random-subset sharding, on the smallest inputs that show them."""

from __future__ import annotations

import hashlib
import math
from fractions import Fraction

import numpy as np
import pyarrow as pa
import pytest
from ansible.module_utils.arms_common import ArmsError
from ansible.module_utils.arms_shard import (
    MAX_ROWS_PER_GROUP,
    RULE,
    Options,
    ShardJob,
    _group_jobs,
    hash_ids,
    plan_shards,
    row_group_sizes,
    sample_key,
    sample_masks,
    thresholds,
    validate_options,
)


def ids(n: int, prefix: str = "doc") -> pa.Array:
    return pa.array([f"<urn:uuid:{prefix}-{i:08d}>" for i in range(n)])


def rule_by_hand(id_text: str, seed: int) -> tuple[int, int]:
    """The rule as the documentation words it, written independently of the implementation."""
    digest = hashlib.blake2b(
        id_text.encode("utf-8"), key=f"nanochat-arms/random_subset:{seed}".encode(), digest_size=16
    ).digest()
    return int.from_bytes(digest[:8], "big"), int.from_bytes(digest[8:], "big")


def test_hash_matches_the_documented_rule() -> None:
    sample = ["<urn:uuid:0b8c3a52-0000-4000-8000-000000000000>", "", "é-unicode", "x" * 300]
    u, o = hash_ids(pa.array(sample), sample_key(42))
    for i, text in enumerate(sample):
        assert (int(u[i]), int(o[i])) == rule_by_hand(text, 42)
    assert "BLAKE2b(digest_size=16" in RULE and "nanochat-arms/random_subset:<seed>" in RULE


def test_integer_ids_are_hashed_as_their_decimal_text() -> None:
    u, _ = hash_ids(pa.array([7, 123456789], pa.int64()), sample_key(1))
    assert int(u[0]) == rule_by_hand("7", 1)[0] and int(u[1]) == rule_by_hand("123456789", 1)[0]


def test_thresholds_are_exact_and_the_boundary_is_exclusive() -> None:
    assert thresholds(1.0, 0.0) == (1 << 64, 0)
    assert thresholds(0.5, 0.5) == (1 << 63, 1 << 62)
    t, v = thresholds(0.165, 0.01)
    assert t == int(Fraction(0.165) * 2**64) and v == int(Fraction(0.01) * t)
    u = np.array([0, v - 1, v, t - 1, t, 2**64 - 1], dtype=np.uint64)
    kept, val = sample_masks(u, t, v)
    assert kept.tolist() == [True, True, True, True, False, False]
    assert val.tolist() == [True, True, False, False, False, False]


@pytest.mark.parametrize("ratio", [0.165, 0.5, 0.02])
def test_realised_fraction_is_within_tolerance(ratio: float) -> None:
    n = 100_000
    u, _ = hash_ids(ids(n), sample_key(42))
    kept, _ = sample_masks(u, *thresholds(ratio))
    sigma = math.sqrt(ratio * (1 - ratio) / n)
    assert abs(kept.mean() - ratio) < 5 * sigma


def test_validation_rows_are_a_fraction_of_the_kept_rows_and_disjoint_from_training() -> None:
    n = 100_000
    u, _ = hash_ids(ids(n), sample_key(3))
    kept, val = sample_masks(u, *thresholds(0.2, 0.1))
    assert not (val & ~kept).any()
    frac = val.sum() / kept.sum()
    assert abs(frac - 0.1) < 5 * math.sqrt(0.1 * 0.9 / kept.sum())


def test_ratio_one_keeps_every_row() -> None:
    u, _ = hash_ids(ids(1000), sample_key(9))
    kept, val = sample_masks(u, *thresholds(1.0))
    assert kept.all() and not val.any()


def test_smaller_ratio_keeps_a_subset_and_another_seed_another_sample() -> None:
    u, _ = hash_ids(ids(20_000), sample_key(42))
    small, _ = sample_masks(u, *thresholds(0.1))
    large, _ = sample_masks(u, *thresholds(0.3))
    assert not (small & ~large).any()
    u2, _ = hash_ids(ids(20_000), sample_key(43))
    other, _ = sample_masks(u2, *thresholds(0.1))
    overlap = (small & other).sum() / small.sum()
    assert overlap < 0.2  # independent samples overlap by ~ratio


def test_kept_set_does_not_depend_on_row_order() -> None:
    arr = ids(5000)
    perm = np.random.default_rng(0).permutation(5000)
    u1, o1 = hash_ids(arr, sample_key(42))
    u2, o2 = hash_ids(arr.take(pa.array(perm)), sample_key(42))
    assert np.array_equal(u1[perm], u2) and np.array_equal(o1[perm], o2)


@pytest.mark.parametrize(
    ("rows", "world", "groups"),
    [
        (14000, 1, 14),
        (14000, 8, 16),
        (14000, 16, 16),
        (16 * 1024, 16, 16),
        (16 * 1024 + 1, 16, 32),
        (8, 8, 8),
        (1024, 1, 1),
        (1025, 1, 2),
        (100, 16, 16),
    ],
)
def test_row_groups_are_the_smallest_multiple_of_world_size_with_at_most_1024_rows(
    rows: int, world: int, groups: int
) -> None:
    sizes = row_group_sizes(rows, world)
    assert len(sizes) == groups
    assert len(sizes) % world == 0
    assert sum(sizes) == rows
    assert max(sizes) <= MAX_ROWS_PER_GROUP and min(sizes) >= 1
    assert max(sizes) - min(sizes) <= 1
    # every rank r of W (row groups r, r+W, ...) gets rows, and the same number of groups
    per_rank = [sum(sizes[r::world]) for r in range(world)]
    assert min(per_rank) > 0
    assert len({len(sizes[r::world]) for r in range(world)}) == 1


@pytest.mark.parametrize("workers", [2, 4])
def test_pass_2_gives_every_worker_its_share_of_the_shards(workers: int) -> None:
    """11 shards (the 4 GB benchmark's) and a val shard: the workers end pass 2 within a shard of each other."""
    bounds = plan_shards(10 * 14000 + 5200, 14000, 8)
    common = {"buckets": (), "data_dir": "/d", "world_size": 8, "extra_columns": ()}
    todo = [ShardJob(f"shard_{i:05d}.parquet", lo, hi, role="train", **common) for i, (lo, hi) in enumerate(bounds)]
    todo.append(ShardJob("shard_val.parquet", 0, 20000, role="val", **common))
    tasks = _group_jobs(todo, workers)
    assert sorted(j.name for task in tasks for j in task) == sorted(j.name for j in todo)  # each shard once
    for task in tasks:  # a task is a run of consecutive shards (they share buckets)
        assert [j.start for j in task[1:]] == [j.end for j in task[:-1]]
    rows = [sum(j.end - j.start for j in task) for task in tasks]
    assert rows == sorted(rows, reverse=True)  # the largest first, so the last to start are the smallest
    # handed out in that order to whichever worker is free, the busiest ends at most one task after the others
    load = [0] * workers
    for r in rows:
        load[load.index(min(load))] += r
    assert max(load) - min(load) <= max(rows)
    assert max(rows) <= 20000  # one shard a task here: no worker waits on a run of several
    assert sorted(_group_jobs(todo, 1), key=len) == [[todo[-1]], todo[:-1]]  # one worker: one run, buckets loaded once


def test_a_shard_with_fewer_rows_than_world_size_is_refused() -> None:
    with pytest.raises(ArmsError, match="ranks"):
        row_group_sizes(7, 8)


def test_shard_plan_cuts_rows_per_shard_and_folds_a_tiny_tail_into_the_shard_before() -> None:
    assert plan_shards(30, 10, 2) == [(0, 10), (10, 20), (20, 30)]
    assert plan_shards(25, 10, 2) == [(0, 10), (10, 20), (20, 25)]
    assert plan_shards(21, 10, 2) == [(0, 10), (10, 21)]  # a 1-row tail joins the shard before
    assert plan_shards(14000 * 3 + 7, 14000, 8)[-1] == (28000, 42007)
    assert plan_shards(5, 10, 2) == [(0, 5)]
    with pytest.raises(ArmsError, match="fewer than world_size"):
        plan_shards(3, 10, 8)


@pytest.mark.parametrize(
    ("change", "words"),
    [
        ({"ratio": 0.0}, "ratio must be in \\(0, 1\\]"),
        ({"ratio": 1.5}, "ratio must be in \\(0, 1\\]"),
        ({"ratio": -0.1}, "ratio must be in \\(0, 1\\]"),
        ({"rows_per_shard": 0}, "rows_per_shard must be an integer >= 1"),
        ({"world_size": 0}, "world_size must be"),
        ({"rows_per_shard": 4, "world_size": 8}, "at least world_size"),
        ({"val_fraction": 1.0}, "val_fraction must be in \\[0, 1\\)"),
        ({"extra_columns": ["text"]}, "extra_columns cannot contain"),
        ({"compression_level": 0}, "compression_level"),
    ],
)
def test_bad_arguments_are_refused_with_a_sentence(change: dict[str, object], words: str) -> None:
    opts = Options(dataset="x/y", data_dir="/tmp/never-made", **change)  # type: ignore[arg-type]
    with pytest.raises(ArmsError, match=words):
        validate_options(opts)
