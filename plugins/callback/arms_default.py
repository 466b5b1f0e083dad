"""Ansible's default output, except that a progress poll shows its progress line, not a failure.

The long steps (sharding, the Azure download, transfers, training start) are waited for in ``until``
loops whose every poll is a "retry". The default callback prints each as
``FAILED - RETRYING: [host]: task (N retries left).``, which reads like an error on every line of a
healthy run. This stdout callback prints the poll's ``progress_line`` instead (rows, shards, MB/s,
ETA), and keeps the default text for retries that carry none.
"""

from __future__ import annotations

from ansible.plugins.callback.default import CallbackModule as DefaultCallback

DOCUMENTATION = """
name: arms_default
type: stdout
short_description: the default output, with progress lines instead of "FAILED - RETRYING"
description:
  - Ansible's default stdout callback; a retry whose result carries C(progress_line) prints that line.
extends_documentation_fragment:
  - default_callback
  - result_format_callback
requirements:
  - set as stdout_callback in ansible.cfg
"""


class CallbackModule(DefaultCallback):
    CALLBACK_VERSION = 2.0
    CALLBACK_TYPE = "stdout"
    CALLBACK_NAME = "arms_default"

    def v2_runner_retry(self, result):  # type: ignore[no-untyped-def]
        line = result._result.get("progress_line")
        if not line:
            super().v2_runner_retry(result)
            return
        self._display.display(f"  [{result._host.get_name()}] {line}", color="cyan")
