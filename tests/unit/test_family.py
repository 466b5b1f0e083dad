"""Arm families, placement of several arms on a host, the pilot profile and its cost (arms_family)."""

from __future__ import annotations

import copy
import itertools
import random
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from ansible.module_utils.arms_family import (
    FamilyError,
    apply_profile,
    default_iterations,
    expand_arms,
    family_problems,
    flops_per_token,
    host_arms,
    place_arms,
    profile_diff,
    profile_problems,
    run_cost,
    scaling_params,
    seed_families,
    shared_sources,
)

ROOT = Path(__file__).resolve().parents[2]
EXPERIMENT = ROOT / "inventory" / "group_vars" / "all" / "experiment.yml"


def experiment(**family: object) -> dict:
    """The project's own experiment file, with a family declared on its random arm when given."""
    exp = yaml.safe_load(EXPERIMENT.read_text())["experiment"]
    if family:
        exp["arms"]["random16.5"]["family"] = dict(family)
    return exp


# ---------------------------------------------------------------------------------------------
# families
# ---------------------------------------------------------------------------------------------


def test_an_experiment_without_families_expands_to_itself() -> None:
    exp = experiment()
    assert expand_arms(exp) == exp
    assert family_problems(exp) == []


def test_three_seeds_become_three_arms_the_declared_one_keeping_its_names() -> None:
    arms = expand_arms(experiment(seeds=[42, 43, 44]))["arms"]
    assert list(arms) == ["top16.5", "random16.5", "random16.5-s43", "random16.5-s44"]
    assert [a["run_name"] for a in arms.values()] == [
        "exp-top16-d26-8gpu",
        "exp-rand16-d26-8gpu",
        "exp-rand16-d26-8gpu-s43",
        "exp-rand16-d26-8gpu-s44",
    ]
    assert [arms[a]["data"]["seed"] for a in list(arms)[1:]] == [42, 43, 44]
    # members differ from the declaration only in name, run name, seed and the family link
    declared = experiment()["arms"]["random16.5"]
    for name in ("random16.5-s43", "random16.5-s44"):
        member = copy.deepcopy(arms[name])
        assert member.pop("family") == "random16.5"
        member["data"]["seed"] = 42
        member["run_name"] = declared["run_name"]
        assert member == declared
    assert "family" not in arms["top16.5"]


def test_the_declared_member_comes_first_whatever_the_list_order() -> None:
    arms = expand_arms(experiment(seeds=[44, 42, 43]))["arms"]
    assert list(arms) == ["top16.5", "random16.5", "random16.5-s44", "random16.5-s43"]


def test_expansion_is_deterministic_and_idempotent() -> None:
    exp = experiment(seeds=[42, 43, 44], ratios=[0.165, 0.1])
    once = expand_arms(exp)
    assert expand_arms(exp) == once
    assert expand_arms(once) == once
    assert exp["arms"]["random16.5"]["family"] == {"seeds": [42, 43, 44], "ratios": [0.165, 0.1]}  # not mutated


def test_ratios_and_seeds_cross_with_their_own_families_and_one_sweep() -> None:
    arms = expand_arms(experiment(seeds=[42, 43], ratios=[0.1, 0.165, 0.25]))["arms"]
    members = {
        n: (a["data"]["ratio"], a["data"]["seed"], a["family"], a["sweep"]) for n, a in arms.items() if n != "top16.5"
    }
    assert members == {
        "random16.5": (0.165, 42, "random16.5", "random16.5"),
        "random16.5-r10": (0.1, 42, "random16.5-r10", "random16.5"),
        "random16.5-r10-s43": (0.1, 43, "random16.5-r10", "random16.5"),
        "random16.5-s43": (0.165, 43, "random16.5", "random16.5"),
        "random16.5-r25": (0.25, 42, "random16.5-r25", "random16.5"),
        "random16.5-r25-s43": (0.25, 43, "random16.5-r25", "random16.5"),
    }
    assert arms["random16.5-r25-s43"]["run_name"] == "exp-rand16-d26-8gpu-r25-s43"


