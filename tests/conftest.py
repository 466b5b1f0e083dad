"""Shared test set-up: the project's module_utils are importable as ``ansible.module_utils.*``."""

from __future__ import annotations

import os
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, "scripts"))
sys.path.insert(0, os.path.join(ROOT, "tests"))

import _arms_path  # noqa: F401  (extends ansible.module_utils.__path__)
