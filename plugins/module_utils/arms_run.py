"""The lifecycle of one training run on one host: start, status, stop, and replacing other trainings.

A run is identified by the host's state dir and its name (:class:`RunRef`): its pid file
``<state_dir>/<run_name>.pid.json`` records how it was launched and what it was made from
(``arms_identity``), so status and stop need nothing else. Starting needs everything a launch is
made from (:class:`LaunchSpec`).

Each action decides, then acts. :func:`decide_start` is the whole start rule on plain facts (is the
run alive, finished, stale, are other trainings running, is it forced); :func:`start_run` gathers those
facts, applies the decision and starts the run. Every function returns the module's result dict, or
raises :class:`RunFailed` with that result (its ``msg`` says what was wrong and what to run).
"""

from __future__ import annotations

import contextlib
import os
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

from ansible.module_utils.arms_budget import validate_hyperparameters
from ansible.module_utils.arms_command import (
    build_command,
    check_env_file,
    choose_launcher,
    host_has_gpu,
    launched_program,
    parse_gpu_list,
    script_flags,
)
from ansible.module_utils.arms_common import ArmsError, playbook_command
from ansible.module_utils.arms_flags import DEFAULT_MAX_SEQ_LEN, flag_style_of_checkout, int_flag, normalize_flags
from ansible.module_utils.arms_identity import current_identity, identity_changes
from ansible.module_utils.arms_logs import diagnose, parse_log, progress_line, tail
from ansible.module_utils.arms_process import (
    find_trainings,
    latest_checkpoint_step,
    launch_lock,
    read_exit_code,
    read_pidfile,
    record_alive,
    run_paths,
    signal_group,
    start_detached,
    stop,
)
from ansible.module_utils.arms_rowgroups import nanochat_files, row_group_counts, starvation_cause
from ansible.module_utils.arms_status import idle_note, stall_note

TAIL_LINES = 40
# status: a live run silent this long after its model config, with no step line, is looked at for starvation
STALL_AFTER = 600.0
NONZERO_RANK_GRACE = 5.0
# the switch that replaces a run, as a playbook user passes it (the module's own argument is ``force``); a
# caller from elsewhere (a CLI's ``--force``) names its own in RunRef.force_switch
FORCE_SWITCH = "-e arms_force_restart=true"


class RunFailed(Exception):
    """The action failed; ``result`` is the module's result, its ``msg`` a sentence a user can act on."""

    def __init__(self, result: dict[str, Any]) -> None:
        super().__init__(result.get("msg", ""))
        self.result = result


@dataclass(frozen=True)
class RunRef:
    """What identifies a run on a host, and what its messages name.

    ``arm`` and ``device_batch_size`` only fill the diagnosis's repair commands; when not given they
    are read from the run's pid file. ``force_switch`` is how the caller's user forces a start, named
    in refusals.
    """

    state_dir: str
    run_name: str
    host: str
    inventory: str | None = None
    arm: str | None = None
    device_batch_size: int | None = None
    force_switch: str = FORCE_SWITCH


@dataclass(frozen=True)
class LaunchSpec:
    """Everything a launch is made from (the module's launch arguments).

    On a host several arms share, ``cuda_visible_devices`` names the arm's GPUs ("0,1", the
    placement's) and ``alone`` is False; the base dir, the run name (log and pid file) and, for a
    multi-node arm, ``rdzv_port`` are the arm's own. See :func:`gpu_claim` and :func:`rival_reason`.
    """

    chdir: str
    venv: str
    base_dir: str
    arm: str
    experiment: str
    depth: int
    device_batch_size: int
    total_batch_size: int
    gpus_per_node: int
    nnodes: int = 1
    node_rank: int = 0
    rdzv_host: str | None = None
    rdzv_port: int = 29500
    model_tag: str | None = None
    extra_flags: dict[str, Any] = field(default_factory=dict)
    flag_style: str = "auto"
    launcher: str = "auto"
    data_dir: str | None = None
    resume_from_step: int = -1
    resume_latest: bool = False
    env_file: str | None = None
    extra_env: dict[str, Any] = field(default_factory=dict)
    niceness: int = 0
    torchrun: str | None = None
    cuda_visible_devices: str | None = None
    alone: bool = True

    @property
    def tag(self) -> str:
        return self.model_tag or f"d{self.depth}"


