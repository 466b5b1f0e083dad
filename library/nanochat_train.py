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
    I(chdir)) that stands in its way makes it fail naming its pid, run name and why, unless I(force)
    (then it is stopped first). A run that finished is reported (finished=true), not restarted,
    unless I(force). A run that died is started again.
  - Several arms on one host. Each arm passes its own I(base_dir), I(run_name) (so its own log and
    pid file), I(cuda_visible_devices) (its GPUs, set as C(CUDA_VISIBLE_DEVICES) in the run's
    environment) and, for a multi-node arm, I(rdzv_port); I(alone=false) says other arms share the
    host. Another training stands in the way only when it uses the same base dir, GPUs this run asks
    for, or the rendezvous port it must listen on; a run that names no GPUs (I(alone), the default)
    holds the whole host, so every other training stands in its way, as before hosts were shared.
    A sibling arm on its own base dir, GPUs and port is never refused nor stopped, even with
    I(force); status and stop read and signal only the named run's pid file and process group.
  - Secrets (W&B key, HF token) are never arguments; I(env_file), a 0600 file of C(KEY=value) lines,
    is sourced by a wrapper shell inside the process, so its content is in neither the process's
    command line nor this module's result.
  - I(state=status) reports alive, the parsed progress of the rank-0 log and a diagnosis of known
    failure signatures (each with the exact repair command); I(state=stopped) stops the whole
    process group (SIGTERM, then SIGKILL).
  - Which options each state uses. C(status) and C(stopped) need only what identifies the run,
    I(run_name) and I(state_dir) (or I(base_dir), whose C(arms_runs) it defaults to); the run's pid
    file holds the rest. C(status) given the launch options too (I(chdir), I(venv), I(base_dir),
    I(arm), I(experiment), I(depth), I(device_batch_size), I(total_batch_size), I(gpus_per_node) and
    the optional ones) also compares the recorded run with what a launch now would be and marks it
    stale; without them it reports what the pid file says. C(started) needs every launch option.
    I(host), I(inventory_arg), I(arm) and I(device_batch_size) fill the diagnosis's repair commands
    (the pid file's arm and batch size when not given); I(stop_timeout) is used by C(stopped) and by a
    forced start; I(force), I(wait_for_step) and I(start_timeout) only by C(started).
options:
  chdir:
    description:
      - The nanochat checkout (must contain C(scripts/base_train.py)); the run's working directory.
      - Required with I(state=started), as are I(venv), I(base_dir), I(arm), I(experiment), I(depth),
        I(device_batch_size), I(total_batch_size) and I(gpus_per_node).
    type: path
    required: false
  venv:
    description: The nanochat venv; its C(bin/torchrun) is launched and its C(bin) goes first on C(PATH).
    type: path
    required: false
  base_dir:
    description:
      - C(NANOCHAT_BASE_DIR) of the run (data, tokenizer, checkpoints). C(status) and C(stopped) need it
        or I(state_dir).
    type: path
    required: false
  run_name:
    description:
      - The run's name (nanochat's C(--run), the W&B run name; C(dummy) disables W&B). Letters,
        digits, C(.), C(_) and C(-) only; it names the pid file and the log.
    type: str
    required: true
  arm:
    description: The arm's name (a W&B tag).
    type: str
    required: false
  experiment:
    description: The experiment's name (the W&B group and a W&B tag).
    type: str
    required: false
  depth:
    description: nanochat's C(--depth).
    type: int
    required: false
  device_batch_size:
    description: nanochat's device batch size (sequences per GPU per micro-step).
    type: int
    required: false
  total_batch_size:
    description: nanochat's total batch size in tokens (-1 = nanochat's auto, commits from 2026-02-05).
    type: int
    required: false
  gpus_per_node:
    description: Processes per node (C(--nproc_per_node)).
    type: int
    required: false
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
  cuda_visible_devices:
    description:
      - The arm's GPUs on this host, comma-separated indices (C(0,1)), one per process (as many as
        I(gpus_per_node)), as the placement's C(cuda_visible_devices) names them. The run gets them as
        C(CUDA_VISIBLE_DEVICES) (which I(extra_env) may not set) and holds only them, so arms on other
        GPUs of the host are not in its way. Omitted, the variable is not set and the run holds the
        whole host (unless I(alone=false) on a host without a GPU).
    type: str
  alone:
    description:
      - No other arm trains on this host (the placement's C(alone)). C(false) on a host without a GPU
        makes the run one CPU process among its sibling arms, each on its own base dir; on a host with
        GPUs it needs I(cuda_visible_devices).
    type: bool
    default: true
  force:
    description:
      - With I(state=started), stop the other trainings that stand in this run's way (same base dir,
        overlapping GPUs or port; never a sibling arm on its own) and restart this run even when it is
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
  stall_after:
    description:
      - With I(state=status), a live run that printed its model config but no step line, and nothing at all
        for this many seconds, is looked at for starvation; RV(stall) then names the rank that has no row group
        in which file of the arm's data dir (nanochat's loader spins forever on it).
    type: int
    default: 600
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

