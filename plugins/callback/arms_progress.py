"""Print the progress line of long-running nanochat-arms steps while Ansible waits for them.

Long steps (sharding, Azure download, transfer, training start) run as async jobs; the playbooks
poll them with the ``nanochat_job`` module in an ``until`` loop. Each poll returns
``progress_line``; this callback prints it on every retry, so the person running the playbook sees
rows, shards, MB/s and ETA. Under ansible-playbook the stdout callback ``arms_default`` prints the
line in place of "FAILED - RETRYING" (and this one stays quiet); under ansible-runner, whose own
stdout callback is forced, this one prints it below the runner's retry line.
"""

from __future__ import annotations

from ansible import constants as C
from ansible.plugins.callback import CallbackBase

DOCUMENTATION = """
name: arms_progress
type: aggregate
short_description: show progress lines of nanochat-arms async steps
description:
  - On every retry of a task whose result carries C(progress_line), print that line.
requirements:
  - enabled in ansible.cfg (callbacks_enabled)
"""


class CallbackModule(CallbackBase):
    CALLBACK_VERSION = 2.0
    CALLBACK_TYPE = "aggregate"
    CALLBACK_NAME = "arms_progress"
    CALLBACK_NEEDS_ENABLED = True

    def v2_runner_retry(self, result):  # type: ignore[no-untyped-def]
        if C.config.get_config_value("DEFAULT_STDOUT_CALLBACK") == "arms_default":
            return  # that stdout callback prints the line in place of "FAILED - RETRYING"
        line = result._result.get("progress_line")
        if line:
            self._display.display(f"  [{result._host.get_name()}] {line}", color="cyan")