@dataclass
class Plan:
    """A launch worked out now: argv, env, launcher, style, and the identity the run would have."""

    argv: list[str]
    env: dict[str, str]
    launcher: str
    flag_style: str
    identity: dict[str, Any]
    # the GPUs the run claims on the host (gpu_claim): None = the whole host
    gpus: list[int] | None = None


# ---------------------------------------------------------------------------------------------
# observing a run
# ---------------------------------------------------------------------------------------------


def _read(path: str | None) -> str:
    if not path:
        return ""
    try:
        with open(path, encoding="utf-8", errors="replace") as fh:
            return fh.read()
    except OSError:
        return ""


def _recorded_batch_size(record: dict[str, Any] | None) -> int | None:
    """The device batch size a run was launched with, from the flags in its pid file."""
    if not record:
        return None
    try:
        value = normalize_flags(script_flags(record.get("argv") or [])).get("device_batch_size")
        return int(str(value)) if value is not None else None
    except (ArmsError, ValueError):
        return None


def observe(record: dict[str, Any] | None, paths: dict[str, str], ref: RunRef) -> dict[str, Any]:
    """alive / finished / progress / diagnosis of a run, from its pid record, log and exit file."""
    alive = record_alive(record)
    text = _read(paths["log"])
    parsed = parse_log(text, max_steps=20)
    code = read_exit_code(paths["exit_file"])
    finished = bool(record) and not alive and (code == 0 or parsed["finished"])
    stopped = bool(record and record.get("stopped"))  # stopped on purpose: its signals are no failure
    gone = bool(record) and not alive and not finished and not stopped
    findings = diagnose(
        text,
        ref.host,
        inventory=ref.inventory,
        device_batch_size=ref.device_batch_size or _recorded_batch_size(record),
        arm=ref.arm or (record.get("arm") if record else None),
        process_gone=gone,
        exit_code=code,
    )
    if stopped:
        findings = [f for f in findings if f["id"] != "killed"]
    return {
        "pid": record.get("pid") if record else None,
        "pgid": record.get("pgid") if record else None,
        "started": record.get("started") if record else None,
        "ended": ended_at(paths) if record and not alive else None,
        "alive": alive,
        "finished": finished,
        "exit_code": code,
        "progress": parsed,
        "progress_line": progress_line(parsed),
        "diagnosis": findings,
        "log_tail": tail(text, TAIL_LINES) if not alive else [],
    }


def ended_at(paths: dict[str, str]) -> str | None:
    """When a run that is no longer alive ended (ISO 8601, UTC): its exit file's time, else its log's last write."""
    for path in (paths["exit_file"], paths["log"]):
        try:
            return time.strftime("%Y-%m-%dT%H:%M:%S+00:00", time.gmtime(os.stat(path).st_mtime))
        except OSError:
            continue
    return None


def _observe_now(paths: dict[str, str], ref: RunRef) -> dict[str, Any]:
    return observe(read_pidfile(paths["pidfile"]), paths, ref)


def explain(findings: list[dict[str, str]]) -> str:
    """The errors of a diagnosis (or its warnings) with their repair commands, in one sentence."""
    errors = [f for f in findings if f.get("severity") == "error"] or findings
    if not errors:
        return "no known failure signature in the log"
    return "; ".join(f"{f['title']} Repair: {f['repair']}" for f in errors[:3])


def _open(ref: RunRef, *, locked: bool, stack: contextlib.ExitStack) -> tuple[dict[str, str], dict[str, Any] | None]:
    """The run's paths and pid record (under the host's launch lock when ``locked``); RunFailed otherwise."""
    try:
        paths = run_paths(ref.state_dir, ref.run_name)
        if locked:
            stack.enter_context(launch_lock(ref.state_dir))
        return paths, read_pidfile(paths["pidfile"])
    except (ArmsError, OSError) as exc:
        raise RunFailed({"msg": str(exc)}) from exc


def _base_result(ref: RunRef, paths: dict[str, str], record: dict[str, Any] | None, style: str) -> dict[str, Any]:
    return {
        "changed": False,
        "run_name": ref.run_name,
        "log": paths["log"],
        "pidfile": paths["pidfile"],
        "cmd": record.get("argv", []) if record else [],
        "env": record.get("env", {}) if record else {},
        "resume_step": None,
        "flag_style": style,
        "identity": {},
        "identity_changes": [],
        "stale": False,
    }


# ---------------------------------------------------------------------------------------------
# planning a launch
# ---------------------------------------------------------------------------------------------


