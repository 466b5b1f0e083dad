"""Filters of the host-to-host transfer (the arms_transfer role): the lines that say whom to trust.

The rules live in ``plugins/module_utils/arms_transfer.py`` (standard library only), loaded here by
its path: on the controller ``ansible.module_utils`` is ansible-core's own package. A value the
transfer cannot trust fails the task with the rule's sentence.
"""

from __future__ import annotations

import importlib.util
import os
from collections.abc import Callable
from typing import Any

from ansible.errors import AnsibleFilterError

_RULES = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "module_utils", "arms_transfer.py")
_spec = importlib.util.spec_from_file_location("nanochat_arms_transfer", _RULES)
assert _spec and _spec.loader
arms_transfer = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(arms_transfer)


def _sentences(fn: Callable[..., Any]) -> Callable[..., Any]:
    def call(*args: Any) -> Any:
        try:
            return fn(*args)
        except arms_transfer.TransferError as exc:
            raise AnsibleFilterError(f"the transfer cannot go ahead: {exc}.") from None

    call.__doc__ = fn.__doc__
    return call


class FilterModule:
    def filters(self) -> dict[str, Any]:
        return {
            "arms_transfer_authorized_line": _sentences(arms_transfer.authorized_line),
            "arms_transfer_probe_line": _sentences(arms_transfer.probe_line),
            "arms_transfer_client_address": _sentences(arms_transfer.client_address),
            "arms_transfer_known_hosts": _sentences(arms_transfer.known_hosts_lines),
        }
