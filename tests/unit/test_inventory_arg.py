"""Repair messages name the inventory the user ran with, not always inventory/, and build the command in one place."""

from __future__ import annotations

import importlib.util
import os

import pytest
from ansible.module_utils.arms_common import ArmsError, load_env_file, playbook_command
from ansible.module_utils.arms_logs import diagnose, repair_command, restart_command, train_command
from ansible.module_utils.arms_patch import tf32_plan
from ansible.module_utils.arms_preflight import repair

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
MINE = "-i inventory-mine/"


def load_filters():  # type: ignore[no-untyped-def]
    spec = importlib.util.spec_from_file_location("arms_filter", os.path.join(ROOT, "plugins", "filter", "arms.py"))
    assert spec and spec.loader
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod.FilterModule().filters()


def test_the_filter_shows_project_inventories_relative_and_others_absolute(tmp_path) -> None:
    arg = load_filters()["arms_inventory_arg"]
    assert arg([os.path.join(ROOT, "inventory")]) == "-i inventory/"
    assert arg([os.path.join(ROOT, "inventory", "lab")]) == "-i inventory/lab/"
    elsewhere = tmp_path / "hosts.ini"
    elsewhere.write_text("[gpu]\n")
    assert arg([os.path.join(ROOT, "inventory-mine"), str(elsewhere)]) == f"-i inventory-mine -i {elsewhere}"


def test_a_playbook_command_has_one_shape() -> None:
    assert playbook_command("repair", MINE, tags="deps", limit="top") == (
        "ansible-playbook playbooks/repair.yml -i inventory-mine/ --tags deps -l top"
    )
    assert playbook_command("tokenizer") == "ansible-playbook playbooks/tokenizer.yml -i inventory/"
    assert playbook_command("site.yml", MINE) == "ansible-playbook site.yml -i inventory-mine/"
    # extra vars as JSON, quoted for the shell: pasted as is, the shell gives ansible-playbook the JSON
    assert playbook_command("train", MINE, extra_vars={"arms_only": ["top16.5"]}) == (
        'ansible-playbook playbooks/train.yml -i inventory-mine/ -e \'{"arms_only": ["top16.5"]}\''
    )


def test_playbooks_get_the_same_command_through_the_filter() -> None:
    command = load_filters()["arms_playbook_command"]
    assert command("repair", MINE, tags="deps", limit="gpu-a") == playbook_command(
        "repair", MINE, tags="deps", limit="gpu-a"
    )
    assert command("train", None, extra_vars={"arms_only": ["a"]}) == train_command("a")


def test_repair_and_restart_commands_name_the_given_inventory() -> None:
    assert (
        repair_command("tf32", "top", MINE)
        == "ansible-playbook playbooks/repair.yml -i inventory-mine/ --tags tf32 -l top"
    )
    assert restart_command("top16.5", MINE).count(MINE) == 2
    assert repair("deps", "random", MINE).startswith(f"ansible-playbook playbooks/repair.yml {MINE} ")
    found = diagnose(
        "[rank0]: ModuleNotFoundError: No module named 'rustbpe'", host="top", arm="top16.5", inventory=MINE
    )
    assert found and all("-i inventory/ " not in f["repair"] for f in found)
    assert f"{MINE} --tags deps -l top" in found[0]["repair"]


def test_one_callers_inventory_does_not_leak_into_the_next_call() -> None:
    diagnose("[rank0]: ModuleNotFoundError: No module named 'rustbpe'", host="top", inventory=MINE)
    found = diagnose("[rank0]: ModuleNotFoundError: No module named 'rustbpe'", host="top")
    assert found[0]["repair"] == "ansible-playbook playbooks/repair.yml -i inventory/ --tags deps -l top"


def test_without_an_inventory_the_commands_name_inventory() -> None:
    assert repair_command("crlf", "cpu") == "ansible-playbook playbooks/repair.yml -i inventory/ --tags crlf -l cpu"


def test_refusals_of_shared_helpers_name_the_callers_inventory(tmp_path) -> None:
    env = tmp_path / "secrets.env"
    env.write_text("WANDB_API_KEY=$(whoami)\n")
    with pytest.raises(ArmsError, match=f"repair.yml {MINE} --tags credentials"):
        load_env_file(str(env), MINE)
    with pytest.raises(ArmsError, match=f"repair.yml {MINE} --tags checkout,tf32"):
        tf32_plan("x = (\n", inventory=MINE)


def test_the_tf32_module_names_the_inventory_it_was_given(tmp_path, capsys) -> None:
    from modtest import run_module

    (tmp_path / "nanochat").mkdir()
    (tmp_path / "nanochat" / "common.py").write_text("x = (\n")
    result = run_module("nanochat_tf32", {"path": str(tmp_path), "inventory_arg": MINE}, capsys)
    assert result["failed"] is True and f"repair.yml {MINE} --tags checkout,tf32." in result["msg"]