def plan_launch(spec: LaunchSpec, run_name: str, exit_file: str, resume_step: int) -> Plan:
    """argv, env and launcher of a launch now, and the identity it would have (ArmsError with a sentence)."""
    style = flag_style_of_checkout(spec.chdir) if spec.flag_style == "auto" else spec.flag_style
    extras = normalize_flags(spec.extra_flags)
    launcher = choose_launcher(
        spec.launcher,
        nnodes=spec.nnodes,
        gpus_per_node=spec.gpus_per_node,
        device_type=str(extras.get("device_type", "")),
    )
    argv, env = build_command(
        venv=spec.venv,
        base_dir=spec.base_dir,
        run_name=run_name,
        arm=spec.arm,
        experiment=spec.experiment,
        depth=spec.depth,
        device_batch_size=spec.device_batch_size,
        total_batch_size=spec.total_batch_size,
        gpus_per_node=spec.gpus_per_node,
        nnodes=spec.nnodes,
        node_rank=spec.node_rank,
        rdzv_host=spec.rdzv_host,
        rdzv_port=spec.rdzv_port,
        model_tag=spec.tag,
        extra_flags=extras,
        flag_style=style,
        launcher=launcher,
        resume_from_step=resume_step,
        env_file=spec.env_file,
        exit_file=exit_file,
        extra_env=spec.extra_env,
        torchrun=spec.torchrun,
        cuda_visible_devices=spec.cuda_visible_devices,
    )
    identity = current_identity(
        chdir=spec.chdir,
        base_dir=spec.base_dir,
        data_dir=spec.data_dir or os.path.join(spec.base_dir, "base_data"),
        flags=script_flags(argv),
        launcher=launcher,
        processes=spec.nnodes * spec.gpus_per_node,
    )
    return Plan(argv=argv, env=env, launcher=launcher, flag_style=style, identity=identity)


def gpu_claim(spec: LaunchSpec, has_gpu: bool | None = None) -> list[int] | None:
    """The GPUs a launch holds on its host: None = the whole host, [] = none (a CPU process), else indices.

    ``cuda_visible_devices`` names them (one per process: as many as ``gpus_per_node``). Without it, an
    arm ``alone`` on its host holds the whole host (the rule before hosts were shared); an arm sharing
    a host without a GPU is one CPU process that holds none; an arm sharing a host WITH GPUs must name
    its GPUs, or it would train on every GPU of its siblings (ArmsError). ``has_gpu`` defaults to
    whether this host has one.
    """
    if spec.cuda_visible_devices:
        gpus = parse_gpu_list(spec.cuda_visible_devices)
        if len(gpus) != spec.gpus_per_node:
            raise ArmsError(
                f"cuda_visible_devices {spec.cuda_visible_devices!r} names {len(gpus)} GPU(s) but the arm runs "
                f"{spec.gpus_per_node} process(es) per node (gpus_per_node): give one GPU per process, as the "
                "placement does (nproc_per_node and cuda_visible_devices)."
            )
        return sorted(gpus)
    if spec.alone:
        return None
    if host_has_gpu() if has_gpu is None else has_gpu:
        raise ArmsError(
            f"arm {spec.arm} shares this host with other arms (alone is false) but names no GPUs: pass "
            "cuda_visible_devices (the placement's), or it would train on the other arms' GPUs too."
        )
    return []


def _gpu_text(gpus: list[int]) -> str:
    return ("GPU " if len(gpus) == 1 else "GPUs ") + ",".join(str(g) for g in gpus)


def rival_reason(
    other: dict[str, Any], *, base_dir: str, gpus: list[int] | None, master_port: int | None
) -> str | None:
    """Why another training on the host stands in a launch's way, or None when it is a sibling arm.

    A rival uses the same base dir (data, tokenizer, checkpoints), or GPUs the launch claims too
    (either side holding the whole host overlaps everything: the rule for runs that name no GPUs),
    or the rendezvous port the launch must listen on. A sibling arm on its own base dir, GPUs and
    port is no rival: a launch never refuses nor stops it, forced or not.
    """
    theirs = other.get("base_dir")
    if theirs is None or theirs == os.path.realpath(os.path.expanduser(base_dir)):
        return f"it uses the same base dir ({base_dir})" if theirs else "its base dir cannot be read"
    held = other.get("gpus")
    if held is None:
        return "it holds the whole host (it names no GPUs)"
    if gpus is None:
        return "this run would take the whole host (it names no GPUs)"
    shared = sorted(set(held) & set(gpus))
    if shared:
        return f"it trains on {_gpu_text(shared)}, which this run asks for too"
    if master_port is not None and other.get("master_port") == master_port:
        return f"its rendezvous listens on port {master_port}, which this run needs too"
    return None


