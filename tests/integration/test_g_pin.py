"""A run knows what it was made from: moving the nanochat pin retrains the tokenizer and refuses the old run."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from conftest import ROOT, converge, failure_text, lab_overrides, on_host, play

pytestmark = pytest.mark.lab
# real nanochat's 2026-02-18 commit (TF32 already fixed, base_data, dashed flags): another pin that
# the lab's settings train with
OTHER_PIN = "0a23f87"
INPUTS = "~/.local/share/nanochat-arms/tokenizer_base/inputs.json"


def pinned(commit: str | None) -> dict:
    ov = lab_overrides()
    if commit:
        ov["nanochat"]["commit"] = commit
    return {"experiment_overrides": ov}


def task_status(summary, name: str, host: str) -> str:
    return next(t["status"] for t in summary.tasks if t["task"] == name and t["host"] == host)


@pytest.fixture(scope="module")
def finished(lab):
    """Both lab arms trained to the end at the experiment's own pin."""
    converge(lab, "playbooks/setup.yml", "playbooks/data.yml", "playbooks/tokenizer.yml", "playbooks/train.yml")
    converge(lab, "playbooks/collect.yml", extravars={"arms_collect_wait": True})
    return lab


def test_a_pin_change_retrains_the_tokenizer_and_refuses_the_old_finished_run(finished) -> None:
    lab = finished
    before = json.loads(on_host("cpu", f"cat {INPUTS}").stdout)
    try:
        moved = play("playbooks/setup.yml", lab, extravars=pinned(OTHER_PIN))
        assert moved.ok, failure_text(moved)
        # the tokenizer's inputs changed (the commit): it is trained again, and says from what
        tok = play("playbooks/tokenizer.yml", lab, extravars=pinned(OTHER_PIN))
        assert tok.ok, failure_text(tok)
        assert task_status(tok, "Tokenizer training is waited for (progress below)", "cpu") == "changed"
        after = json.loads(on_host("cpu", f"cat {INPUTS}").stdout)
        assert after["commit"].startswith(OTHER_PIN) and after["commit"] != before["commit"]
        assert after["data_manifest_sha256"] == before["data_manifest_sha256"]

        # the finished runs were made at the old pin: not this experiment's result any more
        refused = play("playbooks/train.yml", lab, extravars=pinned(OTHER_PIN))
        assert not refused.ok and not any(r["changed"] for r in refused.runs)  # nothing launched
        text = failure_text(refused)
        assert "finished but was made from something else than the experiment declares now" in text
        assert "nanochat commit" in text and "-e arms_force_restart=true" in text and "new run_name" in text
        status = play("playbooks/status.yml", lab, extravars=pinned(OTHER_PIN))
        assert status.ok and "It is stale: nanochat commit" in status.stdout

        collected = play("playbooks/collect.yml", lab, extravars=pinned(OTHER_PIN))
        assert collected.ok, failure_text(collected)
        table = (Path(ROOT) / "results" / lab_overrides()["name"] / "results.md").read_text()
        rows = [line for line in table.splitlines() if line.startswith(("| top16.5 ", "| random16.5 "))]
        assert len(rows) == 2 and all("| STALE, not this experiment's result: nanochat commit" in r for r in rows)
    finally:
        back = play("playbooks/setup.yml", lab, extravars=pinned(None))
        assert back.ok, failure_text(back)
        retrained = play("playbooks/tokenizer.yml", lab)
        assert retrained.ok, failure_text(retrained)
    # back at the pin, the tokenizer is retrained from the same inputs as before
    assert json.loads(on_host("cpu", f"cat {INPUTS}").stdout) == before
    # and a tokenizer run with unchanged inputs trains nothing
    again = play("playbooks/tokenizer.yml", lab)
    assert again.ok and task_status(again, "Tokenizer is trained on the CPU node (once)", "cpu") == "skipped"
