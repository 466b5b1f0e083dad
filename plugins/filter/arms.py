"""Filters of nanochat-arms: ``arms_inventory_arg`` (the -i part of the commands a repair message names) and
``arms_playbook_command`` (the whole command a message tells a user to run).

``arms_playbook_command`` is ``arms_common.playbook_command`` (standard library only), loaded here by its
path: on the controller ``ansible.module_utils`` is ansible-core's own package. So a playbook's message
and a module's message build the command in one place::

    {{ 'repair' | arms_playbook_command(arms_inventory_arg, tags='deps', limit=inventory_hostname) }}
"""

from __future__ import annotations

import importlib.util
import os
import sys
from typing import Any

PROJECT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

_COMMON = os.path.join(PROJECT, "plugins", "module_utils", "arms_common.py")
_spec = importlib.util.spec_from_file_location("nanochat_arms_common", _COMMON)
assert _spec and _spec.loader
arms_common = importlib.util.module_from_spec(_spec)
sys.modules[_spec.name] = arms_common  # its dataclasses look their module up there
_spec.loader.exec_module(arms_common)

_STATUS = os.path.join(PROJECT, "plugins", "module_utils", "arms_status.py")
_sspec = importlib.util.spec_from_file_location("nanochat_arms_status", _STATUS)
assert _sspec and _sspec.loader
arms_status = importlib.util.module_from_spec(_sspec)
sys.modules[_sspec.name] = arms_status
_sspec.loader.exec_module(arms_status)


def arms_status_rows(hosts: list[str], hostvars: Any) -> list[str]:
    """status.yml's table: arms_status.status_rows for every arm of every host that read its runs
    (``arms_run_results``, {arm: result}, kept by the arms_run role's status; else its one ``arms_run_result``)."""
    rows: list[str] = []
    for host in hosts:
        hv = hostvars[host]
        results = dict(hv.get("arms_run_results") or {})
        if not results and "arms_run_result" in hv:
            results = {(hv.get("arms_my_arm") or {}).get("key", "-"): hv["arms_run_result"]}
        util = (hv.get("arms_gpu") or {}).get("stdout_lines") or []
        for arm, status in results.items():
            rows.extend(arms_status.status_rows(host, arm, dict(status), list(util)))
    return rows


def arms_inventory_arg(sources: list[str] | str | None) -> str:
    """The inventory sources of this run as ``-i`` arguments, relative to the project where they lie in it.

    ``['/work/nanochat-arms/inventory/lab']`` -> ``-i inventory/lab/``: a repair message then names the
    inventory the user ran with (a copied ``inventory-mine/``, the lab), not always ``inventory/``.
    """
    if isinstance(sources, str):
        sources = [sources]
    parts = []
    for source in sources or ["inventory"]:
        path = os.path.abspath(source)
        shown = os.path.relpath(path, PROJECT) if path.startswith(PROJECT + os.sep) else path
        parts.append(f"-i {shown}{'/' if os.path.isdir(path) else ''}")
    return " ".join(parts)


class FilterModule:
    def filters(self) -> dict[str, Any]:
        return {
            "arms_inventory_arg": arms_inventory_arg,
            "arms_status_rows": arms_status_rows,
            "arms_playbook_command": arms_common.playbook_command,  # tags, limit, extra_vars by name
        }
