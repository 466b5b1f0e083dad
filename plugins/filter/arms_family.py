"""Filters of nanochat-arms for families, placement and profiles (the rules live in module_utils/arms_family.py).

- ``arms_family_problems`` / ``arms_profile_problems``: sentences for validate.yml's assert.
- ``arms_expand_arms``: the experiment with every family declaration expanded into plain arms.
- ``arms_apply_profile(profile)``: the experiment as a profile (``-e arms_profile=pilot``) runs it.
- ``arms_profile_diff(other)``: the key paths two experiments differ in (the preflight shows them).
- ``arms_place(groups, gpus_per_host, gpus_per_arm, pack)``: where each arm runs.
- ``arms_host_arms(host)``: the arms of one host from a placement.
- ``arms_host_runs(placement, host, state_dir, base_dir, data_dir)``: those arms with their paths and launch
  values on the host (layout.yml's ``arms_my_arms``).
- ``arms_receive_items(...)``: what one transfer from the CPU node brings to a host for its arms.
- ``arms_fact_keys``: {arm: the names its preflight facts go by}.
- ``arms_profile_diff_problems``: sentences for the paths of a profile diff no profile may change.
- ``arms_shared_sources``: the random arms grouped by the source they read.
- ``arms_seed_families``: {arm: its noise-band family or None}, what collect passes to arms_noise.

``arms_family.py`` imports only the standard library, so it is loaded here by its path: on the
controller ``ansible.module_utils`` is ansible-core's own package, without the project's folder.
"""

from __future__ import annotations

import functools
import importlib.util
import os
from collections.abc import Callable, Mapping
from typing import Any

from ansible.errors import AnsibleFilterError

_FAMILY = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "module_utils", "arms_family.py")
_spec = importlib.util.spec_from_file_location("nanochat_arms_family", _FAMILY)
assert _spec and _spec.loader
arms_family = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(arms_family)


def _call(func: Any, *args: Any, **kwargs: Any) -> Any:
    try:
        return func(*args, **kwargs)
    except arms_family.FamilyError as exc:
        raise AnsibleFilterError(str(exc)) from None


def _int(value: Any, what: str) -> int:
    """A whole number from YAML or Jinja (``8``, ``"8"``); a sentence otherwise."""
    try:
        if isinstance(value, bool) or float(value) != int(float(value)):
            raise ValueError
        return int(float(value))
    except (TypeError, ValueError):
        raise AnsibleFilterError(f"{what} is {value!r}; give a whole number.") from None


def arms_family_problems(experiment: Any) -> list[str]:
    """``arms_experiment_raw | arms_family_problems`` -> [] or sentences about the family declarations."""
    return arms_family.family_problems(experiment)


def arms_profile_problems(experiment: Any) -> list[str]:
    """``arms_experiment_raw | arms_profile_problems`` -> [] or sentences about the profiles."""
    return arms_family.profile_problems(experiment)


def arms_expand_arms(experiment: Any) -> dict[str, Any]:
    """``experiment | arms_expand_arms`` -> the experiment with plain arms only."""
    return _call(arms_family.expand_arms, experiment)


def arms_apply_profile(experiment: Any, profile: Any = None) -> dict[str, Any]:
    """``experiment | arms_apply_profile(arms_profile)``; the experiment unchanged for '' or none."""
    return _call(arms_family.apply_profile, experiment, profile or None)


def arms_profile_diff(full: Any, other: Any) -> list[str]:
    """``full | arms_profile_diff(pilot)`` -> sorted key paths that differ."""
    return arms_family.profile_diff(full, other)


def arms_place(
    experiment: Any, groups: Any, gpus_per_host: Any, gpus_per_arm: Any = None, pack: Any = False
) -> dict[str, Any]:
    """``arms_experiment | arms_place(groups, gpus, placement.gpus_per_arm, placement.pack)`` -> {arm: placement}."""
    gpus_per_arm = None if gpus_per_arm in (None, "") else _int(gpus_per_arm, "placement.gpus_per_arm")
    if isinstance(gpus_per_host, dict):
        gpus_per_host = {host: _int(n, f"the GPUs of {host}") for host, n in gpus_per_host.items()}
    else:
        gpus_per_host = _int(gpus_per_host, "the GPUs per host")
    return _call(
        arms_family.place_arms, experiment["arms"], groups, gpus_per_host, gpus_per_arm=gpus_per_arm, pack=bool(pack)
    )