@pytest.mark.parametrize(
    ("family", "expected"),
    [
        ({"seeds": []}, "arms.random16.5.family.seeds is empty or not a list"),
        ({"seeds": [42, 43, 43]}, "lists seed 43 more than once"),
        ({"seeds": [42, "43"]}, "holds '43'; seeds are whole numbers"),
        ({"seeds": [43, 44]}, "leaves out the arm's own data.seed 42"),
        ({"ratios": [0.165, 1.5]}, "holds 1.5; ratios are fractions of the rows to keep"),
        ({"ratios": [0.1, 0.25]}, "leaves out the arm's own data.ratio 0.165"),
        ({"seed": [42, 43]}, "a family varies only seeds and ratios"),
        ({}, "names neither seeds nor ratios"),
    ],
)
def test_a_bad_family_is_refused_with_a_sentence(family: dict, expected: str) -> None:
    exp = experiment(**family) if family else experiment()
    if not family:
        exp["arms"]["random16.5"]["family"] = {}
    problems = family_problems(exp)
    assert any(expected in p for p in problems), problems
    with pytest.raises(FamilyError, match=r"arms\.random16\.5"):
        expand_arms(exp)


def test_a_member_name_colliding_with_another_arm_is_refused() -> None:
    exp = experiment(seeds=[42, 43])
    exp["arms"]["random16.5-s43"] = copy.deepcopy(exp["arms"]["top16.5"]) | {"run_name": "other"}
    problems = family_problems(exp)
    assert problems == [
        "the family of random16.5 makes an arm named random16.5-s43, which is also the arm random16.5-s43; "
        "rename one of them"
    ]


def test_a_member_run_name_colliding_with_another_arm_is_refused() -> None:
    exp = experiment(seeds=[42, 43])
    exp["arms"]["top16.5"]["run_name"] = "exp-rand16-d26-8gpu-s43"
    assert any("run name exp-rand16-d26-8gpu-s43, which arm top16.5 uses too" in p for p in family_problems(exp))


def test_a_member_name_that_is_no_safe_name_is_refused() -> None:
    exp = experiment(seeds=[42, 43])
    exp["arms"] = {"random;x": exp["arms"]["random16.5"]}
    assert family_problems(exp) == [
        "the family member name (of arms.random;x) 'random;x' holds characters other than letters, digits, '.', "
        "'_' and '-'",
        "the family member name (of arms.random;x) 'random;x-s43' holds characters other than letters, digits, "
        "'.', '_' and '-'",
    ]


def test_a_family_on_an_azure_arm_is_refused() -> None:
    exp = experiment()
    exp["arms"]["top16.5"]["family"] = {"seeds": [1, 2]}
    assert family_problems(exp) == [
        "arms.top16.5 declares a family but reads azure_blob data: a family varies the sampling seed or ratio "
        "of an hf_random_subset arm"
    ]


def test_lab_overrides_merge_onto_the_declaration_before_expansion() -> None:
    """experiment_overrides name the declared arm; every member inherits them (the lab's dataset path)."""
    exp = experiment(seeds=[42, 43])
    exp["arms"]["random16.5"]["data"]["dataset"] = "/lab/data/fortified"
    arms = expand_arms(exp)["arms"]
    assert arms["random16.5-s43"]["data"]["dataset"] == "/lab/data/fortified"


def test_seed_families_name_the_noise_band_groups() -> None:
    assert seed_families(experiment()["arms"]) == {"top16.5": None, "random16.5": "random16.5"}
    arms = expand_arms(experiment(seeds=[42, 43, 44]))["arms"]
    assert seed_families(arms) == {
        "top16.5": None,
        "random16.5": "random16.5",
        "random16.5-s43": "random16.5",
        "random16.5-s44": "random16.5",
    }


def test_random_arms_of_one_source_are_read_together() -> None:
    exp = experiment(seeds=[42, 43, 44])
    exp["arms"]["other"] = copy.deepcopy(exp["arms"]["random16.5"]) | {"run_name": "other"}
    del exp["arms"]["other"]["family"]
    exp["arms"]["other"]["data"]["split"] = "validation"
    exp["arms"]["skipped"] = copy.deepcopy(exp["arms"]["other"]) | {"run_name": "skipped"}
    exp["arms"]["skipped"]["data"]["prepare_mode"] = "skip"
    groups = shared_sources(expand_arms(exp)["arms"])
    assert [(g["arms"], g["seeds"], g["source"]["split"]) for g in groups] == [
        (["random16.5", "random16.5-s43", "random16.5-s44"], [42, 43, 44], "train"),
        (["other"], [42], "validation"),
    ]


