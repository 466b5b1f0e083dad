"""A killed or cancelled CI entry leaves no playbook running and no secrets behind (issue 15).

Real processes: the entry runs a playbook on the controller (local connection) whose task sleeps;
the entry is then killed (SIGKILL) or cancelled (SIGTERM, what a CI runner sends first).
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest
from arms_runner import OWNER_FILE, SECRETS_PREFIX, clean_stale, owner_token

ROOT = Path(__file__).resolve().parents[2]
ENTRY = ROOT / "scripts" / "nanochat_arms_run.py"
INVENTORY = ROOT / "tests" / "fixtures" / "inventory.ini"
SECRET = "hf_" + "s" * 30


def processes_with(marker: str) -> list[int]:
    """Pids whose command line holds ``marker`` (the step's shell, ansible-playbook, the guard)."""
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit() or int(entry) == os.getpid():
            continue
        try:
            with open(f"/proc/{entry}/cmdline", "rb") as fh:
                cmd = fh.read()
            with open(f"/proc/{entry}/stat") as fh:
                state = fh.read().rsplit(")", 1)[-1].split()[0]
        except OSError:
            continue
        if marker.encode() in cmd and state != "Z":
            found.append(int(entry))
    return found


def live_in_group(group: int) -> list[int]:
    """Processes of process group ``group`` that are not zombies (dead, waiting for a parent to reap them)."""
    found = []
    for entry in os.listdir("/proc"):
        try:
            with open(f"/proc/{entry}/stat") as fh:
                fields = fh.read().rsplit(")", 1)[-1].split()
        except OSError:
            continue
        if int(fields[2]) == group and fields[0] != "Z":
            found.append(int(entry))
    return found


def wait_for(check, timeout: float, what: str):  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = check()
        if value:
            return value
        time.sleep(0.2)
    raise AssertionError(f"timed out waiting for {what}")


def secrets_folders(tmp: Path) -> list[str]:
    return sorted(p for p in os.listdir(tmp) if p.startswith(SECRETS_PREFIX))


def start_entry(tmp_path: Path, marker: str) -> tuple[subprocess.Popen[str], Path]:
    """The entry running a playbook whose task sleeps; every process of it has ``marker`` in its command line."""
    play = tmp_path / f"sleep-{marker}.yml"
    play.write_text(
        "- name: A long step on the controller\n"
        "  hosts: local\n"
        "  gather_facts: false\n"
        "  tasks:\n"
        "    - name: The step sleeps\n"
        "      ansible.builtin.command:\n"
        f"        argv: [/bin/sh, -c, 'sleep 300.{marker[-6:]}; exit 0', {marker}]\n"
        "      changed_when: false\n"
    )
    tmp = tmp_path / "tmp"
    tmp.mkdir(exist_ok=True)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("WANDB_", "HF_", "HUGGINGFACE_", "AZURE_"))}
    env.update(TMPDIR=str(tmp), HF_TOKEN=SECRET)
    proc = subprocess.Popen(
        [sys.executable, str(ENTRY), str(play), "-i", str(INVENTORY), "-l", "local"],
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    # the task's own sleep is running: ansible-playbook, its worker and the module are all up
    wait_for(lambda: processes_with(f"300.{marker[-6:]}"), 60, "the step")
    assert secrets_folders(tmp), "the run holds its secrets in a folder while it runs"
    return proc, tmp


def test_sigkill_of_the_entry_ends_its_playbook_and_the_next_start_removes_its_secrets(tmp_path: Path) -> None:
    marker = f"arms-test-{uuid.uuid4().int % 10**6:06d}"
    proc, tmp = start_entry(tmp_path, marker)
    try:
        proc.kill()
        proc.wait(timeout=30)
        # nothing of the playbook outlives the entry (its guard dies with it: PR_SET_PDEATHSIG)
        wait_for(lambda: not processes_with(marker) and not processes_with(f"300.{marker[-6:]}"), 30, "the end")
        # SIGKILL leaves the secrets file; the next start removes it (its owner is gone)
        assert secrets_folders(tmp)
        env = {**os.environ, "TMPDIR": str(tmp)}
        again = subprocess.run(
            [sys.executable, str(ENTRY), "missing.yml", "-i", str(INVENTORY)],
            cwd=ROOT,
            env=env,
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert again.returncode == 2 and "removed " in again.stdout, again.stdout + again.stderr
        assert secrets_folders(tmp) == []
        assert SECRET not in again.stdout + again.stderr
    finally:
        for pid in processes_with(marker):
            os.kill(pid, signal.SIGKILL)


def test_sigterm_cancels_the_run_ends_the_playbook_and_removes_the_secrets(tmp_path: Path) -> None:
    marker = f"arms-test-{uuid.uuid4().int % 10**6:06d}"
    proc, tmp = start_entry(tmp_path, marker)
    try:
        proc.send_signal(signal.SIGTERM)
        out, _ = proc.communicate(timeout=60)
        assert proc.returncode == 1, out
        assert "canceled" in out and SECRET not in out
        wait_for(lambda: not processes_with(marker) and not processes_with(f"300.{marker[-6:]}"), 30, "the end")
        assert secrets_folders(tmp) == []
    finally:
        for pid in processes_with(marker):
            os.kill(pid, signal.SIGKILL)


def test_only_folders_whose_entry_is_gone_are_removed(tmp_path: Path) -> None:
    dead = subprocess.Popen(["true"])
    dead.wait()
    folders = {
        "live": owner_token(),  # this test process: still running
        "dead": owner_token(dead.pid).split(":")[0] + ":1",  # a pid with another start time: gone or reused
        "legacy_old": None,  # no owner file, made by an older version, long ago
        "legacy_new": None,  # no owner file, just made (its owner may be starting)
    }
    for name, owner in folders.items():
        folder = tmp_path / f"{SECRETS_PREFIX}{name}"
        folder.mkdir(mode=0o700)
        (folder / "secrets.json").write_text("{}")
        if owner:
            (folder / OWNER_FILE).write_text(owner)
    old = time.time() - 3600
    os.utime(tmp_path / f"{SECRETS_PREFIX}legacy_old", (old, old))
    (tmp_path / "arms-secrets-file").write_text("not a folder: left alone")
    done = clean_stale(str(tmp_path))
    assert sorted(os.listdir(tmp_path)) == [
        "arms-secrets-file",
        f"{SECRETS_PREFIX}legacy_new",
        f"{SECRETS_PREFIX}live",
    ]
    assert len([d for d in done if d.startswith("removed")]) == 2


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_the_guard_ends_its_whole_group_when_told_to_stop(tmp_path: Path, sig: int) -> None:
    """The guard alone: a 'playbook' that ignores SIGTERM still ends, with its child and its own-session worker."""
    marker = f"arms-guard-{uuid.uuid4().int % 10**6:06d}"
    fake = tmp_path / "fake-playbook"
    # like ansible-playbook: a child in the guard's group, and a worker in a session of its own (setsid)
    fake.write_text(f"#!/bin/sh\ntrap '' TERM\nsleep 300.{marker[-6:]} &\nsetsid sleep 301.{marker[-6:]} &\nwait\n")
    fake.chmod(0o755)
    code = (
        f"import sys; sys.path.insert(0, {str(ROOT / 'scripts')!r}); import _arms_path\n"
        "import arms_runner as r\n"
        f"r.GRACE_S = 1.0\nsys.exit(r.guard_main([{marker!r}], playbook_bin={str(fake)!r}))\n"
    )
    guard = subprocess.Popen([sys.executable, "-c", code], start_new_session=True)
    try:
        wait_for(lambda: len(processes_with(f".{marker[-6:]}")) == 2, 30, "the fake playbook")
        guard.send_signal(sig)
        guard.wait(timeout=30)
        wait_for(lambda: not processes_with(marker) and not processes_with(f".{marker[-6:]}"), 10, "the end")
        assert live_in_group(guard.pid) == []
    finally:
        if guard.poll() is None:
            os.killpg(guard.pid, signal.SIGKILL)
