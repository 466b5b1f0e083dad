#!/usr/bin/python
"""Ansible module: launch, watch and stop one node's nanochat pretraining run (detached torchrun)."""

from __future__ import annotations

DOCUMENTATION = r"""
---
module: nanochat_train
short_description: Launch, report on and stop a detached nanochat base_train run on one host
description:
  - Builds C(torchrun ... -m scripts.base_train -- --depth=... --run=... --device-batch-size=...
    --total-batch-size=... --model-tag=...) for one arm (extra nanochat flags from the experiment,
    the same for every arm), checks nanochat's batch divisibility rules first, and starts it from
    the nanochat checkout with the venv's torchrun, C(NANOCHAT_BASE_DIR), C(OMP_NUM_THREADS) and
    W&B grouping (C(WANDB_RUN_GROUP=<experiment>), C(WANDB_TAGS=<arm>,<experiment>)).
  - The run is detached (its own session; it survives the SSH connection and Ansible ending), with
    a log file C(<state_dir>/<run_name>.log), a JSON pid file C(<state_dir>/<run_name>.pid.json)
    and an exit-code file C(<state_dir>/<run_name>.exit) written when it ends.
  - One process on one node without a GPU starts as C(<venv>/bin/python -m scripts.base_train FLAGS)
    (see I(launcher)); real nanochat trains on CPU only that way.
  - One node runs C(--standalone --nproc_per_node=<gpus_per_node>). An arm on several hosts runs
    C(--nnodes=<nnodes> --node_rank=<node_rank> --master_addr=<rdzv_host> --master_port=<rdzv_port>)
    (torchrun's static rendezvous, which keeps rank 0 and its log on node rank 0).
  - Every launch records the run's identity (commit and edits, launcher, flags, tokenizer, data, val
    shard) in its pid file. A finished or live run whose identity differs from the one a launch now
    would have is refused with what changed (it is not this experiment's result), unless I(force).
  - Idempotent. The same run alive gives changed=false. Another training alive on the host (a run
    of another pid file in I(state_dir), or a C(scripts.base_train) process started by hand from
    I(chdir)) makes it fail naming its pid and run name, unless I(force) (then it is stopped first).
    A run that finished is reported (finished=true), not restarted, unless I(force). A run that
    died is started again.
  - Secrets (W&B key, HF token) are never arguments; I(env_file), a 0600 file of C(KEY=value) lines,
    is sourced by a wrapper shell inside the process, so its content is in neither the process's
    command line nor this module's result.
  - I(state=status) reports alive, the parsed progress of the rank-0 log and a diagnosis of known
    failure signatures (each with the exact repair command); I(state=stopped) stops the whole
    process group (SIGTERM, then SIGKILL).
options:
  chdir:
    description: The nanochat checkout (must contain C(scripts/base_train.py)); the run's working directory.
    type: path
    required: true
  venv:
    description: The nanochat venv; its C(bin/torchrun) is launched and its C(bin) goes first on C(PATH).
    type: path
    required: true
  base_dir:
    description: C(NANOCHAT_BASE_DIR) of the run (data, tokenizer, checkpoints).
    type: path
    required: true
  run_name:
    description:
      - The run's name (nanochat's C(--run), the W&B run name; C(dummy) disables W&B). Letters,
        digits, C(.), C(_) and C(-) only; it names the pid file and the log.
    type: str
    required: true
  arm:
    description: The arm's name (a W&B tag).
    type: str
    required: true
  experiment:
    description: The experiment's name (the W&B group and a W&B tag).
    type: str
    required: true
  depth:
    description: nanochat's C(--depth).
    type: int
    required: true
  device_batch_size:
    description: nanochat's device batch size (sequences per GPU per micro-step).
    type: int
    required: true
  total_batch_size:
    description: nanochat's total batch size in tokens (-1 = nanochat's auto, commits from 2026-02-05).
    type: int
    required: true
  gpus_per_node:
    description: Processes per node (C(--nproc_per_node)).
    type: int
    required: true
  nnodes:
    description: Hosts in the arm.
    type: int
    default: 1
  node_rank:
    description: This host's position in the arm's host group (0 = the first host, which prints the log).
    type: int
    default: 0
  rdzv_host:
    description: Address of the arm's first host, reachable from the others (required when I(nnodes) > 1).
    type: str
  rdzv_port:
    description: Rendezvous port on I(rdzv_host).
    type: int
    default: 29500
  model_tag:
    description: nanochat's C(--model-tag) (checkpoint folder); default C(d<depth>).
    type: str
  extra_flags:
    description:
      - Experiment-wide extra nanochat flags, the same for every arm, as a mapping, e.g. C(max_seq_len=2048);
        names with dashes or underscores. They may not repeat the flags this module sets.
    type: dict
    default: {}
  flag_style:
    description:
      - How flags are written. C(auto) reads it from the checkout's own C(scripts/base_train.py)
        (configurator, argparse with underscores, argparse with dashes), never from the commit date.
    type: str
    default: auto
    choices: [auto, configurator, underscore, dash]
  launcher:
    description:
      - C(torchrun) starts C(torchrun ... -m scripts.base_train -- FLAGS); C(python) starts ONE plain
        C(python -m scripts.base_train FLAGS) process, as nanochat's C(runs/runcpu.sh) (real nanochat
        cannot train under torchrun on CPU). C(auto) picks C(python) for one process on one node
        without a GPU (C(device-type=cpu) among the extra flags, or no GPU on the host), else C(torchrun).
    type: str
    default: auto
    choices: [auto, torchrun, python]
  data_dir:
    description:
      - The arm's data dir, whose manifest (training shards and val shard) is part of the run's
        identity; default C(<base_dir>/base_data).
    type: path
  resume_from_step:
    description: Resume from this checkpoint step (nanochat's C(--resume-from-step)); -1 = start fresh.
    type: int
    default: -1
  resume_latest:
    description:
      - Resume from the last checkpoint step found under C(<base_dir>/base_checkpoints/<model_tag>)
        (starts fresh when there is none). Overrides I(resume_from_step).
    type: bool
    default: false
  env_file:
    description:
      - A file of C(KEY=value) lines holding secrets (e.g. C(WANDB_API_KEY), C(HF_TOKEN)), sourced inside
        the process. Must not be readable by group or others (mode 0600).
    type: path
  extra_env:
    description:
      - Non-secret environment variables for the run (e.g. C(WANDB_MODE=offline), C(OMP_NUM_THREADS)).
        May not set C(NANOCHAT_BASE_DIR), C(WANDB_RUN_GROUP), C(WANDB_TAGS), C(PATH) or C(VIRTUAL_ENV).
    type: dict
    default: {}
  state_dir:
    description: Where the pid, log and exit files go; default C(<base_dir>/arms_runs).
    type: path
  inventory_arg:
    description:
      - The C(-i ...) part of the ansible-playbook commands that repair messages name (the inventory the
        caller was run with; the playbooks pass C(arms_inventory_arg)).
    type: str
    default: "-i inventory/"
  niceness:
    description:
      - Start the run at this CPU niceness (0-19). 0 on GPU nodes; the local lab trains on the CPU that
        Ansible also needs and uses 19, so its training stands in for GPU work that leaves the CPU free.
    type: int
    default: 0
  torchrun:
    description: The torchrun executable; default C(<venv>/bin/torchrun).
    type: path
  force:
    description:
      - With I(state=started), stop any other training on the host and restart this run even when it is
        alive or has finished.
    type: bool
    default: false
  state:
    description:
      - C(started) launches the run unless it is alive or finished; C(stopped) stops its process group;
        C(status) only reports.
    type: str
    default: started
    choices: [started, stopped, status]
  wait_for_step:
    description:
      - With I(state=started), wait until the first step line appears in the log ("training started").
        On node ranks > 0 (whose log has no rank-0 lines) it waits only until the process has survived
        a few seconds. Fails with the log's last lines and the diagnosis if the run dies or the time runs out.
    type: bool
    default: false
  start_timeout:
    description: Seconds to wait for the first step line with I(wait_for_step).
    type: int
    default: 900
  stop_timeout:
    description: Seconds between SIGTERM and SIGKILL when stopping.
    type: int
    default: 60
  host:
    description:
      - The host's inventory name, used in the repair commands of the diagnosis (C(-l <host>)); pass
        C({{ inventory_hostname }}). Default the machine's host name.
    type: str
author:
  - nanochat-arms
"""

