"""One node's launch of nanochat's ``scripts.base_train``: argv, environment, launcher and its inputs' checks.

:func:`build_command` returns the argv and the environment of one node's launch:
``<venv>/bin/torchrun`` with ``--standalone`` (one node) or the static rendezvous
``--nnodes --node_rank --master_addr --master_port`` (several nodes; see below), then
``-m scripts.base_train --`` and the flags (written in the checkout's style, ``arms_flags``); or one
plain ``python -m scripts.base_train`` process (:func:`choose_launcher`). Secrets never enter argv
or the returned env: a wrapper shell sources the 0600 env file inside the process.

Why the static rendezvous for several nodes: with ``--rdzv_backend=c10d`` torchrun 2.13 ignores
``--node_rank`` ("node_rank is only used for static rdzv_backend") and gives global rank 0 to
whichever node reaches the rendezvous first, so nanochat's rank-0 log and checkpoint could land on
any host. ``--master_addr/--master_port`` keeps node rank 0 (and so rank 0) on the arm's first host,
where the status playbook reads the log; it was tried with CPU/gloo (2 nodes x 2 processes).
"""

from __future__ import annotations

import glob
import os
import re
import shutil
from collections.abc import Mapping, Sequence
from typing import Any

from ansible.module_utils.arms_common import ArmsError
from ansible.module_utils.arms_flags import CORE_FLAGS, normalize_flags, render_flags

WRAPPER_NAME = "nanochat-arms-train"
# $1 = exit file ("" = none), $2 = env file ("" = none), then the command. The env file is read here,
# inside the process: its content is never in argv (visible in ps) nor in what the caller is given.
# The exit code is written next to the log so a finished run is known even on hosts whose log has no
# rank-0 lines (node rank > 0).
WRAPPER_SCRIPT = (
    "exitfile=$1; envfile=$2; shift 2; "
    'if [ -n "$envfile" ]; then set -a; . "$envfile" || exit 97; set +a; fi; '
    '"$@"; rc=$?; '
    'if [ -n "$exitfile" ]; then '
    'printf "%s\\n" "$rc" > "$exitfile.tmp" && mv -f "$exitfile.tmp" "$exitfile"; fi; '
    "exit $rc"
)
# environment the launcher owns: an extra_env entry may not change these
RESERVED_ENV = ("NANOCHAT_BASE_DIR", "WANDB_RUN_GROUP", "WANDB_TAGS", "PATH", "VIRTUAL_ENV", "CUDA_VISIBLE_DEVICES")


def check_run_name(run_name: str) -> str:
    """``run_name`` when it is safe as nanochat's --run and as a file name; ArmsError otherwise."""
    if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9._-]*", run_name or ""):
        raise ArmsError(
            f"run name {run_name!r} may only contain letters, digits, '.', '_' and '-' (it names the W&B "
            "run, the pid file and the log)."
        )
    return run_name


def parse_gpu_list(value: str) -> list[int]:
    """``"0,1"`` -> [0, 1]: the GPU indices of CUDA_VISIBLE_DEVICES; ArmsError with a sentence otherwise."""
    items = [item.strip() for item in str(value).split(",")]
    if not all(re.fullmatch(r"[0-9]+", item) for item in items):
        raise ArmsError(
            f"cuda_visible_devices {value!r} is not a list of GPU indices; give them comma-separated, e.g. '0,1' "
            "(the arm's placement names them)."
        )
    gpus = [int(item) for item in items]
    if len(set(gpus)) != len(gpus):
        raise ArmsError(f"cuda_visible_devices {value!r} names a GPU twice; give each of the arm's GPUs once.")
    return gpus


def torchrun_path(venv: str) -> str:
    return os.path.join(venv, "bin", "torchrun")


LAUNCHERS = ("auto", "torchrun", "python")


def host_has_gpu() -> bool:
    """An NVIDIA GPU is visible on this host (a device node or nvidia-smi)."""
    return bool(glob.glob("/dev/nvidia[0-9]*")) or shutil.which("nvidia-smi") is not None


