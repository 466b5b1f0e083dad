"""Many arms from one declaration, several arms on one host, a pilot profile, and what a run costs.

Four decisions, each a pure function of the experiment file (no host is asked), so the validation
play, the filters and the tests apply the same rule:

1. Families (:func:`expand_arms`). An ``hf_random_subset`` arm may declare ``family: {seeds: [...]}``
   and/or ``family: {ratios: [...]}``; it becomes one plain arm per (ratio, seed). The member that
   equals the declaration as written (its own ``data.seed`` and ``data.ratio``) keeps the declared
   name and run name, so adding a family to an experiment renames nothing: its prepared data
   (``prepared/<arm>/``), its finished run, ``arms_tokenizer_from_arm`` and ``arms_only`` keep naming
   the same arm. Every other member gets a suffix on both names: ``-r<ratio in percent>`` when its
   ratio differs, then ``-s<seed>`` when its seed differs (``random16.5-s43``, ``random16.5-r10``,
   ``random16.5-r10-s43``). A member's data folder and manifest follow from its name and its
   ``data.seed``/``data.ratio`` exactly as for a declared arm. :func:`shared_sources` groups the arms
   that read the same source, so the CPU node can read it once for all of them.
2. Placement (:func:`place_arms`): each arm's hosts, GPU indices, base dir, port, log and pid file.
3. Profiles (:func:`apply_profile`, :func:`profile_diff`): the same experiment, small.
4. Cost (:func:`flops_per_token`, :func:`run_cost`): nanochat's own FLOPs-per-token estimate.

Only the standard library is imported (a host may run it); on the controller the filter loads this
file by its path, so :mod:`arms_names` is loaded the same way when ``ansible.module_utils`` lacks it.
"""

from __future__ import annotations

import copy
import importlib.util
import os
import posixpath
from collections.abc import Mapping, Sequence
from typing import Any

try:
    from ansible.module_utils.arms_names import name_problem
except ImportError:  # loaded by path on the controller (plugins/filter/arms_family.py)
    _spec = importlib.util.spec_from_file_location(
        "nanochat_arms_names", os.path.join(os.path.dirname(os.path.abspath(__file__)), "arms_names.py")
    )
    assert _spec and _spec.loader
    _names = importlib.util.module_from_spec(_spec)
    _spec.loader.exec_module(_names)
    name_problem = _names.name_problem


class FamilyError(ValueError):
    """A declaration that cannot be expanded, placed or profiled; the message is the sentence(s) to show."""


FAMILY_KEYS = ("seeds", "ratios")
PROFILE_KEYS = ("depth", "num_iterations", "placement", "suffix")
PLACEMENT_KEYS = ("gpus_per_arm", "pack")
# every spelling of nanochat's --num-iterations an experiment's extra_flags may use
_ITERATION_FLAGS = ("num-iterations", "num_iterations", "--num-iterations", "--num_iterations")
# what a source is: arms whose data agree on all of these read the same rows
SOURCE_KEYS = ("dataset", "config", "split", "revision", "text_column", "id_column")


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def unknown_keys(mapping: Mapping[str, Any], allowed: Sequence[str]) -> str:
    """The keys of ``mapping`` that ``allowed`` does not name, sorted and comma-separated ('' when none)."""
    return ", ".join(map(str, sorted(set(mapping) - set(allowed))))


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def ratio_label(ratio: float) -> str:
    """A ratio as the percent in a member's name: 0.1 -> ``10``, 0.165 -> ``16.5``, 0.0025 -> ``0.25``."""
    return f"{float(ratio) * 100:g}"


def member_suffix(seed: int, ratio: float, declared_seed: int, declared_ratio: float) -> str:
    """The suffix of a member's names: ``-r<percent>`` if its ratio differs, ``-s<seed>`` if its seed differs."""
    suffix = ""
    if float(ratio) != float(declared_ratio):
        suffix += f"-r{ratio_label(ratio)}"
    if int(seed) != int(declared_seed):
        suffix += f"-s{int(seed)}"
    return suffix


# ---------------------------------------------------------------------------------------------
# 1. families
# ---------------------------------------------------------------------------------------------


def _axis_problems(arm: str, family: Mapping[str, Any], key: str, declared: Any) -> list[str]:
    """Sentences for one list of a family (seeds or ratios)."""
    if key not in family:
        return []
    values = family[key]
    where = f"arms.{arm}.family.{key}"
    what = "seed" if key == "seeds" else "ratio"
    if not isinstance(values, list) or not values:
        return [f"{where} is empty or not a list; give the {what}s of the family, e.g. [{declared}, ...]"]
    ok = _is_int if key == "seeds" else (lambda v: _is_number(v) and 0 < v <= 1)
    bad = [v for v in values if not ok(v)]
    if bad:
        expected = "whole numbers" if key == "seeds" else "fractions of the rows to keep, in (0, 1]"
        return [f"{where} holds {', '.join(repr(v) for v in bad)}; {what}s are {expected}"]
    dupes = sorted({v for i, v in enumerate(values) if v in values[:i]}, key=float)
    if dupes:
        return [f"{where} lists {what} {', '.join(str(v) for v in dupes)} more than once; give each {what} once"]
    if declared not in values:
        return [
            f"{where} {values} leaves out the arm's own data.{what} {declared}; list it (the arm as declared "
            "is the family's first member and keeps its name)"
        ]
    return []


