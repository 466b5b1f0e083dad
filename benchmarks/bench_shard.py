#!/usr/bin/env python3
"""Benchmark: random-subset sharding vs the runbook's naive script vs pyarrow's bare read.

    .venv/bin/python benchmarks/bench_shard.py            # ~1 GB synthetic dataset, cached under .lab/bench
    .venv/bin/python benchmarks/bench_shard.py --cleanup  # ... and a 4 GB one for the scaling rows; delete both after

On the same files (a synthetic airtrain-ai/fineweb-edu-fortified of >= 1 GB, embedding column included,
made once by arms_fixture and cached), one run measures rows/s of

* module, 1 worker / all cores: ``prepare_random_subset`` (the nanochat_random_subset module's code),
  defaults (ratio 0.165, rows_per_shard 14000, world_size 8, zstd level 3), into a fresh data dir;
* naive: the runbook's way, ``datasets`` streaming of the local parquet files, ``random.random() < ratio``,
  rows accumulated in a list and written per shard; over a fixed prefix of rows (it is slow), said so;
* limit: pyarrow reading only the text and id columns of every file, nothing else (1 core: no threads;
  all cores: pyarrow's threads or one process per core, whichever is faster);
* family: three seeds of the same source (all cores), as three runs and as one run with members (the
  source read once for all three); rows/s counts the source's rows once per seed in both.

Every measurement runs in a fresh subprocess (same imports, same cold allocator), the page cache is
warmed first, measurements are interleaved for ``--rounds`` rounds and the best of each is kept (the
machine may be shared). CPU seconds are printed beside wall seconds. Then the ratios; what binds the
all-cores run (each pass's CPU seconds, all workers and the busiest one's, from the manifest, and what ran
outside the passes, with what that leaves of the speed-up on an idle machine); and (``--scale``) rows/s and
peak memory of the module at ~1 GB and at 4x that, run back to back.
"""

from __future__ import annotations

import argparse
import glob
import json
import os
import random
import resource
import shutil
import subprocess
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from typing import Any

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
sys.path.insert(0, os.path.join(ROOT, "scripts"))
import _arms_path  # noqa: F401

BENCH_DIR = os.path.join(ROOT, ".lab", "bench")
DATASET_ARGS = {"rows": 220_000, "files_per_dump": 3, "dumps": 4, "seed": 7, "text_bytes_mean": 4500}


def cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:
        return os.cpu_count() or 1


def dataset_dir(rows: int | None = None) -> str:
    a = {**DATASET_ARGS, "rows": rows or DATASET_ARGS["rows"]}
    return os.path.join(BENCH_DIR, f"fortified-{a['rows']}r-{a['dumps']}x{a['files_per_dump']}-s{a['seed']}")


def dataset_files(rows: int | None = None) -> list[str]:
    return sorted(glob.glob(os.path.join(dataset_dir(rows), "data", "*", "*.parquet")))


def ensure_dataset(rows: int | None = None) -> tuple[str, list[str]]:
    from arms_fixture import make_fixture

    args = {**DATASET_ARGS, "rows": rows or DATASET_ARGS["rows"]}
    out = dataset_dir(rows)
    marker = os.path.join(out, ".complete.json")
    if not os.path.exists(marker):
        shutil.rmtree(out, ignore_errors=True)
        started = time.time()
        print(f"generating the benchmark dataset in {out} ...", flush=True)
        files = make_fixture(out, workers=cores(), **args)  # type: ignore[arg-type]
        with open(marker, "w") as fh:
            json.dump({"args": args, "files": files}, fh)
        print(f"  {sum(f['bytes'] for f in files) / 1e9:.2f} GB in {time.time() - started:.0f}s", flush=True)
    return out, dataset_files(rows)


def warm(files: list[str]) -> None:
    for path in files:
        with open(path, "rb") as fh:
            while fh.read(16 << 20):
                pass


# ------------------------------------------------------------------------------------ measurements


def m_limit_1(files: list[str], _: dict[str, Any]) -> int:
    import pyarrow as pa
    import pyarrow.parquet as pq

    pa.set_cpu_count(1)
    pa.set_io_thread_count(1)
    return sum(pq.read_table(f, columns=["text", "id"], use_threads=False).num_rows for f in files)


