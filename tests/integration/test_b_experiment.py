"""The whole experiment in the lab (site.yml): data, tokenizer, preflight, both arms training, status, stop."""

from __future__ import annotations

import json
import time

import pytest
from conftest import failure_text, on_host, play

pytestmark = pytest.mark.lab
ARM_HOSTS = {"top": "top16.5", "random": "random16.5"}


@pytest.fixture(scope="module")
def experiment(lab):
    """site.yml once (both arms launched), then site.yml again (nothing new)."""
    first = play("site.yml", lab)
    assert first.ok, failure_text(first)
    second = play("site.yml", lab)
    yield lab, first, second
    play("playbooks/stop.yml", lab)


def test_both_arms_launched_and_seen_training(experiment) -> None:
    _, first, _ = experiment
    runs = {r["host"]: r for r in first.runs}
    assert set(runs) == set(ARM_HOSTS)
    for host, arm in ARM_HOSTS.items():
        assert runs[host]["arm"] == arm and runs[host]["pid"]
        log = on_host(host, f"cat {runs[host]['log']}").stdout
        assert "step 0" in log, log[-2000:]
    # launched in parallel: one launch task ran on both hosts at once, not once a host, one after the other
    launches = [t for t in first.tasks if t["task"] == "The arm's run is started" and t["status"] != "skipped"]
    assert {t["host"] for t in launches} == set(ARM_HOSTS)
    assert len({t["uuid"] for t in launches}) == 1, launches


def test_second_site_run_changes_nothing_and_launches_nothing(experiment) -> None:
    _, first, second = experiment
    assert second.ok, failure_text(second)
    assert {h: s.changed for h, s in second.hosts.items()} == dict.fromkeys(second.hosts, 0), [
        (t["host"], t["task"]) for t in second.tasks if t["status"] == "changed"
    ]
    pids_first = {r["host"]: r["pid"] for r in first.runs}
    pids_second = {r["host"]: r["pid"] for r in second.runs}
    assert pids_first == pids_second


def test_each_arm_trains_on_its_own_shards_with_the_shared_val_shard(experiment) -> None:
    files = {}
    for host in ARM_HOSTS:
        manifest = json.loads(on_host(host, "cat ~/.cache/nanochat/base_data/manifest.json").stdout)
        names = [s["name"] for s in manifest["shards"]]
        assert names[-1] == "shard_val.parquet"
        assert sorted(names) == names
        files[host] = {s["name"]: s["sha256"] for s in manifest["shards"]}
    assert files["top"]["shard_val.parquet"] == files["random"]["shard_val.parquet"]
    train_top = {v for k, v in files["top"].items() if k != "shard_val.parquet"}
    train_random = {v for k, v in files["random"].items() if k != "shard_val.parquet"}
    assert train_top and train_random and not (train_top & train_random)


def test_tokenizer_is_the_same_on_every_arm_host_and_trained_on_the_cpu_node(experiment) -> None:
    sums = {h: on_host(h, "cd ~/.cache/nanochat/tokenizer && sha256sum tokenizer.pkl").stdout for h in ARM_HOSTS}
    assert len(set(sums.values())) == 1
    assert on_host("cpu", "test -f ~/.local/share/nanochat-arms/tokenizer_base/tokenizer/tokenizer.pkl").returncode == 0


def test_status_shows_parsed_progress(experiment) -> None:
    lab, _, _ = experiment
    time.sleep(3)
    status = play("playbooks/status.yml", lab)
    assert status.ok, failure_text(status)
    table = status.stdout
    for host, arm in ARM_HOSTS.items():
        assert f"{host} | {arm} |" in table
    assert "step " in table and "loss" in table
