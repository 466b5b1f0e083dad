"""The comparability preflight refuses, with a sentence naming the host, each way arms can differ."""

from __future__ import annotations

import re

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


TOOLS_PY = "~/.local/share/nanochat-arms/tools/bin/python"
ROW_GROUPS = (
    "import glob, os, sys, pyarrow.parquet as pq; d = os.path.expanduser(sys.argv[1]); "
    "print(max(pq.ParquetFile(f).metadata.num_row_groups for f in sorted(glob.glob(d + '/*.parquet'))[:-1]))"
)


def most_row_groups(host: str) -> int:
    """The most row groups any training file of the host's arm has (every file but the last, the val shard)."""
    return int(on_host(host, f"{TOOLS_PY} -c {ROW_GROUPS!r} {DATA}").stdout.strip())


def test_a_world_larger_than_the_row_groups_is_refused_for_both_arms(ready) -> None:
    # nanochat's loader gives rank r the row groups r, r+W, ... of each file: a rank past every training
    # file's row groups gets none and spins forever without a word. One rank more than the largest file
    # of either arm has row groups makes the last rank starve on both (the Azure arm and the random arm).
    world = max(most_row_groups("top"), most_row_groups("random")) + 1
    ov = lab_overrides()
    ov["model"]["gpus_per_node"] = world
    ov["model"]["total_batch_size"] = 32 * 64 * world  # device batch x sequence x world: the batch rule holds
    text = refused(ready, extravars={"experiment_overrides": ov})
    for host, arm in (("top", "top16.5"), ("random", "random16.5")):
        starved = rf"{host} \({re.escape(arm)}\): ranks? [0-9, ]*{world - 1} of {world} ha(s|ve) no row group in shard_"
        assert re.search(starved, text), text


def test_a_killed_preps_folder_is_never_sent(ready) -> None:
    # what a prep killed midway leaves: shards, and no manifest that matches them
    prepared = "~/.local/share/nanochat-arms/prepared/random16.5/base_data"
    on_host("cpu", f"mv {prepared}/manifest.json {prepared}/../manifest.json.kept")
    try:
        summary = play("playbooks/transfer_random.yml", ready)
        assert not summary.ok
        text = failure_text(summary)
        assert "random16.5/base_data has no manifest.json" in text and "killed midway" in text, text
        assert not any(t["task"].startswith("Files are sent") for t in summary.tasks if t["status"] != "skipped")
    finally:
        on_host("cpu", f"mv {prepared}/../manifest.json.kept {prepared}/manifest.json")
    assert play("playbooks/transfer_random.yml", ready).ok


def test_an_arm_of_a_single_parquet_file_is_refused(ready) -> None:
    # nanochat takes the last file as validation: with one file no rank has anything to train on
    on_host("top", f"mkdir -p ~/held-out && mv {DATA}/shard_0*.parquet ~/held-out/")
    try:
        text = refused(ready)
        assert "top (top16.5): the arm has 1 parquet file (shard_val.parquet)" in text, text
    finally:
        on_host("top", f"mv ~/held-out/*.parquet {DATA}/ && rmdir ~/held-out")
    assert play("playbooks/preflight.yml", ready).ok
