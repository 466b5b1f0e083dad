#!/usr/bin/python
"""Ansible module: poll an async job and report its progress line (logic in module_utils/arms_jobs.py)."""

from __future__ import annotations

DOCUMENTATION = r"""
module: nanochat_job
short_description: Wait for a nanochat-arms async step, showing its progress
description:
  - Reads the async job's status and the step's progress state file. Use it in an C(until) loop;
    while the job runs it returns C(finished=false) and C(progress_line), which the C(arms_progress)
    callback prints on every retry. When the job has finished it returns the step's own result
    (its C(changed), C(msg) and return values) and fails if the step failed.
options:
  jid:
    description: The async job id (C(ansible_job_id) of the task started with C(poll=0)).
    type: str
    required: true
  progress_file:
    description: The step's progress state file (JSON with a C(line) key).
    type: path
  progress_log:
    description: A text log whose last line is the progress (e.g. rsync C(--info=progress2) output).
    type: path
  async_dir:
    description: Where Ansible keeps async job status files on the host.
    type: path
    default: ~/.ansible_async
  wait:
    description:
      - Seconds to wait for the job to finish before returning C(finished=false) (it returns as soon as the
        job ends). A short job is then seen finished right away instead of one C(until) delay later.
    type: float
    default: 2.0
author: nanochat-arms
"""

EXAMPLES = r"""
- name: Shards are written (progress below)
  nanochat_job:
    jid: "{{ shard_job.ansible_job_id }}"
    progress_file: ~/.local/share/nanochat-arms/progress/shard.json
  register: shard_wait
  until: shard_wait.finished
  retries: 100000
  delay: 5
"""

RETURN = r"""
finished:
  description: Whether the job has finished.
  type: bool
  returned: always
progress_line:
  description: The step's latest progress line.
  type: str
  returned: when known
result:
  description: The step's own result, once finished.
  type: dict
  returned: when finished
"""

from typing import Any

from ansible.module_utils.arms_common import ModuleFailure, run_module
from ansible.module_utils.arms_jobs import log_tail, wait_for_job
from ansible.module_utils.basic import AnsibleModule

ARGUMENT_SPEC: dict[str, Any] = {
    "jid": {"type": "str", "required": True},
    "progress_file": {"type": "path"},
    "progress_log": {"type": "path"},
    "async_dir": {"type": "path", "default": "~/.ansible_async"},
    "wait": {"type": "float", "default": 2.0},
}


def job_status(p: dict[str, Any], check_mode: bool) -> dict[str, Any]:
    status = wait_for_job(p["jid"], p["async_dir"], p["progress_file"], p["progress_log"], wait=p["wait"])
    if not status["finished"]:
        return {"changed": False, "finished": False, "progress_line": status["progress_line"]}
    result = status["result"]
    changed = bool(result.get("changed"))
    if result.get("failed"):
        msg = result.get("msg") or "the step failed"
        if p["progress_log"]:
            lines = log_tail(p["progress_log"], 4)
            if lines:
                msg = f"{msg} (exit code {result.get('rc', '?')}); the log ends with: " + " | ".join(lines)
        raise ModuleFailure(msg, finished=True, result=result, progress_line=status["progress_line"])
    return {
        "changed": changed,
        "finished": True,
        "result": result,
        "progress_line": status["progress_line"],
        "msg": result.get("msg", ""),
    }


def main() -> None:
    run_module(AnsibleModule, ARGUMENT_SPEC, job_status, errors=(ModuleFailure,))


if __name__ == "__main__":
    main()