def family_members(arm: str, spec: Mapping[str, Any]) -> list[dict[str, Any]]:
    """The members of one declared family, declared member first, then the others in the lists' order.

    Each member: {name, run_name, seed, ratio}. Ratios are the outer loop, seeds the inner one.
    Assumes the declaration passed :func:`family_problems`.
    """
    family = spec["family"]
    data = spec["data"]
    seed0, ratio0 = data["seed"], data["ratio"]
    seeds = family.get("seeds") or [seed0]
    ratios = family.get("ratios") or [ratio0]
    pairs = [(seed0, ratio0)] + [(s, r) for r in ratios for s in seeds if (s, r) != (seed0, ratio0)]
    members = []
    for seed, ratio in pairs:
        suffix = member_suffix(seed, ratio, seed0, ratio0)
        members.append(
            {"name": arm + suffix, "run_name": f"{spec.get('run_name', arm)}{suffix}", "seed": seed, "ratio": ratio}
        )
    return members


def family_problems(experiment: Mapping[str, Any] | None) -> list[str]:
    """Every sentence about the experiment's family declarations (empty when all can be expanded)."""
    if not isinstance(experiment, Mapping) or not isinstance(experiment.get("arms"), Mapping):
        return []
    arms = experiment["arms"]
    problems: list[str] = []
    # every declared arm and run name first: a member may collide with an arm declared after it
    names = {str(arm): f"the arm {arm}" for arm in arms}
    runs = {
        str(spec["run_name"]): str(arm)
        for arm, spec in arms.items()
        if isinstance(spec, Mapping) and spec.get("run_name")
    }
    for arm, spec in arms.items():
        spec = spec if isinstance(spec, Mapping) else {}
        family = spec.get("family")
        if not isinstance(family, Mapping):
            if family is not None and not isinstance(family, str):
                problems.append(f"arms.{arm}.family is not a mapping; give e.g. family: {{seeds: [42, 43, 44]}}")
            continue
        if unknown := unknown_keys(family, FAMILY_KEYS):
            problems.append(f"arms.{arm}.family has {unknown}; a family varies only seeds and ratios")
        if not any(k in family for k in FAMILY_KEYS):
            problems.append(f"arms.{arm}.family names neither seeds nor ratios; give e.g. seeds: [42, 43, 44]")
            continue
        data = spec.get("data") if isinstance(spec.get("data"), Mapping) else {}
        if data.get("source") != "hf_random_subset":
            problems.append(
                f"arms.{arm} declares a family but reads {data.get('source') or 'no'} data: a family varies the "
                "sampling seed or ratio of an hf_random_subset arm"
            )
            continue
        axis = _axis_problems(str(arm), family, "seeds", data.get("seed"))
        axis += _axis_problems(str(arm), family, "ratios", data.get("ratio"))
        if axis:
            problems += axis
            continue
        members = family_members(str(arm), {**spec, "data": data})
        if problem := name_problem(members[0]["name"], f"the family member name (of arms.{arm})"):
            problems.append(problem)
        for member in members[1:]:  # the first is the declared arm itself
            if problem := name_problem(member["name"], f"the family member name (of arms.{arm})"):
                problems.append(problem)
            if member["name"] in names:
                problems.append(
                    f"the family of {arm} makes an arm named {member['name']}, which is also {names[member['name']]}; "
                    "rename one of them"
                )
            names.setdefault(member["name"], f"a member of the family of {arm}")
            if member["run_name"] in runs:
                problems.append(
                    f"the family of {arm} gives {member['name']} the run name {member['run_name']}, which arm "
                    f"{runs[member['run_name']]} uses too; run names name the log and pid files, so they must differ"
                )
            runs.setdefault(member["run_name"], member["name"])
    return problems