def m_limit_threads(files: list[str], _: dict[str, Any]) -> int:
    import pyarrow.parquet as pq

    return sum(pq.read_table(f, columns=["text", "id"]).num_rows for f in files)


def _read_one(path: str) -> int:
    import pyarrow as pa
    import pyarrow.parquet as pq

    pa.set_cpu_count(1)
    pa.set_io_thread_count(1)
    return pq.read_table(path, columns=["text", "id"], use_threads=False).num_rows


def m_limit_procs(files: list[str], _: dict[str, Any]) -> int:
    with ProcessPoolExecutor(cores()) as pool:
        return sum(pool.map(_read_one, files))


def _module(files: list[str], opts: dict[str, Any], workers: int, level: int | None = None) -> int:
    from ansible.module_utils.arms_shard import Options, prepare_random_subset

    out = os.path.join(BENCH_DIR, f"out-w{workers}")
    shutil.rmtree(out, ignore_errors=True)
    os.makedirs(out)
    result = prepare_random_subset(
        Options(
            dataset=dataset_dir(opts.get("rows")),
            data_dir=os.path.join(out, "base_data"),
            ratio=opts["ratio"],
            rows_per_shard=opts["rows_per_shard"],
            world_size=opts["world_size"],
            compression_level=level or opts["compression_level"],
            workers=workers,
        )
    )
    with open(os.path.join(out, "base_data", "manifest.json")) as fh:
        stats = json.load(fh).get("stats", {})
    opts["pass1"], opts["pass2"] = stats.get("pass1_seconds", 0.0), stats.get("pass2_seconds", 0.0)
    opts["workers"] = stats.get("workers", workers)
    for key in ("pass1_cpu_seconds", "pass1_busiest_cpu_seconds", "pass2_cpu_seconds", "pass2_busiest_cpu_seconds"):
        opts[key] = stats.get(key)  # None from a module that does not record them
    opts["shard_bytes"] = sum(os.path.getsize(p) for p in glob.glob(os.path.join(out, "base_data", "*.parquet")))
    shutil.rmtree(out, ignore_errors=True)
    return int(result["rows_read"])


def m_module_1(files: list[str], opts: dict[str, Any]) -> int:
    return _module(files, opts, 1)


def m_module_all(files: list[str], opts: dict[str, Any]) -> int:
    return _module(files, opts, 0)


def m_module_1_alt(files: list[str], opts: dict[str, Any]) -> int:
    return _module(files, opts, 1, opts["also_level"])


def m_module_all_alt(files: list[str], opts: dict[str, Any]) -> int:
    return _module(files, opts, 0, opts["also_level"])


def m_naive(files: list[str], opts: dict[str, Any]) -> int:
    """The runbook's prepare_hf_random_subset.py as one would write it (over the first --naive-rows rows)."""
    os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    import pyarrow as pa
    import pyarrow.parquet as pq
    from datasets import load_dataset

    out = os.path.join(BENCH_DIR, "out-naive")
    shutil.rmtree(out, ignore_errors=True)
    os.makedirs(out)
    setup_started = time.perf_counter()
    ds = load_dataset("parquet", data_files={"train": files}, split="train", streaming=True)
    opts["naive_setup"] = time.perf_counter() - setup_started
    loop_cpu = time.process_time()
    random.seed(42)
    rows, shard, seen = [], 0, 0
    for row in ds:
        seen += 1
        if random.random() < opts["ratio"]:
            rows.append(row["text"])
            if len(rows) >= opts["rows_per_shard"]:
                pq.write_table(pa.table({"text": rows}), os.path.join(out, f"shard_{shard:05d}.parquet"))
                rows, shard = [], shard + 1
        if seen >= opts["naive_rows"]:
            break
    if rows:
        pq.write_table(pa.table({"text": rows}), os.path.join(out, f"shard_{shard:05d}.parquet"))
    opts["naive_loop_cpu"] = time.process_time() - loop_cpu
    shutil.rmtree(out, ignore_errors=True)
    return seen