def _is_checkout(chdir: str) -> bool:
    return os.path.isfile(os.path.join(chdir, "scripts", "base_train.py"))


def check_launch_inputs(spec: LaunchSpec, plan: Plan, host: str, inventory: str | None) -> None:
    """ArmsError unless the planned launch can run: the program exists, nanochat's batch rules hold."""
    program = launched_program(plan.argv)
    if not os.access(program, os.X_OK):
        raise ArmsError(
            f"{program} is not executable: the venv {spec.venv} lacks {os.path.basename(program)}; run "
            f"the deps role ({playbook_command('repair', inventory, tags='deps', limit=host)})."
        )
    extras = normalize_flags(spec.extra_flags)
    validate_hyperparameters(
        gpus_per_node=spec.gpus_per_node,
        nnodes=spec.nnodes,
        device_batch_size=spec.device_batch_size,
        total_batch_size=spec.total_batch_size,
        max_seq_len=int_flag(extras, "max_seq_len", DEFAULT_MAX_SEQ_LEN),
        depth=spec.depth,
    )


def resume_step_of(spec: LaunchSpec) -> int:
    """The step a launch resumes from: the last checkpoint with ``resume_latest``, else ``resume_from_step``."""
    if not spec.resume_latest:
        return spec.resume_from_step
    latest = latest_checkpoint_step(spec.base_dir, spec.tag)
    return latest if latest is not None else -1


def _record_plan(result: dict[str, Any], plan: Plan, record: dict[str, Any] | None) -> list[str]:
    """Put a plan's style, launcher and identity in ``result``; what the recorded run differs in."""
    changes = identity_changes(record.get("identity"), plan.identity) if record else []
    result.update(
        flag_style=plan.flag_style,
        launcher=plan.launcher,
        identity=plan.identity,
        identity_changes=changes,
        stale=bool(changes),
    )
    return changes


# ---------------------------------------------------------------------------------------------
# status
# ---------------------------------------------------------------------------------------------


def _stale_check(result: dict[str, Any], spec: LaunchSpec, ref: RunRef, exit_file: str, record: dict[str, Any]) -> None:
    try:
        _record_plan(result, plan_launch(spec, ref.run_name, exit_file, spec.resume_from_step), record)
    except ArmsError as exc:
        result.update(identity_changes=[f"its identity cannot be compared ({exc})"], stale=True)


def is_stalled(result: dict[str, Any], silent_s: float | None, stall_after: float) -> bool:
    """A live run that printed its model config, then no step line, and nothing at all for ``stall_after`` s."""
    progress = result.get("progress") or {}
    return bool(
        result.get("alive")
        and progress.get("config_printed")
        and not progress.get("started")
        and silent_s is not None
        and silent_s >= stall_after
    )


def _silent_for(log: str) -> float | None:
    try:
        return max(0.0, time.time() - os.stat(log).st_mtime)
    except OSError:
        return None


def run_world_size(record: dict[str, Any], spec: LaunchSpec | None) -> int:
    """The processes of the run in all (its launch's ``<launcher> xN``), else what the launch options say, else 1."""
    launcher = str((record.get("identity") or {}).get("launcher") or "")
    count = launcher.rpartition(" x")[2]
    if count.isdigit() and int(count) > 0:
        return int(count)
    return spec.nnodes * spec.gpus_per_node if spec else 1


def run_data_dir(record: dict[str, Any], spec: LaunchSpec | None) -> str | None:
    """The data dir the run reads: the launch options' data_dir, else <its NANOCHAT_BASE_DIR>/base_data."""
    if spec is not None:
        return spec.data_dir or os.path.join(spec.base_dir, "base_data")
    base = (record.get("env") or {}).get("NANOCHAT_BASE_DIR")
    return os.path.join(base, "base_data") if base else None


def _venv_python(record: dict[str, Any], spec: LaunchSpec | None) -> str | None:
    """The run's venv Python (it has pyarrow: nanochat reads parquet), for a status run by a Python without it."""
    venv = spec.venv if spec is not None else (record.get("env") or {}).get("VIRTUAL_ENV")
    python = os.path.join(venv, "bin", "python") if venv else None
    return python if python and os.access(python, os.X_OK) else None


