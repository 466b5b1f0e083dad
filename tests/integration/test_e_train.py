"""Training arms in the lab: launch in parallel, no double launch, a killed run diagnosed, stop, multi-node."""

from __future__ import annotations

import json
import time

import pytest
from conftest import failure_text, lab_overrides, on_host, play

pytestmark = pytest.mark.lab
ARMS = {"top": "top16.5", "random": "random16.5"}
LONG = {"arms_allow_unequal_repeats": True}


def long_run() -> dict:
    ov = lab_overrides()
    ov["model"]["extra_flags"]["num-iterations"] = 100000
    return {"experiment_overrides": ov, **LONG}


@pytest.fixture(scope="module")
def converged(lab):
    for playbook in ("playbooks/setup.yml", "playbooks/data.yml", "playbooks/tokenizer.yml"):
        summary = play(playbook, lab)
        assert summary.ok, failure_text(summary)
    yield lab
    play("playbooks/stop.yml", lab)


def train_procs(host: str) -> str:
    user = {"top": "arms-top", "random": "arms-random", "random2": "arms-random2"}[host]
    return on_host(host, f"pgrep -u {user} -f 'scripts[.]base_train' || true").stdout.strip()


def test_parallel_launch_no_double_launch_killed_run_diagnosed_and_stop(converged) -> None:
    lab = converged
    first = play("playbooks/train.yml", lab, extravars={**long_run(), "arms_force_restart": True})
    assert first.ok, failure_text(first)
    runs = {r["host"]: r for r in first.runs}
    assert set(runs) == set(ARMS) and all(first.hosts[h].changed >= 1 for h in ARMS)
    for host in ARMS:
        assert train_procs(host), f"no training process on {host}"

    again = play("playbooks/train.yml", lab, extravars=long_run())
    assert again.ok, failure_text(again)
    assert {h: again.hosts[h].changed for h in ARMS} == dict.fromkeys(ARMS, 0)
    assert {r["host"]: r["pid"] for r in again.runs} == {h: r["pid"] for h, r in runs.items()}

    # the random arm's whole process group dies by SIGKILL (an OOM killer, a node reboot)
    record = json.loads(on_host("random", f"cat {runs['random']['log'].replace('.log', '.pid.json')}").stdout)
    on_host("random", f"kill -9 -- -{record['pgid']}")
    time.sleep(1)
    status = play("playbooks/status.yml", lab)
    assert status.ok, failure_text(status)
    assert "random | random16.5 | NOT RUNNING" in status.stdout
    assert "top | top16.5 | alive pid" in status.stdout
    assert "random: " in status.stdout and "->" in status.stdout  # a diagnosis line with its repair
    assert "playbooks/train.yml -i inventory/lab/ " in status.stdout  # naming the inventory in use
    assert "[WARNING]" not in status.stdout, "a run through ansible-runner warns"  # e.g. a callback not loaded
    assert "random log | step 0" in status.stdout  # and the dead run's last log lines

    stop = play("playbooks/stop.yml", lab)
    assert stop.ok, failure_text(stop)
    assert "top: " in stop.stdout and "stopped" in stop.stdout
    for host in ARMS:
        assert not train_procs(host), f"training still runs on {host}"


def test_an_arm_spanning_two_hosts_trains_multi_node(lab) -> None:
    inventory = "inventory/lab-2node/"
    for playbook in ("playbooks/setup.yml", "playbooks/data.yml", "playbooks/tokenizer.yml"):
        summary = play(playbook, lab, inventory=inventory)
        assert summary.ok, failure_text(summary)
    try:
        trained = play("playbooks/train.yml", lab, inventory=inventory, extravars={"arms_force_restart": True})
        assert trained.ok, failure_text(trained)
        runs = {r["host"]: r for r in trained.runs}
        assert set(runs) == {"random", "random2"}
        argv = {
            h: " ".join(json.loads(on_host(h, f"cat {r['log'].replace('.log', '.pid.json')}").stdout)["argv"])
            for h, r in runs.items()
        }
        assert "--nnodes=2" in argv["random"] and "--node_rank=0" in argv["random"]
        assert "--nnodes=2" in argv["random2"] and "--node_rank=1" in argv["random2"]
        log = on_host("random", f"cat {runs['random']['log']}").stdout
        assert "step 0" in log
        # the val shard has at least world size (4) row groups: every rank of both nodes validates
        assert "Step 00000 | Validation bpb:" in log
    finally:
        play("playbooks/stop.yml", lab, inventory=inventory)
