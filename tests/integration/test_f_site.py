"""The whole experiment from one command through the CI entry, a no-op re-run, check mode, arms_only, results."""

from __future__ import annotations

import json
import os
import struct
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
import yaml
from arms_results import format_count
from conftest import FRESH_HOSTS, ROOT, failure_text, inventory_variant, lab_overrides, on_host, play

pytestmark = pytest.mark.lab
ENTRY = os.path.join(ROOT, "scripts", "nanochat_arms_run.py")
ARMS = {"top": "top16.5", "random": "random16.5"}


def experiment_name() -> str:
    """The lab's experiment name (its overrides may rename the experiment)."""
    with open(os.path.join(ROOT, "inventory", "group_vars", "all", "experiment.yml")) as fh:
        name = yaml.safe_load(fh)["experiment"]["name"]
    return lab_overrides().get("name", name)


def entry(lab: dict[str, str], tmp: Path, name: str, *args: str) -> tuple[subprocess.CompletedProcess[str], Any]:
    """nanochat-arms-run as CI runs it: its own process, secrets only in its environment."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("WANDB_", "HF_", "HUGGINGFACE_", "AZURE_"))}
    env.update(lab)
    out = tmp / f"{name}.json"
    proc = subprocess.run(
        [sys.executable, ENTRY, *args, "--summary", str(out)],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=3600,
    )
    summary = json.loads(out.read_text()) if out.exists() else None
    return proc, summary


def train_procs(host: str) -> str:
    user = {"top": "arms-top", "random": "arms-random"}[host]
    return on_host(host, f"pgrep -u {user} -f 'scripts[.]base_train' || true").stdout.strip()


@pytest.fixture(scope="module")
def site(lab, tmp_path_factory) -> dict[str, Any]:
    """site.yml once through the CI entry from a state with no training running, then once more."""
    play("playbooks/stop.yml", lab)
    tmp = tmp_path_factory.mktemp("site")
    first, first_summary = entry(lab, tmp, "first", "site.yml", "-i", "inventory/lab/")
    t0 = time.monotonic()
    second, second_summary = entry(lab, tmp, "second", "site.yml", "-i", "inventory/lab/")
    wall = time.monotonic() - t0
    print(f"\nsecond site.yml run (no-op): {wall:.1f} s wall")
    return {"first": (first, first_summary), "second": (second, second_summary), "second_wall_s": wall}


def test_site_runs_the_whole_experiment_and_the_ci_summary_says_so(site) -> None:
    proc, summary = site["first"]
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-2000:]
    assert summary is not None and summary["ok"] is True
    assert set(summary["hosts"]) >= {"cpu", "top", "random"}
    for host, stats in summary["hosts"].items():
        assert stats["failed"] == 0 and stats["unreachable"] == 0, (host, stats)
    launched = {r["host"]: r for r in summary["runs"]}
    assert {h: launched[h]["arm"] for h in ARMS} == ARMS
    for run in launched.values():
        assert run["log"].endswith(".log") and run["pid"] > 0
    assert all(t["duration_s"] >= 0 and t["task"] for t in summary["tasks"])
    assert max(t["duration_s"] for t in summary["tasks"]) > 1  # durations are measured, not zeros
    # the run ends in the status table, and the arms really trained
    assert "| top16.5 |" in proc.stdout and "| random16.5 |" in proc.stdout
    for host in ARMS:
        log = on_host(host, f"cat {launched[host]['log']}").stdout
        assert "step 00000/" in log, f"{host} never logged a step"
    # what each GPU host's time before training went to: printed at the end and in the CI summary
    assert "GPU time before training, per host" in proc.stdout
    idle = {row["host"]: row for row in summary["idle"]}
    assert set(idle) == set(ARMS), summary["idle"]
    for host, row in idle.items():
        assert f"  {row['line']}" in proc.stdout and row["line"].startswith(f"{host}: ")
        if row["launch"] == "already":  # the lab's runs had finished before: nothing was waited for
            assert "already running or finished before this run" in row["line"] and row["first_step"] is None
            continue
        assert row["launch"] == "launched" and row["first_step"] > row["reached"], row
        parts = row["seconds"]
        assert set(parts) == {"setup", "data", "preflight", "launch", "checks"}
        assert parts["launch"] > 0 and parts["preflight"] > 0, row
        # what ran at once (the venv installing under the data's steps) is counted once in the total
        assert abs(sum(parts.values()) - row["overlapped_s"] + row["waiting_s"] - row["total_s"]) < 1.0, row
        assert row["line"].startswith(f"{host}: reached ")


def test_a_second_site_run_changes_nothing_and_launches_nothing(site) -> None:
    proc, summary = site["second"]
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-2000:]
    assert {h: s["changed"] for h, s in summary["hosts"].items()} == dict.fromkeys(summary["hosts"], 0)
    first_runs = {r["host"]: (r["run_name"], r["pid"]) for r in site["first"][1]["runs"]}
    again = {r["host"]: (r["run_name"], r["pid"]) for r in summary["runs"]}
    assert again == first_runs, "a second run must report the same runs, not start new ones"
    assert all(r["changed"] is False for r in summary["runs"])


def test_check_mode_on_the_converged_lab_predicts_no_change_and_fails_nothing(site, lab) -> None:
    checked = play("site.yml", lab, check=True, diff=True)
    assert checked.ok, failure_text(checked)
    changed = {h: s.changed for h, s in checked.hosts.items()}
    assert changed == dict.fromkeys(checked.hosts, 0), [t for t in checked.tasks if t["status"] == "changed"]


def png_size(path: Path) -> tuple[int, int]:
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n", f"{path} is not a PNG"
    return struct.unpack(">II", data[16:24])


def test_collect_waits_for_the_runs_then_writes_the_table_and_the_plot_for_both_arms(site, lab) -> None:
    # what `make lab` does: wait for the lab's short runs to end, then collect
    collected = play("playbooks/collect.yml", lab, extravars={"arms_collect_wait": True})
    assert collected.ok, failure_text(collected)
    results = Path(ROOT) / "results" / experiment_name()
    table = (results / "results.md").read_text()
    lines = [[c.strip() for c in line.strip().strip("|").split("|")] for line in table.splitlines()]
    lines = [cells for cells in lines if len(cells) > 5]
    header, rows = lines[0], {cells[0]: dict(zip(lines[0], cells, strict=True)) for cells in lines[2:]}
    assert header[0] == "arm" and {"top16.5", "random16.5"} <= set(rows), table
    for arm in ("top16.5", "random16.5"):
        row = rows[arm]
        # numbers parsed from the arm's own log: validation ran, tokens were seen
        assert float(row["min val bpb"]) > 0, row
        assert row["status"] == "finished", row
        steps, batch = (
            lab_overrides()["model"]["extra_flags"]["num-iterations"],
            lab_overrides()["model"]["total_batch_size"],
        )
        assert row["tokens seen"] == format_count(steps * batch), row  # every step of the run was seen
    width, height = png_size(results / "loss.png")
    assert width >= 600 and height >= 300
    for arm in ARMS.values():
        assert (results / arm / "train.log").stat().st_size > 0
        # the runs ended: collect says since when each arm's GPUs are idle, so the nodes can be released
        ended = json.loads((results / arm / "run.json").read_text())["ended"]
        assert f"Its GPUs have been idle since {ended[11:16]} UTC" in collected.stdout, collected.stdout[-3000:]


def test_arms_only_launches_and_stops_only_the_named_arm(site, lab) -> None:
    stopped = play("playbooks/stop.yml", lab)
    assert stopped.ok, failure_text(stopped)
    only = {"arms_only": ["top16.5"], "arms_force_restart": True}
    trained = play("playbooks/train.yml", lab, extravars=only)
    assert trained.ok, failure_text(trained)
    assert [r["host"] for r in trained.runs] == ["top"]
    bad = play("playbooks/train.yml", lab, extravars={"arms_only": ["top"]})
    assert not bad.ok and "arms_only names top, not an arm of the experiment" in failure_text(bad)
    done = play("playbooks/stop.yml", lab, extravars={"arms_only": ["top16.5"]})
    assert done.ok, failure_text(done)
    assert not train_procs("top")


def test_a_failed_data_step_stops_the_run_before_any_arm_is_launched(site, lab) -> None:
    """The CPU node fails its sharding: the run stops in the CPU phase; no GPU host trains on what it had."""
    assert play("playbooks/stop.yml", lab).ok
    manifest = "~/.local/share/nanochat-arms/prepared/random16.5/base_data/manifest.json"
    on_host("cpu", f"cp -p {manifest} {manifest}.keep")
    on_host("cpu", f'sed -i \'s/"seed": 42/"seed": 43/\' {manifest} && grep -q \'"seed": 43\' {manifest}')
    try:
        failed = play("site.yml", lab)
    finally:
        on_host("cpu", f"mv {manifest}.keep {manifest}")
    text = failure_text(failed)
    assert not failed.ok
    assert "made with other parameters (seed 43 -> 42)" in text, text
    # the CPU phase stopped the run: the GPU hosts were not even contacted
    assert set(failed.hosts) == {"cpu"}, failed.hosts
    assert failed.runs == [] and not train_procs("top") and not train_procs("random")


def home_state(user: str) -> dict[str, tuple[int, int, int]]:
    """Every path in a lab user's home with its size, mode and mtime, but Ansible's own empty ~/.ansible/tmp."""
    home = Path("/home", user)
    state = {}
    for path in [home, *home.rglob("*")]:
        st = path.lstat()
        state[str(path.relative_to(home))] = (st.st_size if path.is_file() else 0, st.st_mode, st.st_mtime_ns)
    for own in (".ansible/tmp", ".ansible", "."):
        state.pop(own, None)  # made by any Ansible run (the home's own mtime changes with it)
    return state


def test_check_mode_on_a_fresh_lab_predicts_every_step_and_touches_nothing(lab, tmp_path) -> None:
    """site.yml --check --diff against hosts nothing ever set up: a prediction per step, the hosts untouched."""

    def fresh(hosts: dict) -> None:
        for group, name in (("prep", "cpu"), ("arm_top", "top"), ("arm_random", "random")):
            user, addr = FRESH_HOSTS[name]
            hosts["all"]["children"][group]["hosts"][name] = {"ansible_host": addr, "ansible_user": user}

    inventory = inventory_variant(tmp_path / "inventory", fresh)
    users = [user for user, _ in FRESH_HOSTS.values()]
    before = {user: home_state(user) for user in users}
    assert not any(".local" in path for state in before.values() for path in state), "a fresh host was set up"
    checked = play("site.yml", lab, inventory=inventory, check=True, diff=True)
    assert checked.ok, failure_text(checked)
    assert {user: home_state(user) for user in users} == before
    for user in users:
        leftovers = list(Path("/home", user, ".ansible").rglob("*"))
        assert all(p.is_dir() and p.name == "tmp" for p in leftovers), leftovers
        procs = subprocess.run(["ps", "-u", user, "-o", "comm="], capture_output=True, text=True).stdout.split()
        assert set(procs) <= {"sshd"}, procs
    # a prediction for every host and every step, in the order a real run would take them
    assert all(checked.hosts[host].changed > 0 for host in FRESH_HOSTS), checked.hosts
    out = checked.stdout
    assert "HEAD (no checkout)" in out  # the diff of the clone
    for host, step in (
        ("cpu", "would write its random arms' shards"),
        ("top", "would download its arm's shards from Azure"),
        ("random", "would receive the random arm's shards from the CPU node"),
        ("cpu", "would train the experiment's tokenizer"),
        ("top", "would receive the tokenizer"),
        ("top", "would launch its arm with torchrun"),
        ("random", "would launch its arm with torchrun"),
    ):
        assert f"{host} is not set up yet: {step}" in out, (host, step)
    assert out.index("would receive the tokenizer") < out.index("would launch its arm")


def test_fresh_gpu_hosts_install_their_venv_in_the_background_while_their_data_arrives(site, lab, tmp_path) -> None:
    """arms_overlap_setup (the default, the lab's too): site.yml on never-set-up GPU hosts, the converged CPU
    node sending. Each host's venv installs in the background while its data's steps run; both arms train,
    the timeline says how long the two ran at once, and a second run changes nothing. The fresh hosts are made
    new again afterwards (the check-mode test above needs them so)."""

    def fresh_gpu_hosts(hosts: dict) -> None:
        for group, name in (("arm_top", "top"), ("arm_random", "random")):
            user, addr = FRESH_HOSTS[name]
            hosts["all"]["children"][group]["hosts"][name] = {"ansible_host": addr, "ansible_user": user}

    fresh = ["fresh-top", "fresh-random"]
    reset = ["bash", os.path.join(ROOT, "scripts", "lab.sh"), "reset", *fresh]
    subprocess.run(reset, check=True, capture_output=True, timeout=600)
    inventory = inventory_variant(tmp_path / "inventory", fresh_gpu_hosts)
    overlap = {"arms_overlap_setup": True}
    try:
        ran = play("site.yml", lab, inventory=inventory, extravars=overlap)
        assert ran.ok, failure_text(ran)
        assert {r["host"] for r in ran.runs} == set(ARMS), ran.runs
        statuses: dict[tuple[str, str], list[str]] = {}
        for task in ran.tasks:
            statuses.setdefault((task["task"], task["host"]), []).append(task["status"])
        # started with poll 0 (not changed yet), ended by async_status after the data's steps (changed)
        start = "Nanochat's dependencies and the runbook's extras are installed in the venv"
        end = "Nanochat's dependencies are installed (the background install ends)"
        for host in ARMS:
            assert statuses.get((start, host)) == ["ok"], (host, statuses.get((start, host)))
            assert "changed" in statuses.get((end, host), []), (host, statuses.get((end, host)))
        idle = {row["host"]: row for row in ran.idle}
        for host in ARMS:
            row = idle[host]
            assert row["launch"] == "launched", row
            # the install's own run time counts as setup, and part of it went on while the data's steps ran
            assert row["overlapped_s"] > 1.0 and "of them at once" in row["line"], row
            parts = sum(row["seconds"].values()) - row["overlapped_s"] + row["waiting_s"]
            assert abs(parts - row["total_s"]) < 1.0, row
        again = play("site.yml", lab, inventory=inventory, extravars=overlap)
        assert again.ok, failure_text(again)
        assert all(stats.changed == 0 for stats in again.hosts.values()), again.hosts
    finally:
        play("playbooks/stop.yml", lab, inventory=inventory)
        subprocess.run(reset, check=True, capture_output=True, timeout=600)
