"""GPU time before training, before and after the two-phase site.yml, on fresh lab hosts, side by side.

    .venv/bin/python benchmarks/bench_phases.py [--before REV] [--after REV]

For each variant (site.yml as it was at REV, and at HEAD: each from a worktree of its own, so the
checkout can change while it runs), the lab's three never-set-up hosts
(fresh-prep, fresh-top, fresh-random) are made new (`scripts/lab.sh reset`), then site.yml runs
against them as cpu, top and random. The arms_timeline callback (this checkout's, for both variants)
measures each GPU host's time from first contact to its arm's first step line, broken down. Prints
one row per variant and GPU host, and the ratio after/before. Needs the lab up (`make lab-up`) and
root (the reset makes users); takes about 10 minutes on 2 cores. A benchmark, not a test: it only
prints figures.

    --set-before/--set-after VAR=VALUE   an -e for that variant's site.yml (repeatable), e.g. the same
                                         revision with arms_overlap_setup=false and =true
    --one-gpu-host                       both arms on fresh-top (the pilot's placement): one GPU host
                                         installs while the other core is free, as on a node with cores to spare

Each row also says how busy the machine's CPU was between the first GPU contact and the last first
step line (all cores; the lab's three hosts, the controller and Azurite share them).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parents[1]
LAB = ROOT / ".lab"
FRESH = {"cpu": ("prep", "fresh-prep"), "top": ("arm_top", "fresh-top"), "random": ("arm_random", "fresh-random")}
ADDR = {"fresh-prep": ("arms-fresh-prep", "127.0.0.6"), "fresh-top": ("arms-fresh-top", "127.0.0.7")}
ADDR["fresh-random"] = ("arms-fresh-random", "127.0.0.8")


def lab_env() -> dict[str, str]:
    env = dict(os.environ)
    for line in (LAB / "secrets.env").read_text().splitlines():
        if "=" in line and not line.lstrip().startswith("#"):
            key, value = line.split("=", 1)
            env[key.removeprefix("export ").strip()] = value.strip().strip("'\"")
    return env


def lab_inventory(checkout: Path, folder: Path, fresh: bool = False) -> Path:
    """The checkout's lab inventory with the lab's paths pinned to ROOT (the hosts were set up from ROOT's
    .lab, and the lab users can read it); with ``fresh``, cpu/top/random on the fresh hosts."""
    src = checkout / "inventory" / "lab"
    group_vars = folder / "group_vars" / "all"
    group_vars.mkdir(parents=True, exist_ok=True)
    for item in (src / "group_vars" / "all").iterdir():
        text = item.read_text().replace("(inventory_dir ~ '/../..') | realpath", repr(str(ROOT)))
        (group_vars / item.name).write_text(text)
    hosts = yaml.safe_load((src / "hosts.yml").read_text())
    hosts["all"]["vars"]["ansible_ssh_private_key_file"] = str(LAB / "ssh" / "id_ed25519")
    for name, (group, host) in FRESH.items() if fresh else ():
        user, addr = ADDR[host]
        hosts["all"]["children"][group]["hosts"][name] = {"ansible_host": addr, "ansible_user": user}
    (folder / "hosts.yml").write_text(yaml.safe_dump(hosts))
    return folder


def one_gpu_host(inventory: Path) -> None:
    """Both arms on the top host (the random host leaves the inventory): one GPU host sets up at a time."""
    hosts = yaml.safe_load((inventory / "hosts.yml").read_text())
    hosts["all"]["children"]["arm_random"]["hosts"] = {}
    (inventory / "hosts.yml").write_text(yaml.safe_dump(hosts))
    lab_vars = inventory / "group_vars" / "all" / "lab.yml"
    settings = yaml.safe_load(lab_vars.read_text())
    settings["experiment_overrides"]["arms"]["random16.5"]["group"] = "arm_top"
    lab_vars.write_text(yaml.safe_dump(settings, sort_keys=False))


def site_env(checkout: Path, plugin_dirs: list[Path], callbacks: str, **extra: str) -> dict[str, str]:
    """The lab's secrets and the checkout's ansible.cfg, with these callback plugins enabled."""
    env = lab_env()
    env.update(
        ANSIBLE_CONFIG=str(checkout / "ansible.cfg"),
        ANSIBLE_CALLBACK_PLUGINS=":".join(str(d) for d in plugin_dirs),
        ANSIBLE_CALLBACKS_ENABLED=callbacks,
        **extra,
    )
    return env


class CpuSampler:
    """The machine's CPU use (all cores, from /proc/stat) sampled every half second while a run goes."""

    def __init__(self) -> None:
        self.samples: list[tuple[float, float]] = []  # (time, busy fraction over the last interval)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    @staticmethod
    def _read() -> tuple[int, int]:
        with open("/proc/stat", encoding="ascii") as fh:
            values = [int(v) for v in fh.readline().split()[1:]]
        return sum(values), values[3] + values[4]  # all, idle + iowait

    def _run(self) -> None:
        last = self._read()
        while not self._stop.wait(0.5):
            now = self._read()
            total = now[0] - last[0]
            self.samples.append((time.time(), 1 - (now[1] - last[1]) / total if total else 0.0))
            last = now

    def __enter__(self) -> CpuSampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()

    def busy(self, start: float, end: float) -> float | None:
        window = [f for t, f in self.samples if start <= t <= end]
        return sum(window) / len(window) if window else None