def starvation(record: dict[str, Any], spec: LaunchSpec | None, ref: RunRef, silent_s: float) -> dict[str, Any]:
    """Why a stalled run prints nothing: {"silent_s", "world_size", "data_dir", "cause", "error", "note"}.

    The cause is :func:`arms_rowgroups.starvation_cause` over the files the run reads (its data dir) at its
    world size; the footers are read by the run's own venv Python when there is one.
    """
    world = run_world_size(record, spec)
    data_dir = run_data_dir(record, spec)
    cause = error = None
    try:
        if not data_dir:
            raise ArmsError("the run's pid file names no NANOCHAT_BASE_DIR")
        paths = nanochat_files(data_dir)
        cause = starvation_cause(paths, world, row_group_counts(paths, _venv_python(record, spec)))
    except ArmsError as exc:
        error = str(exc)
    stop_command = playbook_command("stop", ref.inventory, limit=ref.host)
    return {
        "silent_s": round(silent_s),
        "world_size": world,
        "data_dir": data_dir,
        "cause": cause,
        "error": error,
        "note": stall_note(silent_s, cause, world, stop_command, error),
    }


def status_message(ref: RunRef, record: dict[str, Any] | None, result: dict[str, Any]) -> str:
    """One sentence on the run: never started, running, finished, stopped, or why it is not running."""
    changes = result["identity_changes"]
    stale = f" It is stale: {'; '.join(changes)}." if changes else ""
    name = ref.run_name
    if record is None:
        return f"run {name} was never started on this host (no {result['pidfile']})."
    if result["alive"]:
        stall = f" It prints nothing: {result['stall']['note']}" if result.get("stall") else ""
        return f"run {name} is running (pid {result['pid']}): {result['progress_line']}.{stale}{stall}"
    idle = idle_note(result.get("ended"))
    if result["finished"]:
        return f"run {name} finished: {result['progress_line']}.{stale}{idle}"
    if record.get("stopped"):
        return f"run {name} was stopped at {record['stopped']}: {result['progress_line']}.{stale}{idle}"
    return f"run {name} is not running and did not finish: {explain(result['diagnosis'])}.{idle}"


def run_status(
    ref: RunRef, spec: LaunchSpec | None = None, flag_style: str = "auto", stall_after: float = STALL_AFTER
) -> dict[str, Any]:
    """What the pid file, log and exit file say about the run.

    With ``spec`` (what the experiment declares now) the recorded identity is compared with it and a
    run made from something else is marked stale; without it, status reports what the pid file says.
    A live run silent for ``stall_after`` s after its model config, with no step line, gets ``stall``
    (:func:`starvation`: which rank has no row group in which file, when that is why); else ``stall`` is None.
    """
    with contextlib.ExitStack() as stack:
        paths, record = _open(ref, locked=False, stack=stack)
    result = _base_result(ref, paths, record, spec.flag_style if spec else flag_style)
    result.update(_observe_now(paths, ref))
    silent = _silent_for(paths["log"])
    result["stall"] = (
        starvation(record, spec, ref, silent)
        if record is not None and silent is not None and is_stalled(result, silent, stall_after)
        else None
    )
    if spec is not None and record is not None and _is_checkout(spec.chdir):
        _stale_check(result, spec, ref, paths["exit_file"], record)
    result["msg"] = status_message(ref, record, result)
    return result


# ---------------------------------------------------------------------------------------------
# stop
# ---------------------------------------------------------------------------------------------


def run_stop(
    ref: RunRef, *, timeout: float = 60.0, check_mode: bool = False, flag_style: str = "auto"
) -> dict[str, Any]:
    """Stop the run's process group (SIGTERM, then SIGKILL); a run that is not running is left alone."""
    with contextlib.ExitStack() as stack:
        paths, record = _open(ref, locked=False, stack=stack)
    result = _base_result(ref, paths, record, flag_style)
    if check_mode or record is None:
        result.update(_observe_now(paths, ref))
        if result["alive"] and record is not None:
            result.update(changed=True, msg=f"would stop run {ref.run_name} (process group {record['pgid']}).")
        else:
            result["msg"] = f"run {ref.run_name} is not running: nothing to stop."
        return result
    try:
        outcome = stop(paths["pidfile"], timeout=timeout)
    except ArmsError as exc:
        raise RunFailed({**result, "msg": str(exc)}) from exc
    result.update(_observe_now(paths, ref))
    result.update(changed=bool(outcome["signals"]), msg=outcome["msg"])
    if outcome["signals"]:
        result["stop"] = outcome
    if not outcome["stopped"]:
        raise RunFailed(result)
    return result