def choose_launcher(
    launcher: str, *, nnodes: int, gpus_per_node: int, device_type: str = "", has_gpu: bool | None = None
) -> str:
    """``torchrun`` or ``python``: how one node of an arm starts ``scripts.base_train``.

    Real nanochat on CPU trains only as ONE plain process (runs/runcpu.sh): its compute_init creates
    the process group for CUDA alone, so under torchrun on CPU its distributed optimizer fails
    ("Default process group has not been initialized"). ``auto`` therefore picks ``python`` for a
    single-process, single-node arm without a GPU (``--device-type=cpu``, or no GPU on the host),
    and ``torchrun`` otherwise, as the runbook launches GPU nodes.
    """
    if launcher not in LAUNCHERS:
        raise ArmsError(f"launcher {launcher!r} is not one of {', '.join(LAUNCHERS)}.")
    single = nnodes == 1 and gpus_per_node == 1
    if launcher == "python" and not single:
        raise ArmsError(
            f"launcher python starts ONE process, but the arm asks for {gpus_per_node} per node on {nnodes} "
            "node(s): use launcher torchrun (or auto) for several processes."
        )
    if launcher != "auto":
        return launcher
    gpu = host_has_gpu() if has_gpu is None else has_gpu
    cpu = device_type == "cpu" or (device_type == "" and not gpu)
    return "python" if single and cpu else "torchrun"


def train_flags(
    *,
    depth: int,
    run_name: str,
    device_batch_size: int,
    total_batch_size: int,
    model_tag: str | None = None,
    resume_from_step: int = -1,
    extra_flags: Mapping[str, Any] | Sequence[str] | None = None,
) -> dict[str, Any]:
    """base_train's flags as {canonical name: value}: the launcher's own, then the experiment's extras."""
    extras = normalize_flags(extra_flags)
    clash = [name for name in extras if name in CORE_FLAGS]
    if clash:
        raise ArmsError(
            f"extra flag --{clash[0]} repeats a flag the launcher sets itself; set it through the "
            f"experiment's {clash[0]} setting instead of the extra flags."
        )
    flags: dict[str, Any] = {
        "depth": depth,
        "run": run_name,
        "device_batch_size": device_batch_size,
        "total_batch_size": total_batch_size,
        "model_tag": model_tag or f"d{depth}",
    }
    if resume_from_step is not None and resume_from_step >= 0:
        flags["resume_from_step"] = resume_from_step
    flags.update(extras)
    return flags


def torchrun_topology(
    nnodes: int, node_rank: int, rdzv_host: str | None, rdzv_port: int, gpus_per_node: int
) -> list[str]:
    """torchrun's own options: ``--standalone`` on one node, the static rendezvous on several."""
    if nnodes == 1:
        return ["--standalone", f"--nproc_per_node={gpus_per_node}"]
    if not rdzv_host:
        raise ArmsError(
            f"an arm on {nnodes} hosts needs rdzv_host: the address of the arm's first host, reachable from the others."
        )
    return [
        f"--nnodes={nnodes}",
        f"--node_rank={node_rank}",
        f"--master_addr={rdzv_host}",
        f"--master_port={rdzv_port}",
        f"--nproc_per_node={gpus_per_node}",
    ]


def script_flags(argv: Sequence[str]) -> list[str]:
    """The ``scripts.base_train`` flags of a launch argv (what follows the module and its ``--``)."""
    if "scripts.base_train" not in argv:
        return []
    rest = list(argv[list(argv).index("scripts.base_train") + 1 :])
    return rest[1:] if rest[:1] == ["--"] else rest


def launched_program(argv: Sequence[str]) -> str:
    """The program a launch argv runs (torchrun or python), inside the wrapper shell when there is one."""
    if list(argv[:2]) == ["/bin/bash", "-c"] and len(argv) > 6 and argv[3] == WRAPPER_NAME:
        return argv[6]
    return argv[0]


def check_env_file(path: str) -> None:
    """The secrets env file exists and is readable by its owner only; ArmsError with the fix otherwise."""
    try:
        mode = os.stat(path).st_mode & 0o777
    except OSError as exc:
        raise ArmsError(f"env_file {path} cannot be read ({exc.strerror}): the credentials role writes it.") from exc
    if mode & 0o077:
        raise ArmsError(
            f"env_file {path} holds secrets but has mode {mode:04o}: make it readable by its owner only "
            f"(chmod 600 {path})."
        )


