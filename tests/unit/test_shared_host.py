"""Several arms on one host (issue 13): each arm's own GPUs, port, base dir, log and pid file.

The arms are started through library/nanochat_train.py with the arguments place_arms gives them, as
real detached process groups; the training is test_module_train's stand-in torchrun (a launcher
process plus one worker printing nanochat's rank-0 lines), since no GPU and no second node is here.
A "host" is one state dir: every arm's pid file and log in ``<state>/runs``, its base dir in
``<state>/arms/<arm>``, as the placement names them.
"""

from __future__ import annotations

import contextlib
import glob
import os
import signal
from pathlib import Path
from typing import Any

import pytest
from ansible.module_utils.arms_common import ArmsError
from ansible.module_utils.arms_family import place_arms
from ansible.module_utils.arms_process import group_members, read_pidfile
from ansible.module_utils.arms_run import LaunchSpec, RunRef, gpu_claim, other_refusal, rival_reason
from test_module_train import lab, run  # noqa: F401  (the fixture: a checkout, a stand-in torchrun, an env file)

LONG = {"max_seq_len": 128, "num_iterations": 100000}  # trains until stopped


def environ(pid: int) -> dict[str, str]:
    raw = Path(f"/proc/{pid}/environ").read_bytes()
    return dict(item.decode().split("=", 1) for item in raw.split(b"\0") if b"=" in item)


