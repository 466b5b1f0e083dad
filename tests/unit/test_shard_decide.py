"""What a random-subset run decides to do with a data dir (arms_shard_decide), from plain data.

Each case is what a user finds in the folder; the decision is what the run does, and check mode's
prediction comes from the same decision.
"""

from __future__ import annotations

import pytest
from ansible.module_utils.arms_shard_decide import (
    PREPARE,
    REFUSE,
    REPAIR,
    REPLACE,
    RESUME,
    REUSE,
    Decision,
    Found,
    Wanted,
    decide,
    decide_after_listing,
    prediction,
)

SOURCE = {"kind": "local", "dataset": "/data/fortified", "config": None, "split": "train"}
PARAMS = {"ratio": 0.165, "seed": 42, "rows_per_shard": 14000, "world_size": 8, "rule": "r1"}
WANTED = Wanted("random_subset", SOURCE, PARAMS, "/d/base_data", "/d/.arms-work-base_data", "/d/arms_val")
OURS = {"kind": "random_subset", "source": SOURCE, "params": PARAMS, "shards": []}
PARTS = [["/data/fortified/a.parquet", 100]]
STATE = {"source": SOURCE, "params": PARAMS, "parts": PARTS}
CLI = "pass --force"
TASK = "set force: true on the nanochat_random_subset task"


def test_an_empty_place_is_prepared_and_check_mode_says_write() -> None:
    decision = decide(Found(), WANTED, force=False)
    assert decision == Decision(PREPARE)
    assert prediction(decision, WANTED) == (True, "would write /d/base_data")


def test_a_complete_data_dir_is_reused_and_check_mode_says_nothing_to_do() -> None:
    decision = decide(Found(manifest=OURS), WANTED, force=False)
    assert decision.action == REUSE and not decision.remove and not decision.restore_val
    assert prediction(decision, WANTED) == (False, "/d/base_data is complete; nothing to do.")


def test_a_lost_val_artifact_is_restored() -> None:
    decision = decide(Found(manifest=OURS, val_ok=False), WANTED, force=False)
    assert decision.action == REUSE and decision.restore_val
    assert prediction(decision, WANTED) == (True, "would restore the validation artifact in /d/arms_val")


def test_damaged_shards_are_repaired_and_named() -> None:
    bad = ("shard_00001.parquet", "shard_00002.parquet", "shard_00007.parquet", "shard_00009.parquet")
    decision = decide(Found(manifest=OURS, bad=bad), WANTED, force=False)
    assert decision.action == REPAIR and decision.repair == bad
    changed, msg = prediction(decision, WANTED)
    assert changed and msg == (
        "would repair /d/base_data: rewrite shard_00001.parquet, shard_00002.parquet, shard_00007.parquet and 1 more"
    )


@pytest.mark.parametrize("hint", [CLI, TASK])
def test_foreign_parquet_beside_our_shards_is_refused_naming_the_callers_switch(hint: str) -> None:
    decision = decide(Found(manifest=OURS, extra=("climbmix.parquet",)), WANTED, force=False, force_hint=hint)
    assert decision.action == REFUSE
    assert decision.refusal == (
        "/d/base_data holds parquet files this run did not make (climbmix.parquet); nanochat would train on them "
        f"too: {hint} to replace the data dir whole, or choose another data_dir."
    )


def test_with_force_foreign_parquet_is_removed_even_while_repairing() -> None:
    found = Found(manifest=OURS, extra=("climbmix.parquet",))
    assert decide(found, WANTED, force=True) == Decision(REUSE, remove=("climbmix.parquet",))
    assert prediction(decide(found, WANTED, force=True), WANTED) == (True, "would remove climbmix.parquet")
    damaged = Found(manifest=OURS, extra=("climbmix.parquet",), bad=("shard_00000.parquet",))
    assert decide(damaged, WANTED, force=True).remove == ("climbmix.parquet",)


@pytest.mark.parametrize(("hint", "words"), [(CLI, "pass --force to replace it whole"), (TASK, TASK)])
def test_other_parameters_are_refused_with_the_differences_and_the_switch(hint: str, words: str) -> None:
    old = {**OURS, "params": {**PARAMS, "ratio": 0.3, "rule": "r0"}}
    decision = decide(Found(manifest=old), WANTED, force=False, force_hint=hint)
    assert decision.action == REFUSE
    assert "holds shards made with other parameters (ratio 0.3 -> 0.165, the sampling rule" in decision.refusal
    assert words in decision.refusal and "force=true" not in decision.refusal
    replaced = decide(Found(manifest=old), WANTED, force=True)
    assert replaced == Decision(REPLACE)
    assert prediction(replaced, WANTED) == (True, "would replace /d/base_data")


def test_an_interrupted_run_is_resumed_while_its_parameters_and_files_are_the_same() -> None:
    found = Found(state=STATE, parquet=("shard_00000.parquet",))  # its own shards, written before the kill
    decision = decide(found, WANTED, force=False)
    assert decision == Decision(RESUME)
    assert decide_after_listing(decision, found, PARTS, WANTED, force=False) == Decision(RESUME)
    assert prediction(decision, WANTED) == (True, "would resume /d/base_data")
    grown = [["/data/fortified/a.parquet", 200]]
    refused = decide_after_listing(decision, found, grown, WANTED, force=False, force_hint=CLI)
    assert refused.action == REFUSE and refused.refusal == (
        "the source's files changed since the interrupted run in /d/.arms-work-base_data started; pass --force "
        "to start over from the current files."
    )
    assert decide_after_listing(decision, found, grown, WANTED, force=True) == Decision(REPLACE)


def test_an_interrupted_run_with_other_parameters_is_refused_or_replaced() -> None:
    found = Found(state={**STATE, "params": {**PARAMS, "seed": 7}})
    refused = decide(found, WANTED, force=False, force_hint=TASK)
    assert refused.action == REFUSE
    assert "an interrupted run with other parameters" in refused.refusal and "seed 7 -> 42" in refused.refusal
    assert f"{TASK} to replace it, or re-run with the same parameters" in refused.refusal
    assert decide(found, WANTED, force=True) == Decision(REPLACE)


def test_parquet_files_without_a_manifest_are_foreign() -> None:
    found = Found(parquet=("shard_00000.parquet",))
    assert decide(found, WANTED, force=False, force_hint=CLI).refusal.endswith(
        "pass --force to replace the data dir whole, or choose another data_dir."
    )
    assert decide(found, WANTED, force=True) == Decision(REPLACE)


def test_a_refusal_has_no_prediction() -> None:
    with pytest.raises(ValueError, match="a refusal has no prediction"):
        prediction(Decision(REFUSE, refusal="no"), WANTED)
