"""Every module in library/ documents exactly the options it accepts, and renders with ansible-doc."""

from __future__ import annotations

import glob
import os
import subprocess
import sys

import pytest
import yaml
from modtest import ROOT, documented_options, load_module

MODULES = sorted(os.path.splitext(os.path.basename(p))[0] for p in glob.glob(os.path.join(ROOT, "library", "*.py")))


@pytest.mark.parametrize("name", MODULES)
def test_documentation_matches_argument_spec(name: str) -> None:
    documented_options(name)
    mod = load_module(name)
    yaml.safe_load(mod.EXAMPLES)
    yaml.safe_load(mod.RETURN)


@pytest.mark.parametrize("name", MODULES)
def test_module_renders_with_ansible_doc(name: str) -> None:
    doc = os.path.join(os.path.dirname(sys.executable), "ansible-doc")
    proc = subprocess.run([doc, "-M", os.path.join(ROOT, "library"), name], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    assert name in proc.stdout and "ERROR" not in proc.stderr
