"""Make ``ansible.module_utils.arms_*`` and the controller's ``arms_*`` importable for scripts and tests.

The project's logic lives once, in ``plugins/module_utils/``, and is written to be shipped by
Ansible as ``ansible.module_utils.<name>``. A script run by hand on a host (where Ansible may not
be installed) gets the same import path through this shim. Code only the controller runs (the CI
entry, results, test fixtures) lives apart, in ``plugins/controller/``, and is imported by its bare
name (``import arms_runner``): this shim puts that folder on ``sys.path``.
"""

from __future__ import annotations

import os
import sys
import types

PLUGINS = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "plugins")
MODULE_UTILS = os.path.join(PLUGINS, "module_utils")
CONTROLLER = os.path.join(PLUGINS, "controller")


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
    if CONTROLLER not in sys.path:
        sys.path.insert(0, CONTROLLER)


setup()
