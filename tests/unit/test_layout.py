"""Where each arm runs on each host (inventory/group_vars/all/layout.yml over arms_family.host_runs).

The real group_vars of the lab and of the lab's pilot are templated by a real ansible-playbook, on this
machine (connection local: the lab's host names, none of its users): a plain experiment keeps every path
and launch value it had before several arms could share a host; the pilot profile puts two arms on each
GPU-less host, each in its own base dir, and changes nothing but depth, iterations, placement and names.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import yaml
from ansible.module_utils.arms_family import (
    fact_keys,
    host_runs,
    place_arms,
    profile_diff_problems,
    receive_items,
)
from playtest import ansible_playbook

ROOT = Path(__file__).resolve().parents[2]
GROUPS = {"arm_top": ["top"], "arm_random": ["random"]}
ARMS = {
    "top16.5": {"group": "arm_top", "run_name": "exp-top", "data": {"source": "azure_blob"}},
    "random16.5": {
        "group": "arm_random",
        "run_name": "exp-rand",
        "data": {"source": "hf_random_subset", "prepare_mode": "prepare"},
    },
}
DIRS = {
    "state_dir": "/h/.local/share/nanochat-arms",
    "base_dir": "/h/.cache/nanochat",
    "data_dir": "/h/.cache/nanochat/base_data",
}


def test_an_arm_alone_on_its_hosts_keeps_the_hosts_own_paths_and_launch() -> None:
    placement = place_arms(ARMS, GROUPS, 8)
    (run,) = host_runs(placement, ARMS, "random", **DIRS, gpus_per_node=8)
    assert {k: v for k, v in run.items() if k != "value"} == {
        "key": "random16.5",
        "hosts": ["random"],
        "base_dir": "/h/.cache/nanochat",
        "data_dir": "/h/.cache/nanochat/base_data",
        "log": "/h/.local/share/nanochat-arms/runs/exp-rand.log",
        "pidfile": "/h/.local/share/nanochat-arms/runs/exp-rand.pid.json",
        "nproc_per_node": 8,
        "gpus": "",  # no CUDA_VISIBLE_DEVICES: the whole host, as before
        "port": 29500,
        "alone": True,
        "fact_key": "random",
    }
    # a GPU-less host: the experiment's processes per node (the lab's two-node stand-in runs 2)
    (cpu,) = host_runs(place_arms(ARMS, GROUPS, 0), ARMS, "top", **DIRS, gpus_per_node=2)
    assert (cpu["nproc_per_node"], cpu["gpus"], cpu["base_dir"]) == (2, "", "/h/.cache/nanochat")


def test_arms_sharing_a_host_each_get_their_own_dirs_gpus_port_and_fact_key() -> None:
    placement = place_arms(ARMS, {"arm_top": ["n1"], "arm_random": ["n1"]}, 8, gpus_per_arm=4, pack=True)
    top, rnd = host_runs(placement, ARMS, "n1", **DIRS, gpus_per_node=4)
    assert (top["base_dir"], top["data_dir"]) == (
        "/h/.local/share/nanochat-arms/arms/top16.5",
        "/h/.local/share/nanochat-arms/arms/top16.5/base_data",
    )
    assert (top["gpus"], rnd["gpus"]) == ("0,1,2,3", "4,5,6,7")
    assert (top["nproc_per_node"], top["alone"], top["port"] != rnd["port"]) == (4, False, True)
    assert fact_keys(placement) == {"top16.5": ["n1/top16.5"], "random16.5": ["n1/random16.5"]}
    # the data dir sits under the arm's base dir where the inventory's sits under its base dir
    (other,) = host_runs(
        placement, ARMS, "n1", **{**DIRS, "data_dir": "/h/.cache/nanochat/base_data_v2"}, gpus_per_node=4
    )[1:]
    assert other["data_dir"] == "/h/.local/share/nanochat-arms/arms/random16.5/base_data_v2"


def test_one_transfer_brings_each_arm_its_tokenizer_its_shards_and_the_val_shard_once() -> None:
    placement = place_arms(ARMS, {"arm_top": ["n1"], "arm_random": ["n1"]}, 0, pack=True)
    runs = host_runs(placement, ARMS, "n1", **DIRS, gpus_per_node=1)
    kw = {"tokenizer_src": "/p/tok", "prepared": "/p/prepared", "val_arm": "random16.5", "val_dest": "/h/val"}
    items = receive_items(runs, receive=["tokenizer", "val", "shards"], selected=list(ARMS), **kw)
    assert [(i["src"], i["dest"]) for i in items] == [
        ("/p/tok", "/h/.local/share/nanochat-arms/arms/top16.5/tokenizer"),
        ("/p/tok", "/h/.local/share/nanochat-arms/arms/random16.5/tokenizer"),
        ("/p/prepared/random16.5/val", "/h/val"),
        ("/p/prepared/random16.5/base_data", "/h/.local/share/nanochat-arms/arms/random16.5/base_data"),
    ]
    # arms_only leaves the other arm's shards where they are; tokenizer alone is what tokenizer_copy sends
    assert receive_items(runs, receive=["shards"], selected=["top16.5"], **kw) == []
    assert [i["label"] for i in receive_items(runs[:1], receive=["tokenizer"], selected=[], **kw)] == ["tokenizer"]


def test_a_profile_may_change_only_depth_iterations_placement_and_names() -> None:
    allowed = ["arms.random16.5-s43.run_name", "model.depth", "model.extra_flags.num-iterations", "name"]
    assert profile_diff_problems([*allowed, "placement.pack", "profile", "model.gpus_per_node"]) == []
    (problem,) = profile_diff_problems([*allowed, "arms.random16.5.data.seed"])
    assert problem.startswith("the profiled experiment differs from the full run at arms.random16.5.data.seed")


# ---------------------------------------------------------------------------------------------
# the real group_vars, templated by ansible-playbook
# ---------------------------------------------------------------------------------------------

SHOW = """
- hosts: all
  gather_facts: true
  gather_subset: [min]
  tasks:
    - name: The layout of each arm host is written
      ansible.builtin.copy:
        content: "{{ {'arms': arms_my_arms | map(attribute='key') | list, 'my_arm': arms_my_arm.key | default(''),
                      'runs': arms_my_arms | map('dict2items') | map('rejectattr', 'key', 'eq', 'value')
                              | map('items2dict') | list,
                      'state_dir': arms_state_dir, 'base_dir': nanochat_base_dir, 'data_dir': nanochat_data_dir,
                      'name': arms_experiment.name, 'receives_val': arms_receives_val,
                      'receives_shards': arms_receives_shards, 'downloads': arms_downloads_here,
                      'diff': arms_experiment_full | arms_profile_diff(arms_experiment)} | to_json }}"
        dest: "{{ out }}/{{ inventory_hostname }}.json"
        mode: "0600"
      when: "'gpu' in group_names"