EXAMPLES = r"""
- name: The top arm's training runs
  nanochat_train:
    chdir: /home/ubuntu/nanochat
    venv: /home/ubuntu/nanochat/.venv
    base_dir: /home/ubuntu/.cache/nanochat
    run_name: exp-top16-d26-8gpu
    arm: top16.5
    experiment: exp16
    depth: 26
    device_batch_size: 32
    total_batch_size: 524288
    gpus_per_node: 8
    env_file: /home/ubuntu/.config/nanochat-arms/secrets.env
    wait_for_step: true
    start_timeout: 1800

- name: Node rank 1 of a two-host arm
  nanochat_train:
    chdir: /home/ubuntu/nanochat
    venv: /home/ubuntu/nanochat/.venv
    base_dir: /home/ubuntu/.cache/nanochat
    run_name: exp-rand16-d26-16gpu
    arm: random16.5
    experiment: exp16
    depth: 26
    device_batch_size: 32
    total_batch_size: 524288
    gpus_per_node: 8
    nnodes: 2
    node_rank: 1
    rdzv_host: 10.0.0.11

- name: Report progress
  nanochat_train:
    chdir: /home/ubuntu/nanochat
    venv: /home/ubuntu/nanochat/.venv
    base_dir: /home/ubuntu/.cache/nanochat
    run_name: exp-top16-d26-8gpu
    arm: top16.5
    experiment: exp16
    depth: 26
    device_batch_size: 32
    total_batch_size: 524288
    gpus_per_node: 8
    state: status
"""