def build_command(
    *,
    venv: str,
    base_dir: str,
    run_name: str,
    arm: str,
    experiment: str,
    depth: int,
    device_batch_size: int,
    total_batch_size: int,
    gpus_per_node: int,
    nnodes: int = 1,
    node_rank: int = 0,
    rdzv_host: str | None = None,
    rdzv_port: int = 29500,
    model_tag: str | None = None,
    extra_flags: Mapping[str, Any] | Sequence[str] | None = None,
    flag_style: str = "dash",
    launcher: str = "torchrun",
    resume_from_step: int = -1,
    env_file: str | None = None,
    exit_file: str | None = None,
    extra_env: Mapping[str, Any] | None = None,
    wandb_mode: str | None = None,
    omp_num_threads: int = 1,
    torchrun: str | None = None,
    base_path: str | None = None,
    cuda_visible_devices: str | None = None,
) -> tuple[list[str], dict[str, str]]:
    """The argv and the environment variables of one node's launch of ``scripts.base_train``.

    argv: ``torchrun --standalone --nproc_per_node=G`` for one node, else ``torchrun --nnodes=N
    --node_rank=i --master_addr=<rdzv_host> --master_port=<rdzv_port> --nproc_per_node=G``; then
    ``-m scripts.base_train --`` and the flags in ``flag_style``. With ``env_file`` or ``exit_file``
    the torchrun argv is wrapped in ``/bin/bash -c WRAPPER_SCRIPT nanochat-arms-train EXIT ENV ...``
    that sources the env file (secrets) inside the process and records the exit code.

    env (only the variables the launcher sets; the caller adds them to the inherited environment):
    NANOCHAT_BASE_DIR, OMP_NUM_THREADS, WANDB_RUN_GROUP=<experiment>, WANDB_TAGS=<arm>,<experiment>,
    WANDB_MODE (when given), PYTHONUNBUFFERED=1 (log lines reach the file as printed), VIRTUAL_ENV,
    PATH with the venv's bin first, CUDA_VISIBLE_DEVICES (the arm's GPUs on a host it shares with
    other arms; absent when none are named), then ``extra_env`` (which may not change the launcher's
    own variables).
    """
    if nnodes < 1 or gpus_per_node < 1:
        raise ArmsError(f"nnodes ({nnodes}) and gpus_per_node ({gpus_per_node}) must be at least 1.")
    if not 0 <= node_rank < nnodes:
        raise ArmsError(
            f"node_rank {node_rank} is outside 0..{nnodes - 1}: give each of the arm's {nnodes} hosts its "
            "position in the arm's host group."
        )
    check_run_name(run_name)
    flags = train_flags(
        depth=depth,
        run_name=run_name,
        device_batch_size=device_batch_size,
        total_batch_size=total_batch_size,
        model_tag=model_tag,
        resume_from_step=resume_from_step,
        extra_flags=extra_flags,
    )
    argv = launch_argv(
        venv=venv,
        flags=flags,
        flag_style=flag_style,
        launcher=launcher,
        nnodes=nnodes,
        node_rank=node_rank,
        rdzv_host=rdzv_host,
        rdzv_port=rdzv_port,
        gpus_per_node=gpus_per_node,
        torchrun=torchrun,
        env_file=env_file,
        exit_file=exit_file,
    )
    env = launch_env(
        venv=venv,
        base_dir=base_dir,
        arm=arm,
        experiment=experiment,
        extra_env=extra_env,
        wandb_mode=wandb_mode,
        omp_num_threads=omp_num_threads,
        base_path=base_path,
        cuda_visible_devices=cuda_visible_devices,
    )
    return argv, env