- name: Report progress (what the run's pid file says; add the launch options to also check it is not stale)
  nanochat_train:
    base_dir: /home/ubuntu/.cache/nanochat
    run_name: exp-top16-d26-8gpu
    state: status

- name: One of two pilot arms on an 8-GPU host (GPUs 4-7; the other arm has 0-3 and its own base dir)
  nanochat_train:
    chdir: /home/ubuntu/nanochat
    venv: /home/ubuntu/nanochat/.venv
    base_dir: /home/ubuntu/arms/state/arms/random16.5-s43
    data_dir: /home/ubuntu/arms/state/arms/random16.5-s43/base_data
    state_dir: /home/ubuntu/arms/state/runs
    run_name: exp-rand16-d12-s43-pilot
    arm: random16.5-s43
    experiment: exp16-pilot
    depth: 12
    device_batch_size: 32
    total_batch_size: 524288
    gpus_per_node: 4
    cuda_visible_devices: "4,5,6,7"
    alone: false

- name: Stop the run
  nanochat_train:
    state_dir: /home/ubuntu/.cache/nanochat/arms_runs
    run_name: exp-top16-d26-8gpu
    state: stopped
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
ended:
  description:
    - When a run that is no longer alive ended (ISO 8601, UTC; its exit file's time, else its log's last
      write). Its GPUs are idle since then. Null while it runs or when it never ran.
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
stall:
  description:
    - For a live run silent I(stall_after) seconds after its model config with no step line (else null)
      {silent_s, world_size, data_dir, cause ("rank N has no row group in FILE ..." or null), error, note}.
  returned: with state=status
  type: dict
stop:
  description: What stopping did (signals sent, processes remaining), with state=stopped or force.
  returned: when something was stopped
  type: dict
msg:
  description: One sentence on what happened.
  returned: always
  type: str
"""

import os
from typing import Any

from ansible.module_utils.arms_command import LAUNCHERS
from ansible.module_utils.arms_common import run_module
from ansible.module_utils.arms_run import LaunchSpec, RunFailed, RunRef, manage_run
from ansible.module_utils.basic import AnsibleModule

# what a launch is made from; C(started) needs the first nine (see DOCUMENTATION), status uses them when given
LAUNCH_REQUIRED = (
    "chdir",
    "venv",
    "base_dir",
    "arm",
    "experiment",
    "depth",
    "device_batch_size",
    "total_batch_size",
    "gpus_per_node",
)
LAUNCH_OPTIONAL = (
    "nnodes",
    "node_rank",
    "rdzv_host",
    "rdzv_port",
    "model_tag",
    "extra_flags",
    "flag_style",
    "launcher",
    "data_dir",
    "resume_from_step",
    "resume_latest",
    "env_file",
    "extra_env",
    "niceness",
    "torchrun",
    "cuda_visible_devices",
    "alone",
)

ARGUMENT_SPEC: dict[str, Any] = {
    "chdir": {"type": "path"},
    "venv": {"type": "path"},
    "base_dir": {"type": "path"},
    "run_name": {"type": "str", "required": True},
    "arm": {"type": "str"},
    "experiment": {"type": "str"},
    "depth": {"type": "int"},
    "device_batch_size": {"type": "int"},
    "total_batch_size": {"type": "int"},
    "gpus_per_node": {"type": "int"},
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
    "cuda_visible_devices": {"type": "str"},
    "alone": {"type": "bool", "default": True},
    "force": {"type": "bool", "default": False},
    "state": {"type": "str", "default": "started", "choices": ["started", "stopped", "status"]},
    "wait_for_step": {"type": "bool", "default": False},
    "start_timeout": {"type": "int", "default": 900},
    "stop_timeout": {"type": "int", "default": 60},
    "stall_after": {"type": "int", "default": 600},
    "host": {"type": "str"},
}


def launch_spec(p: dict[str, Any]) -> LaunchSpec | None:
    """The launch the arguments describe, or None when they do not name one (status and stop need none)."""
    if any(p[name] is None for name in LAUNCH_REQUIRED):
        return None
    return LaunchSpec(**{name: p[name] for name in LAUNCH_REQUIRED + LAUNCH_OPTIONAL})


def manage(p: dict[str, Any], check_mode: bool) -> dict[str, Any]:
    ref = RunRef(
        state_dir=p["state_dir"] or os.path.join(p["base_dir"], "arms_runs"),
        run_name=p["run_name"],
        host=p["host"] or os.uname().nodename,
        inventory=p["inventory_arg"],
        arm=p["arm"],
        device_batch_size=p["device_batch_size"],
    )
    return manage_run(
        p["state"],
        ref,
        launch_spec(p),
        force=p["force"],
        check_mode=check_mode,
        wait_for_step=p["wait_for_step"],
        start_timeout=p["start_timeout"],
        stop_timeout=p["stop_timeout"],
        flag_style=p["flag_style"],
        stall_after=p["stall_after"],
    )


def main() -> None:
    run_module(
        AnsibleModule,
        ARGUMENT_SPEC,
        manage,
        errors=(RunFailed,),
        required_one_of=[("base_dir", "state_dir")],
        required_if=[("state", "started", LAUNCH_REQUIRED)],
    )


if __name__ == "__main__":
    main()
