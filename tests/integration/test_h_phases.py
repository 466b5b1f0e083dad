"""Pay for GPUs only while they train: the CPU phase runs with the GPU hosts absent; site.yml then reuses it."""

from __future__ import annotations

import socket
from typing import Any

import pytest
from conftest import failure_text, inventory_variant, lab_overrides, on_host, play

pytestmark = pytest.mark.lab
ABSENT = "127.0.0.99"  # no sshd listens there: the GPU nodes are not rented yet
PREP = "~/.local/share/nanochat-arms"


def gpu_hosts_absent(hosts: dict[str, Any]) -> None:
    for group, name in (("arm_top", "top"), ("arm_random", "random")):
        hosts["all"]["children"][group]["hosts"][name]["ansible_host"] = ABSENT


def task_results(summary: Any, name: str, host: str = "cpu") -> list[str]:
    return [t["status"] for t in summary.tasks if t["host"] == host and t["task"] == name]


@pytest.fixture(scope="module")
def cpu_phase(lab, tmp_path_factory) -> dict[str, Any]:
    """The CPU phase from scratch (shards and tokenizer removed on the CPU node), with the GPU hosts absent."""
    with pytest.raises(OSError):
        socket.create_connection((ABSENT, 2222), timeout=3).close()
    on_host(
        "cpu", f"rm -rf {PREP}/prepared/random16.5 {PREP}/tokenizer_base/tokenizer {PREP}/tokenizer_base/inputs.json"
    )
    inventory = inventory_variant(tmp_path_factory.mktemp("absent") / "inventory", gpu_hosts_absent)
    summary = play("playbooks/cpu_phase.yml", lab, inventory=inventory)
    return {"summary": summary, "inventory": inventory}


def test_the_cpu_phase_needs_no_gpu_host_and_says_what_comes_next(cpu_phase) -> None:
    summary = cpu_phase["summary"]
    assert summary.ok, failure_text(summary)
    assert set(summary.hosts) == {"cpu"}, "a GPU host was contacted"
    assert task_results(summary, "Shards are written (progress below)") == ["changed"]
    assert task_results(summary, "Tokenizer training is waited for (progress below)") == ["changed"]
    done = [line for line in summary.stdout.splitlines() if "CPU-side work done (" in line]
    assert done, summary.stdout[-3000:]
    line = done[0]
    assert "rent the GPU nodes and run site.yml" in line
    assert "tokenizer trained" in line
    assert "random16.5" in line or "training shards" in line
    assert "top16.5: " in line and " shards in quratingfiltered/top16.5/" in line and "its GPU node needs" in line


def test_site_then_reuses_the_cpu_phase_and_redoes_none_of_it(cpu_phase, lab) -> None:
    summary = play("site.yml", lab)
    assert summary.ok, failure_text(summary)
    assert task_results(summary, "Shards are written (progress below)") == ["ok"], "sharding ran again"
    assert task_results(summary, "Tokenizer is trained on the CPU node (once)") == ["skipped"]
    assert task_results(summary, "Tokenizer training is waited for (progress below)") == ["skipped"]
    assert "CPU-side work done (" in summary.stdout and "the GPU phase follows" in summary.stdout
    # the same bytes as before (deterministic shards, byte-identical tokenizer): the finished runs stand
    assert all(r["changed"] is False for r in summary.runs), summary.runs


def test_a_wrong_azure_prefix_stops_the_cpu_phase_before_any_gpu_is_rented(cpu_phase, lab) -> None:
    overrides = lab_overrides()
    overrides["arms"]["top16.5"]["data"]["prefix"] = "top17/"
    summary = play(
        "playbooks/cpu_phase.yml", lab, inventory=cpu_phase["inventory"], extravars={"experiment_overrides": overrides}
    )
    assert not summary.ok
    text = failure_text(summary)
    assert "arm top16.5: Azure container quratingfiltered/top17/ holds no .parquet shards" in text, text
    assert "before renting the GPU nodes" in text
    assert set(summary.hosts) == {"cpu"}