RETURN = r"""
run_name:
  description: The run's name.
  returned: always
  type: str
pid:
  description: The run's process id (the session leader; null when it never ran here).
  returned: always
  type: int
pgid:
  description: The run's process group id (what stop signals).
  returned: always
  type: int
log:
  description: Path of the run's log file.
  returned: always
  type: str
pidfile:
  description: Path of the run's JSON pid file.
  returned: always
  type: str
cmd:
  description: The launched argv (no secrets; the env file's content is read inside the process).
  returned: always
  type: list
  elements: str
env:
  description: The environment variables the launcher sets (non-secret).
  returned: always
  type: dict
started:
  description: When the run was started (ISO 8601, UTC), or null.
  returned: always
  type: str
alive:
  description: The run's process is alive (checked by pid and start time, so a reused pid does not count).
  returned: always
  type: bool
finished:
  description: The run ended normally (log end lines, or exit code 0) and its process is gone.
  returned: always
  type: bool
exit_code:
  description: The exit code recorded when the run ended (null while running or when it was killed).
  returned: always
  type: int
progress:
  description:
    - The parsed log (arms_logs.parse_log) with steps thinned to 20 entries; last_step holds step, total,
      pct, loss, lrm, dt_ms, tok_per_sec, mfu, epoch, pq, rg, total_time_min, eta_min as present.
  returned: always
  type: dict
progress_line:
  description: One line of progress (step/total, loss, tok/s, MFU, ETA, val bpb).
  returned: always
  type: str
diagnosis:
  description: Known failure signatures found in the log, each {id, title, evidence, repair, severity}.
  returned: always
  type: list
  elements: dict
log_tail:
  description: The log's last lines (when the run is not alive, or waiting failed).
  returned: always
  type: list
  elements: str
resume_step:
  description: The checkpoint step the launch resumed from (null when starting fresh or not launching).
  returned: always
  type: int
flag_style:
  description: The flag style used.
  returned: always
  type: str
launcher:
  description: How the run is (or would be) started, C(torchrun) or C(python).
  returned: with state=started
  type: str
identity:
  description:
    - What a run started now is made from - commit, edits to the checkout, launcher, base_train flags,
      tokenizer sha256, training data digest and val shard - recorded in the pid file at launch.
  returned: always
  type: dict
identity_changes:
  description:
    - How the recorded run differs from what the experiment declares now (empty when it does not);
      a started module refuses such a finished or live run unless I(force).
  returned: always
  type: list
  elements: str
stale:
  description: The recorded run was made from something else than the experiment declares now.
  returned: always
  type: bool
stop:
  description: What stopping did (signals sent, processes remaining), with state=stopped or force.
  returned: when something was stopped
  type: dict
msg:
  description: One sentence on what happened.
  returned: always
  type: str
"""

import contextlib
import os
import time
from typing import Any

