"""The preflight's checks, each alone on the smallest facts that show it, then ``compare`` over all of them."""

from __future__ import annotations

import copy
from typing import Any

import pytest
from ansible.module_utils.arms_common import ArmsError
from ansible.module_utils.arms_preflight import (
    VAL_NAME,
    check_arm_settings,
    check_commits,
    check_data,
    check_flags,
    check_host_data,
    check_hyperparameters,
    check_nanochat_reads,
    check_rank_shares,
    check_resources,
    check_tokenizers,
    check_val_shard,
    check_world_sizes,
    compare,
    data_budget,
    val_reference,
)
from modtest import run_module

PIN = "a" * 40
MINE = "-i inventory-mine/"
MODEL = {
    "depth": 4,
    "device_batch_size": 2,
    "total_batch_size": 512,
    "gpus_per_node": 2,
    "extra_flags": {"max_seq_len": 128},
}
MODEL_10_STEPS = {**MODEL, "extra_flags": {"max_seq_len": 128, "num_iterations": 10}}
ARMS = {"top": {"run_name": "dummy", "data": {}}, "random": {"run_name": "dummy", "data": {}}}
HOSTS_OF = {"top": ["gpu-a"], "random": ["gpu-b"]}


def host_facts(name: str) -> dict[str, Any]:
    """Facts of an arm host that passes every check."""
    data_dir = f"/data/{name}/base_data"
    files = ["shard_00000.parquet", "shard_00001.parquet", VAL_NAME]
    return {
        "commit": PIN,
        "tf32": "already_fixed",
        "tokenizer": {"tokenizer.pkl": "t" * 64},
        "data_dir": data_dir,
        "base_dir": f"/data/{name}",
        "manifest": True,
        "verify": {"ok": 3, "bad": [], "extra": [], "summary": "3 ok"},
        "manifest_files": files,
        "held": {"tokens": 10_000_000},
        "last_file": VAL_NAME,
        "last_sha256": "v" * 64,
        "nanochat": {"ok": True, "files": [f"{data_dir}/{f}" for f in files]},
        # two row groups a file: each of the arm's 2 ranks (gpus_per_node 2, one host) reads one
        "row_groups": {f: [1024, 1024] for f in files},
        "free_bytes": 10**12,
        "gpus": 2,
        "wandb_key": True,
    }


@pytest.fixture
def facts() -> dict[str, dict[str, Any]]:
    return {"gpu-a": host_facts("a"), "gpu-b": host_facts("b")}


def test_commits_must_be_the_pin_with_tf32_fixed_everywhere(facts) -> None:
    assert check_commits(facts, ["gpu-a", "gpu-b"], PIN, MINE) == []
    facts["gpu-b"]["commit"] = "b" * 40
    facts["gpu-b"]["tf32"] = "needs_patch"
    problems = check_commits(facts, ["gpu-a", "gpu-b"], PIN, MINE)
    assert problems[0] == (
        f"gpu-b: nanochat is at bbbbbbbbbbbb but the experiment pins aaaaaaaaaaaa; move it with: "
        f"ansible-playbook playbooks/repair.yml {MINE} --tags checkout -l gpu-b"
    )
    assert "new fp32_precision API" in problems[1] and problems[1].endswith("--tags tf32 -l gpu-b")
    assert problems[2].startswith("arm hosts are at different nanochat commits")
    assert problems[3].startswith("arm hosts differ in their TF32 patch state")


def test_arms_may_set_only_their_data() -> None:
    assert check_arm_settings(ARMS) == []
    problems = check_arm_settings({**ARMS, "top": {"data": {}, "depth": 26}})
    assert problems == [
        "arm top sets depth of its own; arms may differ only in their data: move model settings to "
        "experiment.model (shared by every arm)."
    ]


def test_arms_train_on_as_many_gpus() -> None:
    assert check_world_sizes(ARMS, HOSTS_OF, MODEL) == []
    problems = check_world_sizes(ARMS, {"top": ["gpu-a"], "random": ["gpu-b", "gpu-c"]}, MODEL)
    assert problems and "(top: 2, random: 4)" in problems[0]