"""


def layout(tmp_path: Path, inventory: str, *extra: str) -> dict[str, dict]:
    """Each arm host's layout under the real group_vars of ``inventory`` (its hosts run here, locally)."""
    inv = tmp_path / "inv"
    group_vars = inv / "group_vars" / "all"
    group_vars.mkdir(parents=True)
    src = ROOT / "inventory" / inventory / "group_vars" / "all"
    for name in os.listdir(src):
        if name != "ssh.yml":  # the lab's ssh settings are for its sshd; these hosts are local
            text = (src / name).read_text().replace("(inventory_dir ~ '/../..') | realpath", repr(str(ROOT)))
            (group_vars / name).write_text(text)
    hosts = yaml.safe_load((ROOT / "inventory" / inventory / "hosts.yml").read_text())
    for group in hosts["all"]["children"].values():
        for host in (group or {}).get("hosts") or {}:
            group["hosts"][host] = {}
    hosts["all"]["vars"] = {"ansible_connection": "local", "ansible_python_interpreter": sys.executable}
    (inv / "hosts.yml").write_text(yaml.safe_dump(hosts))
    (tmp_path / "show.yml").write_text(SHOW)
    out = tmp_path / "out"
    out.mkdir()
    env = {**os.environ, "ANSIBLE_CONFIG": str(ROOT / "ansible.cfg")}
    ansible_playbook(["-i", str(inv), str(tmp_path / "show.yml"), "-e", f"out={out}", *extra], cwd=tmp_path, env=env)
    return {p.stem: json.loads(p.read_text()) for p in out.glob("*.json")}


def test_the_lab_without_a_profile_lays_out_each_arm_as_before(tmp_path: Path) -> None:
    hosts = layout(tmp_path, "lab")
    assert {h: v["arms"] for h, v in hosts.items()} == {"top": ["top16.5"], "random": ["random16.5"]}
    for host, v in hosts.items():
        (run,) = v["runs"]
        assert (run["base_dir"], run["data_dir"]) == (v["base_dir"], v["data_dir"])  # nanochat_base_dir
        assert (
            run["log"]
            == f"{v['state_dir']}/runs/{'exp-top16-d26-8gpu' if host == 'top' else 'exp-rand16-d26-8gpu'}.log"
        )
        assert (run["gpus"], run["port"], run["alone"], run["nproc_per_node"], run["fact_key"]) == (
            "",
            29500,
            True,
            1,
            host,
        )
        assert v["my_arm"] == run["key"] and v["diff"] == []
    assert (hosts["top"]["downloads"], hosts["top"]["receives_val"], hosts["random"]["receives_shards"]) == (
        True,
        True,
        True,
    )
    assert hosts["top"]["name"] == "lab-top-vs-random"


def test_the_lab_pilot_puts_two_arms_on_each_host_and_changes_only_what_a_profile_may(tmp_path: Path) -> None:
    hosts = layout(tmp_path, "lab-pilot", "-e", "arms_profile=pilot")
    assert {h: v["arms"] for h, v in hosts.items()} == {
        "top": ["top16.5", "random16.5-s43"],
        "random": ["random16.5", "random16.5-s44"],
    }
    runs = [r for v in hosts.values() for r in v["runs"]]
    assert len({r["base_dir"] for r in runs}) == len({r["log"] for r in runs}) == len({r["pidfile"] for r in runs}) == 4
    for host, v in hosts.items():
        for run in v["runs"]:
            assert run["base_dir"] == f"{v['state_dir']}/arms/{run['key']}" and not run["alone"]
            assert run["gpus"] == "" and run["fact_key"] == f"{host}/{run['key']}"
            assert run["log"].endswith("-pilot.log")  # the pilot's runs never touch the full run's logs
    assert hosts["top"]["name"] == "lab-top-vs-random-pilot"  # results/<name>/ and the W&B group
    assert hosts["top"]["diff"] == [
        "arms.random16.5-s43.run_name",
        "arms.random16.5-s44.run_name",
        "arms.random16.5.run_name",
        "arms.top16.5.run_name",
        "model.depth",
        "model.extra_flags.num-iterations",
        "name",
        "placement",
        "profile",
    ]
    assert profile_diff_problems(hosts["top"]["diff"]) == []
