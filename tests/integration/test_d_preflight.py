"""The comparability preflight refuses, with a sentence naming the host, each way arms can differ."""

from __future__ import annotations

import pytest
from conftest import converge, failure_text, lab_overrides, on_host, play

pytestmark = pytest.mark.lab
DATA = "~/.cache/nanochat/base_data"


@pytest.fixture(scope="module")
def ready(lab):
    converge(lab, "playbooks/setup.yml", "playbooks/data.yml", "playbooks/tokenizer.yml")
    baseline = play("playbooks/preflight.yml", lab)
    assert baseline.ok, failure_text(baseline)
    return lab


def refused(lab, **kw) -> str:
    summary = play("playbooks/preflight.yml", lab, **kw)
    assert not summary.ok
    assert not summary.runs
    return failure_text(summary)


def repair_top(lab) -> None:
    summary = play("playbooks/repair.yml", lab, tags="checkout,crlf,tf32", limit="top")
    assert summary.ok, failure_text(summary)


def test_a_different_commit_is_refused(ready) -> None:
    on_host("top", "git -C ~/nanochat checkout -q -f HEAD~1")  # the real commit before the pin
    try:
        text = refused(ready)
        assert "top: nanochat is at" in text or "different nanochat commits" in text
        # the repair names the inventory this run was given (the lab's), ready to paste
        assert "ansible-playbook playbooks/repair.yml -i inventory/lab/ --tags checkout" in text
    finally:
        repair_top(ready)


def test_a_different_tokenizer_is_refused(ready) -> None:
    on_host("top", "printf 'x' >> ~/.cache/nanochat/tokenizer/token_bytes.pt")
    text = refused(ready)
    assert "top: its tokenizer files differ" in text or "random: its tokenizer files differ" in text
    restored = play("playbooks/tokenizer.yml", ready)
    assert restored.ok, failure_text(restored)


def test_a_missing_shared_val_shard_is_refused(ready) -> None:
    on_host("top", f"rm {DATA}/shard_val.parquet")
    text = refused(ready)
    assert "top (top16.5): the last file in sort order is shard_" in text
    restored = play("playbooks/data.yml", ready, tags="val")
    assert restored.ok, failure_text(restored)
    assert play("playbooks/preflight.yml", ready).ok


def test_an_arm_with_its_own_hyperparameter_is_refused(ready) -> None:
    ov = lab_overrides()
    ov["arms"]["top16.5"]["model"] = {"depth": 12}
    text = refused(ready, extravars={"experiment_overrides": ov})
    assert "arm top16.5 sets model of its own" in text


def test_a_stray_climbmix_folder_read_by_newer_nanochat_is_refused(ready) -> None:
    on_host(
        "top",
        # 324e69c: real nanochat's first commit that reads base_data_climbmix when it exists
        "git -C ~/nanochat checkout -q -f 324e69c && mkdir -p ~/.cache/nanochat/base_data_climbmix"
        f" && cp {DATA}/shard_00000.parquet ~/.cache/nanochat/base_data_climbmix/",
    )
    try:
        text = refused(ready)
        assert "base_data_climbmix" in text and "top (top16.5): nanochat will read" in text
    finally:
        on_host("top", "rm -rf ~/.cache/nanochat/base_data_climbmix")
        repair_top(ready)


def test_too_little_data_is_refused_when_arms_would_repeat_differently(ready) -> None:
    ov = lab_overrides()
    ov["model"]["extra_flags"]["num-iterations"] = 100000
    text = refused(ready, extravars={"experiment_overrides": ov, "arms_repeat_tolerance": 0.001})
    assert "arms repeat their data differently" in text
    warned = play("playbooks/preflight.yml", ready, extravars={"experiment_overrides": ov})
    assert warned.ok, failure_text(warned)
    assert "will repeat data" in warned.stdout