def test_nanochats_batch_rules_hold_for_every_arm() -> None:
    assert check_hyperparameters(ARMS, HOSTS_OF, MODEL) == []
    problems = check_hyperparameters(ARMS, HOSTS_OF, {**MODEL, "total_batch_size": 1000})
    assert len(problems) == 2 and problems[0].startswith("arm top: total batch size 1000 is not a multiple")
    # nanochat's default sequence length when the experiment gives none
    assert "max seq len 2048" in check_hyperparameters(ARMS, HOSTS_OF, {**MODEL, "extra_flags": {}})[0]


def test_arms_launch_with_the_same_flags_whatever_their_run_names() -> None:
    named = {"top": {"run_name": "exp-top"}, "random": {"run_name": "exp-random"}}
    assert check_flags(named, MODEL) == []


def test_every_arm_host_has_the_one_tokenizer(facts) -> None:
    assert check_tokenizers(facts, ["gpu-a", "gpu-b"], MINE) == []
    facts["gpu-b"]["tokenizer"] = {"tokenizer.pkl": "x" * 64}
    facts["gpu-a"]["tokenizer"] = {}
    problems = check_tokenizers(facts, ["gpu-a", "gpu-b"], MINE)
    assert problems == [
        "gpu-a: no tokenizer in /data/a/tokenizer; train it once on the CPU node and copy it with: "
        f"ansible-playbook playbooks/tokenizer.yml {MINE}"
    ]
    facts["gpu-a"]["tokenizer"] = {"tokenizer.pkl": "t" * 64}
    assert "its tokenizer files differ from gpu-a's" in check_tokenizers(facts, ["gpu-a", "gpu-b"], MINE)[0]


def test_a_host_without_a_manifest_or_with_bad_shards_is_refused(facts) -> None:
    f = facts["gpu-a"]
    assert check_host_data("gpu-a", "top", f, MINE) == []
    f["verify"]["bad"] = ["shard_00001.parquet"]
    assert check_host_data("gpu-a", "top", f, MINE)[0].startswith("gpu-a (top): the data dir does not match")
    no_manifest = {**f, "manifest": False, "manifest_error": "not JSON"}
    assert check_host_data("gpu-a", "top", no_manifest, MINE) == [
        "gpu-a (top): /data/a/base_data has no manifest.json (not JSON) so its shards cannot be trusted; fetch "
        "or transfer the arm's data with site.yml (or playbooks/data.yml)."
    ]


def test_nanochat_must_read_exactly_the_manifests_files_in_the_arms_data_dir(facts) -> None:
    f = facts["gpu-a"]
    assert check_nanochat_reads("gpu-a", "top", f, MINE) == []
    climbmix = {**f, "nanochat": {"ok": True, "files": ["/data/a/base_data_climbmix/shard_00000.parquet"]}}
    assert (
        "nanochat will read /data/a/base_data_climbmix, not" in check_nanochat_reads("gpu-a", "top", climbmix, MINE)[0]
    )
    stray = {**f, "nanochat": {"ok": True, "files": [*f["nanochat"]["files"], "/data/a/base_data/x.parquet"]}}
    assert "not in the manifest: x.parquet" in check_nanochat_reads("gpu-a", "top", stray, MINE)[0]
    broken = {**f, "nanochat": {"ok": False, "error": "No module named 'nanochat'"}}
    assert check_nanochat_reads("gpu-a", "top", broken, MINE)[0].endswith(f"repair.yml {MINE} --tags deps -l gpu-a")


def test_every_arm_validates_on_the_same_last_shard(facts) -> None:
    reference = val_reference(facts, ["gpu-a", "gpu-b"])
    assert reference == ("gpu-a", "v" * 64)
    assert check_val_shard("gpu-b", "random", facts["gpu-b"], reference) == []
    other_bytes = {**facts["gpu-b"], "last_sha256": "w" * 64}
    assert "its shard_val.parquet differs from gpu-a's" in check_val_shard("gpu-b", "random", other_bytes, reference)[0]
    own_val = {**facts["gpu-b"], "last_file": "shard_00009.parquet"}
    assert "would validate on its own data" in check_val_shard("gpu-b", "random", own_val, reference)[0]