def expand_arms(experiment: Mapping[str, Any]) -> dict[str, Any]:
    """The experiment with every family declaration replaced by its plain member arms (a new dict).

    A member is the declared arm with its own name, ``run_name`` (see the module docstring),
    ``data.seed`` and ``data.ratio``, and two more keys: ``family``, the name of the arms that differ
    only in their seed (the noise band's group: the declared name, or ``<name>-r<percent>`` for the
    seeds of another ratio), and, for a ratio sweep, ``sweep``, the declared name. Members come right
    after each other where the declaration was, the declared member first (data.yml's shared val
    shard and the tokenizer keep coming from it). Arms without ``family`` pass through unchanged, and
    an expanded experiment (``family`` is a string) expands to itself. FamilyError with the sentences
    of :func:`family_problems` when a declaration is wrong.
    """
    problems = family_problems(experiment)
    if problems:
        raise FamilyError("; ".join(problems) + ".")
    out = copy.deepcopy(dict(experiment))
    if not isinstance(out.get("arms"), Mapping):
        return out
    arms: dict[str, Any] = {}
    for arm, spec in out["arms"].items():
        if not isinstance(spec, Mapping) or not isinstance(spec.get("family"), Mapping):
            arms[arm] = spec
            continue
        family = spec["family"]
        seed0, ratio0 = spec["data"]["seed"], spec["data"]["ratio"]
        for member in family_members(arm, spec):
            body = copy.deepcopy({k: v for k, v in spec.items() if k != "family"})
            body["run_name"] = member["run_name"]
            body["data"]["seed"] = member["seed"]
            body["data"]["ratio"] = member["ratio"]
            ratio_part = member_suffix(seed0, member["ratio"], seed0, ratio0)
            body["family"] = arm + ratio_part
            if "ratios" in family:
                body["sweep"] = arm
            arms[member["name"]] = body
    out["arms"] = arms
    return out


def seed_families(arms: Mapping[str, Mapping[str, Any]]) -> dict[str, str | None]:
    """{arm: its noise-band family}: ``family`` of an expanded member, the arm's own name for any other
    hf_random_subset arm (a family of one seed: "no noise band was measured"), None for the rest."""
    out: dict[str, str | None] = {}
    for arm, spec in arms.items():
        data = spec.get("data") if isinstance(spec.get("data"), Mapping) else {}
        if isinstance(spec.get("family"), str):
            out[arm] = spec["family"]
        elif data.get("source") == "hf_random_subset":
            out[arm] = arm
        else:
            out[arm] = None
    return out


def shared_sources(arms: Mapping[str, Mapping[str, Any]]) -> list[dict[str, Any]]:
    """The hf_random_subset arms that prepare their data, grouped by the source they read.

    Arms whose ``data`` agree on :data:`SOURCE_KEYS` (dataset, config, split, revision, text and id
    columns; absent = the sharder's default) read the same rows, so one pass over the source can
    hash each row once per (seed, ratio) and serve them all. Returns, in declaration order of each
    group's first arm: [{"source": {key: value}, "arms": [names], "seeds": [...], "ratios": [...]}].
    Arms with ``prepare_mode: skip`` read nothing and are left out.
    """
    defaults = {"config": None, "split": "train", "revision": None, "text_column": "text", "id_column": "id"}
    groups: dict[tuple[Any, ...], dict[str, Any]] = {}
    for arm, spec in arms.items():
        data = spec.get("data") if isinstance(spec.get("data"), Mapping) else {}
        if data.get("source") != "hf_random_subset" or data.get("prepare_mode", "prepare") != "prepare":
            continue
        source = {k: data.get(k, defaults.get(k)) for k in SOURCE_KEYS}
        key = tuple(repr(source[k]) for k in SOURCE_KEYS)
        group = groups.setdefault(key, {"source": source, "arms": [], "seeds": [], "ratios": []})
        group["arms"].append(arm)
        group["seeds"].append(data.get("seed"))
        group["ratios"].append(data.get("ratio"))
    return list(groups.values())


# ---------------------------------------------------------------------------------------------
# 2. placement
# ---------------------------------------------------------------------------------------------

BASE_PORT = 29500
RUNS_DIR = "runs"
ARMS_DIR = "arms"


def _capacity(gpus_per_host: int | Mapping[str, int], host: str) -> int:
    value = gpus_per_host.get(host, 0) if isinstance(gpus_per_host, Mapping) else gpus_per_host
    if not _is_int(value) or value < 0:
        raise FamilyError(f"host {host} has {value!r} GPUs; give a whole number, 0 for a host without GPUs.")
    return value


def _free_start(used: Sequence[set[int]], capacity: int, count: int) -> int | None:
    """The lowest index i such that GPUs i..i+count-1 are free on every host (their ``used`` sets)."""
    for start in range(capacity - count + 1):
        if all(not ({*range(start, start + count)} & u) for u in used):
            return start
    return None


def _arm_gpus(arm: str, spec: Mapping[str, Any], gpus_per_arm: int | None) -> int | None:
    value = spec.get("gpus", gpus_per_arm)
    if value is None:
        return None
    if not _is_int(value) or value < 1:
        raise FamilyError(f"arm {arm} asks for {value!r} GPUs per host; give a whole number of at least 1.")
    return value


