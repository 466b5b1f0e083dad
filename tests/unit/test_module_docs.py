"""Every module in library/ documents exactly the options it accepts, and renders with ansible-doc."""

from __future__ import annotations

import glob
import os
import subprocess
import sys
from typing import Any

import pytest
import yaml
from modtest import ROOT, load_module

MODULES = sorted(os.path.splitext(os.path.basename(p))[0] for p in glob.glob(os.path.join(ROOT, "library", "*.py")))


class _Captured(Exception):
    pass


def argument_spec_of(name: str) -> dict[str, Any]:
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


@pytest.mark.parametrize("name", MODULES)
def test_documentation_matches_argument_spec(name: str) -> None:
    mod = load_module(name)
    doc = yaml.safe_load(mod.DOCUMENTATION)
    spec = argument_spec_of(name)
    options = doc.get("options") or {}
    assert sorted(options) == sorted(spec), f"{name}: DOCUMENTATION options differ from the argument_spec"
    for opt, decl in spec.items():
        assert options[opt].get("type", "str") == decl.get("type", "str"), f"{name}.{opt}: type differs"
        assert bool(options[opt].get("required", False)) == bool(decl.get("required", False)), f"{name}.{opt}"
        if "default" in decl and decl["default"] is not None:
            assert options[opt].get("default") == decl["default"], f"{name}.{opt}: default differs"
    yaml.safe_load(mod.EXAMPLES)
    yaml.safe_load(mod.RETURN)


@pytest.mark.parametrize("name", MODULES)
def test_module_renders_with_ansible_doc(name: str) -> None:
    doc = os.path.join(os.path.dirname(sys.executable), "ansible-doc")
    proc = subprocess.run([doc, "-M", os.path.join(ROOT, "library"), name], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    assert name in proc.stdout and "ERROR" not in proc.stderr
