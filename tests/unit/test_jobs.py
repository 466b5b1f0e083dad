"""Waiting on an async step: a job that ends while the wait is on is seen finished in that same poll."""

from __future__ import annotations

import json
import threading
from pathlib import Path

from ansible.module_utils.arms_jobs import wait_for_job


def test_a_job_that_ends_during_the_wait_is_reported_finished_with_its_result(tmp_path: Path) -> None:
    job = tmp_path / "123.456"
    job.write_text(json.dumps({"started": 1, "finished": 0}))
    progress = tmp_path / "progress.json"
    progress.write_text(json.dumps({"line": "3/6 shards"}))

    assert wait_for_job("123.456", str(tmp_path), str(progress), wait=0)["finished"] is False
    timer = threading.Timer(0.3, lambda: job.write_text(json.dumps({"changed": True, "msg": "6 shards"})))
    timer.start()
    try:
        status = wait_for_job("123.456", str(tmp_path), str(progress), wait=60)
    finally:
        timer.cancel()
    assert status["finished"] is True and status["result"] == {"changed": True, "msg": "6 shards"}
    assert status["progress_line"] == "3/6 shards"


def test_a_job_still_running_returns_its_progress_when_the_wait_ends(tmp_path: Path) -> None:
    (tmp_path / "9.9").write_text(json.dumps({"started": 1, "finished": 0}))
    status = wait_for_job("9.9", str(tmp_path), None, None, wait=0.2, interval=0.05)
    assert status == {"finished": False, "found": True, "progress_line": "running"}
    assert wait_for_job("absent", str(tmp_path), wait=0.1)["progress_line"] == "waiting for the job to start"
