"""Shared test set-up: module_utils importable as ``ansible.module_utils.*``, and the ``source`` dataset."""

from __future__ import annotations

import os
import sys
from typing import Any

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, "scripts"))
sys.path.insert(0, os.path.join(ROOT, "tests"))

import _arms_path  # noqa: F401  (extends ansible.module_utils.__path__)


@pytest.fixture(scope="module")
def source(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> str:
    """A fortified-like source dataset (arms_fixture), made once per test module from its ``SOURCE`` settings."""
    from arms_fixture import make_fixture

    settings: dict[str, Any] = request.module.SOURCE
    out = str(tmp_path_factory.mktemp("src") / "fortified")
    make_fixture(out, **settings)
    return out