def arms_host_arms(placement: Any, host: str) -> list[str]:
    """``arms_placement | arms_host_arms(inventory_hostname)`` -> the arms this host runs."""
    return arms_family.host_arms(placement, host)


def arms_host_runs(
    experiment: Any, placement: Any, host: str, state_dir: str, base_dir: str, data_dir: str
) -> list[dict[str, Any]]:
    """``arms_experiment | arms_host_runs(arms_placement, inventory_hostname, arms_state_dir, nanochat_base_dir,
    nanochat_data_dir)`` -> this host's arms, each {key, value, hosts, base_dir, data_dir, log, pidfile,
    nproc_per_node, gpus, port, alone, fact_key}."""
    return _call(
        arms_family.host_runs,
        placement,
        experiment["arms"],
        host,
        state_dir=str(state_dir),
        base_dir=str(base_dir),
        data_dir=str(data_dir),
        gpus_per_node=_int(experiment["model"]["gpus_per_node"], "model.gpus_per_node"),
    )


def arms_receive_items(
    runs: Any, receive: Any, tokenizer_src: str, prepared: str, val_arm: str, val_dest: str, selected: Any
) -> list[dict[str, str]]:
    """``arms_my_arms | arms_receive_items(arms_data_receive, tokenizer_src, prepared, arms_val_arm, val_dest,
    arms_selected)`` -> the transfer's items {src, dest, label}."""
    return arms_family.receive_items(
        list(runs),
        receive=list(receive),
        tokenizer_src=str(tokenizer_src),
        prepared=str(prepared),
        val_arm=str(val_arm or ""),
        val_dest=str(val_dest),
        selected=list(selected),
    )


def arms_fact_keys(placement: Any) -> dict[str, list[str]]:
    """``arms_placement | arms_fact_keys`` -> {arm: [host, or host/arm where the host runs several arms]}."""
    return arms_family.fact_keys(placement)


def arms_profile_diff_problems(changed: Any) -> list[str]:
    """``arms_experiment_full | arms_profile_diff(arms_experiment) | arms_profile_diff_problems`` -> [] or sentences."""
    return arms_family.profile_diff_problems(list(changed))


def arms_shared_sources(experiment: Any) -> list[dict[str, Any]]:
    """``arms_experiment | arms_shared_sources`` -> [{source, arms, seeds, ratios}] (one read per group)."""
    return arms_family.shared_sources(experiment["arms"])


def arms_seed_families(experiment: Any) -> dict[str, Any]:
    """``arms_experiment | arms_seed_families`` -> {arm: family name or None} for the noise band."""
    return arms_family.seed_families(experiment["arms"])


def _plain(value: Any) -> Any:
    """``value`` as plain dicts, lists, strings and numbers: Ansible's lazy containers and tagged values
    deep-copy slowly (a deepcopy of the experiment took ~0.4 s per filter call on the lab), and the rules
    copy what they change."""
    if isinstance(value, Mapping):
        return {_plain(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    for kind in (bool, str, int, float):
        if isinstance(value, kind):
            return kind(value)
    return value


def _plain_args(func: Callable[..., Any]) -> Callable[..., Any]:
    @functools.wraps(func)
    def call(*args: Any, **kwargs: Any) -> Any:
        return func(*(_plain(a) for a in args), **{k: _plain(v) for k, v in kwargs.items()})

    return call


class FilterModule:
    def filters(self) -> dict[str, Any]:
        return {name: _plain_args(func) for name, func in self._filters().items()}

    @staticmethod
    def _filters() -> dict[str, Callable[..., Any]]:
        return {
            "arms_family_problems": arms_family_problems,
            "arms_profile_problems": arms_profile_problems,
            "arms_expand_arms": arms_expand_arms,
            "arms_apply_profile": arms_apply_profile,
            "arms_profile_diff": arms_profile_diff,
            "arms_place": arms_place,
            "arms_host_arms": arms_host_arms,
            "arms_host_runs": arms_host_runs,
            "arms_fact_keys": arms_fact_keys,
            "arms_receive_items": arms_receive_items,
            "arms_profile_diff_problems": arms_profile_diff_problems,
            "arms_shared_sources": arms_shared_sources,
            "arms_seed_families": arms_seed_families,
        }
