"""arms_data's eval_fetch entry point on this machine: the CPU node's bundle placed once, its zip ready to send."""

from __future__ import annotations

import json
import os
import re
from pathlib import Path
from typing import Any

import yaml
from arms_fixture import write_eval_bundle
from playtest import LOCALHOST, ansible_playbook

ROOT = Path(__file__).resolve().parents[2]


def fetch(tmp_path: Path, extra_flags: dict[str, Any], always: bool = False) -> dict[str, Any]:
    """Run eval_fetch.yml as the CPU node (this machine); its result and the play's changed count."""
    play = [
        {
            "hosts": "localhost",
            "gather_facts": False,
            "vars": {
                "nanochat_base_dir": str(tmp_path / "base"),
                "nanochat_dir": str(tmp_path / "no-checkout"),
                "arms_state_dir": str(tmp_path / "state"),
                "arms_eval_bundle_src": str(tmp_path / "eval_bundle.zip"),
                "arms_eval_bundle_always": always,
                "arms_experiment": {"model": {"extra_flags": extra_flags}},
            },
            "tasks": [
                {
                    "name": "The eval bundle is fetched",
                    "ansible.builtin.include_role": {"name": "arms_data", "tasks_from": "eval_fetch.yml"},
                },
                {
                    "name": "Result is kept",
                    "ansible.builtin.copy": {
                        "content": "{{ arms_data_eval_bundle | to_json }}",
                        "dest": str(tmp_path / "out.json"),
                        "mode": "0600",
                    },
                    "changed_when": False,
                },
            ],
        }
    ]
    (tmp_path / "p.yml").write_text(yaml.safe_dump(play))
    env = {**os.environ, "ANSIBLE_CONFIG": str(ROOT / "ansible.cfg")}
    proc = ansible_playbook(
        [*LOCALHOST, "-e", "ansible_python_interpreter={{ ansible_playbook_python }}", str(tmp_path / "p.yml")],
        cwd=tmp_path,
        env=env,
        timeout=120,
    )
    recap = re.search(r"localhost\s*:\s*ok=\d+\s+changed=(\d+)", proc.stdout)
    assert recap, proc.stdout
    return {**json.loads((tmp_path / "out.json").read_text()), "play_changed": int(recap.group(1))}


def test_the_cpu_node_places_the_bundle_once_and_readies_its_zip(tmp_path: Path) -> None:
    sha = write_eval_bundle(str(tmp_path / "eval_bundle.zip"))
    first = fetch(tmp_path, {"core-metric-every": 2000})
    assert (
        first["needed"] and first["sha256"] == sha and first["play_changed"] == 3
    )  # placed, sending folder made, zip copied
    ready = tmp_path / "state" / "eval_bundle" / "eval_bundle.zip"
    assert ready.read_bytes() == (tmp_path / "base" / "eval_bundle.zip").read_bytes()
    assert (tmp_path / "base" / "eval_bundle" / "core.yaml").is_file()
    again = fetch(tmp_path, {"core-metric-every": 2000})
    assert again["play_changed"] == 0 and again["sha256"] == sha


def test_nothing_is_fetched_when_the_core_metric_is_off_unless_always(tmp_path: Path) -> None:
    write_eval_bundle(str(tmp_path / "eval_bundle.zip"))
    off = fetch(tmp_path, {"core-metric-every": -1})
    assert off["needed"] is False and off["play_changed"] == 0 and not (tmp_path / "base").exists()
    lab = fetch(tmp_path, {"core-metric-every": -1}, always=True)
    assert lab["needed"] and lab["play_changed"] == 3