def place_arms(
    arms: Mapping[str, Mapping[str, Any]],
    hosts: Mapping[str, Sequence[str]],
    gpus_per_host: int | Mapping[str, int],
    *,
    gpus_per_arm: int | None = None,
    pack: bool = False,
    base_port: int = BASE_PORT,
) -> dict[str, dict[str, Any]]:
    """Where each arm runs: {arm: placement}, deterministic (arms in declaration order, hosts in group order).

    ``hosts`` is the inventory's groups ({group: [host, ...]}, Ansible's ``groups``); ``gpus_per_host``
    the GPUs of every host (one number, or {host: number}; 0 = no GPU). An arm asks for ``gpus`` GPUs
    per host (its own ``gpus`` key, else ``gpus_per_arm``, else the whole host).

    - ``pack=False`` (the full run): an arm trains on every host of its ``group`` (several = multi-node,
      the same GPU indices on each); arms naming the same group share its hosts' GPUs.
    - ``pack=True`` (the pilot): each arm takes ONE host from the pool of every arm's group hosts
      (declaration order, no repeats). GPU hosts are filled first-fit (the fewest hosts are used); when
      the pool has no GPUs, each arm goes to the host with the fewest arms so far (ties: pool order),
      as a CPU host runs each arm as one process sharing its cores.

    A placement: ``hosts`` (node-rank order), ``host`` (the first), ``gpus`` (per host; 0 on a CPU
    host), ``nproc_per_node`` (gpus, or 1 process on a CPU host), ``cuda_visible_devices`` ("0,1"; None
    on a CPU host), ``port`` (base_port + the arm's index: unique on every host; torchrun's
    master/rendezvous port), ``alone`` (no other arm on any of its hosts), and paths relative to the
    host's state dir: ``base_dir`` (``arms/<arm>``: NANOCHAT_BASE_DIR, with base_data, tokenizer and
    checkpoints), ``data_dir``, ``log`` and ``pidfile`` (``runs/<run_name>.log|.pid.json``, what
    arms_process.run_paths names under ``<state dir>/runs``). FamilyError with a sentence when the
    arms' GPUs do not fit or two arms on one host would share a run name (their logs and pid files).
    """
    names = list(arms)
    placed: dict[str, dict[str, Any]] = {}
    used: dict[str, set[int]] = {}
    count: dict[str, int] = {}
    run_names: dict[tuple[str, str], str] = {}
    pool: list[str] = []
    for spec in arms.values():
        for host in hosts.get(spec.get("group"), []) if isinstance(spec, Mapping) else []:
            if host not in pool:
                pool.append(host)
    for index, arm in enumerate(names):
        spec = arms[arm]
        want = _arm_gpus(arm, spec, gpus_per_arm)
        if pack:
            if not pool:
                raise FamilyError(f"no host to pack arm {arm} onto: the arms' groups hold no hosts in this inventory.")
            arm_hosts, start = _pack_one(arm, want or 1, pool, gpus_per_host, used, count)
        else:
            group = spec.get("group")
            arm_hosts = list(hosts.get(group) or [])
            if not arm_hosts:
                raise FamilyError(f"arm {arm} names the group {group!r}, which has no hosts in this inventory.")
            arm_hosts, start = _group_one(arm, want, arm_hosts, gpus_per_host, used)
        capacity = _capacity(gpus_per_host, arm_hosts[0])
        gpus = 0 if capacity == 0 else (want or capacity)
        run_name = str(spec.get("run_name") or arm)
        for host in arm_hosts:
            other = run_names.get((host, run_name))
            if other is not None:
                raise FamilyError(
                    f"arms {other} and {arm} both run on {host} under the run name {run_name}: they would write "
                    "the same log and pid file; give each arm its own run_name."
                )
            run_names[(host, run_name)] = arm
            used.setdefault(host, set()).update(range(start, start + gpus))
            count[host] = count.get(host, 0) + 1
        placed[arm] = {
            "hosts": arm_hosts,
            "host": arm_hosts[0],
            "gpus": gpus,
            "nproc_per_node": gpus or 1,
            "cuda_visible_devices": ",".join(str(i) for i in range(start, start + gpus)) if gpus else None,
            "port": base_port + index,
            "base_dir": f"{ARMS_DIR}/{arm}",
            "data_dir": f"{ARMS_DIR}/{arm}/base_data",
            "log": f"{RUNS_DIR}/{run_name}.log",
            "pidfile": f"{RUNS_DIR}/{run_name}.pid.json",
        }
    for place in placed.values():
        place["alone"] = all(count[h] == 1 for h in place["hosts"])
    return placed


def _group_one(
    arm: str, want: int | None, arm_hosts: list[str], gpus_per_host: int | Mapping[str, int], used: dict[str, set[int]]
) -> tuple[list[str], int]:
    capacities = [_capacity(gpus_per_host, h) for h in arm_hosts]
    if 0 in capacities and any(capacities):
        raise FamilyError(
            f"arm {arm} spans hosts with and without GPUs ({', '.join(arm_hosts)}); give its group hosts of one kind."
        )
    capacity = min(capacities)
    if capacity == 0:
        return arm_hosts, 0
    need = want or capacity
    start = _free_start([used.get(h, set()) for h in arm_hosts], capacity, need)
    if start is None:
        busy = max(arm_hosts, key=lambda h: len(used.get(h, set())))
        raise FamilyError(
            f"arm {arm} asks for {need} GPUs on {busy}, which has {capacity} with {len(used.get(busy, set()))} "
            "taken by the arms before it; give the arms fewer GPUs (gpus or placement.gpus_per_arm) or more hosts."
        )
    return arm_hosts, start