def cmdline(pid: int) -> list[str]:
    return [p.decode() for p in Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0") if p]


@pytest.fixture
def host(lab) -> Any:  # noqa: F811
    """One host's state dir; every process group started from its pid files is killed at the end."""
    state = lab["tmp"] / "state"
    yield state
    for pidfile in glob.glob(str(state / "runs" / "*.pid.json")):
        record = read_pidfile(pidfile)
        if record:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(record["pgid"], signal.SIGKILL)


def arm_args(lab: dict[str, Any], state: Path, arm: str, place: dict[str, Any], run_name: str) -> dict[str, Any]:  # noqa: F811
    """nanochat_train's arguments for one arm of a placement (wiring step 4 of docs/pilot-and-families.md)."""
    return {
        **lab["args"],
        "run_name": run_name,
        "arm": arm,
        "base_dir": str(state / place["base_dir"]),
        "data_dir": str(state / place["data_dir"]),
        "state_dir": str(state / "runs"),
        "gpus_per_node": place["nproc_per_node"],
        "nnodes": len(place["hosts"]),
        "node_rank": place["hosts"].index("gpu-a"),
        "rdzv_host": "127.0.0.2",
        "rdzv_port": place["port"],
        # device batch 2 x max seq len 128 x every process of the arm: one micro-step (nanochat's rule)
        "total_batch_size": 2 * 128 * place["nproc_per_node"] * len(place["hosts"]),
        "extra_flags": LONG,
        "extra_env": {**lab["args"]["extra_env"], "FAKE_OUT": str(state / f"{arm}.seen.json")},
        **({"cuda_visible_devices": place["cuda_visible_devices"]} if place["cuda_visible_devices"] else {}),
        "alone": place["alone"],
    }


def two_gpu_arms(lab: dict[str, Any], state: Path) -> dict[str, dict[str, Any]]:  # noqa: F811
    """Two arms of one group of two 4-GPU hosts, 2 GPUs each (the full run's pack=false sharing)."""
    arms = {"top16.5": {"group": "g", "run_name": "run-top"}, "random16.5": {"group": "g", "run_name": "run-rand"}}
    placement = place_arms(arms, {"g": ["gpu-a", "gpu-b"]}, 4, gpus_per_arm=2)
    return {arm: arm_args(lab, state, arm, placement[arm], arms[arm]["run_name"]) for arm in arms}


def started(capsys, args: dict[str, Any], **changes: Any) -> dict[str, Any]:
    result = run(capsys, args, wait_for_step=True, start_timeout=30, **changes)
    assert result["changed"] is True and result["alive"] is True, result["msg"]
    return result


def test_two_arms_on_one_host_share_no_gpu_port_base_dir_log_or_pid_file(lab, host, capsys) -> None:  # noqa: F811
    args = two_gpu_arms(lab, host)
    top = started(capsys, args["top16.5"])
    rand = started(capsys, args["random16.5"])  # the sibling is no rival: both train
    assert top["alive"] and run(capsys, args["top16.5"], state="status")["alive"]

    # each process of each arm sees its own GPUs
    for result, gpus in ((top, "0,1"), (rand, "2,3")):
        members = group_members(result["pgid"])
        assert len(members) >= 2  # the wrapper/launcher and the worker
        assert {environ(pid).get("CUDA_VISIBLE_DEVICES") for pid in members} == {gpus}
    # its own rendezvous port (node rank 0 listens on it), base dir, log and pid file
    assert "--master_port=29500" in cmdline(top["pid"]) and "--master_port=29501" in cmdline(rand["pid"])
    assert environ(top["pid"])["NANOCHAT_BASE_DIR"] == str(host / "arms" / "top16.5")
    assert environ(rand["pid"])["NANOCHAT_BASE_DIR"] == str(host / "arms" / "random16.5")
    assert (top["log"], top["pidfile"]) == (str(host / "runs" / "run-top.log"), str(host / "runs" / "run-top.pid.json"))
    assert rand["log"] == str(host / "runs" / "run-rand.log") and rand["pidfile"].endswith("run-rand.pid.json")
    record = read_pidfile(rand["pidfile"])
    assert (record["gpus"], record["master_port"], record["base_dir"]) == ([2, 3], 29501, str(host / "arms/random16.5"))


def test_stopping_or_forcing_one_arm_leaves_its_sibling_alone(lab, host, capsys) -> None:  # noqa: F811
    args = two_gpu_arms(lab, host)
    top = started(capsys, args["top16.5"])
    rand = started(capsys, args["random16.5"])
    by_name = {"run_name": "run-rand", "state_dir": str(host / "runs"), "host": "gpu-a"}
    keep = ("alive", "pid", "pgid", "started", "cmd", "env", "log", "pidfile", "stale")
    before = run(capsys, by_name, state="status")

    # a forced restart of one arm replaces only that arm: the sibling is no rival, force or not
    forced = started(capsys, args["top16.5"], force=True, stop_timeout=10)
    assert forced["pid"] != top["pid"] and group_members(top["pgid"]) == []
    assert [s["run_name"] for s in forced["stop"]] == ["run-top"]
    after_force = run(capsys, by_name, state="status")
    assert {k: after_force[k] for k in keep} == {k: before[k] for k in keep}
    assert after_force["msg"].startswith("run run-rand is running")

    # stopping one arm by its run name signals its group only
    stopped = run(capsys, {**by_name, "run_name": "run-top"}, state="stopped", stop_timeout=10)
    assert stopped["changed"] is True and stopped["alive"] is False
    assert group_members(forced["pgid"]) == []
    assert set(group_members(rand["pgid"])) >= {rand["pid"]}
    after_stop = run(capsys, by_name, state="status")
    assert {k: after_stop[k] for k in keep} == {k: before[k] for k in keep}
    assert "stopped" not in read_pidfile(rand["pidfile"])  # the sibling's record was not touched
    top_status = run(capsys, {**by_name, "run_name": "run-top"}, state="status")
    assert "was stopped at" in top_status["msg"]


def test_an_arm_on_gpus_or_a_port_another_arm_holds_is_refused_with_a_sentence(lab, host, capsys) -> None:  # noqa: F811
    args = two_gpu_arms(lab, host)
    top = started(capsys, args["top16.5"])
    started(capsys, args["random16.5"])
    third = {
        **args["random16.5"],
        "run_name": "run-third",
        "arm": "third",
        "base_dir": str(host / "arms" / "third"),
        "data_dir": str(host / "arms" / "third" / "base_data"),
        "rdzv_port": 29502,
    }
    overlap = run(capsys, {**third, "cuda_visible_devices": "1,2"})
    assert overlap["failed"] is True
    assert overlap["msg"].startswith(f"another training runs on this host: run run-top (pid {top['pid']}")
    assert "): it trains on GPU 1, which this run asks for too; stop it first (ansible-playbook" in overlap["msg"]
    assert [o["why"] for o in overlap["other_trainings"]] == [
        "it trains on GPU 1, which this run asks for too",
        "it trains on GPU 2, which this run asks for too",
    ]
    assert not (host / "runs" / "run-third.pid.json").exists()  # nothing half-started

    port = run(capsys, {**third, "cuda_visible_devices": "4,5", "rdzv_port": 29500})
    assert port["failed"] is True and "its rendezvous listens on port 29500, which this run needs too" in port["msg"]
    same_base = run(capsys, {**third, "cuda_visible_devices": "4,5", "base_dir": args["top16.5"]["base_dir"]})
    assert same_base["failed"] is True
    assert f"it uses the same base dir ({args['top16.5']['base_dir']})" in same_base["msg"]
    # a launch that names no GPUs takes the whole host: both arms are in its way (the rule before sharing)
    whole = {k: v for k, v in third.items() if k != "cuda_visible_devices"}
    legacy = run(capsys, {**whole, "alone": True})
    assert legacy["failed"] is True and "this run would take the whole host (it names no GPUs)" in legacy["msg"]


def test_cpu_arms_share_a_host_as_one_process_each(lab, host, capsys) -> None:  # noqa: F811
    arms = {"top16.5": {"group": "g", "run_name": "run-top"}, "random16.5": {"group": "g", "run_name": "run-rand"}}
    placement = place_arms(arms, {"g": ["gpu-a"]}, 0, gpus_per_arm=1, pack=True)  # a GPU-less lab host
    args = {a: arm_args(lab, host, a, placement[a], arms[a]["run_name"]) for a in arms}
    for a in arms:
        args[a]["extra_flags"] = {**LONG, "device_type": "cpu"}
    top = started(capsys, args["top16.5"])
    rand = started(capsys, args["random16.5"])
    assert top["launcher"] == rand["launcher"] == "python"  # one plain process each, as real nanochat on CPU
    for result in (top, rand):
        assert "CUDA_VISIBLE_DEVICES" not in environ(result["pid"])
    assert read_pidfile(top["pidfile"])["gpus"] == []
    # an arm that says it is alone on the host still finds both in its way
    alone = run(capsys, {**args["random16.5"], "run_name": "run-x", "base_dir": str(host / "arms/x"), "alone": True})
    assert alone["failed"] is True and "this run would take the whole host" in alone["msg"]


# ---- the rules on plain data ----

SPEC = LaunchSpec(
    chdir="/c",
    venv="/v",
    base_dir="/s/arms/a",
    arm="a",
    experiment="e",
    depth=4,
    device_batch_size=2,
    total_batch_size=512,
    gpus_per_node=2,
)


def test_the_gpus_a_launch_holds() -> None:
    assert gpu_claim(SPEC, has_gpu=True) is None  # alone, no GPUs named: the whole host
    assert gpu_claim(LaunchSpec(**{**SPEC.__dict__, "cuda_visible_devices": "3, 2"})) == [2, 3]
    assert gpu_claim(LaunchSpec(**{**SPEC.__dict__, "alone": False}), has_gpu=False) == []  # a CPU sibling
    with pytest.raises(ArmsError, match=r"shares this host with other arms .* but names no GPUs"):
        gpu_claim(LaunchSpec(**{**SPEC.__dict__, "alone": False}), has_gpu=True)
    with pytest.raises(ArmsError, match=r"names 1 GPU\(s\) but the arm runs 2 process\(es\) per node"):
        gpu_claim(LaunchSpec(**{**SPEC.__dict__, "cuda_visible_devices": "0"}))
    with pytest.raises(ArmsError, match="names a GPU twice"):
        gpu_claim(LaunchSpec(**{**SPEC.__dict__, "cuda_visible_devices": "1,1"}))
    with pytest.raises(ArmsError, match="is not a list of GPU indices"):
        gpu_claim(LaunchSpec(**{**SPEC.__dict__, "cuda_visible_devices": "GPU-0,1"}))


@pytest.mark.parametrize(
    ("other", "mine", "why"),
    [
        ({"base_dir": "/s/arms/b", "gpus": [2, 3]}, [0, 1], None),  # a sibling arm
        ({"base_dir": "/s/arms/b", "gpus": []}, [], None),  # CPU siblings
        ({"base_dir": "/s/arms/a", "gpus": [2, 3]}, [0, 1], "it uses the same base dir (/s/arms/a)"),
        ({"base_dir": "/s/arms/b", "gpus": [1, 2]}, [0, 1], "it trains on GPU 1, which this run asks for too"),
        ({"base_dir": "/s/arms/b", "gpus": None}, [0, 1], "it holds the whole host (it names no GPUs)"),
        ({"base_dir": "/s/arms/b", "gpus": []}, None, "this run would take the whole host (it names no GPUs)"),
        ({"base_dir": None, "gpus": None}, [0], "its base dir cannot be read"),
        (
            {"base_dir": "/s/arms/b", "gpus": [4], "master_port": 29500},
            [0, 1],
            "its rendezvous listens on port 29500, which this run needs too",
        ),
    ],
)
def test_what_stands_in_a_launchs_way(other, mine, why) -> None:
    got = rival_reason({"master_port": None, **other}, base_dir="/s/arms/a", gpus=mine, master_port=29500)
    assert got == why or (why is not None and got is not None and got.startswith(why))
    if why:
        sentence = other_refusal(
            RunRef("/s/runs", "run-a", "gpu-a"), {"run_name": "b", "pid": 1, "pgid": 1, "why": got}
        )
        assert sentence.startswith(f"another training runs on this host: run b (pid 1, process group 1): {got}; stop")