def run_site(checkout: Path, work: Path, extra: list[str], one_host: bool) -> list[dict[str, Any]]:
    subprocess.run(["bash", str(ROOT / "scripts" / "lab.sh"), "reset", *ADDR], check=True, stdout=subprocess.DEVNULL)
    inventory = lab_inventory(checkout, work / "inventory", fresh=True)
    timeline = work / "timeline.json"
    plugins = [checkout / "plugins" / "callback", ROOT / "plugins" / "callback"]
    env = site_env(checkout, plugins, "arms_progress,arms_timeline", ARMS_TIMELINE_FILE=str(timeline))
    args = [a for value in extra for a in ("-e", value)]
    if one_host:
        one_gpu_host(inventory)
    log = work / "site.log"
    with log.open("w") as out, CpuSampler() as cpu:
        proc = subprocess.run(
            [str(ROOT / ".venv" / "bin" / "ansible-playbook"), "site.yml", "-i", str(inventory), *args],
            cwd=checkout,
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    if proc.returncode != 0 or not timeline.exists():
        tail = "\n".join(log.read_text().splitlines()[-40:])
        sys.exit(f"site.yml failed in {checkout} (rc {proc.returncode}); the end of its output:\n{tail}")
    hosts = json.loads(timeline.read_text())["hosts"]
    reached = [h["reached"] for h in hosts if h.get("reached")]
    ends = [h["reached"] + h["total_s"] for h in hosts if "total_s" in h]
    busy = cpu.busy(min(reached), max(ends)) if reached and ends else None
    for host in hosts:
        host["cpu_busy"] = busy
    return hosts


def row(variant: str, host: dict[str, Any]) -> str:
    s = host.get("seconds", {})
    cpu = f"{host['cpu_busy'] * 100:.0f}%" if host.get("cpu_busy") is not None else "-"
    return (
        f"| {variant} | {host['host']} | {host.get('total_s', '-')} | {s.get('setup', '-')} | {s.get('data', '-')} | "
        f"{s.get('preflight', '-')} | {s.get('launch', '-')} | {s.get('checks', '-')} | {host.get('waiting_s', '-')} | "
        f"{host.get('overlapped_s', '-')} | {cpu} |"
    )


def bound_line(variant: str, hosts: list[dict[str, Any]]) -> str:
    """Time to both arms training against max over GPU hosts of max(setup, data) + preflight + launch."""
    secs = [h.get("seconds", {}) for h in hosts]
    if not secs or any("total_s" not in h for h in hosts):
        return f"{variant}: no bound (a host has no first step line)"
    overlap = max(max(s.get("setup", 0), s.get("data", 0)) for s in secs)
    bound = overlap + max(s.get("preflight", 0) for s in secs) + max(s.get("launch", 0) for s in secs)
    total = max(h["total_s"] for h in hosts)
    verdict = "within it" if total <= bound else f"{total - bound:.1f}s over it"
    return (
        f"{variant}: both arms training after {total:.1f}s; bound max(setup, data) {overlap:.1f} + preflight + launch "
        f"= {bound:.1f}s: {verdict} ({total / bound:.2f}x)"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument(
        "--before", default="3522ce3", help="the revision whose site.yml is the 'before' ('none': only the after)"
    )
    parser.add_argument("--after", default="HEAD", help="the revision whose site.yml is the 'after'")
    parser.add_argument("--set-before", action="append", default=[], metavar="VAR=VALUE", help="an -e for 'before'")
    parser.add_argument("--set-after", action="append", default=[], metavar="VAR=VALUE", help="an -e for 'after'")
    parser.add_argument("--one-gpu-host", action="store_true", help="both arms on fresh-top (one GPU host)")
    args = parser.parse_args()
    after = subprocess.run(
        ["git", "-C", str(ROOT), "rev-parse", "--short", args.after], check=True, capture_output=True, text=True
    ).stdout.strip()
    results: dict[str, dict[str, Any]] = {}
    with tempfile.TemporaryDirectory(prefix="bench-phases-") as tmp:
        trees: list[Path] = []
        try:

            def label(name: str, rev: str, sets: list[str]) -> str:
                return f"{name} ({rev}{''.join(', ' + v for v in sets)})"

            variants = [(label("before", args.before, args.set_before), args.before, args.set_before)]
            variants = variants if args.before != "none" else []
            for variant, rev, sets in [*variants, (label("after", after, args.set_after), after, args.set_after)]:
                checkout = Path(tmp) / f"tree-{variant.split()[0]}"
                subprocess.run(
                    ["git", "-C", str(ROOT), "worktree", "add", "-q", "--detach", str(checkout), rev], check=True
                )
                trees.append(checkout)
                (checkout / ".lab").symlink_to(LAB)
                work = Path(tmp) / f"run-{variant.split()[0]}"
                work.mkdir()
                results[variant] = {h["host"]: h for h in run_site(checkout, work, sets, args.one_gpu_host)}
        finally:
            for tree in trees:
                subprocess.run(["git", "-C", str(ROOT), "worktree", "remove", "--force", str(tree)], check=False)
            subprocess.run(["bash", str(ROOT / "scripts" / "lab.sh"), "reset", *ADDR], stdout=subprocess.DEVNULL)
    print("GPU time before training on fresh lab hosts, seconds (reached -> first step line):")
    print("| variant | host | total | setup | data | preflight | launch | checks | waiting | at once | CPU busy |")
    print("| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |")
    for variant, hosts in results.items():
        for host in sorted(hosts):
            print(row(variant, hosts[host]))
    # issue 16's bound: with the data overlapping the setup, "both arms training" should come after the
    # longest of (a GPU host's setup, its data), plus the preflight and the launch, and nothing else
    for variant, hosts in results.items():
        print(bound_line(variant, list(hosts.values())))
    if len(results) < 2:
        return
    (b, a) = results.values()
    for host in sorted(a):
        if "total_s" in a[host] and "total_s" in b.get(host, {}):
            print(
                f"{host}: after/before = {a[host]['total_s'] / b[host]['total_s']:.2f}x of the GPU time before training"
            )


if __name__ == "__main__":
    main()