# ---------------------------------------------------------------------------------------------
# start
# ---------------------------------------------------------------------------------------------

START = "start"
REFUSE_STALE = "refuse_stale"
ALREADY_RUNNING = "already_running"
REFUSE_OTHER = "refuse_other"
ALREADY_FINISHED = "already_finished"


def decide_start(*, alive: bool, finished: bool, stale: bool, resuming: bool, others: bool, force: bool) -> str:
    """What a start does with the run on record and the host's other trainings.

    ``force`` always starts (stopping what runs). Otherwise a run made from something else than the
    experiment declares is refused when it is alive, finished or would be resumed; the same run alive
    is left running; another training on the host is refused; a finished run is reported, not
    restarted; anything else (never started, died, stopped) starts.
    """
    if force:
        return START
    if stale and (alive or finished or resuming):
        return REFUSE_STALE
    if alive:
        return ALREADY_RUNNING
    if others:
        return REFUSE_OTHER
    if finished:
        return ALREADY_FINISHED
    return START


def _stale_refusal(ref: RunRef, spec: LaunchSpec, current: dict[str, Any], changes: list[str], resuming: bool) -> str:
    what = "is running" if current["alive"] else "finished" if current["finished"] else "died"
    return (
        f"run {ref.run_name} {what} but was made from something else than the experiment declares "
        f"now: {'; '.join(changes)}. It is not this experiment's result"
        + (" and cannot be resumed" if resuming else "")
        + f": train it again with {ref.force_switch} (it replaces the run), or give arm "
        f"{spec.arm} a new run_name in the experiment file."
    )


def other_refusal(ref: RunRef, other: dict[str, Any]) -> str:
    """Another training runs on the host (and why it is in the way): how to stop it, or the switch that replaces it."""
    log = ", log " + other["log"] if other.get("log") else ""
    why = f": {other['why']}" if other.get("why") else ""
    return (
        f"another training runs on this host: run {other['run_name']} (pid {other['pid']}, process "
        f"group {other['pgid']}{log}){why}; stop it first "
        f"({playbook_command('stop', ref.inventory, limit=ref.host)}) or replace it with "
        f"{ref.force_switch} (force)."
    )


def _stop_before_start(others: list[dict[str, Any]], own_pidfile: str | None, timeout: float) -> list[dict[str, Any]]:
    """Stop the other trainings (and the run itself when alive); ArmsError when one does not stop."""
    stopped = []
    for other in others:
        if other.get("pidfile"):
            stopped.append(stop(other["pidfile"], timeout=timeout))
        else:
            outcome = signal_group(other["pgid"], timeout=timeout)
            sent = " then ".join(outcome["signals"]) or "no signal"
            outcome["msg"] = f"run {other['run_name']}: sent {sent} to process group {other['pgid']}"
            stopped.append(outcome)
    if own_pidfile:
        stopped.append(stop(own_pidfile, timeout=timeout))
    leftover = [s for s in stopped if not s["stopped"]]
    if leftover:
        raise ArmsError(leftover[0]["msg"])
    return stopped


def _launch(spec: LaunchSpec, ref: RunRef, paths: dict[str, str], plan: Plan) -> None:
    start_detached(
        plan.argv,
        plan.env,
        cwd=spec.chdir,
        log_path=paths["log"],
        pidfile=paths["pidfile"],
        run_name=ref.run_name,
        exit_file=paths["exit_file"],
        niceness=spec.niceness,
        extra={
            "env": plan.env,
            "arm": spec.arm,
            "experiment": spec.experiment,
            "node_rank": spec.node_rank,
            "nnodes": spec.nnodes,
            "launcher": plan.launcher,
            "identity": plan.identity,
            # what the run holds on a shared host (arms_process.find_trainings reads it back)
            "base_dir": spec.base_dir,
            "gpus": plan.gpus,
            "rdzv_port": spec.rdzv_port,
            "master_port": _master_port(spec),
        },
    )


def _prepare(
    spec: LaunchSpec, ref: RunRef, paths: dict[str, str], record: dict[str, Any] | None, result: dict[str, Any]
) -> tuple[Plan, int, list[str]]:
    """The launch plan, its resume step and how the recorded run differs from it, after the checks a
    launch needs; RunFailed with ``result`` otherwise."""
    try:
        if not _is_checkout(spec.chdir):
            raise ArmsError(
                f"{spec.chdir} is not a nanochat checkout (no scripts/base_train.py): set chdir to the "
                "checkout, or run the nanochat checkout role first."
            )
        if spec.env_file:
            check_env_file(spec.env_file)
        resume_step = resume_step_of(spec)
        plan = plan_launch(spec, ref.run_name, paths["exit_file"], resume_step)
        plan.gpus = gpu_claim(spec)
        changes = _record_plan(result, plan, record)
        check_launch_inputs(spec, plan, ref.host, ref.inventory)
    except ArmsError as exc:
        raise RunFailed({**result, "msg": str(exc)}) from exc
    return plan, resume_step, changes