def test_data_problems_come_host_by_host(facts) -> None:
    facts["gpu-a"]["verify"]["bad"] = ["shard_00000.parquet"]
    facts["gpu-a"]["last_file"] = "shard_00001.parquet"
    facts["gpu-b"]["last_sha256"] = "w" * 64
    problems = check_data(facts, [("top", "gpu-a"), ("random", "gpu-b")], MINE)
    assert [p.split(":")[0] for p in problems] == ["gpu-a (top)", "gpu-a (top)"]  # gpu-b is the val reference
    assert "does not match its manifest" in problems[0] and "would validate on its own data" in problems[1]


def test_the_data_budget_table_and_unequal_repeats(facts) -> None:
    budget = data_budget(
        facts, ARMS, HOSTS_OF, MODEL_10_STEPS, commit_date=None, allow_unequal_repeats=False, repeat_tolerance=0.1
    )
    assert budget["plan"]["tokens"] == 10 * 512 and budget["comparable"] is True
    facts["gpu-b"]["held"] = {"tokens": 1000}  # random would repeat its data 5 times, top not at all
    with pytest.raises(Exception, match="arms repeat their data differently"):
        data_budget(
            facts, ARMS, HOSTS_OF, MODEL_10_STEPS, commit_date=None, allow_unequal_repeats=False, repeat_tolerance=0.1
        )


def test_gpus_disk_and_the_wandb_key_of_a_host(facts) -> None:
    f = facts["gpu-a"]
    kw = {"model": MODEL, "run_name": "exp-top", "check_gpus": True, "inventory": MINE}
    assert check_resources("gpu-a", "top", f, **kw) == []
    poor = {**f, "gpus": None, "free_bytes": 1000, "wandb_key": False}
    problems = check_resources("gpu-a", "top", poor, **kw)
    assert problems[0].startswith("gpu-a (top): nvidia-smi sees no GPUs but the arm asks for 2 per node")
    assert "free under /data/a, less than" in problems[1]
    assert problems[2].endswith(f"repair.yml {MINE} --tags wandb -l gpu-a")
    assert check_resources("gpu-a", "top", poor, **{**kw, "check_gpus": False, "run_name": "dummy"})[0].startswith(
        "gpu-a (top): 1.0 KB free"
    )


def test_every_rank_gets_row_groups_or_the_arm_is_refused_naming_the_file(facts) -> None:
    f = facts["gpu-a"]
    assert check_rank_shares("gpu-a", "top", f, 2) == ([], [])
    # the runbook's 14000-row shards with 1024-row groups: 14 groups, unevenly shared by 8 ranks
    runbook = {**f, "row_groups": {n: [1024] * 13 + [688] for n in f["row_groups"]}}
    problems, warnings = check_rank_shares("gpu-a", "top", runbook, 8)
    assert problems == [] and "unequal shares" in warnings[0] and warnings[0].startswith("gpu-a (top): ")
    # an Azure arm downloaded as single-row-group files, trained on 2 ranks: rank 1 would spin forever
    single = {**f, "row_groups": {n: [5000] for n in f["row_groups"]}}
    problems, _ = check_rank_shares("gpu-b", "top", single, 2)
    assert len(problems) == 2 and "rank 1 of 2 has no row group in shard_00000.parquet" in problems[0]
    assert "shard_val.parquet" in problems[1] and "hang at the first evaluation" in problems[1]
    # a single file: no training file at all
    one = {**f, "row_groups": {"shard_00000.parquet": [10, 10]}}
    assert "no file is left to train on" in check_rank_shares("gpu-a", "top", one, 1)[0][0]
    unreadable = {**f, "row_groups": "could not read the parquet footers: bad magic"}
    assert check_rank_shares("gpu-a", "top", unreadable, 1)[0] == [
        "gpu-a (top): could not read the parquet footers: bad magic; re-run the arm's data step."
    ]


