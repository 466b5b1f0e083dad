"""Benchmark: the Azure sync (arms_azure, what nanochat_azure_sync runs) against raw SDK loops.

One run, one Azurite, the same 64 blobs of ~8 MB (real parquet shards with a text column):

1. far storage: ~30 ms injected by benchmarks/delay_proxy.py on every forwarded chunk, each way
   (no netem here). The sync vs a sequential loop of ``download_blob().readall()``. Goal >= 4x.
   ``--window-kb`` also limits each connection to window / round trip, as TCP far away does
   (default: no limit, a connection is as fast as loopback, only later); with ``--mb 64 --blobs 8``
   it shows what the parallel ranges of large blobs buy.
2. plain loopback, where Azurite's own CPU is the ceiling: the sync vs the best raw parallel SDK
   configuration found (threads x max_concurrency, writing files like the sync, and reading into
   memory only). Goal >= 0.8x.
3. a no-op re-run (everything present and verified): time per 1000 blobs, measured on 1000 small
   blobs (and on the 64 big ones).

    .venv/bin/python benchmarks/bench_azure.py [--blobs 64] [--mb 8] [--delay-ms 30] [--window-kb 0] [--repeat 3]

Each row: the median of --repeat runs (best in brackets), its ratio to the section's baseline (how
many times faster), and the CPU seconds the client (this process: SDK, file writes, hashing), Azurite
and the delay proxy spent in it, which a shared machine disturbs less than wall time. Data dirs are
fresh for each run.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
sys.path.insert(0, os.path.join(ROOT, "tests"))
sys.path.insert(0, os.path.join(ROOT, "scripts"))

import _arms_path  # noqa: F401
import ansible.module_utils.arms_azure as arms_azure
from ansible.module_utils.arms_azure import container_client, resolve_auth, sync
from azurite import ACCOUNT_NAME, AzuriteServer, azurite_binary, shard_bytes, upload

CONTAINER = "benchdata"
SEQUENTIAL = "sequential download_blob().readall()"
SYNC_FAR = "sync (defaults: 16 blobs at once, sha256 once)"
SYNC_LOOP = "sync (defaults: files + sha256 once)"


def conn_str(server: AzuriteServer, port: int) -> str:
    return server.connection_string.replace(f":{server.port}/", f":{port}/")


def tree_cpu(pid: int) -> float:
    """CPU seconds (user + system) of a process and its live descendants, from /proc."""
    total = 0.0
    todo = [pid]
    while todo:
        p = todo.pop()
        with contextlib.suppress(OSError, IndexError, ValueError):
            with open(f"/proc/{p}/stat") as fh:
                fields = fh.read().rsplit(")", 1)[1].split()
            total += (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
            with open(f"/proc/{p}/task/{p}/children") as fh:
                todo.extend(int(c) for c in fh.read().split())
    return total


@dataclasses.dataclass
class Run:
    wall: float
    cpu: tuple[float, ...]  # client, then each watched process


WATCHED: list[int] = []  # pids whose CPU each run reports (Azurite, the delay proxy)


def timed(fn: Callable[[], Any], repeat: int, setup: Callable[[], None] | None = None) -> tuple[float, float]:
    runs = [measured(fn, setup).wall for _ in range(repeat)]
    return statistics.median(runs), min(runs)


def measured(fn: Callable[[], Any], setup: Callable[[], None] | None = None) -> Run:
    if setup:
        setup()
    before = [time.process_time()] + [tree_cpu(p) for p in WATCHED]
    t0 = time.perf_counter()
    fn()
    wall = time.perf_counter() - t0
    after = [time.process_time()] + [tree_cpu(p) for p in WATCHED]
    return Run(wall, tuple(b - a for a, b in zip(before, after, strict=True)))


def client(cs: str, pool: int) -> Any:
    return container_client(resolve_auth(connection_string=cs), CONTAINER, pool_size=pool)


def raw_sequential(cs: str, names: list[str]) -> Callable[[], None]:
    from azure.storage.blob import ContainerClient

    def run() -> None:
        cc = ContainerClient.from_connection_string(cs, CONTAINER)  # the SDK as anyone would use it
        for name in names:
            cc.download_blob(name).readall()

    return run


def raw_parallel(cs: str, names: list[str], threads: int, chunks: int, out: str | None) -> Callable[[], None]:
    def run() -> None:
        cc = client(cs, threads * chunks + 4)

        def one(name: str) -> None:
            stream = cc.download_blob(name, max_concurrency=chunks)
            if out is None:
                stream.readall()
                return
            with open(os.path.join(out, os.path.basename(name)), "wb") as fh:
                stream.readinto(fh)

        with ThreadPoolExecutor(threads) as pool:
            list(pool.map(one, names))

    return run


def module_sync(cs: str, prefix: str, data_dir: str, no_hash: bool = False, **kw: Any) -> Callable[[], None]:
    """What the nanochat_azure_sync module runs (arms_azure.sync), with the module's defaults.

    ``no_hash`` is a diagnostic only (not a mode of the module): hashing is switched off to show how
    much of the gap to the raw SDK is the verification's CPU.
    """

    def run() -> None:
        with hashing_disabled() if no_hash else contextlib.nullcontext():
            r = sync(CONTAINER, data_dir, prefix=prefix, connection_string=cs, **kw)
        assert r.blobs and not r.rejected, r.msg

    return run


@contextlib.contextmanager
def hashing_disabled() -> Iterator[None]:
    real_info, real_hash = arms_azure.blob_info, arms_azure.HashingWriter._hash
    arms_azure.blob_info = lambda props, prefix: dataclasses.replace(real_info(props, prefix), md5=None)
    arms_azure.HashingWriter._hash = lambda self, data: None  # type: ignore[method-assign]
    try:
        yield
    finally:
        arms_azure.blob_info = real_info
        arms_azure.HashingWriter._hash = real_hash  # type: ignore[method-assign]


def interleaved(
    cases: dict[str, tuple[Callable[[], Any], Callable[[], None] | None]], repeat: int
) -> dict[str, list[Run]]:
    """Run the cases round-robin ``repeat`` times, so load from elsewhere hits them alike."""
    runs: dict[str, list[Run]] = {label: [] for label in cases}
    for _ in range(repeat):
        for label, (fn, setup) in cases.items():
            runs[label].append(measured(fn, setup))
    return runs


def median(runs: list[Run]) -> float:
    return statistics.median(r.wall for r in runs)


def report(
    runs: dict[str, list[Run]],
    mbps: Callable[[float], float],
    baseline: str,
    cpu_names: tuple[str, ...],
    indent: str = "   ",
) -> None:
    """One line a row: median wall, MB/s, ratio to ``baseline`` (x faster), median CPU seconds by process."""
    base = median(runs[baseline])
    names = "".join(f"{n:>8s}" for n in cpu_names)
    print(f"{indent}{'':52s} {'median':>7s} {'':12s} {'vs base':>8s}  CPU s:{names}")
    for label, values in runs.items():
        med = median(values)
        cpu = "".join(f"{statistics.median(r.cpu[i] for r in values):8.2f}" for i in range(len(cpu_names)))
        best = f"  [best {min(r.wall for r in values):.2f}s]" if len(values) > 1 else ""
        mark = "  (base)" if label == baseline else ""
        print(f"{indent}{label:52s} {med:6.2f}s {mbps(med):7.1f} MB/s {base / med:7.2f}x        {cpu}{best}{mark}")


def fresh(path: str) -> Callable[[], None]:
    def setup() -> None:
        shutil.rmtree(path, ignore_errors=True)
        os.makedirs(path)

    return setup


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--blobs", type=int, default=64)
    ap.add_argument("--mb", type=float, default=8.0, help="size of each blob in MB")
    ap.add_argument("--delay-ms", type=float, default=30.0, help="delay per forwarded chunk, each way")
    ap.add_argument(
        "--window-kb", type=int, default=0, help="far storage: unacknowledged KiB per connection (0: no limit)"
    )
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--small", type=int, default=1000, help="small blobs for the no-op re-run figure")
    ap.add_argument("--work", default=None, help="scratch folder (default: a temp dir, removed)")
    ap.add_argument("--port", type=int, default=0, help="Azurite's port (0: a free one; never the lab's 10000)")
    args = ap.parse_args()
    if not azurite_binary():
        print("azurite-blob is not installed (npm install --prefix .lab/npm azurite)", file=sys.stderr)
        return 2
    work = args.work or tempfile.mkdtemp(prefix="bench_azure_")
    server = AzuriteServer(os.path.join(work, "azurite"), port=args.port or None)
    proxy: subprocess.Popen[str] | None = None
    try:
        server.start()
        rows = max(16, int(args.mb * 1e6 / 1024))
        t0 = time.perf_counter()
        big = {
            f"big/shard_{i:05d}.parquet": shard_bytes(rows=rows, text_bytes=1024, seed=i, row_group_size=1024)
            for i in range(args.blobs)
        }
        small = {f"small/shard_{i:05d}.parquet": shard_bytes(rows=8, text_bytes=64, seed=i) for i in range(args.small)}
        upload(server, CONTAINER, big)
        upload(server, CONTAINER, small, persist=True)
        total = sum(len(b) for b in big.values())
        print(
            f"setup: {args.blobs} blobs x {total / args.blobs / 1e6:.1f} MB = {total / 1e6:.0f} MB "
            f"(+{args.small} small blobs) on Azurite in {time.perf_counter() - t0:.1f}s"
        )
        proxy = subprocess.Popen(
            [
                sys.executable,
                os.path.join(HERE, "delay_proxy.py"),
                "--target",
                f"127.0.0.1:{server.port}",
                "--delay-ms",
                str(args.delay_ms),
                "--window-kb",
                str(args.window_kb),
            ],
            stdout=subprocess.PIPE,
            text=True,
        )
        assert proxy.stdout
        proxy_port = int(proxy.stdout.readline().rsplit(":", 1)[1])
        names = sorted(big)
        loop_cs, far_cs = conn_str(server, server.port), conn_str(server, proxy_port)
        data = os.path.join(work, "data")
        mbps = lambda s: total / 1e6 / s  # noqa: E731
        rep = args.repeat

        assert server.proc
        WATCHED[:] = [server.proc.pid, proxy.pid]
        cpu_far, cpu_loop = ("client", "azurite", "proxy"), ("client", "azurite")
        print(f"load average at start: {os.getloadavg()[0]:.2f} (the machine may be shared: runs are interleaved)")

        window = f", {args.window_kb} KiB window per connection" if args.window_kb else ""
        print(f"\n1. far storage ({args.delay_ms:.0f} ms per chunk each way through delay_proxy{window})")
        far = interleaved(
            {
                SEQUENTIAL: (raw_sequential(far_cs, names), None),
                SYNC_FAR: (module_sync(far_cs, "big", data), fresh(data)),
                "sync, concurrency 32 (for reference)": (
                    module_sync(far_cs, "big", data, concurrency=32),
                    fresh(data),
                ),
                "sync + Content-MD5 check (verify_content_md5)": (
                    module_sync(far_cs, "big", data, verify_content_md5=True),
                    fresh(data),
                ),
                "sync, the SDK's 32 MiB first GET + 4 MiB ranges": (
                    module_sync(far_cs, "big", data, max_single_get_size=32 << 20, max_chunk_get_size=4 << 20),
                    fresh(data),
                ),
                "raw 32 threads readall (for reference)": (raw_parallel(far_cs, names, 32, 1, None), None),
                "diagnostic: sync without hashing": (module_sync(far_cs, "big", data, no_hash=True), fresh(data)),
            },
            rep,
        )
        report(far, mbps, SEQUENTIAL, cpu_far)
        seq, mod = median(far[SEQUENTIAL]), median(far[SYNC_FAR])
        print(f"   ratio sync / sequential: {seq / mod:.2f}x (goal >= 4x)")

        print("\n2. plain loopback (Azurite's CPU is the ceiling)")
        raw_dir = os.path.join(work, "raw")
        sweep: dict[str, list[float]] = {}
        configs: dict[str, tuple[int, int]] = {}
        for threads in (4, 8, 16, 32):
            for chunks in (1, 4):
                for out in (raw_dir, None):
                    label = f"raw {threads} threads x max_concurrency {chunks} {'to files' if out else 'readall'}"
                    configs[label] = (threads, chunks)
                    setup = fresh(raw_dir) if out else None
                    sweep[label] = [measured(raw_parallel(loop_cs, names, threads, chunks, out), setup)]
        best_files = min((median(v), k) for k, v in sweep.items() if "to files" in k)[1]
        best_mem = min((median(v), k) for k, v in sweep.items() if "readall" in k)[1]
        print("   sweep (one run each):")
        report(sweep, mbps, best_files, cpu_loop, indent="     ")
        threads_f, chunks_f = configs[best_files]
        threads_m, chunks_m = configs[best_mem]
        loop = interleaved(
            {
                SEQUENTIAL: (raw_sequential(loop_cs, names), None),
                "best " + best_files: (raw_parallel(loop_cs, names, threads_f, chunks_f, raw_dir), fresh(raw_dir)),
                "best " + best_mem: (raw_parallel(loop_cs, names, threads_m, chunks_m, None), None),
                SYNC_LOOP: (module_sync(loop_cs, "big", data), fresh(data)),
                "sync + Content-MD5 check (verify_content_md5)": (
                    module_sync(loop_cs, "big", data, verify_content_md5=True),
                    fresh(data),
                ),
                "diagnostic: sync without hashing": (module_sync(loop_cs, "big", data, no_hash=True), fresh(data)),
            },
            rep,
        )
        report(loop, mbps, "best " + best_files, cpu_loop)
        mod_l = median(loop[SYNC_LOOP])
        raw_f, raw_m = median(loop["best " + best_files]), median(loop["best " + best_mem])
        print(f"   ratio sync / best raw to files: {raw_f / mod_l:.2f}x (goal >= 0.8x)")
        print(f"   ratio sync / best raw readall into memory: {raw_m / mod_l:.2f}x")
        sha_t, md5_t = hashing_cost(big)
        print(
            f"   (of the {total / 1e6:.0f} MB, sha256 alone takes {sha_t:.2f}s of one core here and MD5 {md5_t:.2f}s; "
            "the machine has 2 cores, one of them busy being Azurite)"
        )

        print("\n3. no-op re-run (everything present and verified)")
        module_sync(loop_cs, "big", data)()  # ensure synced
        noop_big, _ = timed(module_sync(loop_cs, "big", data), rep)
        small_dir = os.path.join(work, "small")
        module_sync(loop_cs, "small", small_dir)()
        noop_small, _ = timed(module_sync(loop_cs, "small", small_dir), rep)
        noop_far, _ = timed(module_sync(far_cs, "small", small_dir), rep)
        print(f"   {args.blobs} big blobs: {noop_big:.3f}s  -> {noop_big / args.blobs * 1000:.2f}s per 1000 blobs")
        print(f"   {args.small} small blobs: {noop_small:.3f}s -> {noop_small / args.small * 1000:.2f}s per 1000 blobs")
        print(
            f"   {args.small} small blobs, far storage: {noop_far:.3f}s -> "
            f"{noop_far / args.small * 1000:.2f}s per 1000 blobs"
        )
        print(
            f"\nsummary: far {seq / mod:.2f}x vs sequential (goal 4x); loopback {raw_f / mod_l:.2f}x vs best "
            f"raw to files, {raw_m / mod_l:.2f}x vs best raw readall (goal 0.8x); no-op "
            f"{noop_small / args.small * 1000:.2f}s per 1000 blobs; load average at end {os.getloadavg()[0]:.2f}"
        )
        return 0
    finally:
        if proxy:
            proxy.kill()
            proxy.wait()
        server.kill()
        if not args.work:
            shutil.rmtree(work, ignore_errors=True)


def hashing_cost(blobs: dict[str, bytes]) -> tuple[float, float]:
    """CPU seconds of sha256 and of MD5 over every blob."""
    import hashlib

    t0 = time.process_time()
    for data in blobs.values():
        hashlib.sha256(data).digest()
    t1 = time.process_time()
    for data in blobs.values():
        hashlib.md5(data).digest()
    return t1 - t0, time.process_time() - t1


if __name__ == "__main__":
    assert ACCOUNT_NAME
    sys.exit(main())
