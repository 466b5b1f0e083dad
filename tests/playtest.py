"""Run ansible-playbook from a test the way a user does, and fail with its output when it fails."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

ANSIBLE_PLAYBOOK = os.path.join(os.path.dirname(sys.executable), "ansible-playbook")
# the inventory of a play that runs on this machine only
LOCALHOST = ["-i", "localhost,", "-c", "local"]


def ansible_playbook(
    args: list[str], *, cwd: str | Path, env: dict[str, str], timeout: int = 300
) -> subprocess.CompletedProcess[str]:
    """``ansible-playbook ARGS`` in ``cwd`` with ``env``; asserts it succeeded (its output is the message)."""
    proc = subprocess.run([ANSIBLE_PLAYBOOK, *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return proc