def test_compare_refuses_a_world_whose_ranks_would_starve(facts) -> None:
    kw = {"arms": ARMS, "hosts_of": HOSTS_OF, "model": MODEL_10_STEPS, "pin_sha": PIN, "commit_date": None}
    facts["gpu-b"]["row_groups"] = {n: [4096] for n in facts["gpu-b"]["row_groups"]}
    result = compare(facts, **kw, check_gpus=True, inventory=MINE)
    assert result["ok"] is False
    assert any(
        p.startswith("gpu-b (random): rank 1 of 2 has no row group in shard_00000.parquet") for p in result["problems"]
    )


def test_compare_gathers_every_check(facts) -> None:
    kw = {"arms": ARMS, "hosts_of": HOSTS_OF, "model": MODEL_10_STEPS, "pin_sha": PIN, "commit_date": None}
    good = compare(copy.deepcopy(facts), **kw, check_gpus=True, inventory=MINE)
    assert good["ok"] is True and good["problems"] == [] and good["budget"]["plan"]["tokens"] == 5120
    facts["gpu-b"]["commit"] = "b" * 40
    facts["gpu-a"]["wandb_key"] = False
    bad = compare(facts, **{**kw, "arms": {**ARMS, "top": {"run_name": "exp-top"}}}, check_gpus=True, inventory=MINE)
    assert bad["ok"] is False
    assert bad["problems"][0].startswith("gpu-b: nanochat is at bbbbbbbbbbbb")  # commits first ...
    assert bad["problems"][-1].startswith("gpu-a (top): no W&B key")  # ... resources last
    assert all("-i inventory/ " not in p for p in bad["problems"])


def measured(held: int, per_pass: int, crop: float) -> dict[str, Any]:
    """What nanochat_data_budget returns on an arm's first host (its budget without the run's passes)."""
    budget = {"tokens_held": held, "loader_tokens_per_pass": per_pass, "crop_rate": crop, "max_seq_len": 128}
    return {"changed": False, "msg": "...", "budget": budget, "source": "measured"}


def budget_of(facts, measured_by_host, **kw) -> dict[str, Any]:
    options = {"commit_date": None, "allow_unequal_repeats": False, "repeat_tolerance": 0.1, **kw}
    return data_budget(facts, ARMS, HOSTS_OF, MODEL_10_STEPS, measured=measured_by_host, **options)


def test_the_budget_compares_passes_over_what_nanochats_loader_yields(facts) -> None:
    # 5120 tokens needed; top's loader yields 2560 a pass (2 passes), random's 2400 (2.13 passes: within 10%)
    both = {"gpu-a": measured(4000, 2560, 0.36), "gpu-b": measured(3800, 2400, 0.37)}
    budget = budget_of(facts, both)
    assert budget["source"] == "measured" and budget["comparable"] is True
    assert budget["arms"]["top"]["passes"] == 2.0 and budget["arms"]["random"]["passes"] == pytest.approx(2.1333)
    assert budget["lines"] == [
        "top: 4.0K tokens held, 2.6K a pass (nanochat's loader crops 36.0% at T=128), 2.00 passes over its data "
        "(5.1K tokens needed)",
        "random: 3.8K tokens held, 2.4K a pass (nanochat's loader crops 37.0% at T=128), 2.13 passes over its data "
        "(5.1K tokens needed)",
    ]
    # the one-for-one rule sees 10M tokens held on each host: no repeat at all; the loader's figures do
    assert any("arm top will repeat data: top makes 2.00 passes" in w for w in budget["warnings"])
    # random's documents are cropped more: 3 passes against top's 2 is beyond the 10% tolerance
    both["gpu-b"] = measured(3800, 1700, 0.55)
    with pytest.raises(ArmsError, match=r"arms repeat their data differently: random makes 3\.01 passes"):
        budget_of(facts, both)
    assert budget_of(facts, both, allow_unequal_repeats=True)["comparable"] is False


