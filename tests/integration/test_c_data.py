"""Data delivery in the lab: host-to-host transfer, verification, repair, no standing trust."""

from __future__ import annotations

import json

import pytest
from conftest import failure_text, inventory_variant, lab_overrides, on_host, play

pytestmark = pytest.mark.lab
DATA = "~/.cache/nanochat/base_data"
PREPARED = "~/.local/share/nanochat-arms/prepared/random16.5/base_data"


@pytest.fixture(scope="module")
def data(lab):
    setup = play("playbooks/setup.yml", lab)
    assert setup.ok, failure_text(setup)
    ready = play("playbooks/data.yml", lab)
    assert ready.ok, failure_text(ready)
    return lab


def manifest(host: str, folder: str = DATA) -> dict:
    return json.loads(on_host(host, f"cat {folder}/manifest.json").stdout)


def no_transfer_trust_left() -> None:
    keys = on_host("random", "cat ~/.ssh/authorized_keys").stdout
    assert "arms-transfer" not in keys
    left = on_host("cpu", "ls ~/.local/share/nanochat-arms/ | grep -c '^transfer-' || true").stdout.strip()
    assert left == "0"


def test_random_shards_arrive_verified_and_a_rerun_sends_nothing(data) -> None:
    sent = manifest("cpu", PREPARED)
    got = manifest("random")
    assert [s["sha256"] for s in sent["shards"]] == [s["sha256"] for s in got["shards"]]
    for shard in got["shards"]:
        digest = on_host("random", f"sha256sum {DATA}/{shard['name']}").stdout.split()[0]
        assert digest == shard["sha256"]
    again = play("playbooks/transfer_random.yml", data)
    assert again.ok, failure_text(again)
    assert {h: s.changed for h, s in again.hosts.items()} == dict.fromkeys(again.hosts, 0)
    # the receiver already matches the sender's manifest: no key, no rsync, nothing sent
    started = [
        t["task"]
        for t in again.tasks
        if t["status"] != "skipped" and t["task"].startswith(("Files are sent", "Transfer key"))
    ]
    assert started == [], started
    no_transfer_trust_left()


def test_truncated_shard_on_the_receiver_is_repaired_by_a_rerun(data) -> None:
    name = manifest("random")["shards"][1]["name"]
    on_host("random", f"truncate -s 1000 {DATA}/{name}")
    summary = play("playbooks/transfer_random.yml", data)
    assert summary.ok, failure_text(summary)
    assert summary.hosts["random"].changed >= 1
    expected = next(s["sha256"] for s in manifest("cpu", PREPARED)["shards"] if s["name"] == name)
    assert on_host("random", f"sha256sum {DATA}/{name}").stdout.split()[0] == expected
    no_transfer_trust_left()


def test_transfer_key_is_removed_after_a_failed_transfer(data) -> None:
    name = manifest("random")["shards"][0]["name"]
    # the receiver lacks a shard the sender cannot read: rsync fails part-way
    on_host("random", f"rm {DATA}/{name}")
    on_host("cpu", f"chmod 000 {PREPARED}/{name}")
    try:
        summary = play("playbooks/transfer_random.yml", data)
        assert not summary.ok
        assert "Permission denied" in failure_text(summary) or "rsync" in failure_text(summary)
        no_transfer_trust_left()
    finally:
        on_host("cpu", f"chmod 644 {PREPARED}/{name}")
    repaired = play("playbooks/transfer_random.yml", data)
    assert repaired.ok, failure_text(repaired)
    no_transfer_trust_left()


def test_prepare_mode_skip_with_a_corrupt_shard_fails_with_a_sentence(data) -> None:
    name = manifest("random")["shards"][2]["name"]
    # same size, different bytes: only the sha256 can tell
    on_host("random", f"printf 'XXXX' | dd of={DATA}/{name} bs=1 seek=100 conv=notrunc status=none")
    ov = lab_overrides()
    ov["arms"]["random16.5"]["data"]["prepare_mode"] = "skip"
    summary = play("playbooks/transfer_random.yml", data, extravars={"experiment_overrides": ov})
    assert not summary.ok
    text = failure_text(summary)
    assert "does not match its manifest" in text and name in text and "wrong sha256" in text
    assert not any(t["task"].startswith("Files are sent") for t in summary.tasks if t["status"] != "skipped")
    repaired = play("playbooks/transfer_random.yml", data)
    assert repaired.ok, failure_text(repaired)


def test_prepare_random_on_a_complete_data_dir_changes_nothing(data) -> None:
    again = play("playbooks/prepare_random.yml", data)
    assert again.ok, failure_text(again)
    assert again.hosts["cpu"].changed == 0
    ran = [t["task"] for t in again.tasks if t["host"] == "cpu" and t["status"] != "skipped"]
    assert any(task.startswith("Shards are being written") for task in ran), ran


def test_prepare_random_refuses_a_prep_host_that_is_also_a_gpu_host(data, tmp_path) -> None:
    # the lab's inventory, but the CPU node is also put in the top arm's group: sharding there is refused
    def cpu_in_arm_top(hosts: dict) -> None:
        hosts["all"]["children"]["arm_top"]["hosts"]["cpu"] = None

    inventory = inventory_variant(tmp_path / "inventory", cpu_in_arm_top)
    summary = play("playbooks/prepare_random.yml", data, inventory=inventory)
    assert not summary.ok
    text = failure_text(summary)
    assert "never shards on a" in text and "arm_top" in text, text
