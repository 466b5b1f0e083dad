"""The lab's pilot (make lab-pilot): four arms (top16.5, random16.5 at seeds 42, 43, 44) packed two per
GPU-less lab host, each one real nanochat CPU process in its own base dir; one arm stopped while its
sibling on the same host trains on; collect writes the table with the noise band and its plot.

Runtime kept small: the pilot's model is depth 1 (inventory/lab-pilot/group_vars/all/pilot.yml); the
long run (to stop one arm while its sibling trains) is stopped as soon as that is seen.
"""

from __future__ import annotations

import copy
import json
import os
import re
import struct
from pathlib import Path
from typing import Any

import pytest
import yaml
from conftest import ROOT, failure_text, on_host, play

pytestmark = pytest.mark.lab
INVENTORY = "inventory/lab-pilot/"
PILOT = {"arms_profile": "pilot"}
USERS = {"top": "arms-top", "random": "arms-random"}
PLACED = {"top": ["top16.5", "random16.5-s43"], "random": ["random16.5", "random16.5-s44"]}
STATE = "~/.local/share/nanochat-arms"


def lab_pilot(num_iterations: int | None = None) -> dict[str, Any]:
    """The extra vars of a pilot run; ``num_iterations`` replaces the profile's (a run long enough to stop)."""
    with open(os.path.join(ROOT, "inventory", "lab-pilot", "group_vars", "all", "pilot.yml")) as fh:
        declared = copy.deepcopy(yaml.safe_load(fh)["arms_lab_pilot"])
    if num_iterations is None:
        return dict(PILOT)
    declared["profiles"]["pilot"]["num_iterations"] = num_iterations
    return {**PILOT, "arms_lab_pilot": declared, "arms_allow_unequal_repeats": True}


def pilot_play(playbook: str, secrets: dict[str, str], **kw: Any):
    return play(playbook, secrets, inventory=INVENTORY, **kw)


def train_procs(host: str) -> list[int]:
    out = on_host(host, f"pgrep -u {USERS[host]} -f 'scripts[.]base_train' || true").stdout.split()
    return [int(p) for p in out]


def proc_env(host: str, pid: int, name: str) -> str | None:
    """One variable of a live process's environment (None when it is not set)."""
    raw = on_host(host, f"tr '\\0' '\\n' < /proc/{pid}/environ || true").stdout.splitlines()
    values = [line.split("=", 1)[1] for line in raw if line.startswith(name + "=")]
    return values[0] if values else None


@pytest.fixture(scope="module")
def long_pilot(lab):
    """The whole pilot, with the plain lab runs stopped first (a run that holds the whole host would
    refuse the pilot's arms), long enough that every arm still trains while the tests look."""
    stopped = play("playbooks/stop.yml", lab)
    assert stopped.ok, failure_text(stopped)
    summary = pilot_play("site.yml", lab, extravars={**lab_pilot(100000), "arms_force_restart": True})
    assert summary.ok, failure_text(summary)
    yield summary
    pilot_play("playbooks/stop.yml", lab, extravars=lab_pilot(100000))


def test_four_arms_train_two_per_host_each_in_its_own_dirs(long_pilot) -> None:
    runs = {r["arm"]: r for r in long_pilot.runs}
    assert set(runs) == {arm for arms in PLACED.values() for arm in arms}, long_pilot.runs
    for host, arms in PLACED.items():
        assert {runs[a]["host"] for a in arms} == {host}
        records = {a: json.loads(on_host(host, f"cat {runs[a]['log'][:-4]}.pid.json").stdout) for a in arms}
        # each arm: its own log, pid file, process group and base dir (NANOCHAT_BASE_DIR), all live
        assert len({runs[a]["log"] for a in arms}) == len({r["pgid"] for r in records.values()}) == 2
        assert {r["base_dir"] for r in records.values()} == {
            f"{on_host(host, 'echo ~').stdout.strip()}/.local/share/nanochat-arms/arms/{a}" for a in arms
        }
        assert all(runs[a]["log"].endswith("-pilot.log") for a in arms)  # the pilot's own run names
        procs = train_procs(host)
        assert len(procs) >= 2, f"{host}: {procs}"
        for pid in procs:
            # a GPU-less host: one CPU process per arm, no GPUs named, each in its own base dir
            assert proc_env(host, pid, "CUDA_VISIBLE_DEVICES") is None
        assert {proc_env(host, pid, "NANOCHAT_BASE_DIR") for pid in procs} == {r["base_dir"] for r in records.values()}


