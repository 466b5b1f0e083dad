"""Run a library/ module in-process, as Ansible would, and return its JSON result."""

from __future__ import annotations

import importlib.util
import json
import os
from typing import Any

import pytest
from ansible.module_utils.testing import patch_module_args

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def load_module(name: str) -> Any:
    spec = importlib.util.spec_from_file_location(f"arms_lib_{name}", os.path.join(ROOT, "library", f"{name}.py"))
    assert spec and spec.loader
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def run_module(
    name: str, args: dict[str, Any], capsys: pytest.CaptureFixture[str], check_mode: bool = False
) -> dict[str, Any]:
    """Call ``library/<name>.py``'s main() with ``args``; return the parsed result (failed or not)."""
    mod = load_module(name)
    if check_mode:
        args = {**args, "_ansible_check_mode": True}
    with patch_module_args(args), pytest.raises(SystemExit):
        mod.main()
    out = capsys.readouterr().out
    return json.loads(out.strip().splitlines()[-1])
