"""Benchmark helper: the wall time of every task of a run, written as JSON (ARMS_TASK_TIMES_FILE).

Enabled only by benchmarks/bench_noop.py (ANSIBLE_CALLBACK_PLUGINS + ANSIBLE_CALLBACKS_ENABLED). A task's
time runs from its start to the next task's (or handler's, or play's) start, so it includes the play
barrier and Ansible's own work after it: what a user waits for, task by task.
"""

from __future__ import annotations

import json
import os
import time
from typing import Any

from ansible.plugins.callback import CallbackBase

DOCUMENTATION = """
name: arms_task_times
type: aggregate
short_description: per-task wall times of a run, as JSON (benchmarks only)
description:
  - Writes [{play, task, path, seconds}] to the file named by ARMS_TASK_TIMES_FILE at the end of the run.
"""


class CallbackModule(CallbackBase):
    CALLBACK_VERSION = 2.0
    CALLBACK_TYPE = "aggregate"
    CALLBACK_NAME = "arms_task_times"
    CALLBACK_NEEDS_ENABLED = True

    def __init__(self) -> None:
        super().__init__()
        self._start = time.monotonic()
        self._play = ""
        self._current: dict[str, Any] | None = None
        self._rows: list[dict[str, Any]] = []

    def _close(self) -> None:
        now = time.monotonic()
        if self._current is not None:
            self._current["seconds"] = round(now - self._current.pop("_t"), 4)
            self._rows.append(self._current)
            self._current = None

    def _open(self, task: Any) -> None:
        self._close()
        self._current = {
            "play": self._play,
            "task": task.get_name(),
            "path": task.get_path() or "",
            "_t": time.monotonic(),
        }

    def v2_playbook_on_play_start(self, play: Any) -> None:
        self._close()
        self._play = play.get_name()

    def v2_playbook_on_task_start(self, task: Any, is_conditional: bool) -> None:
        self._open(task)

    def v2_playbook_on_handler_task_start(self, task: Any) -> None:
        self._open(task)

    def v2_playbook_on_stats(self, stats: Any) -> None:
        self._close()
        path = os.environ.get("ARMS_TASK_TIMES_FILE")
        if path:
            with open(path, "w", encoding="utf-8") as fh:
                json.dump({"total": round(time.monotonic() - self._start, 3), "tasks": self._rows}, fh)