FAMILY_SEEDS = (42, 43, 44)


def _family_opts(files: list[str], opts: dict[str, Any], seed: int, out: str) -> Any:
    from ansible.module_utils.arms_shard import Options

    return Options(
        dataset=dataset_dir(opts.get("rows")),
        data_dir=os.path.join(out, f"s{seed}", "base_data"),
        ratio=opts["ratio"],
        seed=seed,
        rows_per_shard=opts["rows_per_shard"],
        world_size=opts["world_size"],
        compression_level=opts["compression_level"],
        workers=0,
    )


def m_family_apart(files: list[str], opts: dict[str, Any]) -> int:
    """A family of three seeds as three sharding runs (before: one job, one read, per member)."""
    from ansible.module_utils.arms_shard import prepare_random_subset

    out = os.path.join(BENCH_DIR, "out-family-apart")
    shutil.rmtree(out, ignore_errors=True)
    for seed in FAMILY_SEEDS:
        prepare_random_subset(_family_opts(files, opts, seed, out))
    return DATASET_ARGS["rows"] * len(FAMILY_SEEDS)


def m_family_one_read(files: list[str], opts: dict[str, Any]) -> int:
    """The same three seeds as one run with members: the source read once for all three."""
    from ansible.module_utils.arms_shard import Member, prepare_random_subsets

    out = os.path.join(BENCH_DIR, "out-family-one")
    shutil.rmtree(out, ignore_errors=True)
    prepare_random_subsets([Member(f"s{seed}", _family_opts(files, opts, seed, out)) for seed in FAMILY_SEEDS])
    return DATASET_ARGS["rows"] * len(FAMILY_SEEDS)


MEASURES = {
    "limit_1": m_limit_1,
    "limit_threads": m_limit_threads,
    "limit_procs": m_limit_procs,
    "module_1": m_module_1,
    "module_all": m_module_all,
    "naive": m_naive,
    "module_1_alt": m_module_1_alt,
    "module_all_alt": m_module_all_alt,
    "family_apart": m_family_apart,
    "family_one_read": m_family_one_read,
}