# ---------------------------------------------------------------------------------------------
# placement
# ---------------------------------------------------------------------------------------------


def check_no_sharing(placement: dict, gpus_per_host: int) -> None:
    """The rule a user would see broken as two runs fighting: nothing of an arm is another's on a host."""
    hosts = {h for p in placement.values() for h in p["hosts"]}
    for host in hosts:
        arms = [placement[a] for a in host_arms(placement, host)]
        gpus = [g for p in arms if p["cuda_visible_devices"] for g in p["cuda_visible_devices"].split(",")]
        assert len(gpus) == len(set(gpus)), (host, arms)
        assert all(0 <= int(g) < gpus_per_host for g in gpus)
        for key in ("port", "base_dir", "data_dir", "log", "pidfile"):
            values = [p[key] for p in arms]
            assert len(values) == len(set(values)), (host, key, values)
        for p in arms:
            if gpus_per_host == 0:
                assert p["cuda_visible_devices"] is None and p["gpus"] == 0 and p["nproc_per_node"] == 1
            else:
                assert len(p["cuda_visible_devices"].split(",")) == p["gpus"] == p["nproc_per_node"]
            assert p["alone"] == (len(arms) == 1 and all(len(host_arms(placement, h)) == 1 for h in p["hosts"]))


def make_arms(n: int, groups: list[str], gpus: list[int | None]) -> dict:
    return {
        f"arm{i}": {"group": groups[i % len(groups)], "run_name": f"run{i}", **({"gpus": gpus[i]} if gpus[i] else {})}
        for i in range(n)
    }


def test_the_full_run_places_each_arm_on_its_groups_whole_hosts() -> None:
    arms = experiment()["arms"]
    placement = place_arms(arms, {"arm_top": ["top"], "arm_random": ["random"]}, 8)
    assert placement["top16.5"] == {
        "hosts": ["top"],
        "host": "top",
        "gpus": 8,
        "nproc_per_node": 8,
        "cuda_visible_devices": "0,1,2,3,4,5,6,7",
        "port": 29500,
        "base_dir": "arms/top16.5",
        "data_dir": "arms/top16.5/base_data",
        "log": "runs/exp-top16-d26-8gpu.log",
        "pidfile": "runs/exp-top16-d26-8gpu.pid.json",
        "alone": True,
    }
    assert placement["random16.5"]["port"] == 29501


def test_a_multi_node_arm_gets_the_same_gpus_on_every_host() -> None:
    arms = {"a": {"group": "g", "run_name": "a", "gpus": 4}, "b": {"group": "h", "run_name": "b", "gpus": 4}}
    placement = place_arms(arms, {"g": ["n1", "n2"], "h": ["n2"]}, 8)
    assert placement["a"]["hosts"] == ["n1", "n2"] and placement["a"]["cuda_visible_devices"] == "0,1,2,3"
    assert placement["b"]["cuda_visible_devices"] == "4,5,6,7"
    assert not placement["a"]["alone"] and not placement["b"]["alone"]


def test_the_pilot_packs_eight_one_gpu_arms_onto_one_node() -> None:
    arms = make_arms(9, ["g1", "g2"], [None] * 9)
    placement = place_arms(arms, {"g1": ["n1"], "g2": ["n2"]}, 8, gpus_per_arm=1, pack=True)
    assert [placement[f"arm{i}"]["host"] for i in range(9)] == ["n1"] * 8 + ["n2"]
    assert [placement[f"arm{i}"]["cuda_visible_devices"] for i in range(8)] == [str(i) for i in range(8)]
    check_no_sharing(placement, 8)


def test_the_lab_spreads_four_arms_over_its_two_gpu_less_hosts() -> None:
    arms = expand_arms(experiment(seeds=[42, 43, 44]))["arms"]
    placement = place_arms(arms, {"arm_top": ["top"], "arm_random": ["random"]}, 0, gpus_per_arm=1, pack=True)
    assert {a: p["host"] for a, p in placement.items()} == {
        "top16.5": "top",
        "random16.5": "random",
        "random16.5-s43": "top",
        "random16.5-s44": "random",
    }
    assert host_arms(placement, "top") == ["top16.5", "random16.5-s43"]
    check_no_sharing(placement, 0)