def test_the_three_seeds_are_sharded_from_one_read_and_validate_on_rows_none_trained_on(long_pilot) -> None:
    plain = re.sub(r"\x1b\[[0-9;]*m", "", long_pilot.stdout)
    # one sharding job for the three random arms of the shared source (one read), not one per arm
    started = re.findall(r"\(item=([^)]*random16\.5[^)]*)\)", plain.split("Shards are being written", 1)[1][:2000])
    assert started[:1] == ["random16.5, random16.5-s43, random16.5-s44"], plain[-3000:]
    prepared = f"{STATE}/prepared"
    val_texts = set(
        json.loads(
            on_host(
                "cpu",
                f"{STATE}/tools/bin/python -c 'import json,pyarrow.parquet as pq; "
                f'print(json.dumps(pq.read_table("{prepared}/random16.5/val/shard_val.parquet").column("text").to_pylist()))\'',
            ).stdout
        )
    )
    assert val_texts
    for arm in ("random16.5-s43", "random16.5-s44"):
        manifest = json.loads(on_host("cpu", f"cat {prepared}/{arm}/base_data/manifest.json").stdout)
        assert manifest["params"]["excludes_val_of"]["seed"] == 42, manifest["params"]
        shards = f"{prepared}/{arm}/base_data/shard_0*.parquet"
        trained = json.loads(
            on_host(
                "cpu",
                f"{STATE}/tools/bin/python -c 'import glob,json,os,pyarrow.parquet as pq; "
                f'print(json.dumps([t for f in sorted(glob.glob(os.path.expanduser("{shards}"))) '
                f'for t in pq.read_table(f).column("text").to_pylist()]))\'',
            ).stdout
        )
        # the shared val shard's rows (seed 42's validation) are in no other seed's training shards
        assert trained and not val_texts & set(trained), f"{arm}: {len(val_texts & set(trained))} val rows trained on"


def test_the_preflight_shows_the_pilot_changes_only_depth_iterations_placement_and_names(long_pilot) -> None:
    plain = re.sub(r"\x1b\[[0-9;]*m", "", long_pilot.stdout)  # the callback's colours
    shown = [line for line in plain.splitlines() if "profile pilot changes:" in line]
    assert shown, long_pilot.stdout[-3000:]
    changed = shown[-1].split("profile pilot changes:", 1)[1].strip().strip("\"'").split(", ")
    assert sorted(changed) == sorted(
        [
            "arms.random16.5-s43.run_name",
            "arms.random16.5-s44.run_name",
            "arms.random16.5.run_name",
            "arms.top16.5.run_name",
            "model.depth",
            "model.extra_flags.num-iterations",
            "name",
            "placement",
            "profile",
        ]
    )


def test_stopping_one_arm_leaves_its_sibling_on_the_host_training(long_pilot, lab) -> None:
    before = {r["arm"]: r["pid"] for r in long_pilot.runs}
    stop = pilot_play("playbooks/stop.yml", lab, extravars={**lab_pilot(100000), "arms_only": ["random16.5-s43"]})
    assert stop.ok, failure_text(stop)
    # only that arm's process group was signalled: nothing changed on the other host
    assert {h: stop.hosts[h].changed for h in PLACED} == {"top": 1, "random": 0}
    assert "exp-rand16-d26-8gpu-s43-pilot" in stop.stdout
    status = pilot_play("playbooks/status.yml", lab, extravars=lab_pilot(100000))
    assert status.ok, failure_text(status)
    assert "top | random16.5-s43 | NOT RUNNING" in status.stdout
    assert f"top | top16.5 | alive pid {before['top16.5']}" in status.stdout
    assert f"random | random16.5-s44 | alive pid {before['random16.5-s44']}" in status.stdout
    assert before["top16.5"] in train_procs("top") and before["random16.5-s43"] not in train_procs("top")


def png_size(path: Path) -> tuple[int, int]:
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n", f"{path} is not a PNG"
    return struct.unpack(">II", data[16:24])


def test_the_pilot_as_declared_ends_and_collect_writes_the_noise_band(long_pilot, lab) -> None:
    stopped = pilot_play("playbooks/stop.yml", lab, extravars=lab_pilot(100000))
    assert stopped.ok, failure_text(stopped)
    # the pilot as inventory/lab-pilot declares it (make lab-pilot): short, replacing the long runs
    trained = pilot_play("playbooks/train.yml", lab, extravars={**lab_pilot(), "arms_force_restart": True})
    assert trained.ok, failure_text(trained)
    collected = pilot_play("playbooks/collect.yml", lab, extravars={**lab_pilot(), "arms_collect_wait": True})
    assert collected.ok, failure_text(collected)
    results = Path(ROOT) / "results" / "lab-top-vs-random-pilot"  # apart from the full run's results
    table = (results / "results.md").read_text()
    for arm in ("top16.5", "random16.5", "random16.5-s43", "random16.5-s44"):
        assert f"| {arm} |" in table and (results / arm / "train.log").stat().st_size > 0
        assert json.loads((results / arm / "run.json").read_text())["stale"] is False
    assert "Noise band" in table
    # the sentence under the table: top16.5 against the spread of random16.5's three seeds
    assert re.search(r"top16\.5 is .*random16\.5.* \(seed spread [0-9.]+\): (beyond|within) seed noise", table), table
    width, height = png_size(results / "noise_band.png")
    assert width >= 600 and height >= 300
