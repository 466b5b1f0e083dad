"""Filters of nanochat-arms: ``arms_inventory_arg`` (the -i part of the commands a repair message names)."""

from __future__ import annotations

import os
from typing import Any

PROJECT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


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
        return {"arms_inventory_arg": arms_inventory_arg}
