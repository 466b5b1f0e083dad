"""(The folder is not named `venv`: pytest never collects a folder of that name.)

The nanochat_venv role run on the controller itself (connection local), against the REAL nanochat.

No lab needed: the role is applied to localhost through ansible-runner with tests/fixtures/inventory.ini,
its folders (checkout, venv, state dir) in a temporary folder, nanochat cloned from
../shared/nanochat/nanochat.bundle at the production pin. uv must be installed (the uv role's version;
``.venv/bin/pip install uv==0.13.9``); uv's own cache is shared with the user's, so metadata fetched
from the package registry once makes later runs fast.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest
from venvtest import BUNDLE, PIN, VenvHost, load_fake_torch_index


@pytest.fixture(scope="session")
def uv() -> str:
    """The uv command (next to this Python, else on PATH); fails, not skips, when missing."""
    found = shutil.which("uv", path=os.path.dirname(sys.executable)) or shutil.which("uv")
    if not found:
        pytest.fail("uv is not installed: run `.venv/bin/pip install uv==0.13.9` (the uv role's version)")
    return found


@pytest.fixture(scope="session")
def nanochat_pin(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A pristine clone of the real nanochat at the production pin (copied per test, never changed)."""
    if not BUNDLE.is_file():
        pytest.fail(f"the real nanochat bundle is missing: {BUNDLE} (set ARMS_NANOCHAT_BUNDLE)")
    dest = tmp_path_factory.mktemp("nanochat-pin") / "nanochat"
    subprocess.run(["git", "clone", "--quiet", "--no-checkout", str(BUNDLE), str(dest)], check=True)
    subprocess.run(["git", "-C", str(dest), "checkout", "--quiet", PIN], check=True)
    return dest


@pytest.fixture
def venv_host(tmp_path: Path, nanochat_pin: Path, uv: str) -> VenvHost:
    checkout = tmp_path / "nanochat"
    shutil.copytree(nanochat_pin, checkout, symlinks=True)
    return VenvHost(tmp_path, checkout, uv)


@pytest.fixture(scope="session")
def fake_torch_index(tmp_path_factory: pytest.TempPathFactory) -> Callable[[str], str]:
    """Builds a stand-in torch index holding one wheel of ``version``; returns its file:// URL."""
    mod = load_fake_torch_index()
    made: dict[str, str] = {}

    def build(version: str = "2.9.1+cu128") -> str:
        if version not in made:
            dest = tmp_path_factory.mktemp("torch-index")
            mod.build_index(str(dest), version=version)
            made[version] = mod.index_url(str(dest))
        return made[version]

    return build
