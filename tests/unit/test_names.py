"""Arm names, run names and prefixes are checked where the experiment is read (issue 15)."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
import yaml
from ansible.module_utils.arms_names import experiment_problems, file_name_problem, prefix_problem
from playtest import LOCALHOST, ansible_playbook

ROOT = Path(__file__).resolve().parents[2]


def experiment(**arm: object) -> dict:
    spec = {"group": "arm_top", "run_name": "exp-top", "data": {"source": "azure_blob", "prefix": "top16.5/"}}
    spec.update(arm)
    return {"name": "qurating-top-vs-random-d26", "arms": {"top16.5": spec}}


def test_the_shipped_experiment_and_the_lab_are_fine() -> None:
    with open(ROOT / "inventory" / "group_vars" / "all" / "experiment.yml") as fh:
        shipped = yaml.safe_load(fh)
    assert experiment_problems(shipped["experiment"], shipped["arms_tokenizer_from_arm"]) == []
    assert experiment_problems(experiment()) == []
    assert experiment_problems(experiment(data={"prefix": "a/b/c"})) == []
    assert experiment_problems(experiment(data={"prefix": "/a/b/"})) == []


@pytest.mark.parametrize(
    "bad",
    ["top$(touch F)", "top 16", "-rf", "..", ".hidden", "a/b", "", "top\n16", "tóp"],
)
def test_an_arm_name_that_is_not_a_plain_name_is_named_in_a_sentence(bad: str) -> None:
    exp = experiment()
    exp["arms"] = {bad: exp["arms"]["top16.5"]}
    problems = experiment_problems(exp)
    assert len(problems) == 1 and "the arm name" in problems[0], problems


@pytest.mark.parametrize("bad", ["a b", "$(id)", "-x", "x;y", "../run"])
def test_a_run_name_that_is_not_a_plain_name_is_named(bad: str) -> None:
    problems = experiment_problems(experiment(run_name=bad))
    assert len(problems) == 1 and "arms.top16.5.run_name" in problems[0], problems


@pytest.mark.parametrize("bad", ["../x", "a/../b", "a//b", "./a", "a b/", "a/$(id)/"])
def test_a_prefix_with_path_steps_or_strange_characters_is_refused(bad: str) -> None:
    assert prefix_problem(bad, "p"), bad
    problems = experiment_problems(experiment(data={"prefix": bad}))
    assert len(problems) == 1 and "arms.top16.5.data.prefix" in problems[0], problems


def test_the_experiment_name_and_the_tokenizer_arm_are_names_too() -> None:
    exp = experiment()
    exp["name"] = "my exp"
    assert [p for p in experiment_problems(exp, "x/../y") if "experiment.name" in p or "arms_tokenizer" in p]
    assert len(experiment_problems(exp, "x/../y")) == 2


@pytest.mark.parametrize("name", ["shard_00000.parquet", "shard_val.parquet", "tokenizer.pkl", ".x"])
def test_plain_file_names(name: str) -> None:
    assert file_name_problem(name) is None


def test_validate_yml_applies_the_rule_through_the_filter(tmp_path: Path) -> None:
    """The filter validate.yml uses loads in Ansible and answers with the same sentences."""
    exp = experiment()
    exp["arms"] = {"top$(touch F)": exp["arms"]["top16.5"]}
    play = [
        {
            "hosts": "localhost",
            "gather_facts": False,
            "tasks": [
                {
                    "name": "problems",
                    "ansible.builtin.copy": {
                        "content": "{{ exp | arms_experiment_problems('r') | to_json }}",
                        "dest": str(tmp_path / "out.json"),
                        "mode": "0600",
                    },
                }
            ],
            "vars": {"exp": exp},
        }
    ]
    (tmp_path / "p.yml").write_text(yaml.safe_dump(play))
    env = {**os.environ, "ANSIBLE_CONFIG": str(ROOT / "ansible.cfg")}
    ansible_playbook(
        [*LOCALHOST, "-e", "ansible_python_interpreter={{ ansible_playbook_python }}", str(tmp_path / "p.yml")],
        cwd=tmp_path,
        env=env,
        timeout=120,
    )
    assert json.loads((tmp_path / "out.json").read_text()) == experiment_problems(exp, "r")
    assert not (tmp_path / "F").exists()