def test_arms_whose_gpus_do_not_fit_are_refused_with_a_sentence() -> None:
    arms = make_arms(3, ["g"], [4, 4, 1])
    with pytest.raises(FamilyError) as err:
        place_arms(arms, {"g": ["n1"]}, 8)
    assert str(err.value) == (
        "arm arm2 asks for 1 GPUs on n1, which has 8 with 8 taken by the arms before it; give the arms fewer GPUs "
        "(gpus or placement.gpus_per_arm) or more hosts."
    )
    with pytest.raises(FamilyError, match="the GPU hosts n1 have 0 left in all"):
        place_arms(make_arms(9, ["g"], [None] * 9), {"g": ["n1"]}, 8, gpus_per_arm=1, pack=True)


def test_two_arms_of_one_run_name_on_a_host_are_refused() -> None:
    arms = {"a": {"group": "g", "run_name": "same", "gpus": 1}, "b": {"group": "g", "run_name": "same", "gpus": 1}}
    with pytest.raises(FamilyError, match="both run on n1 under the run name same"):
        place_arms(arms, {"g": ["n1"]}, 8)


@pytest.mark.parametrize("seed", range(40))
def test_placement_never_shares_gpus_ports_dirs_logs_or_pids(seed: int) -> None:
    """Property: over random arms, hosts and GPU counts, a placement either shares nothing or refuses."""
    rng = random.Random(seed)
    gpus_per_host = rng.choice([0, 1, 2, 4, 8])
    groups = {f"g{i}": [f"n{j}" for j in rng.sample(range(4), rng.randint(1, 2))] for i in range(rng.randint(1, 3))}
    n = rng.randint(1, 12)
    pack = rng.random() < 0.5
    wants = [rng.choice([None, 1, 1, 2, 4]) for _ in range(n)]
    arms = make_arms(n, list(groups), wants)
    try:
        placement = place_arms(arms, groups, gpus_per_host, gpus_per_arm=1 if pack else None, pack=pack)
    except FamilyError as exc:
        assert gpus_per_host > 0 and "GPU" in str(exc), exc
        return
    assert list(placement) == list(arms)
    check_no_sharing(placement, gpus_per_host)
    assert placement == place_arms(arms, groups, gpus_per_host, gpus_per_arm=1 if pack else None, pack=pack)


