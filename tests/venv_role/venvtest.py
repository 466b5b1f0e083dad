"""Helpers of the tests/venv_role tests: the nanochat_venv role run on this machine (see conftest.py)."""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

from arms_runner import Summary, run_playbook

ROOT = Path(__file__).resolve().parents[2]
BUNDLE = Path(os.environ.get("ARMS_NANOCHAT_BUNDLE", ROOT.parent / "shared" / "nanochat" / "nanochat.bundle"))
PIN = "b07604e"
PLAYBOOK = "tests/fixtures/playbooks/nanochat_venv.yml"
INVENTORY = "tests/fixtures/inventory.ini"


def load_fake_torch_index() -> Any:
    path = ROOT / "tests" / "lab" / "fake_torch_index.py"
    spec = importlib.util.spec_from_file_location("fake_torch_index", path)
    assert spec and spec.loader
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


class VenvHost:
    """One test's machine: checkout, venv and state dir under ``base``, and a way to run the role on it."""

    def __init__(self, base: Path, checkout: Path, uv: str) -> None:
        self.base = base
        self.checkout = checkout
        self.venv = base / "venv"
        self.state = base / "state"
        self.uv = uv
        self.result_file = base / "venv-result.json"

    def make_empty_venv(self) -> None:
        """What an earlier run left: a venv without nanochat's packages (check mode then dry-runs the install)."""
        subprocess.run([self.uv, "venv", "--quiet", "--python", sys.executable, str(self.venv)], check=True)

    def installed(self) -> set[str]:
        """Distribution names (lower case) installed in the venv."""
        site = next((self.venv / "lib").glob("python3*/site-packages"))
        return {p.name.split("-")[0].lower().replace("_", "-") for p in site.glob("*.dist-info")}

    def run(self, check: bool = False, **role_vars: Any) -> tuple[Summary, dict[str, Any]]:
        """ansible-playbook of the fixture playbook; (summary, what the role's index lookup and install returned)."""
        if self.result_file.exists():
            self.result_file.unlink()
        extravars = {
            "nanochat_dir": str(self.checkout),
            "nanochat_venv": str(self.venv),
            "arms_state_dir": str(self.state),
            "arms_uv": self.uv,
            "nanochat_venv_python": sys.executable,
            "venv_result_file": str(self.result_file),
            **role_vars,
        }
        env = {k: v for k, v in os.environ.items() if not k.startswith(("WANDB_", "HF_", "HUGGINGFACE_", "AZURE_"))}
        summary = run_playbook(PLAYBOOK, INVENTORY, project_dir=str(ROOT), extravars=extravars, check=check, env=env)
        result = json.loads(self.result_file.read_text()) if self.result_file.exists() else {}
        return summary, result