def _pack_one(
    arm: str,
    want: int,
    pool: list[str],
    gpus_per_host: int | Mapping[str, int],
    used: dict[str, set[int]],
    count: dict[str, int],
) -> tuple[list[str], int]:
    gpu_hosts = [h for h in pool if _capacity(gpus_per_host, h) > 0]
    if not gpu_hosts:
        host = min(pool, key=lambda h: (count.get(h, 0), pool.index(h)))
        return [host], 0
    for host in gpu_hosts:
        start = _free_start([used.get(host, set())], _capacity(gpus_per_host, host), want)
        if start is not None:
            return [host], start
    free = sum(_capacity(gpus_per_host, h) - len(used.get(h, set())) for h in gpu_hosts)
    raise FamilyError(
        f"arm {arm} asks for {want} GPU(s) on one host, but the GPU hosts {', '.join(gpu_hosts)} have {free} left in "
        "all after the arms before it; run fewer arms at once (arms_only), give each fewer GPUs, or add hosts."
    )


def host_arms(placement: Mapping[str, Mapping[str, Any]], host: str) -> list[str]:
    """The arms that run on ``host`` (in declaration order)."""
    return [arm for arm, place in placement.items() if host in place["hosts"]]


def fact_key(placement: Mapping[str, Mapping[str, Any]], host: str, arm: str) -> str:
    """The name one arm's preflight facts go by: the host itself when the arm is its only one (as before
    several arms could share a host), else ``<host>/<arm>`` (each arm has its own base and data dir)."""
    return host if host_arms(placement, host) == [arm] else f"{host}/{arm}"


def fact_keys(placement: Mapping[str, Mapping[str, Any]]) -> dict[str, list[str]]:
    """{arm: the :func:`fact_key` of each of its hosts, in node-rank order} (the preflight's ``hosts_of``)."""
    return {arm: [fact_key(placement, host, arm) for host in place["hosts"]] for arm, place in placement.items()}


def host_runs(
    placement: Mapping[str, Mapping[str, Any]],
    arms: Mapping[str, Any],
    host: str,
    *,
    state_dir: str,
    base_dir: str,
    data_dir: str,
    gpus_per_node: int,
    port: int = BASE_PORT,
) -> list[dict[str, Any]]:
    """The arms ``host`` runs, each with what its data steps and its run take there (absolute paths).

    Each: ``key`` and ``value`` (the arm's name and declaration, as ``arms_my_arm`` always was),
    ``hosts``, ``base_dir``, ``data_dir``, ``log``, ``pidfile``, ``nproc_per_node``, ``gpus`` (its
    CUDA_VISIBLE_DEVICES, "" for none named), ``port``, ``alone`` and ``fact_key``. An arm ``alone`` on
    its hosts (every arm of an experiment without placement, each on its own group) keeps the host's own
    paths and launch exactly as before several arms could share a host: ``base_dir`` and ``data_dir`` as
    given (the inventory's nanochat_base_dir and nanochat_data_dir), no GPUs named, ``port``. An arm that
    shares a host gets the placement's: ``<state_dir>/arms/<arm>`` with the data dir at the same place
    under it as ``data_dir`` is under ``base_dir``, its GPU indices and its own port. Processes per host:
    the placement's GPUs, or ``gpus_per_node`` on a host without GPUs (the preflight's world size).
    """
    runs = []
    for arm in host_arms(placement, host):
        place = placement[arm]
        alone = bool(place["alone"])
        arm_base, arm_data = base_dir, data_dir
        if not alone:
            arm_base = posixpath.join(state_dir, place["base_dir"])
            under = data_dir.startswith(base_dir.rstrip("/") + "/")
            rel = (
                posixpath.relpath(data_dir, base_dir)
                if under
                else posixpath.relpath(place["data_dir"], place["base_dir"])
            )
            arm_data = posixpath.join(arm_base, rel)
        runs.append(
            {
                "key": arm,
                "value": arms[arm],
                "hosts": list(place["hosts"]),
                "base_dir": arm_base,
                "data_dir": arm_data,
                "log": posixpath.join(state_dir, place["log"]),
                "pidfile": posixpath.join(state_dir, place["pidfile"]),
                "nproc_per_node": int(place["gpus"]) or int(gpus_per_node),
                "gpus": "" if alone else (place["cuda_visible_devices"] or ""),
                "port": int(port) if alone else int(place["port"]),
                "alone": alone,
                "fact_key": fact_key(placement, host, arm),
            }
        )
    return runs