from ansible.module_utils.arms_budget import validate_hyperparameters
from ansible.module_utils.arms_command import (
    LAUNCHERS,
    build_command,
    check_env_file,
    choose_launcher,
    launched_program,
    script_flags,
)
from ansible.module_utils.arms_common import ArmsError, inventory_arg, set_inventory_arg
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
from ansible.module_utils.basic import AnsibleModule

ARGUMENT_SPEC: dict[str, Any] = {
    "chdir": {"type": "path", "required": True},
    "venv": {"type": "path", "required": True},
    "base_dir": {"type": "path", "required": True},
    "run_name": {"type": "str", "required": True},
    "arm": {"type": "str", "required": True},
    "experiment": {"type": "str", "required": True},
    "depth": {"type": "int", "required": True},
    "device_batch_size": {"type": "int", "required": True},
    "total_batch_size": {"type": "int", "required": True},
    "gpus_per_node": {"type": "int", "required": True},
    "nnodes": {"type": "int", "default": 1},
    "node_rank": {"type": "int", "default": 0},
    "rdzv_host": {"type": "str"},
    "rdzv_port": {"type": "int", "default": 29500},
    "model_tag": {"type": "str"},
    "extra_flags": {"type": "dict", "default": {}},
    "flag_style": {"type": "str", "default": "auto", "choices": ["auto", "configurator", "underscore", "dash"]},
    "launcher": {"type": "str", "default": "auto", "choices": list(LAUNCHERS)},
    "data_dir": {"type": "path"},
    "resume_from_step": {"type": "int", "default": -1},
    "resume_latest": {"type": "bool", "default": False},
    "env_file": {"type": "path"},
    "extra_env": {"type": "dict", "default": {}},
    "state_dir": {"type": "path"},
    "niceness": {"type": "int", "default": 0},
    "inventory_arg": {"type": "str", "default": "-i inventory/"},
    "torchrun": {"type": "path"},
    "force": {"type": "bool", "default": False},
    "state": {"type": "str", "default": "started", "choices": ["started", "stopped", "status"]},
    "wait_for_step": {"type": "bool", "default": False},
    "start_timeout": {"type": "int", "default": 900},
    "stop_timeout": {"type": "int", "default": 60},
    "host": {"type": "str"},
}

TAIL_LINES = 40
NONZERO_RANK_GRACE = 5.0


def _read(path: str | None) -> str:
    if not path:
        return ""
    try:
        with open(path, encoding="utf-8", errors="replace") as fh:
            return fh.read()
    except OSError:
        return ""


def _report(
    record: dict[str, Any] | None,
    log_path: str,
    exit_file: str,
    host: str | None,
    device_batch_size: int,
    arm: str | None = None,
) -> dict[str, Any]:
    """alive / finished / progress / diagnosis of a run, from its pid record, log and exit file."""
    alive = record_alive(record)
    text = _read(log_path)
    parsed = parse_log(text, max_steps=20)
    code = read_exit_code(exit_file)
    finished = bool(record) and not alive and (code == 0 or parsed["finished"])
    stopped = bool(record and record.get("stopped"))  # stopped on purpose: its signals are no failure
    gone = bool(record) and not alive and not finished and not stopped
    findings = diagnose(text, host, device_batch_size=device_batch_size, arm=arm, process_gone=gone, exit_code=code)
    if stopped:
        findings = [f for f in findings if f["id"] != "killed"]
    return {
        "pid": record.get("pid") if record else None,
        "pgid": record.get("pgid") if record else None,
        "started": record.get("started") if record else None,
        "alive": alive,
        "finished": finished,
        "exit_code": code,
        "progress": parsed,
        "progress_line": progress_line(parsed),
        "diagnosis": findings,
        "log_tail": tail(text, TAIL_LINES) if not alive else [],
    }


def _explain(findings: list[dict[str, str]]) -> str:
    errors = [f for f in findings if f.get("severity") == "error"] or findings
    if not errors:
        return "no known failure signature in the log"
    return "; ".join(f"{f['title']} Repair: {f['repair']}" for f in errors[:3])


