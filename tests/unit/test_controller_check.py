"""`make venv` refuses an unsupported controller with a sentence (scripts/check_controller.sh)."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
CHECK = ROOT / "scripts" / "check_controller.sh"


def run_with(tmp_path: Path, **fakes: str) -> subprocess.CompletedProcess[str]:
    """Run the check with some commands replaced by shell stand-ins (name -> script body)."""
    bindir = tmp_path / "bin"
    bindir.mkdir(exist_ok=True)
    for name, body in fakes.items():
        fake = bindir / name
        fake.write_text(f"#!/bin/sh\n{body}\n")
        fake.chmod(0o755)
    env = {**os.environ, "PATH": f"{bindir}:{os.environ['PATH']}"}
    return subprocess.run(["bash", str(CHECK)], capture_output=True, text=True, env=env)


def test_this_linux_controller_passes(tmp_path: Path) -> None:
    assert run_with(tmp_path).returncode == 0


def test_windows_without_wsl_is_told_to_use_wsl(tmp_path: Path) -> None:
    proc = run_with(tmp_path, uname="echo MINGW64_NT-10.0-19045")
    assert proc.returncode == 1
    assert "does not run on Windows itself: install WSL" in proc.stderr and "wsl --install" in proc.stderr


def test_an_old_python_is_named_with_the_version_needed(tmp_path: Path) -> None:
    # a python3.11 on PATH that is really a 3.10 (as an alias or a broken link would be)
    old = 'case "$*" in *platform*) echo 3.10.12 ;; *) exit 1 ;; esac'
    proc = run_with(tmp_path, **{"python3.11": old})
    assert proc.returncode == 1
    assert "is Python 3.10.12; ansible-core 2.19 needs 3.11 or newer on the controller" in proc.stderr