def start_run(
    ref: RunRef,
    spec: LaunchSpec,
    *,
    force: bool = False,
    check_mode: bool = False,
    wait_for_step: bool = False,
    start_timeout: float = 900,
    stop_timeout: float = 60,
) -> dict[str, Any]:
    """Launch the run unless it is alive or finished (see :func:`decide_start`); optionally wait for its first step.

    The host's launch lock is held from reading the run's record until the run has started, so two
    launches at once start one training.
    """
    with contextlib.ExitStack() as lock:
        paths, record = _open(ref, locked=not check_mode, stack=lock)
        result = _base_result(ref, paths, record, spec.flag_style)
        plan, resume_step, changes = _prepare(spec, ref, paths, record, result)
        current = observe(record, paths, ref)
        alive = record_alive(record)
        own_pgid = int(record.get("pgid", record["pid"])) if (record and alive) else None
        others = [] if alive and not force else _others(ref, spec, plan.gpus, own_pgid)
        decision = decide_start(
            alive=alive,
            finished=current["finished"],
            stale=bool(changes),
            resuming=resume_step >= 0,
            others=bool(others),
            force=force,
        )
        if decision == REFUSE_STALE:
            raise RunFailed({**result, **current, "msg": _stale_refusal(ref, spec, current, changes, resume_step >= 0)})
        if decision == ALREADY_RUNNING:
            result.update(_observe_now(paths, ref))
            result["msg"] = f"run {ref.run_name} is already running (pid {result['pid']}): {result['progress_line']}."
        elif decision == REFUSE_OTHER:
            result.update(_observe_now(paths, ref))
            raise RunFailed({**result, "msg": other_refusal(ref, others[0]), "other_trainings": others})
        elif decision == ALREADY_FINISHED:
            result.update(current)
            switch = (
                f"{ref.force_switch}, the module's force," if ref.force_switch == FORCE_SWITCH else ref.force_switch
            )
            result["msg"] = (
                f"run {ref.run_name} already finished ({current['progress_line']}); not restarted "
                f"({switch} trains it again)."
            )
            return result
        else:
            result.update(cmd=plan.argv, env=plan.env, resume_step=resume_step if resume_step >= 0 else None)
            if check_mode:
                return _predict_start(ref, result, current, others, record if alive else None)
            _start(ref, spec, paths, plan, result, others, paths["pidfile"] if alive else None, stop_timeout)
            what = f"resumed from step {resume_step}" if resume_step >= 0 else "started"
            result["msg"] = f"run {ref.run_name} {what} (pid {result['pid']}), log {paths['log']}."
    if wait_for_step:
        wait_for_first_step(result, paths, ref, node_rank=spec.node_rank, start_timeout=start_timeout)
    return result


def _master_port(spec: LaunchSpec) -> int | None:
    """The port a launch listens on: node rank 0 of a multi-node arm (one node: torchrun picks a free one)."""
    return spec.rdzv_port if spec.nnodes > 1 and spec.node_rank == 0 else None


def _others(ref: RunRef, spec: LaunchSpec, gpus: list[int] | None, own_pgid: int | None) -> list[dict[str, Any]]:
    """The host's other trainings that stand in this launch's way (:func:`rival_reason`), each with ``why``.

    Sibling arms (their own base dir, GPUs and port) are not among them: neither refused nor stopped.
    """
    rivals = []
    for training in find_trainings(ref.state_dir, spec.chdir, spec.base_dir):
        if training["pgid"] == own_pgid:
            continue
        why = rival_reason(training, base_dir=spec.base_dir, gpus=gpus, master_port=_master_port(spec))
        if why:
            rivals.append({**training, "why": why})
    return rivals


