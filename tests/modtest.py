"""Run a library/ module in-process, as Ansible would, and return its JSON result."""

from __future__ import annotations

import importlib.util
import json
import os
from typing import Any

import pytest
import yaml
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


class _Captured(Exception):
    pass


def argument_spec_of(name: str) -> dict[str, Any]:
    """The argument_spec ``library/<name>.py``'s main() gives AnsibleModule (caught before it parses anything)."""
    mod = load_module(name)
    seen: dict[str, Any] = {}

    class Capture:
        def __init__(self, argument_spec: dict[str, Any], **_: Any) -> None:
            seen.update(argument_spec)
            raise _Captured

    mod.AnsibleModule = Capture
    with pytest.raises(_Captured):
        mod.main()
    return seen


def documented_options(name: str) -> tuple[dict[str, Any], dict[str, Any]]:
    """(DOCUMENTATION's options, the argument_spec) of a module, once every option is checked to be documented
    as it is declared: the same names, and for each its type, required, default, elements and choices, and a
    description."""
    options = yaml.safe_load(load_module(name).DOCUMENTATION).get("options") or {}
    spec = argument_spec_of(name)
    assert sorted(options) == sorted(spec), f"{name}: DOCUMENTATION options differ from the argument_spec"
    for opt, decl in spec.items():
        doc = options[opt]
        assert doc.get("type", "str") == decl.get("type", "str"), f"{name}.{opt}: type differs"
        assert bool(doc.get("required", False)) == bool(decl.get("required", False)), f"{name}.{opt}: required"
        assert doc.get("default") == decl.get("default"), f"{name}.{opt}: default differs"
        assert doc.get("elements") == decl.get("elements"), f"{name}.{opt}: elements differ"
        assert doc.get("choices") == decl.get("choices"), f"{name}.{opt}: choices differ"
        assert doc.get("description"), f"{name}.{opt}: no description"
    return options, spec
