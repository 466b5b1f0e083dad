"""status.yml's table, from Python (arms_status.status_rows through the arms_status_rows filter)."""

from __future__ import annotations

import importlib.util
from pathlib import Path

from ansible.module_utils.arms_status import status_rows

ROOT = Path(__file__).resolve().parents[2]


def load_filter():  # the filter plugin as Ansible loads it: by path
    spec = importlib.util.spec_from_file_location("arms_filter", ROOT / "plugins" / "filter" / "arms.py")
    assert spec and spec.loader
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


ALIVE = {
    "alive": True,
    "pid": 4242,
    "progress_line": "step 10/20 (50.00%), loss 9.9",
    "progress": {"last_val_bpb": 2.51},
    "log": "/home/u/run.log",
}
DEAD = {
    "alive": False,
    "finished": False,
    "ended": "2026-12-01T13:02:00+00:00",
    "progress": {},
    "log": "/home/u/run.log",
    "diagnosis": [{"title": "W&B key rejected", "repair": "ansible-playbook playbooks/repair.yml", "evidence": "x"}],
    "log_tail": [f"line {i}" for i in range(12)],
    "stale": True,
    "identity_changes": ["tokenizer (sha256) a -> b"],
}


def test_a_live_run_is_one_row_with_its_gpu_use() -> None:
    rows = status_rows("top", "top16.5", ALIVE, [90, 70])
    assert rows == [
        "top | top16.5 | alive pid 4242 | step 10/20 (50.00%), loss 9.9 | val bpb 2.51 | GPU 80% | log /home/u/run.log"
    ]


def test_a_dead_run_says_why_since_when_its_gpus_idle_and_that_it_is_stale() -> None:
    rows = status_rows("random", "random16.5", DEAD)
    assert rows[0].startswith("random | random16.5 | NOT RUNNING | no step yet | val bpb - | idle since 13:02 UTC")
    assert "It is stale: tokenizer (sha256) a -> b." in rows[1] and "-e arms_force_restart=true" in rows[1]
    assert rows[2] == "    random: W&B key rejected -> ansible-playbook playbooks/repair.yml   (x)"
    assert rows[3:11] == [f"    random log | line {i}" for i in range(4, 12)]  # the last 8 log lines
    assert rows[-1].startswith("    random: Its GPUs have been idle since 13:02 UTC")


def test_the_filter_builds_the_table_from_every_host_that_read_its_run() -> None:
    hostvars = {
        "top": {"arms_run_result": ALIVE, "arms_my_arm": {"key": "top16.5"}, "arms_gpu": {"stdout_lines": ["50"]}},
        "cpu": {},  # no arm: no row
    }
    rows = load_filter().FilterModule().filters()["arms_status_rows"](["top", "cpu"], hostvars)
    assert len(rows) == 1 and rows[0].startswith("top | top16.5 | alive pid 4242") and "GPU 50%" in rows[0]


def test_a_host_with_two_arms_shows_a_row_for_each() -> None:
    """The arms_run role's status keeps each arm's result (arms_run_results): both arms of a shared host
    are in the table, the stopped one NOT RUNNING beside its live sibling."""
    hostvars = {
        "top": {
            "arms_run_result": DEAD,
            "arms_run_results": {"top16.5": ALIVE, "random16.5-s43": DEAD},
            "arms_my_arm": {"key": "top16.5"},
        }
    }
    rows = load_filter().FilterModule().filters()["arms_status_rows"](["top"], hostvars)
    assert rows[0].startswith("top | top16.5 | alive pid 4242")
    assert rows[1].startswith("top | random16.5-s43 | NOT RUNNING")
