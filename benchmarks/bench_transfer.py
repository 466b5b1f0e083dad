#!/usr/bin/env python3
"""Benchmark: the project's transfer step (an ansible-playbook run) vs a raw rsync of the same folder.

    .venv/bin/python benchmarks/bench_transfer.py [--size-mb 2048] [--file-mb 100] [--repeat 3]

Between the same two lab hosts (scripts/lab.sh up), sender ``cpu`` (arms-prep) and receiver ``random2``
(arms-random2), in ~/bench-transfer/ on both and nowhere else:

* raw: ``rsync -a --partial`` run on the sender into ~/bench-transfer/raw/, with a key pair made on the
  sender for the bench and appended to the receiver's ~/.ssh/authorized_keys (that exact line is removed
  afterwards, also on failure): what one would do by hand. Timed on the sender, rsync alone.
* playbook: benchmarks/transfer_bench.yml, which applies the arms_transfer role with the vars
  transfer_random.yml passes, into ~/bench-transfer/play/. Timed from the controller, the whole
  ansible-playbook command: start-up, facts, ephemeral key made/authorised/removed, async rsync, wait loop.
  Its rsync job alone is timed too (the ``delta`` of the async job's result on the sender), which splits
  the playbook's time into rsync and Ansible around it.

The folder holds incompressible files (random bytes; rsync does not look inside parquet). Every transfer
starts from an empty destination; raw and playbook alternate (their order swaps every round), for a big
folder (--size-mb) and a tiny one (1 file), each --repeat times; figures are medians (best in brackets).
The tiny transfer gives the playbook's fixed overhead; with the per-byte rates of raw rsync and of the
playbook's rsync job (big minus tiny), the ratio at --extrapolate-gb is extrapolated (and labelled so).

The receiver is given an inventory alias of its own (bench-random2) in a temporary inventory next to
inventory/lab/ (which has no random2): the transfer key's authorized_keys line is matched by the
receiver's inventory name, so a concurrent test run's arms-transfer-random2 line is never touched.
"""

from __future__ import annotations

import argparse
import json
import os
import secrets
import shlex
import shutil
import statistics
import subprocess
import tempfile
import time
from dataclasses import dataclass, field

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
LAB = os.path.join(ROOT, ".lab")
KEY = os.path.join(LAB, "ssh", "id_ed25519")
PORT = 2222
ANSIBLE_PLAYBOOK = os.path.join(ROOT, ".venv", "bin", "ansible-playbook")
PLAYBOOK = os.path.join("benchmarks", "transfer_bench.yml")
HOSTS = {"cpu": ("arms-prep", "127.0.0.2"), "random2": ("arms-random2", "127.0.0.5")}
SENDER, RECEIVER = "cpu", "random2"
RECEIVER_ALIAS = "bench-random2"  # the receiver's inventory name in the bench's own inventory
PLAY_COMMENT = f"arms-transfer-{RECEIVER_ALIAS}"  # what the arms_transfer role puts on its key
BENCH = "bench-transfer"  # under each host's home; the only folder the bench writes
SSH_OPTS = "-o BatchMode=yes -o StrictHostKeyChecking=no -o UserKnownHostsFile=/dev/null -o IdentitiesOnly=yes"
MB = 1_000_000


def on_host(host: str, command: str, check: bool = True, timeout: float = 3600) -> subprocess.CompletedProcess[str]:
    """Run ``command`` on a lab host over its real ssh, as that host's user (tests/integration/conftest.py)."""
    user, addr = HOSTS[host]
    argv = [
        "ssh",
        "-q",
        "-i",
        KEY,
        "-p",
        str(PORT),
        *SSH_OPTS.split(),
        f"{user}@{addr}",
        "bash -c " + shlex.quote(command),
    ]
    proc = subprocess.run(argv, capture_output=True, text=True, timeout=timeout)
    if check and proc.returncode != 0:
        raise SystemExit(f"on {host}: {command!r} failed ({proc.returncode}): {proc.stderr.strip()}")
    return proc