def measure_in_child(name: str, opts: dict[str, Any]) -> dict[str, float]:
    cmd = [sys.executable, os.path.abspath(__file__), "--measure", name, "--opts", json.dumps(opts)]
    proc = subprocess.run(cmd, capture_output=True, text=True)
    if proc.returncode != 0:
        raise SystemExit(f"{name} failed:\n{proc.stderr}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def child(name: str, opts: dict[str, Any]) -> None:
    files = dataset_files(opts.get("rows"))
    started = time.perf_counter()
    rows = MEASURES[name](files, opts)
    seconds = time.perf_counter() - started
    me, kids = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    result = {
        "rows": rows,
        "seconds": seconds,
        "setup": opts.get("naive_setup", 0.0),
        "loop_cpu": opts.get("naive_loop_cpu", 0.0),
        "cpu": me.ru_utime + me.ru_stime + kids.ru_utime + kids.ru_stime,  # imports included
        "rss_mb": max(me.ru_maxrss, kids.ru_maxrss) / 1024,  # the largest single process
        "pass1": opts.get("pass1", 0.0),  # the module's two passes (wall seconds, from its manifest)
        "pass2": opts.get("pass2", 0.0),
        "shard_bytes": opts.get("shard_bytes", 0),
        "workers": opts.get("workers", 0),
        **{k: opts.get(k) for k in ("pass1_cpu_seconds", "pass1_busiest_cpu_seconds")},
        **{k: opts.get(k) for k in ("pass2_cpu_seconds", "pass2_busiest_cpu_seconds")},
    }
    print(json.dumps(result))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--naive-rows", type=int, default=20_000)
    parser.add_argument("--ratio", type=float, default=0.165)
    parser.add_argument("--rows-per-shard", type=int, default=14000)
    parser.add_argument("--world-size", type=int, default=8)
    parser.add_argument("--compression-level", type=int, default=3)
    parser.add_argument(
        "--also-level", type=int, default=1, help="also measure the module at this zstd level (0: don't)"
    )
    parser.add_argument("--only", default="", help="comma-separated measurement names")
    parser.add_argument(
        "--scale",
        type=int,
        default=4,
        help="also run the module (all cores) on a dataset this many times larger, beside the ~1 GB one (0: don't)",
    )
    parser.add_argument("--cleanup", action="store_true", help="delete the generated datasets at the end")
    parser.add_argument("--measure", help=argparse.SUPPRESS)
    parser.add_argument("--opts", help=argparse.SUPPRESS)
    a = parser.parse_args()
    if a.measure:
        child(a.measure, json.loads(a.opts))
        return
    opts = {
        "ratio": a.ratio,
        "rows_per_shard": a.rows_per_shard,
        "world_size": a.world_size,
        "compression_level": a.compression_level,
        "naive_rows": a.naive_rows,
        "also_level": a.also_level,
    }
    path, files = ensure_dataset()
    size = sum(os.path.getsize(f) for f in files)
    total_rows = DATASET_ARGS["rows"]
    print(f"dataset: {path}: {len(files)} files, {size / 1e9:.2f} GB, {total_rows} rows")
    print(f"machine: {cores()} cores; load average before: {os.getloadavg()[0]:.2f}")
    shown = {k: v for k, v in opts.items() if k not in ("naive_rows", "also_level")}
    print(f"module options: {json.dumps(shown)}")
    warm(files)
    names = [n for n in MEASURES if not a.only or n in a.only.split(",")]
    if not a.also_level:
        names = [n for n in names if not n.endswith("_alt")]
    best: dict[str, dict[str, float]] = {}
    for r in range(a.rounds):
        for name in names:
            res = measure_in_child(name, opts)
            if name == "naive":  # extrapolate the prefix to every row: set-up once + the loop's rate
                loop_rate = res["rows"] / max(res["seconds"] - res["setup"], 1e-9)
                res["rate"] = total_rows / (res["setup"] + total_rows / loop_rate)
                setup_cpu = res["cpu"] - res["loop_cpu"]
                res["cpu_per_row"] = (setup_cpu + total_rows * res["loop_cpu"] / res["rows"]) / total_rows
            else:
                res["rate"] = res["rows"] / res["seconds"]
                res["cpu_per_row"] = res["cpu"] / res["rows"]
            print(
                f"  round {r + 1} {name:14s} {res['rows']:>8d} rows {res['seconds']:7.2f}s wall "
                f"{res['cpu']:7.2f}s cpu {res['rate']:>10,.0f} rows/s  peak {res['rss_mb']:6.0f} MB",
                flush=True,
            )
            if name not in best or res["rate"] > best[name]["rate"]:
                best[name] = res
    print(f"load average after: {os.getloadavg()[0]:.2f}")
    print()
    labels = {
        "limit_1": "limit, 1 core (read text+id)",
        "limit_threads": "limit, pyarrow threads",
        "limit_procs": f"limit, {cores()} processes",
        "module_1": "module, 1 worker",
        "module_all": f"module, all cores ({cores()})",
        "naive": "naive (datasets streaming)",
        "module_1_alt": f"module, 1 worker, zstd-{a.also_level}",
        "module_all_alt": f"module, all cores, zstd-{a.also_level}",
        "family_apart": f"family of {len(FAMILY_SEEDS)} seeds, 3 runs",
        "family_one_read": f"family of {len(FAMILY_SEEDS)} seeds, one read",
    }
    head = f"best of {a.rounds}"
    print(f"{head:34s} {'rows':>8s} {'wall s':>8s} {'cpu s':>8s} {'rows/s':>10s} {'us cpu/row':>10s} {'peak MB':>8s}")
    for name in names:
        res = best[name]
        print(
            f"{labels[name]:34s} {res['rows']:>8d} {res['seconds']:8.2f} {res['cpu']:8.2f} {res['rate']:>10,.0f} "
            f"{res['cpu_per_row'] * 1e6:10.1f} {res['rss_mb']:8.0f}"
        )
    if "naive" in best:
        n = best["naive"]
        print(
            f"  (naive ran over the first {n['rows']} rows: {n['setup']:.1f}s of load_dataset set-up, then "
            f"{n['rows'] / (n['seconds'] - n['setup']):,.0f} rows/s; its rows/s above is extrapolated to all "
            f"{total_rows} rows, and so is its CPU per row)"
        )
    rate = {n: best[n]["rate"] for n in best}
    cpu = {n: best[n]["cpu_per_row"] for n in best}
    print()
    print(
        "ratios of wall-clock rows/s [in brackets: the same ratio from CPU seconds per row, "
        "less sensitive to a shared machine]"
    )
    if "naive" in rate:
        for name in ("module_1", "module_all"):
            if name in rate:
                print(
                    f"  {labels[name]} / naive: {rate[name] / rate['naive']:6.2f}x "
                    f"[{cpu['naive'] / cpu[name]:5.2f}x]   goal >= 10x"
                )
    if "limit_procs" in rate and "limit_1" in rate:
        print(
            f"  (cores this run was given: {labels['limit_procs']} / limit, 1 core = "
            f"{rate['limit_procs'] / rate['limit_1']:.2f}x, at most {cores()}x on an idle machine; "
            "the module's speed-up over 1 worker is bounded by it)"
        )
    if "module_all" in rate and "module_1" in rate:
        print(
            f"  {labels['module_all']} / module, 1 worker: {rate['module_all'] / rate['module_1']:6.2f}x "
            f"[{cpu['module_1'] / cpu['module_all']:5.2f}x]   goal >= 1.7x on 2 cores"
        )
    if "family_apart" in rate and "family_one_read" in rate:
        print(
            f"  {labels['family_one_read']} / {labels['family_apart']}: "
            f"{rate['family_one_read'] / rate['family_apart']:6.2f}x "
            f"[{cpu['family_apart'] / cpu['family_one_read']:5.2f}x]   (issue 13: the source read once for all seeds)"
        )
    if "module_1" in rate and "limit_1" in rate:
        print(
            f"  module, 1 worker / limit, 1 core: {rate['module_1'] / rate['limit_1']:6.2f}x "
            f"[{cpu['limit_1'] / cpu['module_1']:5.2f}x]   goal >= 0.7x"
        )
    limits = [n for n in ("limit_threads", "limit_procs") if n in rate]
    if "module_all" in rate and limits:
        top = max(limits, key=lambda n: rate[n])
        print(
            f"  module, all cores / {labels[top]}: {rate['module_all'] / rate[top]:6.2f}x "
            f"[{cpu[top] / cpu['module_all']:5.2f}x]   goal >= 0.7x"
        )
    if "module_1_alt" in rate and "limit_1" in rate:
        print(f"  with zstd-{a.also_level} instead of the default zstd-{a.compression_level}:")
        print(
            f"    {labels['module_1_alt']} / limit, 1 core: {rate['module_1_alt'] / rate['limit_1']:6.2f}x "
            f"[{cpu['limit_1'] / cpu['module_1_alt']:5.2f}x]"
        )
        if "naive" in rate:
            print(f"    {labels['module_all_alt']} / naive: {rate.get('module_all_alt', 0) / rate['naive']:6.2f}x")
        if "module_all_alt" in rate and limits:
            top = max(limits, key=lambda n: rate[n])
            print(
                f"    {labels['module_all_alt']} / {labels[top]}: {rate['module_all_alt'] / rate[top]:6.2f}x "
                f"[{cpu[top] / cpu['module_all_alt']:5.2f}x]"
            )

    if "module_1" in best and "module_all" in best:
        what_binds(best["module_1"], best["module_all"])
    if a.scale > 1:
        scaling(opts, a.scale)
    if a.cleanup:
        for rows in {DATASET_ARGS["rows"], DATASET_ARGS["rows"] * max(a.scale, 1)}:
            shutil.rmtree(dataset_dir(rows), ignore_errors=True)
        print("removed the generated datasets")


def what_binds(one: dict[str, Any], every: dict[str, Any]) -> None:
    """Where the all-cores run loses against ``workers`` x the 1-worker run, from CPU seconds (which the load moves
    little): what ran outside the two passes (imports, listing, manifest: one process), and each pass's balance
    (its busiest worker computes longest; the others idle, on an idle machine, for the difference)."""
    if every.get("pass1_cpu_seconds") is None:
        print("\n(the module records no CPU seconds per pass: no breakdown of what binds)")
        return
    w = max(int(every["workers"]), 1)
    print()
    print(f"what binds the all-cores run ({w} workers), in CPU seconds, which a shared machine moves little:")
    print(f"  {'':22s} {'1 worker cpu s':>14s} {'all cores cpu s':>15s} {'busiest worker':>14s} {'balance':>8s}")
    est, loss = 0.0, {}
    for label, p in (("pass 1 (sample, spill)", "pass1"), ("pass 2 (sort, write)", "pass2")):
        cpu, busiest = every[f"{p}_cpu_seconds"], every[f"{p}_busiest_cpu_seconds"]
        print(
            f"  {label:22s} {one[f'{p}_cpu_seconds']:14.2f} {cpu:15.2f} {busiest:14.2f} "
            f"{cpu / (w * busiest) if busiest else 1.0:8.0%}"
        )
        est += busiest
        loss[label] = busiest - cpu / w
    outside_1 = one["cpu"] - one["pass1_cpu_seconds"] - one["pass2_cpu_seconds"]
    outside = every["cpu"] - every["pass1_cpu_seconds"] - every["pass2_cpu_seconds"]
    print(f"  {'outside the passes':22s} {outside_1:14.2f} {outside:15.2f} {outside:14.2f} {1 / w:8.0%}")
    est += outside
    loss["outside the passes"] = outside - outside / w
    ideal = every["cpu"] / w
    print(
        f"  on an idle machine: ~{est:.2f}s wall for all cores against {one['cpu']:.2f}s for 1 worker, "
        f"{one['cpu'] / est:.2f}x (with no idle core: {one['cpu'] / ideal:.2f}x); the gap, in seconds of wall: "
        + ", ".join(f"{k} {v:.2f}s" for k, v in loss.items())
    )


def scaling(opts: dict[str, Any], factor: int) -> None:
    """Rows/s and peak memory of the module (all cores) at ~1 GB and at ``factor`` times that, back to back."""
    big_rows = DATASET_ARGS["rows"] * factor
    _, big_files = ensure_dataset(big_rows)
    sizes = {
        DATASET_ARGS["rows"]: sum(os.path.getsize(f) for f in dataset_files()),
        big_rows: sum(os.path.getsize(f) for f in big_files),
    }
    print()
    print(f"cost against work: the module, all cores ({cores()}), one run each, back to back")
    results = {}
    for rows, size in sizes.items():
        warm(dataset_files(rows))
        res = measure_in_child("module_all", {**opts, "rows": rows})
        results[rows] = res
        print(
            f"  {size / 1e9:5.2f} GB {rows:>8d} rows {res['seconds']:7.2f}s wall {res['cpu']:7.2f}s cpu "
            f"{res['rows'] / res['seconds']:>10,.0f} rows/s  {res['cpu'] / res['rows'] * 1e6:5.1f} us cpu/row  "
            f"peak {res['rss_mb']:6.0f} MB (largest process); pass 1 {res['pass1']:.2f}s{_cpu_of(res, 'pass1')}, "
            f"pass 2 {res['pass2']:.2f}s{_cpu_of(res, 'pass2')}, {res['shard_bytes'] / 1e6:.0f} MB of shards"
        )
    small, big = results[DATASET_ARGS["rows"]], results[big_rows]
    print(
        f"  {factor}x the input: rows/s x{(big['rows'] / big['seconds']) / (small['rows'] / small['seconds']):.2f}, "
        f"cpu per row x{(big['cpu'] / big['rows']) / (small['cpu'] / small['rows']):.2f}, "
        f"peak memory x{big['rss_mb'] / small['rss_mb']:.2f}   goal: rows/s holds, memory flat"
    )


def _cpu_of(res: dict[str, Any], p: str) -> str:
    cpu = res.get(f"{p}_cpu_seconds")
    return "" if cpu is None else f" ({cpu:.2f}s cpu, busiest worker {res[f'{p}_busiest_cpu_seconds']:.2f}s)"


if __name__ == "__main__":
    main()
