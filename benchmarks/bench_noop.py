"""A no-op site.yml on the converged lab, before and after, side by side (issue 14's last row).

    .venv/bin/python benchmarks/bench_noop.py [--before REV] [--after REV] [--repeat 3] [--top 15]

Needs the lab up and converged (`make lab`): cpu, top and random set up, both arms trained or
training. Each variant (site.yml at REV and at HEAD, each from a worktree of its own) runs once
untimed (a revision may record its own state the first time: that run is its convergence, not a
no-op), then --repeat times timed; the variants alternate and swap order every round. Every timed run
must change nothing on any host (its PLAY RECAP is checked), or the figure is refused.

Per task, the wall time from its start to the next task's start (benchmarks/callback/arms_task_times.py):
what the user waits for, barriers and Ansible's own work between tasks included. Prints the median
wall time of each variant, the ratio after/before, the goal (12 s), the task counts, and the slowest
tasks of the after variant. A benchmark, not a test: it only prints figures. Takes a few minutes.
"""

from __future__ import annotations

import argparse
import json
import re
import statistics
import subprocess
import sys
import tempfile
import time
from collections import defaultdict
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_phases import LAB, ROOT, lab_inventory, site_env

GOAL_S = 12.0
RECAP = re.compile(r"^(\S+)\s+:\s+ok=(\d+)\s+changed=(\d+)\s+unreachable=(\d+)\s+failed=(\d+)", re.M)


def run_site(checkout: Path, times: Path) -> tuple[float, dict[str, Any], str]:
    plugins = [ROOT / "benchmarks" / "callback", checkout / "plugins" / "callback"]
    env = site_env(checkout, plugins, "arms_progress,arms_timeline,arms_task_times", ARMS_TASK_TIMES_FILE=str(times))
    inventory = lab_inventory(checkout, checkout / "bench-inventory")
    start = time.monotonic()
    proc = subprocess.run(
        [str(ROOT / ".venv" / "bin" / "ansible-playbook"), "site.yml", "-i", str(inventory)],
        cwd=checkout,
        env=env,
        capture_output=True,
        text=True,
    )
    wall = time.monotonic() - start
    if proc.returncode != 0:
        sys.exit(f"site.yml failed in {checkout} (rc {proc.returncode}):\n{proc.stdout[-3000:]}")
    return wall, json.loads(times.read_text()), proc.stdout


def changed_hosts(stdout: str) -> dict[str, int]:
    return {m[1]: int(m[3]) for m in RECAP.finditer(stdout) if int(m[3])}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--before", default="c891677", help="the revision whose site.yml is the 'before'")
    parser.add_argument("--after", default="HEAD", help="the revision whose site.yml is the 'after'")
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--top", type=int, default=15, help="slowest tasks of the after variant to list")
    args = parser.parse_args()
    revs = {
        name: subprocess.run(
            ["git", "-C", str(ROOT), "rev-parse", "--short", rev], check=True, capture_output=True, text=True
        ).stdout.strip()
        for name, rev in (("before", args.before), ("after", args.after))
    }
    walls: dict[str, list[float]] = defaultdict(list)
    profiles: dict[str, dict[str, Any]] = {}
    with tempfile.TemporaryDirectory(prefix="bench-noop-") as tmp:
        trees: dict[str, Path] = {}
        try:
            for name, rev in revs.items():
                tree = Path(tmp) / f"tree-{name}"
                add = ["git", "-C", str(ROOT), "worktree", "add", "-q", "--detach", str(tree), rev]
                subprocess.run(add, check=True)
                (tree / ".lab").symlink_to(LAB)
                trees[name] = tree
                run_site(tree, Path(tmp) / f"warm-{name}.json")  # its convergence, untimed
            for round_ in range(args.repeat):
                order = list(revs) if round_ % 2 == 0 else list(reversed(revs))
                for name in order:
                    wall, profile, stdout = run_site(trees[name], Path(tmp) / f"{name}-{round_}.json")
                    if changed := changed_hosts(stdout):
                        sys.exit(f"{name} ({revs[name]}) changed something on a converged lab: {changed}")
                    walls[name].append(wall)
                    profiles[name] = profile
        finally:
            for tree in trees.values():
                subprocess.run(["git", "-C", str(ROOT), "worktree", "remove", "--force", str(tree)], check=False)
    med = {name: statistics.median(w) for name, w in walls.items()}
    print(f"no-op site.yml on the converged lab, {args.repeat} runs each, alternating (median [best]):")
    for name, rev in revs.items():
        tasks = profiles[name]["tasks"]
        print(
            f"  {name} ({rev}): {med[name]:.1f}s [{min(walls[name]):.1f}s], {len(tasks)} tasks, "
            f"{sum(t['seconds'] >= 0.25 for t in tasks)} of them 0.25s or more"
        )
    ratio = med["after"] / med["before"]
    print(f"  after/before = {ratio:.2f}x; goal {GOAL_S:.0f}s: after is {med['after'] / GOAL_S:.1f}x it")
    slowest: dict[str, list[float]] = defaultdict(list)
    for t in profiles["after"]["tasks"]:
        slowest[f"{t['task'][:80]} ({Path(t['path'].split(':')[0]).name})"].append(t["seconds"])
    print("slowest tasks of the after variant (last run; a task run in several plays is summed, xN):")
    for label, secs in sorted(slowest.items(), key=lambda kv: -sum(kv[1]))[: args.top]:
        print(f"  {sum(secs):5.2f}s x{len(secs)} {label}")


if __name__ == "__main__":
    main()