def lab_is_up() -> None:
    pid_file = os.path.join(LAB, "ssh", "sshd.pid")
    if not os.path.exists(pid_file):
        raise SystemExit(f"The lab is not up ({pid_file} is missing): run `make lab-up` (as root) first.")
    for host in (SENDER, RECEIVER):
        if on_host(host, "true", check=False, timeout=30).returncode != 0:
            raise SystemExit(f"The lab is not reachable: ssh to {host} on port {PORT} fails; run `make lab-up`.")


@dataclass
class Folder:
    name: str
    files: int
    bytes: int


@dataclass
class Bench:
    sender_home: str
    receiver_home: str
    workdir: str  # a temporary folder on the controller (inventory and extra vars)
    raw_line: str = ""  # the raw key's authorized_keys line, once added
    runs: dict[tuple[str, str], list[float]] = field(default_factory=dict)

    def sender(self, *parts: str) -> str:
        return os.path.join(self.sender_home, BENCH, *parts)

    def receiver(self, *parts: str) -> str:
        return os.path.join(self.receiver_home, BENCH, *parts)


def make_folder(b: Bench, name: str, total: int, file_bytes: int) -> Folder:
    """``total`` bytes of random data in files of about ``file_bytes`` on the sender."""
    n = max(1, round(total / file_bytes))
    sizes = [total // n + (1 if i < total % n else 0) for i in range(n)]
    src = b.sender(name)
    cmds = [f"mkdir -p {shlex.quote(src)}"]
    cmds += [f"head -c {s} /dev/urandom > {shlex.quote(src)}/shard_{i:05d}.parquet" for i, s in enumerate(sizes)]
    on_host(SENDER, " && ".join(cmds))
    return Folder(name, n, total)


def raw_key(b: Bench) -> None:
    """A key pair made on the sender for the bench, authorised (unrestricted) on the receiver."""
    tag = f"bench-transfer-raw-{secrets.token_hex(6)}"
    key = b.sender("keys", "raw")
    pub = on_host(SENDER, f"ssh-keygen -q -t ed25519 -N '' -C {tag} -f {key} && cat {key}.pub").stdout.strip()
    if not pub.endswith(tag):
        raise SystemExit(f"unexpected public key from ssh-keygen: {pub!r}")
    b.raw_line = pub
    # append only (O_APPEND): the file is not rewritten; a newline first if the last line has none
    on_host(
        RECEIVER,
        'f=~/.ssh/authorized_keys; [ -n "$(tail -c1 "$f" 2>/dev/null)" ] && echo >> "$f"; '
        f"printf '%s\\n' {shlex.quote(pub)} >> \"$f\"",
    )


def remove_lines(host: str, awk_keep: str, grep_present: str) -> None:
    """Rewrite authorized_keys without some lines, only if one is there (a short read-modify-rename)."""
    on_host(
        host,
        f'f=~/.ssh/authorized_keys; if grep -q {grep_present} "$f"; then '
        f't=$(mktemp ~/.ssh/.bench.XXXXXX) && awk {awk_keep} "$f" > "$t" && chmod 600 "$t" && mv "$t" "$f"; fi',
        check=False,
    )


def clear_dest(b: Bench) -> None:
    dests = " ".join(shlex.quote(b.receiver(d)) for d in ("raw", "play"))
    on_host(RECEIVER, f"rm -rf {dests} && mkdir -p {dests} && sync -f {shlex.quote(b.receiver())}")


def check_arrived(b: Bench, dest: str, folder: Folder) -> None:
    out = on_host(
        RECEIVER,
        f"find {shlex.quote(b.receiver(dest))} -type f -printf '%s\\n' | awk '{{n++; s+=$1}} END {{print n+0, s+0}}'",
    )
    files, size = (int(x) for x in out.stdout.split())
    if (files, size) != (folder.files, folder.bytes):
        raise SystemExit(f"{dest}: {files} files, {size} bytes arrived; expected {folder.files}, {folder.bytes}")


def run_raw(b: Bench, folder: Folder) -> float:
    user, addr = HOSTS[RECEIVER]
    ssh = f"ssh -i {b.sender('keys', 'raw')} -p {PORT} {SSH_OPTS}"
    cmd = f"rsync -a --partial -e {shlex.quote(ssh)} {shlex.quote(b.sender(folder.name))}/ {user}@{addr}:{BENCH}/raw/"
    out = on_host(SENDER, f"s=$(date +%s%N); {cmd}; rc=$?; e=$(date +%s%N); echo $s $e; exit $rc", check=False)
    if out.returncode != 0:
        raise SystemExit(f"raw rsync failed ({out.returncode}): {out.stderr.strip()[-2000:]}")
    start, end = (int(x) for x in out.stdout.split()[-2:])
    check_arrived(b, "raw", folder)
    return (end - start) / 1e9


def run_playbook(b: Bench, folder: Folder) -> float:
    extra = {
        "bench_receiver": RECEIVER_ALIAS,
        "bench_sender": SENDER,
        "bench_src": b.sender(folder.name),
        "bench_dest": f"{BENCH}/play",
        "bench_keydir": b.sender("keys"),
        "bench_log": b.sender("transfer.log"),
    }
    vars_file = os.path.join(b.workdir, "vars.json")
    with open(vars_file, "w") as fh:
        json.dump(extra, fh)
    argv = [ANSIBLE_PLAYBOOK, "-i", "inventory/lab/", "-i", os.path.join(b.workdir, "bench_hosts.yml")]
    argv += [PLAYBOOK, "-e", f"@{vars_file}"]
    env = {**os.environ, "ANSIBLE_CONFIG": os.path.join(ROOT, "ansible.cfg")}
    t0 = time.perf_counter()
    proc = subprocess.run(argv, cwd=ROOT, env=env, capture_output=True, text=True)
    seconds = time.perf_counter() - t0
    if proc.returncode != 0:
        raise SystemExit(f"ansible-playbook failed ({proc.returncode}):\n{proc.stdout[-4000:]}\n{proc.stderr[-2000:]}")
    check_arrived(b, "play", folder)
    b.runs.setdefault(("rsync_job", folder.name), []).append(async_job_seconds(b))
    return seconds


def async_job_seconds(b: Bench) -> float:
    """The playbook's rsync alone: the ``delta`` of its async job's result, read from (and then removed with)
    the job's status file on the sender; only the bench's own jobs name the bench folder."""
    marker = shlex.quote(b.sender() + "/")
    out = on_host(
        SENDER, f'for f in $(grep -lF -- {marker} ~/.ansible_async/j* 2>/dev/null); do cat "$f"; echo; rm -f "$f"; done'
    )
    deltas = [json.loads(line).get("delta") for line in out.stdout.splitlines() if line.strip()]
    deltas = [d for d in deltas if d]
    if len(deltas) != 1:
        raise SystemExit(f"expected the status file of one finished rsync job on {SENDER}, found {len(deltas)}")
    h, m, sec = deltas[0].split(":")
    return int(h) * 3600 + int(m) * 60 + float(sec)


def write_inventory(b: Bench) -> None:
    """The receiver under its bench alias; everything else comes from inventory/lab/ (group_vars, all:vars)."""
    user, addr = HOSTS[RECEIVER]
    host = {
        "ansible_host": addr,
        "ansible_user": user,
        "ansible_port": PORT,
        "ansible_ssh_private_key_file": KEY,
        # the lab's paths are found from inventory_dir, which for this host is the bench's temp folder
        "lab_root": ROOT,
    }
    with open(os.path.join(b.workdir, "bench_hosts.yml"), "w") as fh:
        json.dump({"all": {"hosts": {RECEIVER_ALIAS: host}}}, fh)


def cleanup(b: Bench) -> list[str]:
    """Both bench folders, the raw key's line, a transfer key line left by an interrupted playbook, and the
    sender's async job status files of the bench's own transfers. Returns what is still left."""
    if b.raw_line:
        remove_lines(RECEIVER, shlex.quote(f"$0 != {json.dumps(b.raw_line)}"), "-xF -- " + shlex.quote(b.raw_line))
    remove_lines(RECEIVER, shlex.quote(f"!/ {PLAY_COMMENT}$/"), shlex.quote(f" {PLAY_COMMENT}$"))
    marker = shlex.quote(b.sender() + "/")
    on_host(SENDER, f"grep -lF -- {marker} ~/.ansible_async/j* 2>/dev/null | xargs -r rm -f --", check=False)
    on_host(SENDER, f"rm -rf {shlex.quote(b.sender())}", check=False)
    on_host(RECEIVER, f"rm -rf {shlex.quote(b.receiver())}", check=False)
    left = []
    if on_host(SENDER, f"test -e {shlex.quote(b.sender())}", check=False).returncode == 0:
        left.append(f"{SENDER}:{b.sender()}")
    if on_host(RECEIVER, f"test -e {shlex.quote(b.receiver())}", check=False).returncode == 0:
        left.append(f"{RECEIVER}:{b.receiver()}")
    keys = on_host(RECEIVER, "cat ~/.ssh/authorized_keys", check=False).stdout
    if PLAY_COMMENT in keys or "bench-transfer-raw-" in keys:
        left.append(f"{RECEIVER}: a bench key in ~/.ssh/authorized_keys")
    return left


def fmt_size(n: int) -> str:
    return f"{n / MB:,.0f} MB" if n >= MB else f"{n / 1000:,.0f} KB"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--size-mb", type=int, default=2048, help="size of the big folder (MB = 10^6 bytes)")
    parser.add_argument("--file-mb", type=int, default=100, help="size of each file of the big folder")
    parser.add_argument("--tiny-kb", type=int, default=64, help="size of the tiny folder's one file")
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--extrapolate-gb", type=float, default=40.0, help="data size of the extrapolation (GB)")
    a = parser.parse_args()

    lab_is_up()
    homes = {h: on_host(h, "echo $HOME").stdout.strip() for h in (SENDER, RECEIVER)}
    b = Bench(homes[SENDER], homes[RECEIVER], tempfile.mkdtemp(prefix="bench-transfer-"))
    try:
        on_host(SENDER, f"rm -rf {shlex.quote(b.sender())} && mkdir -p {shlex.quote(b.sender('keys'))}")
        on_host(RECEIVER, f"rm -rf {shlex.quote(b.receiver())} && mkdir -p {shlex.quote(b.receiver())}")
        write_inventory(b)
        t0 = time.perf_counter()
        big = make_folder(b, "src", a.size_mb * MB, a.file_mb * MB)
        tiny = make_folder(b, "tiny", a.tiny_kb * 1000, a.tiny_kb * 1000)
        print(
            f"folders on {SENDER}: src {big.files} files, {fmt_size(big.bytes)}; tiny 1 file, {fmt_size(tiny.bytes)} "
            f"(random bytes, made in {time.perf_counter() - t0:.0f}s)"
        )
        print(
            f"{SENDER} ({HOSTS[SENDER][0]}) -> {RECEIVER} ({HOSTS[RECEIVER][0]}); load average before: "
            f"{os.getloadavg()[0]:.2f}",
            flush=True,
        )
        raw_key(b)
        runners = {"raw": run_raw, "playbook": run_playbook}
        for r in range(a.repeat):
            order = ["raw", "playbook"] if r % 2 == 0 else ["playbook", "raw"]
            for folder in (big, tiny):
                for how in order:
                    clear_dest(b)
                    seconds = runners[how](b, folder)
                    b.runs.setdefault((how, folder.name), []).append(seconds)
                    print(
                        f"  round {r + 1} {how:8s} {folder.name:4s} {seconds:8.2f}s "
                        f"{folder.bytes / MB / seconds:8.1f} MB/s",
                        flush=True,
                    )
        print(f"load average after: {os.getloadavg()[0]:.2f}")
    finally:
        left = cleanup(b)
        shutil.rmtree(b.workdir, ignore_errors=True)
        print(f"cleanup: ~/{BENCH} removed on both hosts, bench keys removed" if not left else f"LEFT OVER: {left}")

    report(b.runs, big, tiny, a.repeat, a.extrapolate_gb)


def report(runs: dict[tuple[str, str], list[float]], big: Folder, tiny: Folder, repeat: int, ext_gb: float) -> None:
    med = {k: statistics.median(v) for k, v in runs.items()}
    best = {k: min(v) for k, v in runs.items()}
    print()
    print(f"{'median of ' + str(repeat) + ' (best in brackets)':48s} {'seconds':>16s} {'MB/s':>8s}")
    for folder in (big, tiny):
        label = f"{folder.files} file{'s' if folder.files > 1 else ''}, {fmt_size(folder.bytes)}"
        for how, what in (("raw", "raw rsync"), ("playbook", "playbook, end to end"), ("rsync_job", "  its rsync job")):
            s = med[(how, folder.name)]
            print(f"  {what:26s} {label:18s} {s:8.2f} [{best[(how, folder.name)]:6.2f}] {folder.bytes / MB / s:8.1f}")
    ratio = med[("raw", "src")] / med[("playbook", "src")]
    overhead = med[("playbook", "tiny")] - med[("raw", "tiny")]
    ansible = med[("playbook", "src")] - med[("rsync_job", "src")]
    print()
    print(
        f"RATIO raw/playbook time at {fmt_size(big.bytes)}: {ratio:.2f}x   goal >= 0.9x (>= 1: the playbook is as fast)"
    )
    print(f"FIXED OVERHEAD of the playbook (1-file playbook - 1-file raw): {overhead:.2f}s")
    print(f"  (at {fmt_size(big.bytes)}: end to end minus its rsync job = {ansible:.2f}s of Ansible around the rsync)")
    # per-byte rates from the timings without Ansible's noise: raw rsync and the playbook's rsync job, big - tiny
    per_byte = {h: (big.bytes - tiny.bytes) / (med[(h, "src")] - med[(h, "tiny")]) for h in ("raw", "rsync_job")}
    print(
        f"per-byte rates (big minus 1-file time): raw rsync {per_byte['raw'] / MB:.1f} MB/s, the playbook's rsync "
        f"job {per_byte['rsync_job'] / MB:.1f} MB/s ({per_byte['rsync_job'] / per_byte['raw']:.2f}x)"
    )
    # t(S) = the 1-file time + the rest at the per-byte rate
    size = ext_gb * 1e9
    raw_t = med[("raw", "tiny")] + (size - tiny.bytes) / per_byte["raw"]
    play_t = med[("playbook", "tiny")] + (size - tiny.bytes) / per_byte["rsync_job"]
    same_t = raw_t + overhead
    print(
        f"EXTRAPOLATION (not measured) to {ext_gb:g} GB, fixed overhead + measured per-byte rates: "
        f"raw ~{raw_t:.0f}s, playbook ~{play_t:.0f}s, ratio ~{raw_t / play_t:.3f}x"
    )
    print(
        f"EXTRAPOLATION (not measured) to {ext_gb:g} GB, fixed overhead only (the same per-byte rate): "
        f"raw ~{raw_t:.0f}s, playbook ~{same_t:.0f}s, ratio ~{raw_t / same_t:.3f}x"
    )


if __name__ == "__main__":
    main()
