"""Filters of nanochat-arms that check inputs: ``arms_experiment_problems`` (unsafe names in the experiment).

The rules live once, in ``plugins/module_utils/arms_names.py`` (the manifest reader on the hosts
applies the same file). It imports only the standard library, so it is loaded here by its path:
on the controller ``ansible.module_utils`` is ansible-core's own package, without the project's
folder.
"""

from __future__ import annotations

import importlib.util
import os
from typing import Any

_NAMES = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "module_utils", "arms_names.py")
_spec = importlib.util.spec_from_file_location("nanochat_arms_names", _NAMES)
assert _spec and _spec.loader
arms_names = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(arms_names)


def arms_experiment_problems(experiment: Any, tokenizer_from_arm: Any = None) -> list[str]:
    """Sentences naming every arm name, run name, prefix or experiment name that is not a safe name.

    ``arms_experiment | arms_experiment_problems(arms_tokenizer_from_arm)`` -> ``[]`` when all are
    fine; ``["the arm name 'top$(touch F)' holds characters other than letters, ..."]`` otherwise.
    """
    return arms_names.experiment_problems(experiment, tokenizer_from_arm)


class FilterModule:
    def filters(self) -> dict[str, Any]:
        return {"arms_experiment_problems": arms_experiment_problems}