def receive_items(
    runs: Sequence[Mapping[str, Any]],
    *,
    receive: Sequence[str],
    tokenizer_src: str,
    prepared: str,
    val_arm: str,
    val_dest: str,
    selected: Sequence[str],
) -> list[dict[str, str]]:
    """What one transfer from the CPU node brings to a host for its arms (``runs``: :func:`host_runs`' list),
    as the transfer's items ``{src, dest, label}``, small ones first, for what ``receive`` names of:

    - ``tokenizer``: the CPU node's tokenizer (``tokenizer_src``) into each arm's ``base_dir``/tokenizer;
    - ``val``: the shared val shard (``prepared``/``val_arm``/val) once into ``val_dest``, when an arm of
      the host is not the one that made it;
    - ``shards``: each ``selected`` hf_random_subset arm's prepared shards (``prepared``/<arm>/base_data,
      ``prepare_mode: prepare``) into its ``data_dir``.
    """
    several = len(runs) > 1
    items = []
    if "tokenizer" in receive:
        for run in runs:
            label = f"tokenizer ({run['key']})" if several else "tokenizer"
            items.append({"src": tokenizer_src, "dest": posixpath.join(run["base_dir"], "tokenizer"), "label": label})
    if "val" in receive and val_arm and any(run["key"] != val_arm for run in runs):
        items.append({"src": posixpath.join(prepared, val_arm, "val"), "dest": val_dest, "label": "shared val shard"})
    if "shards" in receive:
        for run in runs:
            data = run["value"].get("data") or {}
            if (
                run["key"] in selected
                and data.get("source") == "hf_random_subset"
                and data.get("prepare_mode") == "prepare"
            ):
                src = posixpath.join(prepared, run["key"], "base_data")
                items.append({"src": src, "dest": run["data_dir"], "label": f"{run['key']} shards"})
    return items


# ---------------------------------------------------------------------------------------------
# 3. profiles
# ---------------------------------------------------------------------------------------------


def profile_problems(experiment: Mapping[str, Any] | None) -> list[str]:
    """Sentences about the experiment's ``profiles`` (empty when every profile can be applied)."""
    if not isinstance(experiment, Mapping) or experiment.get("profiles") is None:
        return []
    profiles = experiment["profiles"]
    if not isinstance(profiles, Mapping):
        return ["profiles is not a mapping; give e.g. profiles: {pilot: {depth: 12, num_iterations: 2205}}"]
    model = experiment.get("model") if isinstance(experiment.get("model"), Mapping) else {}
    problems = []
    for name, profile in profiles.items():
        where = f"profiles.{name}"
        if problem := name_problem(name, "the profile name"):
            problems.append(problem)
        if not isinstance(profile, Mapping):
            problems.append(f"{where} is not a mapping")
            continue
        if unknown := unknown_keys(profile, PROFILE_KEYS):
            problems.append(
                f"{where} sets {unknown}; a profile changes only depth, num_iterations and "
                "placement (the data, tokenizer and batch sizes stay the full run's, so the pilot predicts it)"
            )
        for key in ("depth", "num_iterations"):
            if key in profile and (not _is_int(profile[key]) or profile[key] < 1):
                problems.append(f"{where}.{key} is {profile[key]!r}; give a whole number of at least 1")
        if "depth" in profile and profile["depth"] == model.get("depth"):
            problems.append(
                f"{where}.depth is the full run's ({profile['depth']}): its checkpoints would land in "
                f"base_checkpoints/d{profile['depth']} beside the full run's; give the {name} a smaller depth"
            )
        placement = profile.get("placement", {})
        if not isinstance(placement, Mapping) or set(placement) - set(PLACEMENT_KEYS):
            problems.append(f"{where}.placement takes only gpus_per_arm (a whole number) and pack (true or false)")
        else:
            gpus = placement.get("gpus_per_arm", 1)
            if not _is_int(gpus) or gpus < 1:
                problems.append(f"{where}.placement.gpus_per_arm is {gpus!r}; give a whole number of at least 1")
            if not isinstance(placement.get("pack", False), bool):
                problems.append(f"{where}.placement.pack is {placement['pack']!r}; give true or false")
        if "suffix" in profile and (problem := name_problem(profile["suffix"], f"{where}.suffix")):
            problems.append(problem)
    return problems