def test_without_a_measurement_for_every_arm_the_budget_is_the_one_for_one_estimate_and_says_why(facts) -> None:
    check_mode = {"changed": False, "budget": None, "source": "check_mode", "msg": "would measure"}
    skipped = {"skipped": True, "skip_reason": "Conditional result was False"}
    for host_b, why in ((check_mode, "check mode on gpu-b"), (skipped, "skipped on gpu-b"), (None, "gpu-b was not")):
        mixed = {"gpu-a": measured(4000, 2560, 0.36), "gpu-b": host_b}
        budget = budget_of(facts, mixed)
        assert budget["source"] == "estimated" and budget["comparable"] is True
        assert budget["lines"][0].startswith("top: about 10.0M tokens held (estimated), 0.00 passes if every token")
        note = [w for w in budget["warnings"] if w.startswith("the data budget is an estimate")]
        assert note and f"random: {why}" in note[0] and "top:" not in note[0].split("rate of its own): ")[1]


def test_a_failed_measurement_is_a_problem_naming_the_host(facts) -> None:
    failed = {"failed": True, "msg": "no tokenizer.pkl in /data/b/tokenizer: train the experiment's tokenizer"}
    kw = {"arms": ARMS, "hosts_of": HOSTS_OF, "model": MODEL_10_STEPS, "pin_sha": PIN, "commit_date": None}
    result = compare(
        facts, **kw, check_gpus=True, inventory=MINE, measured={"gpu-a": measured(4000, 2560, 0.36), "gpu-b": failed}
    )
    assert result["ok"] is False
    assert result["problems"] == [
        "gpu-b (random): its data budget could not be measured with nanochat's loader: no tokenizer.pkl in "
        "/data/b/tokenizer: train the experiment's tokenizer"
    ]
    assert result["budget"]["source"] == "estimated"
    # a host without a tokenizer already has its sentence (check_tokenizers): not a second one
    facts["gpu-b"]["tokenizer"] = {}
    result = compare(facts, **kw, check_gpus=True, inventory=MINE, measured={"gpu-b": failed})
    assert not any("could not be measured" in p for p in result["problems"])


def test_the_preflight_module_reads_the_hosts_measurements(facts, capsys) -> None:
    args = {
        "facts": facts,
        "arms": ARMS,
        "hosts_of": HOSTS_OF,
        "model": MODEL_10_STEPS,
        "check_gpus": True,
        "budgets": {"gpu-a": measured(4000, 2560, 0.36), "gpu-b": measured(3800, 2400, 0.37)},
    }
    result = run_module("nanochat_preflight", args, capsys)
    assert result["msg"] == "the arms are comparable" and result["budget"]["source"] == "measured"
    assert result["budget"]["lines"][1].startswith("random: 3.8K tokens held, 2.4K a pass")


def test_two_arms_sharing_a_host_are_compared_each_on_its_own_dirs_and_repaired_by_host(facts) -> None:
    """A host that runs several arms reports facts per arm under host/arm (arms_family.fact_key): each
    arm's data is checked in its own data dir, and a repair command limits to the host itself."""
    members = {
        "random": {"run_name": "r", "data": {}, "family": "random"},
        "random-s43": {"run_name": "r-s43", "data": {}, "family": "random"},
    }
    assert check_arm_settings(members) == []  # an expanded family member's own keys are no difference
    shared = {"gpu-a/random": host_facts("a"), "gpu-a/random-s43": host_facts("a2")}
    shared["gpu-a/random-s43"]["commit"] = "b" * 40
    shared["gpu-a/random-s43"]["last_file"] = "shard_00001.parquet"
    result = compare(
        shared,
        arms=members,
        hosts_of={"random": ["gpu-a/random"], "random-s43": ["gpu-a/random-s43"]},
        model=MODEL,
        pin_sha=PIN,
        commit_date=None,
        check_gpus=True,
        inventory=MINE,
    )
    problems = result["problems"]
    assert any(p.endswith("--tags checkout -l gpu-a") and p.startswith("gpu-a/random-s43:") for p in problems)
    assert any(p.startswith("gpu-a/random-s43 (random-s43): the last file in sort order") for p in problems)
    assert not any(p.startswith("gpu-a/random (random)") for p in problems)
