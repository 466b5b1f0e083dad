"""Repair messages name the inventory the user ran with, not always inventory/."""

from __future__ import annotations

import importlib.util
import os

import pytest
from ansible.module_utils.arms_common import set_inventory_arg
from ansible.module_utils.arms_logs import diagnose, repair_command, restart_command
from ansible.module_utils.arms_preflight import repair

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def load_filter():  # type: ignore[no-untyped-def]
    spec = importlib.util.spec_from_file_location("arms_filter", os.path.join(ROOT, "plugins", "filter", "arms.py"))
    assert spec and spec.loader
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod.arms_inventory_arg


def test_the_filter_shows_project_inventories_relative_and_others_absolute(tmp_path) -> None:
    arg = load_filter()
    assert arg([os.path.join(ROOT, "inventory")]) == "-i inventory/"
    assert arg([os.path.join(ROOT, "inventory", "lab")]) == "-i inventory/lab/"
    elsewhere = tmp_path / "hosts.ini"
    elsewhere.write_text("[gpu]\n")
    assert arg([os.path.join(ROOT, "inventory-mine"), str(elsewhere)]) == f"-i inventory-mine -i {elsewhere}"


@pytest.fixture
def inventory_mine():  # type: ignore[no-untyped-def]
    set_inventory_arg("-i inventory-mine/")
    yield
    set_inventory_arg(None)


def test_repair_and_restart_commands_name_the_given_inventory(inventory_mine) -> None:
    assert (
        repair_command("tf32", "top") == "ansible-playbook playbooks/repair.yml -i inventory-mine/ --tags tf32 -l top"
    )
    assert restart_command("top16.5").count("-i inventory-mine/") == 2
    assert repair("deps", "random").startswith("ansible-playbook playbooks/repair.yml -i inventory-mine/ ")
    found = diagnose("[rank0]: ModuleNotFoundError: No module named 'rustbpe'", host="top", arm="top16.5")
    assert found and all("-i inventory/ " not in f["repair"] for f in found)
    assert "-i inventory-mine/ --tags deps -l top" in found[0]["repair"]


def test_without_an_inventory_the_commands_name_inventory() -> None:
    set_inventory_arg(None)
    assert repair_command("crlf", "cpu") == "ansible-playbook playbooks/repair.yml -i inventory/ --tags crlf -l cpu"