def apply_profile(experiment: Mapping[str, Any], profile: str | None) -> dict[str, Any]:
    """The experiment as the profile runs it (a new dict); the experiment itself for no profile ("" or None).

    Changes exactly: ``model.depth``; ``model.extra_flags`` ``num-iterations`` (any other spelling of
    that flag removed); ``placement`` (the profile's, over the experiment's) and ``model.gpus_per_node``
    (= ``placement.gpus_per_arm``, what each arm's launch starts per host); and so that its results
    never mix with the full run's: ``name`` + ``-<suffix>`` (collect's results folder
    ``results/<name>/`` and the W&B group, WANDB_RUN_GROUP, both follow the name) and every arm's
    ``run_name`` + ``-<suffix>`` (the W&B run names, and the run's log and pid files on the hosts);
    ``profile`` records the profile's name. ``suffix`` defaults to the profile's name. Data, tokenizer,
    seeds, batch sizes and every other flag are left as they are (:func:`profile_diff` proves it).
    """
    out = copy.deepcopy(dict(experiment))
    if not profile:
        return out
    profiles = experiment.get("profiles") or {}
    if profile not in profiles:
        known = ", ".join(map(str, profiles)) or "none (declare profiles: in the experiment file)"
        raise FamilyError(f"there is no profile {profile!r} in the experiment; its profiles: {known}.")
    problems = profile_problems({**experiment, "profiles": {profile: profiles[profile]}})
    if problems:
        raise FamilyError("; ".join(problems) + ".")
    spec = profiles[profile]
    suffix = str(spec.get("suffix", profile))
    model = out.setdefault("model", {})
    if "depth" in spec:
        model["depth"] = spec["depth"]
    if "num_iterations" in spec:
        flags = {k: v for k, v in (model.get("extra_flags") or {}).items() if k not in _ITERATION_FLAGS}
        flags["num-iterations"] = spec["num_iterations"]
        model["extra_flags"] = flags
    if "placement" in spec:
        out["placement"] = {**(out.get("placement") or {}), **spec["placement"]}
        if "gpus_per_arm" in spec["placement"]:
            model["gpus_per_node"] = spec["placement"]["gpus_per_arm"]
    out["name"] = f"{out.get('name')}-{suffix}"
    for arm, arm_spec in (out.get("arms") or {}).items():
        if isinstance(arm_spec, dict):
            arm_spec["run_name"] = f"{arm_spec.get('run_name', arm)}-{suffix}"
    out["profile"] = profile
    return out


# the key paths a profile may change (arms.<arm>.run_name too): anything else differing is refused
PROFILE_PATHS = (
    "name",
    "profile",
    "placement",
    "model.depth",
    "model.gpus_per_node",
    *(f"model.extra_flags.{flag}" for flag in _ITERATION_FLAGS),
)


def profile_diff_problems(changed: Sequence[str]) -> list[str]:
    """The paths of a :func:`profile_diff` that no profile may change (empty when the run is the full
    run made small): a sentence each, so the preflight can refuse a profiled run that is not comparable."""
    bad = [
        path
        for path in changed
        if not any(path == p or path.startswith(p + ".") for p in PROFILE_PATHS)
        and not (path.startswith("arms.") and path.endswith(".run_name"))
    ]
    return [
        f"the profiled experiment differs from the full run at {path}, which a profile never changes (only "
        f"{', '.join(PROFILE_PATHS[:5])}, the iterations and each arm's run_name); its results would not predict "
        "the full run's"
        for path in bad
    ]


def profile_diff(full: Any, pilot: Any, path: str = "") -> list[str]:
    """Every key path whose value differs between two experiments, sorted (``model.depth``,
    ``arms.top16.5.run_name``, ...); a key present in one only counts as changed."""
    if isinstance(full, Mapping) and isinstance(pilot, Mapping):
        changed = []
        for key in sorted(set(full) | set(pilot), key=str):
            sub = f"{path}.{key}" if path else str(key)
            if key not in full or key not in pilot:
                changed.append(sub)
            else:
                changed += profile_diff(full[key], pilot[key], sub)
        return sorted(changed)
    return [] if full == pilot else [path]


# ---------------------------------------------------------------------------------------------
# 4. cost
# ---------------------------------------------------------------------------------------------

# nanochat's defaults at b07604e (scripts/base_train.py, nanochat/gpt.py)
NANOCHAT_DEFAULTS = {
    "max_seq_len": 2048,
    "vocab_size": 32768,
    "window_pattern": "SSSL",
    "aspect_ratio": 64,
    "head_dim": 128,
    "target_param_data_ratio": 10.5,
}
VE_GATE_CHANNELS = 32