@pytest.mark.parametrize(("hosts", "per_arm", "capacity"), list(itertools.product([1, 2, 3], [1, 2, 4, 8], [1, 4, 8])))
def test_packing_fits_exactly_as_many_arms_as_the_gpus_hold(hosts: int, per_arm: int, capacity: int) -> None:
    fit = hosts * (capacity // per_arm)
    groups = {"g": [f"n{i}" for i in range(hosts)]}
    if fit:
        placement = place_arms(make_arms(fit, ["g"], [None] * fit), groups, capacity, gpus_per_arm=per_arm, pack=True)
        check_no_sharing(placement, capacity)
    with pytest.raises(FamilyError):
        place_arms(make_arms(fit + 1, ["g"], [None] * (fit + 1)), groups, capacity, gpus_per_arm=per_arm, pack=True)


# ---------------------------------------------------------------------------------------------
# the pilot profile
# ---------------------------------------------------------------------------------------------

PILOT = {"depth": 12, "num_iterations": 2205, "placement": {"gpus_per_arm": 1, "pack": True}}


def with_pilot(exp: dict) -> dict:
    exp["profiles"] = {"pilot": copy.deepcopy(PILOT)}
    return exp


def test_the_pilot_changes_only_depth_iterations_placement_and_its_names() -> None:
    full = expand_arms(with_pilot(experiment(seeds=[42, 43, 44])))
    pilot = apply_profile(full, "pilot")
    assert profile_diff(full, pilot) == sorted(
        [
            "arms.random16.5-s43.run_name",
            "arms.random16.5-s44.run_name",
            "arms.random16.5.run_name",
            "arms.top16.5.run_name",
            "model.depth",
            "model.extra_flags.num-iterations",
            "model.gpus_per_node",
            "name",
            "placement",
            "profile",
        ]
    )
    assert pilot["name"] == "qurating-top-vs-random-d26-pilot"  # results/<name>/ and WANDB_RUN_GROUP follow it
    assert pilot["arms"]["top16.5"]["run_name"] == "exp-top16-d26-8gpu-pilot"
    assert (pilot["model"]["depth"], pilot["model"]["extra_flags"], pilot["model"]["gpus_per_node"]) == (
        12,
        {"num-iterations": 2205},
        1,
    )
    # what a user compares the pilot by: the same data, seeds, tokenizer inputs and batch sizes
    for arm in full["arms"]:
        assert pilot["arms"][arm]["data"] == full["arms"][arm]["data"]
        assert pilot["arms"][arm]["group"] == full["arms"][arm]["group"]
    for key in ("device_batch_size", "total_batch_size"):
        assert pilot["model"][key] == full["model"][key]
    assert pilot["nanochat"] == full["nanochat"]


def test_the_pilots_iterations_replace_any_spelling_of_the_flag() -> None:
    exp = with_pilot(experiment())
    exp["model"]["extra_flags"] = {"num_iterations": 50, "eval-every": 10}
    assert apply_profile(exp, "pilot")["model"]["extra_flags"] == {"eval-every": 10, "num-iterations": 2205}


def test_no_profile_is_the_full_run_and_an_unknown_one_is_refused() -> None:
    exp = with_pilot(experiment())
    assert apply_profile(exp, None) == exp
    assert apply_profile(exp, "") == exp
    with pytest.raises(FamilyError, match="there is no profile 'pilto' in the experiment; its profiles: pilot"):
        apply_profile(exp, "pilto")


@pytest.mark.parametrize(
    ("profile", "expected"),
    [
        ({"depth": 12, "device_batch_size": 8}, "a profile changes only depth, num_iterations and placement"),
        ({"depth": 26}, "profiles.pilot.depth is the full run's (26)"),
        ({"depth": 0}, "profiles.pilot.depth is 0; give a whole number"),
        ({"placement": {"gpus_per_arm": 0}}, "placement.gpus_per_arm is 0"),
        ({"placement": {"gpus": 1}}, "placement takes only gpus_per_arm"),
        ({"placement": {"pack": "yes"}}, "placement.pack is 'yes'; give true or false"),
    ],
)
def test_a_bad_profile_is_refused_with_a_sentence(profile: dict, expected: str) -> None:
    exp = experiment()
    exp["profiles"] = {"pilot": profile}
    assert any(expected in p for p in profile_problems(exp)), profile_problems(exp)
    with pytest.raises(FamilyError):
        apply_profile(exp, "pilot")


def test_the_repo_experiment_file_has_no_profile_problems() -> None:
    assert profile_problems(experiment()) == []
    assert profile_problems(with_pilot(experiment())) == []


# ---------------------------------------------------------------------------------------------
# cost
# ---------------------------------------------------------------------------------------------


def test_flops_per_token_and_scaling_params_are_nanochats_at_b07604e() -> None:
    """The numbers real nanochat b07604e prints ("Estimated FLOPs per token") for these depths."""
    assert flops_per_token(2) == 32_243_904
    assert flops_per_token(12) == 802_167_552
    assert flops_per_token(26) == 6_185_320_128
    assert scaling_params(12) == 110_101_632
    assert scaling_params(26) == 918_426_912
    assert default_iterations(26, 524288) == 18393
    assert default_iterations(12, 524288) == 2205


def test_the_full_d26_run_and_the_pilot_cost_in_gpu_hours() -> None:
    full = run_cost(depth=26, num_iterations=18393, total_batch_size=524288, peak_flops=989e12, mfu=0.45, gpus=8)
    pilot = run_cost(depth=12, num_iterations=2205, total_batch_size=524288, peak_flops=989e12, mfu=0.45)
    # 6,185,320,128 x 18,393 x 524,288 / (989e12 x 0.45) / 3600
    assert full["tokens"] == 9_643_229_184
    assert full["gpu_hours"] == pytest.approx(6_185_320_128 * 9_643_229_184 / (989e12 * 0.45) / 3600)
    assert round(full["gpu_hours"], 1) == 37.2 and round(full["hours"], 2) == 4.65
    assert round(pilot["gpu_hours"], 2) == 0.58
    with pytest.raises(FamilyError, match="divide it by 100"):
        run_cost(depth=12, num_iterations=1, total_batch_size=1, peak_flops=1.0, mfu=45)


def test_flops_per_token_matches_real_nanochats_estimate(tmp_path: Path) -> None:
    """The real GPT.estimate_flops, built on the meta device from the bundle at b07604e (torch on CPU)."""
    pytest.importorskip("torch")
    from test_nanochat_eras import bundle_path

    bundle = bundle_path()
    if not bundle.is_file():
        pytest.skip(f"no nanochat bundle at {bundle}")
    dest = tmp_path / "nanochat"
    subprocess.run(["git", "clone", "-q", str(bundle), str(dest)], check=True)
    subprocess.run(["git", "-C", str(dest), "checkout", "-q", "b07604e"], check=True)
    code = (
        "import torch\nfrom nanochat.gpt import GPT, GPTConfig\n"
        "for d in (2, 12, 26):\n"
        "    dim = ((d * 64 + 127) // 128) * 128\n"
        "    with torch.device('meta'):\n"
        "        m = GPT(GPTConfig(sequence_len=2048, vocab_size=32768, n_layer=d, n_head=dim // 128,"
        " n_kv_head=dim // 128, n_embd=dim))\n"
        "    c = m.num_scaling_params()\n"
        "    print(d, m.estimate_flops(), c['transformer_matrices'] + c['lm_head'])\n"
    )
    out = subprocess.run([sys.executable, "-c", code], cwd=dest, capture_output=True, text=True, check=True).stdout
    for line in out.split("\n"):
        if line.strip():
            depth, flops, params = map(int, line.split())
            assert (flops_per_token(depth), scaling_params(depth)) == (flops, params)


# ---------------------------------------------------------------------------------------------
# the filters playbooks use
# ---------------------------------------------------------------------------------------------


def load_filters() -> dict:
    """The filter plugin as Ansible loads it: by its path, its module_utils file by path too."""
    import importlib.util

    spec = importlib.util.spec_from_file_location("arms_family_filter", ROOT / "plugins" / "filter" / "arms_family.py")
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.FilterModule().filters()


def test_the_filters_expand_profile_and_place_the_lab_pilot() -> None:
    from ansible.errors import AnsibleFilterError

    f = load_filters()
    exp = with_pilot(experiment(seeds=[42, 43, 44]))
    assert f["arms_family_problems"](exp) == [] and f["arms_profile_problems"](exp) == []
    pilot = f["arms_apply_profile"](f["arms_expand_arms"](exp), "pilot")
    placement = f["arms_place"](pilot, {"arm_top": ["top"], "arm_random": ["random"]}, "0", "1", True)
    assert f["arms_host_arms"](placement, "random") == ["random16.5", "random16.5-s44"]
    assert f["arms_seed_families"](pilot)["random16.5-s43"] == "random16.5"
    assert f["arms_shared_sources"](pilot)[0]["seeds"] == [42, 43, 44]
    assert f["arms_profile_diff"](exp, exp) == []
    with pytest.raises(AnsibleFilterError, match="the GPUs per host is 'eight'; give a whole number"):
        f["arms_place"](pilot, {"arm_top": ["top"]}, "eight")
    with pytest.raises(AnsibleFilterError, match="lists seed 43 more than once"):
        f["arms_expand_arms"](experiment(seeds=[42, 43, 43]))


def test_the_filter_loads_where_ansible_module_utils_lacks_the_project(tmp_path: Path) -> None:
    """On the controller ansible.module_utils is ansible-core's: arms_names is then loaded by its path."""
    code = (
        "import importlib.util, sys\n"
        f"spec = importlib.util.spec_from_file_location('f', {str(ROOT / 'plugins' / 'filter' / 'arms_family.py')!r})\n"
        "m = importlib.util.module_from_spec(spec); spec.loader.exec_module(m)\n"
        "print(m.arms_family_problems({'arms': {'a b': {'family': {'seeds': [1, 2]}, "
        "'data': {'source': 'hf_random_subset', 'seed': 1, 'ratio': 0.5}}}}))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True, check=True)
    assert "'a b' holds characters other than letters" in out.stdout