def _predict_start(
    ref: RunRef,
    result: dict[str, Any],
    current: dict[str, Any],
    others: list[dict[str, Any]],
    alive_record: dict[str, Any] | None,
) -> dict[str, Any]:
    """Check mode: what a start would do, nothing done."""
    result.update(current)
    replaced = [f"{t['run_name']} (pid {t['pid']})" for t in others] + (
        [f"{ref.run_name} (pid {alive_record['pid']})"] if alive_record else []
    )
    after = f" after stopping {', '.join(replaced)}" if replaced else ""
    result.update(changed=True, msg=f"would start run {ref.run_name}{after}.")
    return result


def _start(
    ref: RunRef,
    spec: LaunchSpec,
    paths: dict[str, str],
    plan: Plan,
    result: dict[str, Any],
    others: list[dict[str, Any]],
    own_pidfile: str | None,
    stop_timeout: float,
) -> None:
    """Stop what the start replaces, start the run, and put what happened in ``result``."""
    try:
        stopped = _stop_before_start(others, own_pidfile, stop_timeout)
        _launch(spec, ref, paths, plan)
    except ArmsError as exc:
        raise RunFailed({**result, "msg": str(exc)}) from exc
    result.update(_observe_now(paths, ref))
    # the run now on record is made from what the experiment declares
    result.update(changed=True, stale=False, identity_changes=[])
    if stopped:
        result["stop"] = stopped


# ---------------------------------------------------------------------------------------------
# waiting for the first step
# ---------------------------------------------------------------------------------------------


def _polls(paths: dict[str, str], ref: RunRef, interval: float = 0.5) -> Iterator[dict[str, Any]]:
    while True:
        yield _observe_now(paths, ref)
        time.sleep(interval)


def _failed_with_log(result: dict[str, Any], log: str, msg: str) -> RunFailed:
    """The failure of a run that did not get going: ``msg``, with the log's last lines in the result."""
    result["log_tail"] = tail(_read(log), TAIL_LINES)
    return RunFailed({**result, "msg": msg})


def wait_for_first_step(
    result: dict[str, Any], paths: dict[str, str], ref: RunRef, *, node_rank: int, start_timeout: float
) -> None:
    """Wait for the first step line (node rank 0) or a few seconds of survival (other ranks).

    Adds to ``result``'s msg; RunFailed with the log's tail and the diagnosis when the run dies first,
    or (node rank 0) prints no step line in time.
    """
    rank0 = node_rank == 0
    timeout = float(start_timeout) if rank0 else min(float(start_timeout), NONZERO_RANK_GRACE)
    deadline = time.monotonic() + timeout
    for state in _polls(paths, ref):
        result.update(state)
        if rank0 and state["progress"]["started"]:
            result["msg"] += f" Training started: {state['progress_line']}."
            return
        if not state["alive"]:
            if state["finished"]:
                result["msg"] += " It already finished."
                return
            raise _failed_with_log(
                result,
                paths["log"],
                f"run {ref.run_name} died before its first step (exit code {state['exit_code']}): "
                f"{explain(state['diagnosis'])}. Log: {paths['log']}.",
            )
        if time.monotonic() >= deadline:
            if not rank0:
                result["msg"] += f" Node rank {node_rank} is up; its progress shows in the log of node rank 0."
                return
            raise _failed_with_log(
                result,
                paths["log"],
                f"run {ref.run_name} printed no step line within {start_timeout}s; it is still "
                f"running (pid {state['pid']}): {explain(state['diagnosis'])}. Raise "
                f"start_timeout, or read {paths['log']}.",
            )


# ---------------------------------------------------------------------------------------------
# the one entry point
# ---------------------------------------------------------------------------------------------

STATES = ("started", "stopped", "status")


def manage_run(
    state: str,
    ref: RunRef,
    spec: LaunchSpec | None = None,
    *,
    force: bool = False,
    check_mode: bool = False,
    wait_for_step: bool = False,
    start_timeout: float = 900,
    stop_timeout: float = 60,
    flag_style: str = "auto",
    stall_after: float = STALL_AFTER,
) -> dict[str, Any]:
    """Bring the run to ``state`` (started, stopped) or report it (status); RunFailed when that fails."""
    if state == "status":
        return run_status(ref, spec, flag_style, stall_after)
    if state == "stopped":
        return run_stop(ref, timeout=stop_timeout, check_mode=check_mode, flag_style=flag_style)
    if spec is None:
        raise RunFailed({"msg": "starting a run needs its launch arguments (chdir, venv, base_dir, arm, ...)."})
    return start_run(
        ref,
        spec,
        force=force,
        check_mode=check_mode,
        wait_for_step=wait_for_step,
        start_timeout=start_timeout,
        stop_timeout=stop_timeout,
    )
