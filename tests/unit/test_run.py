"""The run lifecycle in module_utils (arms_run): the start rule on plain facts; status and stop by the run's name."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from ansible.module_utils.arms_process import group_members
from ansible.module_utils.arms_run import (
    ALREADY_FINISHED,
    ALREADY_RUNNING,
    REFUSE_OTHER,
    REFUSE_STALE,
    START,
    RunRef,
    decide_start,
    idle_note,
    other_refusal,
    run_status,
    run_stop,
    status_message,
)
from test_module_train import lab, run  # noqa: F401  (the fixture: a checkout, a fake torchrun, a base dir)

NOTHING = {"alive": False, "finished": False, "stale": False, "resuming": False, "others": False, "force": False}


@pytest.mark.parametrize(
    ("facts", "decision"),
    [
        ({}, START),  # never started, died or stopped: start it
        ({"alive": True}, ALREADY_RUNNING),
        ({"alive": True, "others": True}, ALREADY_RUNNING),  # its own group is no rival
        ({"finished": True}, ALREADY_FINISHED),
        ({"others": True}, REFUSE_OTHER),
        ({"others": True, "finished": True}, REFUSE_OTHER),
        ({"stale": True}, START),  # a dead stale run is simply trained again
        ({"stale": True, "alive": True}, REFUSE_STALE),
        ({"stale": True, "finished": True}, REFUSE_STALE),
        ({"stale": True, "resuming": True}, REFUSE_STALE),  # its checkpoint is not this experiment's
        ({"stale": True, "alive": True, "others": True, "force": True}, START),
        ({"finished": True, "force": True}, START),
        ({"others": True, "force": True}, START),
    ],
)
def test_the_start_rule(facts, decision) -> None:
    assert decide_start(**{**NOTHING, **facts}) == decision


def test_a_run_never_started_is_reported_and_left_alone(tmp_path) -> None:
    ref = RunRef(state_dir=str(tmp_path / "runs"), run_name="run-x", host="gpu-a")
    status = run_status(ref)
    assert status["alive"] is False and status["pid"] is None
    assert status["msg"] == f"run run-x was never started on this host (no {tmp_path}/runs/run-x.pid.json)."
    stopped = run_stop(ref)
    assert stopped["changed"] is False and stopped["msg"] == "run run-x is not running: nothing to stop."


def test_status_message_names_what_the_record_says() -> None:
    ref = RunRef(state_dir="/s", run_name="r", host="h")
    base = {"pidfile": "/s/r.pid.json", "identity_changes": [], "alive": False, "finished": True, "pid": 7}
    assert status_message(ref, {"pid": 7}, {**base, "progress_line": "step 3/3"}) == "run r finished: step 3/3."
    stale = {**base, "progress_line": "step 3/3", "identity_changes": ["tokenizer (sha256) a -> b"]}
    assert status_message(ref, {"pid": 7}, stale).endswith("It is stale: tokenizer (sha256) a -> b.")


def test_the_idle_note_says_since_when_a_runs_gpus_have_been_idle() -> None:
    ended = "2026-12-01T13:02:00+00:00"
    at_1343 = 1796132580.0  # 2026-12-01 13:43:00 UTC
    note = idle_note(ended, now=at_1343)
    assert note.startswith(" Its GPUs have been idle since 13:02 UTC (41 min): release the node")
    assert "(3.0 h)" in idle_note("2026-12-01T10:43:00+00:00", now=at_1343)
    assert idle_note(None) == "" and idle_note("not a time") == ""
    ref = RunRef(state_dir="/s", run_name="r", host="h")
    result = {"pidfile": "/s/r.pid.json", "identity_changes": [], "alive": False, "finished": True, "pid": 7}
    assert "idle since" in status_message(ref, {"pid": 7}, {**result, "progress_line": "x", "ended": ended})


def test_status_and_stop_need_only_the_runs_name_and_state_dir(lab, capsys) -> None:  # noqa: F811
    args = {**lab["args"], "extra_flags": {"max_seq_len": 128, "num_iterations": 100000}}
    started = run(capsys, args, wait_for_step=True, start_timeout=30)
    assert started["changed"] is True, started["msg"]
    by_name = {"run_name": "run-a", "state_dir": str(lab["state"]), "host": "gpu-a"}

    status = run(capsys, by_name, state="status")
    assert status["alive"] is True and status["pid"] == started["pid"]
    assert status["msg"].startswith("run run-a is running") and status["progress"]["started"]
    assert status["stale"] is False  # nothing to compare it with: it reports what the pid file says
    assert status["cmd"] == started["cmd"]

    stopped = run(capsys, by_name, state="stopped", stop_timeout=10)
    assert stopped["changed"] is True and stopped["alive"] is False
    assert group_members(started["pgid"]) == []
    after = run(capsys, by_name, state="status")
    assert "was stopped at" in after["msg"]
    # a run that ended leaves its GPUs idle: status says since when, so the node can be released
    assert after["ended"] and after["ended"].endswith("+00:00")
    assert f"Its GPUs have been idle since {after['ended'][11:16]} UTC (0 min)" in after["msg"]


def test_the_diagnosis_of_a_status_by_name_takes_the_arm_from_the_pid_file(lab, capsys) -> None:  # noqa: F811
    args = {**lab["args"], "extra_flags": {"max_seq_len": 128, "num_iterations": 100000}}
    started = run(capsys, args, wait_for_step=True, start_timeout=30)
    os.killpg(started["pgid"], 9)
    by_name = {"run_name": "run-a", "base_dir": args["base_dir"], "host": "gpu-a", "inventory_arg": "-i mine/"}
    for _ in range(200):
        status = run(capsys, by_name, state="status")
        if not status["alive"]:
            break
    assert [f["id"] for f in status["diagnosis"]] == ["vanished"]
    assert status["diagnosis"][0]["repair"] == (
        'ansible-playbook playbooks/train.yml -i mine/ -e \'{"arms_only": ["top16.5"]}\''
    )


def test_starting_still_needs_every_launch_argument(lab, capsys) -> None:  # noqa: F811
    result = run(capsys, {"run_name": "run-a", "base_dir": lab["args"]["base_dir"]})
    assert result["failed"] is True and "state is started but all of the following are missing" in result["msg"]
    assert not Path(lab["state"], "run-a.pid.json").exists()
    neither = run(capsys, {"run_name": "run-a"}, state="status")
    assert neither["failed"] is True and "base_dir" in neither["msg"] and "state_dir" in neither["msg"]


def test_a_refusal_names_the_switch_of_the_callers_user() -> None:
    other = {"run_name": "run-b", "pid": 42, "pgid": 42, "log": "/s/run-b.log"}
    playbook = RunRef(state_dir="/s", run_name="run-a", host="gpu-a", inventory="-i mine/")
    assert other_refusal(playbook, other) == (
        "another training runs on this host: run run-b (pid 42, process group 42, log /s/run-b.log); stop it first "
        "(ansible-playbook playbooks/stop.yml -i mine/ -l gpu-a) or replace it with -e arms_force_restart=true (force)."
    )
    cli = RunRef(state_dir="/s", run_name="run-a", host="gpu-a", force_switch="--force")
    assert "replace it with --force (force)." in other_refusal(cli, other)
    assert "arms_force_restart" not in other_refusal(cli, other)