def main() -> None:
    module = AnsibleModule(argument_spec=ARGUMENT_SPEC, supports_check_mode=True)
    p = module.params
    set_inventory_arg(p["inventory_arg"])
    host = p["host"] or os.uname().nodename
    state_dir = p["state_dir"] or os.path.join(p["base_dir"], "arms_runs")
    # a launch holds the host's launch lock from reading the run's record until it has started it
    lock = contextlib.ExitStack()
    try:
        paths = run_paths(state_dir, p["run_name"])
        if p["state"] == "started" and not module.check_mode:
            lock.enter_context(launch_lock(state_dir))
        record = read_pidfile(paths["pidfile"])
    except (ArmsError, OSError) as exc:
        module.fail_json(msg=str(exc))
    model_tag = p["model_tag"] or f"d{p['depth']}"
    style = p["flag_style"]
    identity: dict[str, Any] = {}
    changes: list[str] = []
    result: dict[str, Any] = {
        "changed": False,
        "run_name": p["run_name"],
        "log": paths["log"],
        "pidfile": paths["pidfile"],
        "cmd": record.get("argv", []) if record else [],
        "env": record.get("env", {}) if record else {},
        "resume_step": None,
        "flag_style": style,
        "identity": identity,
        "identity_changes": changes,
        "stale": False,
    }

    def launch_plan(resume_step: int) -> tuple[list[str], dict[str, str], str]:
        """argv, env and launcher of a launch now; the identity it would have goes in ``identity``."""
        nonlocal style
        if style == "auto":
            style = flag_style_of_checkout(p["chdir"])
        extras = normalize_flags(p["extra_flags"])
        launcher = choose_launcher(
            p["launcher"],
            nnodes=p["nnodes"],
            gpus_per_node=p["gpus_per_node"],
            device_type=str(extras.get("device_type", "")),
        )
        argv, env = build_command(
            venv=p["venv"],
            base_dir=p["base_dir"],
            run_name=p["run_name"],
            arm=p["arm"],
            experiment=p["experiment"],
            depth=p["depth"],
            device_batch_size=p["device_batch_size"],
            total_batch_size=p["total_batch_size"],
            gpus_per_node=p["gpus_per_node"],
            nnodes=p["nnodes"],
            node_rank=p["node_rank"],
            rdzv_host=p["rdzv_host"],
            rdzv_port=p["rdzv_port"],
            model_tag=model_tag,
            extra_flags=extras,
            flag_style=style,
            launcher=launcher,
            resume_from_step=resume_step,
            env_file=p["env_file"],
            exit_file=paths["exit_file"],
            extra_env=p["extra_env"],
            torchrun=p["torchrun"],
        )
        identity.clear()
        identity.update(
            current_identity(
                chdir=p["chdir"],
                base_dir=p["base_dir"],
                data_dir=p["data_dir"] or os.path.join(p["base_dir"], "base_data"),
                flags=script_flags(argv),
                launcher=launcher,
                processes=p["nnodes"] * p["gpus_per_node"],
            )
        )
        changes[:] = identity_changes(record.get("identity"), identity) if record else []
        result.update(flag_style=style, launcher=launcher, stale=bool(changes))
        return argv, env, launcher

    def report() -> dict[str, Any]:
        current = read_pidfile(paths["pidfile"])
        return _report(current, paths["log"], paths["exit_file"], host, p["device_batch_size"], p["arm"])

    # ---- status ----------------------------------------------------------------------------
    if p["state"] == "status":
        result.update(report())
        if record is not None and os.path.isfile(os.path.join(p["chdir"], "scripts", "base_train.py")):
            try:
                launch_plan(p["resume_from_step"])
            except ArmsError as exc:
                changes[:] = [f"its identity cannot be compared ({exc})"]
                result["stale"] = True
        stale = f" It is stale: {'; '.join(changes)}." if changes else ""
        if record is None:
            result["msg"] = f"run {p['run_name']} was never started on this host (no {paths['pidfile']})."
        elif result["alive"]:
            result["msg"] = f"run {p['run_name']} is running (pid {result['pid']}): {result['progress_line']}.{stale}"
        elif result["finished"]:
            result["msg"] = f"run {p['run_name']} finished: {result['progress_line']}.{stale}"
        elif record.get("stopped"):
            result["msg"] = f"run {p['run_name']} was stopped at {record['stopped']}: {result['progress_line']}.{stale}"
        else:
            result["msg"] = f"run {p['run_name']} is not running and did not finish: {_explain(result['diagnosis'])}."
        module.exit_json(**result)

    # ---- stopped ---------------------------------------------------------------------------
    if p["state"] == "stopped":
        if module.check_mode or record is None:
            result.update(report())
            if result["alive"]:
                result.update(changed=True, msg=f"would stop run {p['run_name']} (process group {record['pgid']}).")
            else:
                result["msg"] = f"run {p['run_name']} is not running: nothing to stop."
            module.exit_json(**result)
        try:
            outcome = stop(paths["pidfile"], timeout=p["stop_timeout"])
        except ArmsError as exc:
            module.fail_json(msg=str(exc), **result)
        result.update(report())
        result.update(changed=bool(outcome["signals"]), msg=outcome["msg"])
        if outcome["signals"]:
            result["stop"] = outcome
        if not outcome["stopped"]:
            module.fail_json(**result)
        module.exit_json(**result)

    # ---- started ---------------------------------------------------------------------------
    try:
        if not os.path.isfile(os.path.join(p["chdir"], "scripts", "base_train.py")):
            raise ArmsError(
                f"{p['chdir']} is not a nanochat checkout (no scripts/base_train.py): set chdir to the "
                "checkout, or run the nanochat checkout role first."
            )
        if p["env_file"]:
            check_env_file(p["env_file"])
        resume_step = p["resume_from_step"]
        if p["resume_latest"]:
            latest = latest_checkpoint_step(p["base_dir"], model_tag)
            resume_step = latest if latest is not None else -1
        argv, env, launcher = launch_plan(resume_step)
        program = launched_program(argv)
        if not os.access(program, os.X_OK):
            raise ArmsError(
                f"{program} is not executable: the venv {p['venv']} lacks {os.path.basename(program)}; run "
                f"the deps role (ansible-playbook playbooks/repair.yml {inventory_arg()} --tags deps -l {host})."
            )
        extras = normalize_flags(p["extra_flags"])
        validate_hyperparameters(
            gpus_per_node=p["gpus_per_node"],
            nnodes=p["nnodes"],
            device_batch_size=p["device_batch_size"],
            total_batch_size=p["total_batch_size"],
            max_seq_len=int_flag(extras, "max_seq_len", DEFAULT_MAX_SEQ_LEN),
            depth=p["depth"],
        )
    except ArmsError as exc:
        module.fail_json(msg=str(exc), **result)

    if record and changes and not p["force"]:
        current = _report(record, paths["log"], paths["exit_file"], host, p["device_batch_size"], p["arm"])
        what = "is running" if current["alive"] else "finished" if current["finished"] else "died"
        if current["alive"] or current["finished"] or resume_step >= 0:
            result.update(current)
            module.fail_json(
                msg=(
                    f"run {p['run_name']} {what} but was made from something else than the experiment declares "
                    f"now: {'; '.join(changes)}. It is not this experiment's result"
                    + (" and cannot be resumed" if resume_step >= 0 else "")
                    + ": train it again with -e arms_force_restart=true (it replaces the run), or give arm "
                    f"{p['arm']} a new run_name in the experiment file."
                ),
                **result,
            )

    alive = record_alive(record)
    if alive and not p["force"]:
        result.update(report())
        result["msg"] = f"run {p['run_name']} is already running (pid {result['pid']}): {result['progress_line']}."
        lock.close()
        if p["wait_for_step"]:
            _wait(module, result, paths, p, host)
        module.exit_json(**result)

    own_pgid = int(record.get("pgid", record["pid"])) if (record and alive) else None
    others = [t for t in find_trainings(state_dir, p["chdir"], p["base_dir"]) if t["pgid"] != own_pgid]
    if others and not p["force"]:
        other = others[0]
        result.update(report())
        module.fail_json(
            msg=(
                f"another training runs on this host: run {other['run_name']} (pid {other['pid']}, process "
                f"group {other['pgid']}{', log ' + other['log'] if other.get('log') else ''}); stop it first "
                f"(ansible-playbook playbooks/stop.yml {inventory_arg()} -l {host}) or replace it with "
                "-e arms_force_restart=true (force)."
            ),
            other_trainings=others,
            **result,
        )

    current = _report(record, paths["log"], paths["exit_file"], host, p["device_batch_size"], p["arm"])
    if current["finished"] and not p["force"]:
        result.update(current)
        result["msg"] = (
            f"run {p['run_name']} already finished ({current['progress_line']}); not restarted "
            "(-e arms_force_restart=true, the module's force, trains it again)."
        )
        module.exit_json(**result)

    result.update(cmd=argv, env=env, resume_step=resume_step if resume_step >= 0 else None)
    if module.check_mode:
        result.update(current)
        replaced = [f"{t['run_name']} (pid {t['pid']})" for t in others] + (
            [f"{p['run_name']} (pid {record['pid']})"] if alive else []
        )
        result.update(
            changed=True,
            msg=f"would start run {p['run_name']}"
            + (f" after stopping {', '.join(replaced)}" if replaced else "")
            + ".",
        )
        module.exit_json(**result)

    stopped = []
    try:
        for other in others:
            if other.get("pidfile"):
                stopped.append(stop(other["pidfile"], timeout=p["stop_timeout"]))
            else:
                outcome = signal_group(other["pgid"], timeout=p["stop_timeout"])
                sent = " then ".join(outcome["signals"]) or "no signal"
                outcome["msg"] = f"run {other['run_name']}: sent {sent} to process group {other['pgid']}"
                stopped.append(outcome)
        if alive:
            stopped.append(stop(paths["pidfile"], timeout=p["stop_timeout"]))
        leftover = [s for s in stopped if not s["stopped"]]
        if leftover:
            raise ArmsError(leftover[0]["msg"])
        start_detached(
            argv,
            env,
            cwd=p["chdir"],
            log_path=paths["log"],
            pidfile=paths["pidfile"],
            run_name=p["run_name"],
            exit_file=paths["exit_file"],
            niceness=p["niceness"],
            extra={
                "env": env,
                "arm": p["arm"],
                "experiment": p["experiment"],
                "node_rank": p["node_rank"],
                "nnodes": p["nnodes"],
                "launcher": launcher,
                "identity": identity,
            },
        )
    except ArmsError as exc:
        module.fail_json(msg=str(exc), **result)
    lock.close()
    result.update(report())
    changes.clear()  # the run now on record is made from what the experiment declares
    result.update(changed=True, stale=False)
    if stopped:
        result["stop"] = stopped
    what = f"resumed from step {resume_step}" if resume_step >= 0 else "started"
    result["msg"] = f"run {p['run_name']} {what} (pid {result['pid']}), log {paths['log']}."
    if p["wait_for_step"]:
        _wait(module, result, paths, p, host)
    module.exit_json(**result)


