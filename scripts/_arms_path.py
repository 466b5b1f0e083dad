"""Make ``ansible.module_utils.arms_*`` importable for the CLI scripts, with or without Ansible.

The project's logic lives once, in ``plugins/module_utils/``, and is written to be shipped by
Ansible as ``ansible.module_utils.<name>``. A script run by hand on a host (where Ansible may not
be installed) gets the same import path through this shim.
"""

from __future__ import annotations

import os
import sys
import types

MODULE_UTILS = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "plugins", "module_utils")


def setup() -> None:
    try:
        import ansible.module_utils as mu
    except ImportError:
        ansible_pkg = sys.modules.setdefault("ansible", types.ModuleType("ansible"))
        ansible_pkg.__path__ = getattr(ansible_pkg, "__path__", [])  # type: ignore[attr-defined]
        mu = types.ModuleType("ansible.module_utils")
        mu.__path__ = []  # type: ignore[attr-defined]
        sys.modules["ansible.module_utils"] = mu
        ansible_pkg.module_utils = mu  # type: ignore[attr-defined]
    if MODULE_UTILS not in mu.__path__:
        mu.__path__.append(MODULE_UTILS)


setup()