def model_shape(depth: int, aspect_ratio: int = 64, head_dim: int = 128) -> tuple[int, int]:
    """(model dim, heads) as base_train's build_model_meta: depth x aspect ratio, rounded up to whole heads."""
    dim = -(-(depth * aspect_ratio) // head_dim) * head_dim
    return dim, dim // head_dim


def scaling_params(depth: int, *, vocab_size: int = 32768, aspect_ratio: int = 64, head_dim: int = 128) -> int:
    """base_train's scaling params: transformer matrices (with the value-embedding gates) + lm_head.

    Per layer 12 x dim^2 (q, k, v, proj and the MLP's two 4 x dim matrices), 32 x heads more in the
    layers with a value embedding (every other layer, the last included); lm_head = vocab (padded to a
    multiple of 64) x dim. d12: 110,101,632; d26: 918,426,912 (as GPT.num_scaling_params counts them).
    """
    dim, heads = model_shape(depth, aspect_ratio, head_dim)
    ve_layers = sum(1 for i in range(depth) if i % 2 == (depth - 1) % 2)
    padded_vocab = -(-vocab_size // 64) * 64
    return depth * 12 * dim * dim + ve_layers * VE_GATE_CHANNELS * heads + padded_vocab * dim


def flops_per_token(
    depth: int,
    *,
    max_seq_len: int = 2048,
    vocab_size: int = 32768,
    window_pattern: str = "SSSL",
    aspect_ratio: int = 64,
    head_dim: int = 128,
) -> int:
    """nanochat's GPT.estimate_flops: 6 x matmul params + 12 x dim x (each layer's attended length).

    The window pattern is tiled over the layers, L = the whole sequence, S = half of it, the last layer
    always L. d12: 802,167,552; d26: 6,185,320,128 (the numbers nanochat prints as "Estimated FLOPs
    per token" at b07604e with the defaults).
    """
    dim, _ = model_shape(depth, aspect_ratio, head_dim)
    pattern = window_pattern.upper()
    windows = [max_seq_len if pattern[i % len(pattern)] == "L" else max_seq_len // 2 for i in range(depth)]
    windows[-1] = max_seq_len
    params = scaling_params(depth, vocab_size=vocab_size, aspect_ratio=aspect_ratio, head_dim=head_dim)
    return 6 * params + sum(12 * dim * w for w in windows)


def default_iterations(depth: int, total_batch_size: int, ratio: float = 10.5, vocab_size: int = 32768) -> int:
    """base_train's iterations without --num-iterations: int(ratio x scaling params) // total batch size."""
    return int(ratio * scaling_params(depth, vocab_size=vocab_size)) // int(total_batch_size)


def run_cost(
    *,
    depth: int,
    num_iterations: int,
    total_batch_size: int,
    peak_flops: float,
    mfu: float,
    gpus: int = 1,
    max_seq_len: int = 2048,
) -> dict[str, float]:
    """What one arm's run costs: {flops_per_token, tokens, flops, gpu_hours, hours (wall, on ``gpus``)}.

    GPU-hours = flops per token (:func:`flops_per_token`) x tokens (iterations x total batch size) /
    (peak FLOPs of one GPU x MFU) / 3600. ``mfu`` is a fraction (0.45), e.g. the median bf16_mfu of a
    run's step lines / 100; ``peak_flops`` one GPU's (nanochat's table: H100 SXM 989e12).
    """
    if not 0 < mfu <= 1:
        raise FamilyError(
            f"mfu {mfu!r} is not a fraction in (0, 1]; nanochat prints bf16_mfu in percent: divide it by 100."
        )
    if peak_flops <= 0 or gpus < 1:
        raise FamilyError("peak_flops must be positive and gpus at least 1.")
    per_token = flops_per_token(depth, max_seq_len=max_seq_len)
    tokens = int(num_iterations) * int(total_batch_size)
    flops = float(per_token) * tokens
    gpu_hours = flops / (peak_flops * mfu) / 3600.0
    return {
        "flops_per_token": per_token,
        "tokens": tokens,
        "flops": flops,
        "gpu_hours": gpu_hours,
        "hours": gpu_hours / gpus,
    }


# the spellings of base_train's flags that run_cost's figures depend on, besides --num-iterations
_RATIO_FLAGS = ("target-param-data-ratio", "target_param_data_ratio", "--target-param-data-ratio")
_SEQ_LEN_FLAGS = ("max-seq-len", "max_seq_len", "--max-seq-len", "--max_seq_len")


def _flag(flags: Mapping[str, Any], names: Sequence[str]) -> Any:
    return next((flags[name] for name in names if name in flags), None)


def cost_config(model: Mapping[str, Any]) -> dict[str, Any] | None:
    """What :func:`run_cost` needs from an experiment's ``model`` section: {depth, num_iterations,
    total_batch_size, max_seq_len}; None when depth or total batch size is not a positive whole number.

    ``num_iterations`` is ``extra_flags``' ``num-iterations`` (any spelling) when positive, else
    base_train's own (:func:`default_iterations`, at ``target-param-data-ratio`` if the flags set it).
    """
    depth, tbs = model.get("depth"), model.get("total_batch_size")
    if not (_is_int(depth) and depth > 0 and _is_int(tbs) and tbs > 0):
        return None
    flags = model.get("extra_flags") if isinstance(model.get("extra_flags"), Mapping) else {}
    iterations = _flag(flags, _ITERATION_FLAGS)
    if not (_is_int(iterations) and iterations > 0):
        ratio = _flag(flags, _RATIO_FLAGS)
        ratio = ratio if _is_number(ratio) and ratio > 0 else NANOCHAT_DEFAULTS["target_param_data_ratio"]
        iterations = default_iterations(depth, tbs, ratio=ratio)
    seq_len = _flag(flags, _SEQ_LEN_FLAGS)
    seq_len = seq_len if _is_int(seq_len) and seq_len > 0 else NANOCHAT_DEFAULTS["max_seq_len"]
    return {"depth": depth, "num_iterations": iterations, "total_batch_size": tbs, "max_seq_len": seq_len}