def _wait(module: AnsibleModule, result: dict[str, Any], paths: dict[str, str], p: dict[str, Any], host: str) -> None:
    """Wait for the first step line (node rank 0) or a few seconds of survival (other ranks)."""
    rank0 = p["node_rank"] == 0
    timeout = float(p["start_timeout"]) if rank0 else min(float(p["start_timeout"]), NONZERO_RANK_GRACE)
    deadline = time.monotonic() + timeout
    while True:
        state = _report(
            read_pidfile(paths["pidfile"]), paths["log"], paths["exit_file"], host, p["device_batch_size"], p["arm"]
        )
        result.update(state)
        if rank0 and state["progress"]["started"]:
            result["msg"] += f" Training started: {state['progress_line']}."
            return
        if not state["alive"]:
            if state["finished"]:
                result["msg"] += " It already finished."
                return
            text = _read(paths["log"])
            result["log_tail"] = tail(text, TAIL_LINES)
            module.fail_json(
                **{
                    **result,
                    "msg": (
                        f"run {p['run_name']} died before its first step (exit code {state['exit_code']}): "
                        f"{_explain(state['diagnosis'])}. Log: {paths['log']}."
                    ),
                }
            )
        if time.monotonic() >= deadline:
            if not rank0:
                result["msg"] += f" Node rank {p['node_rank']} is up; its progress shows in the log of node rank 0."
                return
            text = _read(paths["log"])
            result["log_tail"] = tail(text, TAIL_LINES)
            module.fail_json(
                **{
                    **result,
                    "msg": (
                        f"run {p['run_name']} printed no step line within {p['start_timeout']}s; it is still "
                        f"running (pid {state['pid']}): {_explain(state['diagnosis'])}. Raise "
                        f"start_timeout, or read {paths['log']}."
                    ),
                }
            )
        time.sleep(0.5)


if __name__ == "__main__":
    main()
