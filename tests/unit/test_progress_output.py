"""What a person running ansible-playbook sees while a long step is waited for."""

from __future__ import annotations

import os
from pathlib import Path

from playtest import ansible_playbook

ROOT = Path(__file__).resolve().parents[2]


def test_a_progress_poll_prints_its_line_and_nothing_that_looks_like_a_failure(tmp_path: Path) -> None:
    (tmp_path / "progress").mkdir()
    env = {**os.environ, "ANSIBLE_CONFIG": str(ROOT / "ansible.cfg"), "ANSIBLE_NOCOLOR": "1"}
    proc = ansible_playbook(
        ["-i", "tests/fixtures/inventory.ini", "tests/fixtures/playbooks/progress.yml", "-e", f"workdir={tmp_path}"],
        cwd=ROOT,
        env=env,
    )
    assert "  [localhost] chunk " in proc.stdout  # the step's own progress, on every poll
    assert "FAILED - RETRYING" not in proc.stdout
    assert "[WARNING]" not in proc.stdout + proc.stderr and "DEPRECATION" not in proc.stdout + proc.stderr