def launch_argv(
    *,
    venv: str,
    flags: Mapping[str, Any],
    flag_style: str,
    launcher: str,
    nnodes: int,
    node_rank: int,
    rdzv_host: str | None,
    rdzv_port: int,
    gpus_per_node: int,
    torchrun: str | None,
    env_file: str | None,
    exit_file: str | None,
) -> list[str]:
    """The launch's argv (see :func:`build_command`): torchrun or one python process, wrapped when needed."""
    script = ["-m", "scripts.base_train"]
    if launcher == "python":
        # one plain process, as nanochat's runs/runcpu.sh; no `--` (argparse would then take the
        # flags for positionals)
        if nnodes != 1 or gpus_per_node != 1:
            raise ArmsError("launcher python starts one process on one node: use torchrun for more.")
        argv = [os.path.join(venv, "bin", "python"), *script, *render_flags(flags, flag_style)]
    else:
        argv = [
            torchrun or torchrun_path(venv),
            *torchrun_topology(nnodes, node_rank, rdzv_host, rdzv_port, gpus_per_node),
        ]
        # torch 2.13's torchrun reads `--run=x` after the module as its own option without `--`
        argv += [*script, "--", *render_flags(flags, flag_style)]
    if env_file or exit_file:
        argv = ["/bin/bash", "-c", WRAPPER_SCRIPT, WRAPPER_NAME, exit_file or "", env_file or "", *argv]
    return argv


def launch_env(
    *,
    venv: str,
    base_dir: str,
    arm: str,
    experiment: str,
    extra_env: Mapping[str, Any] | None,
    wandb_mode: str | None,
    omp_num_threads: int,
    base_path: str | None,
    cuda_visible_devices: str | None = None,
) -> dict[str, str]:
    """The variables the launcher sets (see :func:`build_command`); ArmsError for an extra_env it may not take."""
    inherited_path = base_path if base_path is not None else os.environ.get("PATH", "/usr/bin:/bin")
    env = {
        "NANOCHAT_BASE_DIR": base_dir,
        "OMP_NUM_THREADS": str(omp_num_threads),
        "WANDB_RUN_GROUP": experiment,
        "WANDB_TAGS": f"{arm},{experiment}",
        "PYTHONUNBUFFERED": "1",
        "VIRTUAL_ENV": venv,
        "PATH": os.path.join(venv, "bin") + (os.pathsep + inherited_path if inherited_path else ""),
    }
    if wandb_mode:
        env["WANDB_MODE"] = wandb_mode
    if cuda_visible_devices:
        env["CUDA_VISIBLE_DEVICES"] = ",".join(str(gpu) for gpu in parse_gpu_list(cuda_visible_devices))
    for key, value in (extra_env or {}).items():
        check_extra_env(str(key), value)
        env[str(key)] = str(value)
    return env


# variables that change WHAT runs (the loader, the interpreter, the wrapper shell), not how: an
# extra_env entry may not set them (a value from an inventory would run code of its choosing)
CODE_ENV = re.compile(
    r"^(LD_\w+|PYTHON(PATH|HOME|STARTUP|USERBASE|INSPECT)|BASH_ENV|ENV|SHELLOPTS|BASHOPTS|PS4|IFS|BASH_FUNC_.*)$"
)


def check_extra_env(key: str, value: Any) -> None:
    """An extra_env entry is a plain variable name, not one the launcher owns or one that loads code."""
    if not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", key):
        raise ArmsError(f"extra_env name {key!r} is not a variable name (letters, digits and '_').")
    if key == "CUDA_VISIBLE_DEVICES":
        raise ArmsError(
            "extra_env may not set CUDA_VISIBLE_DEVICES: pass the arm's GPUs as cuda_visible_devices, so the "
            "launch also keeps the host's other arms off them."
        )
    if key in RESERVED_ENV:
        raise ArmsError(
            f"extra_env may not set {key}: the launcher sets it from the experiment (base_dir, "
            "experiment and arm names, venv)."
        )
    if CODE_ENV.match(key):
        raise ArmsError(
            f"extra_env may not set {key}: it changes which code the run loads (the dynamic loader, Python or "
            "the wrapper shell), not how nanochat trains."
        )
    if "\0" in str(value):
        raise ArmsError(f"extra_env {key} holds a NUL character, which no environment variable can.")
