"""Launching nanochat's ``scripts.base_train`` for one arm: command, checks, data budget, process control.

Four parts, each usable alone (the ``nanochat_train`` module and the preflight compose them):

1. Flags. nanochat's command line changed twice (configurator, argparse with underscores,
   argparse with dashes); ``arms_flags`` reads which one a checkout has from its own scripts, and
   :func:`render_flags` writes flags in it.
2. The command. :func:`build_command` returns the argv and the environment of one node's launch:
   ``<venv>/bin/torchrun`` with ``--standalone`` (one node) or the static rendezvous
   ``--nnodes --node_rank --master_addr --master_port`` (several nodes; see below), then
   ``-m scripts.base_train --`` and the flags. Secrets never enter argv or the returned env: a
   wrapper shell sources the 0600 env file inside the process.
3. Checks before launch. :func:`validate_hyperparameters` applies nanochat's own divisibility
   rules; :func:`planned_tokens`, :func:`held_tokens` and :func:`compare_budgets` compare the tokens
   a run will consume with the tokens each arm holds, and refuse arms that would repeat their data
   differently.
4. Process control. :func:`start_detached` starts the launch in its own session (it survives the
   SSH connection and Ansible ending), with a log file and a JSON pid file; :func:`is_alive`
   checks the pid is still *our* process (boot id and start time); :func:`stop` signals the whole
   process group (SIGTERM, then SIGKILL) and reports what it did; :func:`find_trainings` lists the
   trainings running on the host.

Why the static rendezvous for several nodes: with ``--rdzv_backend=c10d`` torchrun 2.13 ignores
``--node_rank`` ("node_rank is only used for static rdzv_backend") and gives global rank 0 to
whichever node reaches the rendezvous first, so nanochat's rank-0 log and checkpoint could land on
any host. ``--master_addr/--master_port`` keeps node rank 0 (and so rank 0) on the arm's first host,
where the status playbook reads the log; it was tried with CPU/gloo (2 nodes x 2 processes).
"""

from __future__ import annotations

import contextlib
import datetime as _dt
import fcntl
import glob
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import Iterator, Mapping, Sequence
from typing import Any

from ansible.module_utils.arms_common import ArmsError, atomic_write_json, human_bytes
from ansible.module_utils.arms_flags import STYLES

# ---------------------------------------------------------------------------------------------
# 1. flags
# ---------------------------------------------------------------------------------------------

# flags the launcher sets from its own arguments; extra flags may not repeat them
CORE_FLAGS = ("depth", "run", "device_batch_size", "total_batch_size", "model_tag", "resume_from_step")

DEFAULT_MAX_SEQ_LEN = 2048
VOCAB_SIZE = 32768
ASPECT_RATIO = 64
HEAD_DIM = 128
BYTES_PER_TOKEN = 4.8  # nanochat's tokenizer on fineweb-edu-like English: about 4.8 characters a token


def commit_day(commit_date: str) -> str:
    """``YYYY-MM-DD`` from a date or an ISO timestamp; ArmsError with a sentence otherwise."""
    text = str(commit_date).strip()
    try:
        return _dt.date.fromisoformat(text[:10]).isoformat()
    except ValueError:
        raise ArmsError(
            f"commit date {commit_date!r} is not a date; expected YYYY-MM-DD (e.g. the output of "
            "`git show -s --format=%cs HEAD` in the nanochat checkout)."
        ) from None


def canonical_flag(name: str) -> str:
    """A flag name without leading dashes, with underscores (``--max-seq-len`` -> ``max_seq_len``)."""
    return str(name).strip().lstrip("-").replace("-", "_")


def normalize_flags(flags: Mapping[str, Any] | Sequence[str] | None) -> dict[str, Any]:
    """Extra flags as {canonical name: value}, from a dict or a list of ``--name=value``/``--name`` items.

    A list item without ``=`` is a switch (value True). Names are compared with underscores, so
    ``--max-seq-len=64`` and ``max_seq_len: 64`` are the same flag; giving one twice is an error.
    """
    if flags is None:
        return {}
    out: dict[str, Any] = {}
    if isinstance(flags, Mapping):
        items = [(canonical_flag(k), v) for k, v in flags.items()]
    elif isinstance(flags, (list, tuple)):
        items = []
        for item in flags:
            text = str(item).strip()
            if not text.startswith("-"):
                text = "--" + text
            name, sep, value = text.partition("=")
            items.append((canonical_flag(name), value if sep else True))
    else:
        raise ArmsError(
            f"extra flags must be a mapping (max_seq_len: 2048) or a list (--max-seq-len=2048), not {flags!r}."
        )
    for name, value in items:
        if not re.fullmatch(r"[a-z][a-z0-9_]*", name):
            raise ArmsError(f"extra flag {name!r} is not a nanochat flag name (expected e.g. max_seq_len).")
        if name in out:
            raise ArmsError(f"extra flag --{name} is given twice; give each nanochat flag once.")
        out[name] = value
    return out


def _render_value(value: Any) -> str:
    if isinstance(value, bool):
        return "True" if value else "False"
    return str(value)


def render_flags(flags: Mapping[str, Any], style: str) -> list[str]:
    """``--name=value`` items in ``style`` (underscores for configurator/underscore, dashes for dash).

    None values are left out. A boolean is a switch for argparse (True -> ``--fp8``, False -> left
    out) and ``--fp8=True``/``--fp8=False`` for the configurator.
    """
    if style not in STYLES:
        raise ArmsError(f"flag style {style!r} is not one of {', '.join(STYLES)}.")
    out = []
    for raw_name, value in flags.items():
        name = canonical_flag(raw_name)
        if style == "dash":
            name = name.replace("_", "-")
        if value is None:
            continue
        if isinstance(value, bool) and style != "configurator":
            if value:
                out.append(f"--{name}")
            continue
        out.append(f"--{name}={_render_value(value)}")
    return out


def flag_value(flags: Mapping[str, Any] | Sequence[str] | None, name: str, default: Any = None) -> Any:
    """The value of one extra flag (any spelling), or ``default``."""
    return normalize_flags(flags).get(canonical_flag(name), default)


# ---------------------------------------------------------------------------------------------
# 2. the command
# ---------------------------------------------------------------------------------------------

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
RESERVED_ENV = ("NANOCHAT_BASE_DIR", "WANDB_RUN_GROUP", "WANDB_TAGS", "PATH", "VIRTUAL_ENV")


def check_run_name(run_name: str) -> str:
    """``run_name`` when it is safe as nanochat's --run and as a file name; ArmsError otherwise."""
    if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9._-]*", run_name or ""):
        raise ArmsError(
            f"run name {run_name!r} may only contain letters, digits, '.', '_' and '-' (it names the W&B "
            "run, the pid file and the log)."
        )
    return run_name


def int_flag(flags: Mapping[str, Any], name: str, default: int) -> int:
    """A whole-number extra flag (e.g. max_seq_len), or ``default``; ArmsError when it is not one."""
    value = flags.get(name, default)
    try:
        return int(str(value))
    except ValueError:
        raise ArmsError(f"extra flag --{name} must be a whole number, got {value!r}.") from None


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
    PATH with the venv's bin first, then ``extra_env`` (which may not change the launcher's own
    variables).
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
    for key, value in (extra_env or {}).items():
        check_extra_env(str(key), value)
        env[str(key)] = str(value)
    return argv, env


# variables that change WHAT runs (the loader, the interpreter, the wrapper shell), not how: an
# extra_env entry may not set them (a value from an inventory would run code of its choosing)
CODE_ENV = re.compile(
    r"^(LD_\w+|PYTHON(PATH|HOME|STARTUP|USERBASE|INSPECT)|BASH_ENV|ENV|SHELLOPTS|BASHOPTS|PS4|IFS|BASH_FUNC_.*)$"
)


def check_extra_env(key: str, value: Any) -> None:
    """An extra_env entry is a plain variable name, not one the launcher owns or one that loads code."""
    if not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", key):
        raise ArmsError(f"extra_env name {key!r} is not a variable name (letters, digits and '_').")
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


# ---------------------------------------------------------------------------------------------
# 3. checks before launch
# ---------------------------------------------------------------------------------------------


def validate_hyperparameters(
    *,
    gpus_per_node: int,
    nnodes: int,
    device_batch_size: int,
    total_batch_size: int,
    max_seq_len: int = DEFAULT_MAX_SEQ_LEN,
    depth: int = 1,
) -> dict[str, int]:
    """Apply nanochat's own rules before a launch; ArmsError with a sentence when one fails.

    - the world size (GPUs per node x nodes) must divide 32768 (the vocabulary rows are split across
      ranks by the optimizer);
    - the total batch (tokens) must be a multiple of device batch x max seq len x world size (the
      gradient-accumulation steps must be a whole number); -1 (auto, commits from 2026-02-05) skips it.

    Returns world_size, tokens_per_fwdbwd (one micro-step of all ranks) and grad_accum_steps (0 for auto).
    """
    for label, value in (
        ("depth", depth),
        ("gpus_per_node", gpus_per_node),
        ("nnodes", nnodes),
        ("device batch size", device_batch_size),
        ("max seq len", max_seq_len),
    ):
        if not isinstance(value, int) or value < 1:
            raise ArmsError(f"{label} must be a whole number of at least 1, got {value!r}.")
    world = gpus_per_node * nnodes
    if VOCAB_SIZE % world:
        raise ArmsError(
            f"{gpus_per_node} GPUs x {nnodes} node(s) = {world} processes does not divide {VOCAB_SIZE} "
            "(nanochat splits the vocabulary rows across ranks): use a power of two number of GPUs in total, "
            "e.g. 8 or 16."
        )
    per_fwdbwd = device_batch_size * max_seq_len * world
    if total_batch_size == -1:
        return {"world_size": world, "tokens_per_fwdbwd": per_fwdbwd, "grad_accum_steps": 0}
    if total_batch_size < 1 or total_batch_size % per_fwdbwd:
        fits = max(total_batch_size // per_fwdbwd, 1) * per_fwdbwd if total_batch_size > 0 else per_fwdbwd
        raise ArmsError(
            f"total batch size {total_batch_size} is not a multiple of device batch {device_batch_size} x "
            f"max seq len {max_seq_len} x world size {world} = {per_fwdbwd} tokens: use a total batch size "
            f"of {fits} (or another multiple of {per_fwdbwd}) or a smaller device batch size."
        )
    return {
        "world_size": world,
        "tokens_per_fwdbwd": per_fwdbwd,
        "grad_accum_steps": total_batch_size // per_fwdbwd,
    }


# --target-param-data-ratio's default by commit date (nanochat-interface.md, "Defaults that moved")
RATIO_DEFAULTS: tuple[tuple[str, float], ...] = (
    ("0000-01-01", 20.0),
    ("2026-01-07", 8.0),
    ("2026-01-17", 4.0),
    ("2026-01-27", 10.5),
    ("2026-03-24", 12.0),
)


def default_ratio(commit_date: str) -> float:
    """base_train's default --target-param-data-ratio at a commit of that date."""
    day = commit_day(commit_date)
    ratio = RATIO_DEFAULTS[0][1]
    for since, value in RATIO_DEFAULTS:
        if day >= since:
            ratio = value
    return ratio


def model_width(depth: int) -> int:
    """nanochat's model width: depth x aspect ratio 64, rounded up to whole heads of 128."""
    raw = depth * ASPECT_RATIO
    return -(-raw // HEAD_DIM) * HEAD_DIM


def scaling_params(depth: int, vocab_size: int = VOCAB_SIZE) -> int:
    """The parameter count nanochat's data:param ratio is applied to, estimated from depth.

    Formula: 12 x layers x width^2 (per layer: attention q, k, v, o = 4 width^2 and the MLP's two
    width x 4 width matrices = 8 width^2) + vocab x width (the lm_head). The token embedding (and
    the value embeddings of later commits) are left out, as nanochat leaves embeddings out of its
    "scaling params". depth 26: width 1664, 918,421,504. An estimate: norms and biases are ignored.
    """
    width = model_width(depth)
    return 12 * depth * width * width + vocab_size * width


def planned_tokens(
    *,
    depth: int,
    total_batch_size: int,
    extra_flags: Mapping[str, Any] | Sequence[str] | None = None,
    commit_date: str | None = None,
    max_seq_len: int | None = None,
) -> dict[str, Any]:
    """Tokens the run will consume = num_iterations x total batch size, with nanochat's iteration rule.

    num_iterations: the ``num_iterations`` extra flag when > 0; else ``target_flops`` / (flops per
    token x total batch) when that flag is > 0 (flops per token = 6 x scaling params + 12 x layers x
    width x seq len, nanochat's estimate); else target_param_data_ratio (the extra flag, or the
    commit date's default) x :func:`scaling_params` // total batch size.
    """
    flags = normalize_flags(extra_flags)
    if total_batch_size is None or int(total_batch_size) <= 0:
        raise ArmsError(
            "the data budget needs an explicit total batch size (nanochat's -1/auto depends on its own "
            "scaling rule): set the experiment's total batch size, e.g. 524288."
        )
    total_batch_size = int(total_batch_size)
    params = scaling_params(depth)
    explicit = int_flag(flags, "num_iterations", -1)
    target_flops = float(flags.get("target_flops", -1) or -1)
    seq_len = int(max_seq_len or int_flag(flags, "max_seq_len", DEFAULT_MAX_SEQ_LEN))
    out: dict[str, Any] = {"scaling_params": params, "total_batch_size": total_batch_size, "ratio": None}
    if explicit > 0:
        iterations = explicit
        out["rule"] = f"num_iterations {explicit} (explicit flag)"
    elif target_flops > 0:
        per_token = 6 * params + 12 * depth * model_width(depth) * seq_len
        iterations = round(target_flops / (per_token * total_batch_size))
        out["rule"] = f"target_flops {target_flops:g} / ({per_token:,} flops/token x {total_batch_size})"
    else:
        if "target_param_data_ratio" in flags:
            ratio = float(flags["target_param_data_ratio"])
            origin = "flag"
        elif commit_date:
            ratio = default_ratio(commit_date)
            origin = f"default at {commit_day(commit_date)}"
        else:
            raise ArmsError(
                "the data budget needs the nanochat commit date (the default data:param ratio moved "
                "between commits) or an explicit num_iterations or target_param_data_ratio flag."
            )
        iterations = int(ratio * params) // total_batch_size
        out["ratio"] = ratio
        out["rule"] = f"target_param_data_ratio {ratio:g} ({origin}) x {params:,} scaling params // {total_batch_size}"
    out["num_iterations"] = iterations
    out["tokens"] = iterations * total_batch_size
    return out


def _train_names(manifest: Mapping[str, Any]) -> list[str]:
    """The manifest's files nanochat trains on: all but the last in sort order (the last = val)."""
    names = sorted(s["name"] for s in manifest.get("shards", []))
    return names[:-1]


def held_tokens(
    manifest: Mapping[str, Any],
    data_dir: str | None = None,
    *,
    bytes_per_token: float = BYTES_PER_TOKEN,
    text_column: str = "text",
    assumed_compression: float = 3.0,
    sample_groups: int = 32,
) -> dict[str, Any]:
    """Estimated training tokens an arm holds, from its manifest (and its files' footers when given).

    Training files are the manifest's files except the last in sort order (nanochat's val split).
    In order of preference: ``stats.train_tokens`` recorded by whoever wrote the manifest;
    ``stats.train_text_bytes`` (or ``train_chars``) / ``bytes_per_token``; with ``data_dir``, train
    rows x the mean UTF-8 bytes of the text column a row, measured by reading at most
    ``sample_groups`` row groups spread evenly over the training files (exact when there are no
    more row groups than that; footer sizes are not used: dictionary encoding hides repeated
    documents that nanochat does read), / ``bytes_per_token``; else the files' bytes x
    ``assumed_compression`` / ``bytes_per_token`` (rough: parquet bytes are compressed).
    """
    stats = manifest.get("stats") or {}
    names = _train_names(manifest)
    entries = {s["name"]: s for s in manifest.get("shards", [])}
    rows = sum(int(entries[n].get("rows", 0)) for n in names)
    base: dict[str, Any] = {"train_files": len(names), "train_rows": rows}
    if stats.get("train_tokens"):
        return {**base, "tokens": int(stats["train_tokens"]), "rule": "manifest stats.train_tokens"}
    for key in ("train_text_bytes", "train_chars"):
        if stats.get(key):
            text_bytes = int(stats[key])
            return {
                **base,
                "tokens": int(text_bytes / bytes_per_token),
                "text_bytes": text_bytes,
                "rule": f"manifest stats.{key} / {bytes_per_token} bytes per token",
            }
    if data_dir is not None:
        text_bytes, sampled_rows = _sample_text_bytes(data_dir, names, text_column, sample_groups)
        per_row = text_bytes / sampled_rows if sampled_rows else 0.0
        estimate = int(per_row * rows)
        return {
            **base,
            "tokens": int(estimate / bytes_per_token),
            "text_bytes": estimate,
            "sampled_rows": sampled_rows,
            "rule": (
                f"train rows x mean text bytes a row ({per_row:,.0f}, measured on {sampled_rows} rows) / "
                f"{bytes_per_token} bytes per token"
            ),
        }
    file_bytes = sum(int(entries[n].get("bytes", 0)) for n in names)
    return {
        **base,
        "tokens": int(file_bytes * assumed_compression / bytes_per_token),
        "rule": (f"parquet bytes x {assumed_compression} (assumed compression) / {bytes_per_token} bytes per token"),
    }


def _sample_text_bytes(data_dir: str, names: Sequence[str], column: str, limit: int) -> tuple[int, int]:
    """UTF-8 bytes and rows of ``column`` in at most ``limit`` row groups spread evenly over ``names``."""
    import pyarrow.compute as pc
    import pyarrow.parquet as pq

    groups: list[tuple[str, int]] = []
    for name in names:
        path = os.path.join(data_dir, name)
        meta = pq.ParquetFile(path).metadata
        if column not in meta.schema.names:
            raise ArmsError(
                f"{path} has no {column!r} column: nanochat reads only that column, so this arm holds no text there."
            )
        groups += [(path, rg) for rg in range(meta.num_row_groups)]
    if len(groups) > limit > 0:
        step = len(groups) / limit
        groups = [groups[int(i * step)] for i in range(limit)]
    text_bytes = rows = 0
    files: dict[str, Any] = {}
    for path, rg in groups:
        handle = files.setdefault(path, pq.ParquetFile(path))
        table = handle.read_row_group(rg, columns=[column])
        lengths = pc.binary_length(table.column(0))
        text_bytes += int(pc.sum(lengths).as_py() or 0)
        rows += table.num_rows
    return text_bytes, rows


def compare_budgets(
    arms: Sequence[Mapping[str, Any]],
    *,
    tolerance: float = 0.1,
    allow_unequal_repeats: bool = False,
) -> dict[str, Any]:
    """Compare, for every arm, the tokens its run will consume with the tokens it holds.

    ``arms``: [{name, tokens_needed, tokens_held}, ...]. An arm whose run needs more than it holds
    repeats data (nanochat's loader starts a new epoch silently): a warning. Arms repeat
    *differently* when their effective passes over the data (max(epochs, 1): under one epoch nothing
    repeats) differ by more than ``tolerance`` (relative, 0.1 = 10%): then the comparison between
    arms measures repetition as well as data, and this raises ArmsError unless
    ``allow_unequal_repeats`` (then it is one more warning).

    Returns {"arms": [{name, tokens_needed, tokens_held, epochs, repeats}], "warnings": [...],
    "comparable": bool}.
    """
    rows = []
    warnings = []
    for arm in arms:
        name = str(arm["name"])
        needed = int(arm["tokens_needed"])
        held = int(arm["tokens_held"])
        if held <= 0:
            raise ArmsError(
                f"arm {name} holds no training tokens (its data dir has no training shard besides the val "
                "shard): prepare or fetch its data first."
            )
        epochs = needed / held
        rows.append(
            {
                "name": name,
                "tokens_needed": needed,
                "tokens_held": held,
                "epochs": round(epochs, 4),
                "repeats": epochs > 1.0,
            }
        )
        if epochs > 1.0:
            warnings.append(
                f"arm {name} will repeat data: its run reads {_tokens(needed)} tokens but the arm "
                f"holds about {_tokens(held)} ({epochs:.2f} epochs); nanochat starts over silently."
            )
    comparable = True
    if len(rows) > 1:
        passes = {r["name"]: max(r["epochs"], 1.0) for r in rows}
        low = min(passes, key=lambda n: passes[n])
        high = max(passes, key=lambda n: passes[n])
        if passes[high] > passes[low] * (1.0 + tolerance):
            comparable = False
            sentence = (
                f"arms repeat their data differently: {high} makes {passes[high]:.2f} passes over its "
                f"data and {low} {passes[low]:.2f} (tolerance {tolerance:.0%}), so the comparison would "
                f"measure repetition, not data: give {high} more data (or train fewer iterations for "
                "every arm), or override the data budget check if this is intended."
            )
            if not allow_unequal_repeats:
                raise ArmsError(sentence)
            warnings.append(sentence + " (overridden)")
    return {"arms": rows, "warnings": warnings, "comparable": comparable}


def _tokens(n: int) -> str:
    return human_bytes(n).replace(" B", "").replace("KB", "K").replace("MB", "M").replace("GB", "G").replace("TB", "T")


# ---------------------------------------------------------------------------------------------
# 4. process control
# ---------------------------------------------------------------------------------------------

PIDFILE_SUFFIX = ".pid.json"


@contextlib.contextmanager
def launch_lock(state_dir: str) -> Iterator[None]:
    """Hold this host's launch lock (``<state_dir>/.launch.lock``) over a check-then-launch, so two
    launches at once cannot both find no run alive and both start one (sharing a log, with the pid
    file naming only one)."""
    os.makedirs(state_dir, mode=0o700, exist_ok=True)
    fd = os.open(os.path.join(state_dir, ".launch.lock"), os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)


def run_paths(state_dir: str, run_name: str) -> dict[str, str]:
    """Where one run's files live: pidfile, log, exit file (the exit code, written when it ends)."""
    base = os.path.join(state_dir, check_run_name(run_name))
    return {"pidfile": base + PIDFILE_SUFFIX, "log": base + ".log", "exit_file": base + ".exit"}


def boot_id() -> str:
    try:
        with open("/proc/sys/kernel/random/boot_id", encoding="ascii") as fh:
            return fh.read().strip()
    except OSError:
        return ""


def proc_stat(pid: int) -> dict[str, Any] | None:
    """state, ppid, pgrp, session and start time (clock ticks since boot) of ``pid``; None if gone."""
    try:
        with open(f"/proc/{pid}/stat", encoding="utf-8", errors="replace") as fh:
            raw = fh.read()
    except (OSError, ValueError):
        return None
    rest = raw[raw.rfind(")") + 2 :].split()
    if len(rest) < 20:
        return None
    return {
        "state": rest[0],
        "ppid": int(rest[1]),
        "pgrp": int(rest[2]),
        "session": int(rest[3]),
        "start_ticks": int(rest[19]),
    }


def _reap(pid: int) -> None:
    """Collect ``pid``'s exit status if it is our own child (so it does not linger as a zombie)."""
    with contextlib.suppress(ChildProcessError, OSError):
        os.waitpid(pid, os.WNOHANG)


def process_alive(pid: int, start_ticks: int | None = None) -> bool:
    """``pid`` runs (not a zombie) and, when given, started at ``start_ticks`` (so it was not reused)."""
    if not pid or pid <= 0:
        return False
    _reap(pid)
    stat = proc_stat(pid)
    if stat is None or stat["state"] in ("Z", "X", "x"):
        return False
    return start_ticks is None or stat["start_ticks"] == start_ticks


def read_pidfile(pidfile: str) -> dict[str, Any] | None:
    """The run record of a pid file, or None when there is none; ArmsError when it is not ours."""
    try:
        with open(pidfile, encoding="utf-8") as fh:
            data = json.load(fh)
    except FileNotFoundError:
        return None
    except (OSError, ValueError) as exc:
        raise ArmsError(f"{pidfile} is not a readable pid file ({exc}); remove it if no training runs.") from exc
    if not isinstance(data, dict) or not isinstance(data.get("pid"), int):
        raise ArmsError(f"{pidfile} is not a nanochat-arms pid file (no pid); remove it if no training runs.")
    return data


def record_alive(record: Mapping[str, Any] | None) -> bool:
    """The process of a run record is alive: same boot, same pid, same start time."""
    if not record:
        return False
    if record.get("boot_id") and record["boot_id"] != boot_id():
        return False
    return process_alive(int(record["pid"]), record.get("start_ticks"))


def is_alive(pidfile: str) -> bool:
    """The run of ``pidfile`` is still running, and it is still our process (not a reused pid)."""
    return record_alive(read_pidfile(pidfile))


def group_members(pgid: int, since_ticks: int | None = None) -> list[int]:
    """Live (non-zombie) processes of process group ``pgid`` started at or after ``since_ticks``."""
    members = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        stat = proc_stat(int(entry))
        if stat is None or stat["pgrp"] != pgid or stat["state"] in ("Z", "X", "x"):
            continue
        if since_ticks is not None and stat["start_ticks"] < since_ticks:
            continue
        members.append(int(entry))
    return sorted(members)


def read_exit_code(exit_file: str | None) -> int | None:
    if not exit_file:
        return None
    try:
        with open(exit_file, encoding="ascii") as fh:
            return int(fh.read().strip())
    except (OSError, ValueError):
        return None


def _now() -> str:
    return _dt.datetime.now(_dt.UTC).replace(microsecond=0).isoformat()


def _rotate(path: str) -> str | None:
    """Move an existing non-empty log aside (``<name>.<mtime>.log``) so each launch has its own."""
    if not os.path.exists(path) or os.path.getsize(path) == 0:
        return None
    stamp = time.strftime("%Y%m%dT%H%M%S", time.localtime(os.path.getmtime(path)))
    root, ext = os.path.splitext(path)
    target = f"{root}.{stamp}{ext}"
    n = 1
    while os.path.exists(target):
        target = f"{root}.{stamp}-{n}{ext}"
        n += 1
    os.replace(path, target)
    return target


def _lower_priority(niceness: int) -> None:
    """In the new session's first process: its niceness, and its autogroup's where the kernel groups sessions.

    With autogroup scheduling (most desktop and many server kernels) every session competes as one
    group whatever its processes' nice values, so the group's own niceness is set too.
    """
    os.nice(niceness)
    try:
        with open("/proc/self/autogroup", "w") as fh:
            fh.write(str(niceness))
    except OSError:
        pass  # no autogroup scheduling here: the process niceness is all there is


def start_detached(
    argv: Sequence[str],
    env: Mapping[str, str],
    *,
    cwd: str,
    log_path: str,
    pidfile: str,
    run_name: str,
    exit_file: str | None = None,
    niceness: int = 0,
    extra: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """Start ``argv`` in a new session, detached, and write its pid file; returns the run record.

    The process gets its own session and process group (setsid: it survives the SSH connection and
    the caller ending; :func:`stop` signals the group), stdin from /dev/null, stdout and stderr
    appended to ``log_path`` (an earlier log of the same run is moved aside first). ``env`` is added
    to the caller's environment. The pid file (JSON, written atomically) holds pid, pgid, run_name,
    started, start_ticks and boot_id (to tell our process from a reused pid), argv (no secrets:
    they come from the env file the wrapper reads), log, exit_file, cwd, host and ``extra``.
    ``niceness`` (0-19) lowers the run's CPU priority (the lab's CPU training, not GPU nodes).
    """
    if not 0 <= niceness <= 19:
        raise ArmsError(f"niceness must be between 0 and 19, not {niceness}.")
    folder = os.path.dirname(os.path.abspath(pidfile))
    os.makedirs(folder, exist_ok=True)
    os.makedirs(os.path.dirname(os.path.abspath(log_path)), exist_ok=True)
    rotated = _rotate(log_path)
    if exit_file:
        for stale in (exit_file, exit_file + ".tmp"):
            if os.path.exists(stale):
                os.unlink(stale)
    full_env = {**os.environ, **env}
    full_env.pop("PYTHONHOME", None)
    with open(os.devnull, "rb") as devnull, open(log_path, "ab") as log:
        try:
            proc = subprocess.Popen(
                list(argv),
                cwd=cwd,
                env=full_env,
                stdin=devnull,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
                close_fds=True,
                preexec_fn=(lambda: _lower_priority(niceness)) if niceness else None,
            )
        except OSError as exc:
            raise ArmsError(f"could not start {argv[0]} in {cwd}: {exc.strerror or exc}.") from exc
    stat = proc_stat(proc.pid) or {}
    record = {
        "pid": proc.pid,
        "pgid": proc.pid,  # session leader: its pid is the group id
        "run_name": run_name,
        "started": _now(),
        "start_ticks": stat.get("start_ticks"),
        "boot_id": boot_id(),
        "argv": list(argv),
        "log": log_path,
        "previous_log": rotated,
        "exit_file": exit_file,
        "cwd": cwd,
        "niceness": niceness,
        "host": socket.gethostname(),
        **(extra or {}),
    }
    atomic_write_json(pidfile, record)
    return record


def wait_group_gone(pgid: int, since_ticks: int | None, timeout: float, leader: int | None = None) -> list[int]:
    """Wait up to ``timeout`` s for process group ``pgid`` to be empty; the members still alive."""
    deadline = time.monotonic() + timeout
    while True:
        if leader:
            _reap(leader)
        members = group_members(pgid, since_ticks)
        if not members or time.monotonic() >= deadline:
            return members
        time.sleep(0.1)


def signal_group(
    pgid: int,
    *,
    since_ticks: int | None = None,
    leader: int | None = None,
    timeout: float = 60.0,
    kill_timeout: float = 10.0,
) -> dict[str, Any]:
    """SIGTERM process group ``pgid``, wait ``timeout`` s, then SIGKILL what is left and wait again.

    Returns {signals (names sent), remaining (pids still alive), stopped (nothing left)}.
    """
    sent: list[str] = []
    members = group_members(pgid, since_ticks)
    for sig, wait in ((signal.SIGTERM, timeout), (signal.SIGKILL, kill_timeout)):
        if not members and sent:
            break
        try:
            os.killpg(pgid, sig)
        except ProcessLookupError:
            members = []
            break
        except PermissionError as exc:
            raise ArmsError(
                f"not allowed to signal process group {pgid} ({exc.strerror}): stop it as the user that started it."
            ) from exc
        sent.append(sig.name)
        members = wait_group_gone(pgid, since_ticks, wait, leader=leader)
        if not members:
            break
    return {"signals": sent, "remaining": members, "stopped": not members}


def run_workers(record: Mapping[str, Any]) -> list[int]:
    """Process groups of this run's workers outside its own group.

    torchrun starts every worker in a session of its own, so signalling the launcher's group does
    not reach a worker whose agent is already gone (SIGKILLed, OOM-killed): such orphans keep the
    GPUs. They are found as ``scripts.base_train`` processes running in the run's checkout with
    the run's NANOCHAT_BASE_DIR.
    """
    cwd = record.get("cwd")
    if not cwd:
        return []
    base = (record.get("env") or {}).get("NANOCHAT_BASE_DIR")
    own = int(record.get("pgid", record.get("pid", 0)) or 0)
    return [t["pgid"] for t in find_trainings(None, cwd, base) if t["pgid"] != own]


def group_is_ours(record: Mapping[str, Any]) -> bool:
    """The process group of a run record still belongs to that run (on the boot it was recorded on).

    It does while its leader runs with the recorded start time, and also once the leader is gone:
    Linux does not hand out a pid that is still some process group's id, so members left in the
    group are the run's own. When a process with the leader's pid runs with another start time, the
    pid was reused after the whole group had ended, and the group is a stranger's: never signal it.
    """
    if record.get("boot_id") and record["boot_id"] != boot_id():
        return False
    leader = proc_stat(int(record.get("pgid", record["pid"])))
    if leader is None:
        return True
    recorded = record.get("start_ticks") if int(record.get("pgid", record["pid"])) == int(record["pid"]) else None
    return recorded is None or leader["start_ticks"] == recorded


def stop(pidfile: str, timeout: float = 60.0, kill_timeout: float = 10.0) -> dict[str, Any]:
    """Stop a run's whole process group and its workers: SIGTERM, then SIGKILL after ``timeout`` s.

    Returns {pid, pgid, run_name, was_alive, signals (names sent), stopped (nothing of it is left),
    remaining (pids still alive), msg}. The pid file is kept and gets ``stopped`` (time) and
    ``stop_signals``, so a status shows the run was stopped on purpose.
    """
    record = read_pidfile(pidfile)
    if record is None:
        return {
            "pid": None,
            "pgid": None,
            "run_name": None,
            "was_alive": False,
            "signals": [],
            "stopped": True,
            "remaining": [],
            "msg": f"no pid file at {pidfile}: nothing to stop.",
        }
    pid, pgid = int(record["pid"]), int(record.get("pgid", record["pid"]))
    name = record.get("run_name")
    same_boot = not record.get("boot_id") or record["boot_id"] == boot_id()
    since = record.get("start_ticks")
    alive = record_alive(record)
    ours = same_boot and group_is_ours(record)
    members = group_members(pgid, since) if ours else []
    workers = run_workers(record) if same_boot else []
    out: dict[str, Any] = {
        "pid": pid,
        "pgid": pgid,
        "run_name": name,
        "was_alive": alive,
        "signals": [],
        "stopped": True,
        "remaining": [],
    }
    if not alive and not members and not workers:
        out["msg"] = f"run {name} (pid {pid}) is not running: nothing to stop."
        return out
    if ours and (alive or members):
        out.update(signal_group(pgid, since_ticks=since, leader=pid, timeout=timeout, kill_timeout=kill_timeout))
    # workers the launcher's signal did not reach, or that outlived it
    orphans: list[int] = []
    for _ in range(3):  # a worker may still be on its way out when the launcher's group is gone
        found = [g for g in run_workers(record) if g != pgid and g not in orphans] if same_boot else []
        if not found:
            break
        for group in found:
            extra = signal_group(group, timeout=min(timeout, 30.0), kill_timeout=kill_timeout)
            out["signals"] = list(dict.fromkeys(out["signals"] + extra["signals"]))
            out["remaining"] = out["remaining"] + extra["remaining"]
        orphans += found
        time.sleep(0.5)
    out["stopped"] = not out["remaining"]
    out["workers_stopped"] = orphans
    record["stopped"] = _now()
    record["stop_signals"] = out["signals"]
    atomic_write_json(pidfile, record)
    sent = " then ".join(out["signals"]) or "no signal (already gone)"
    also = f" and to {len(orphans)} worker group(s) outside it" if orphans else ""
    if out["stopped"]:
        out["msg"] = f"stopped run {name}: sent {sent} to process group {pgid}{also}; all its processes exited."
    else:
        out["msg"] = (
            f"run {name}: sent {sent} to process group {pgid}{also} but pids "
            f"{', '.join(map(str, out['remaining']))} are still alive (stuck in the kernel, e.g. a hung GPU "
            "driver)."
        )
    return out


def _cmdline(pid: int) -> list[str]:
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as fh:
            return [part.decode(errors="replace") for part in fh.read().split(b"\0") if part]
    except OSError:
        return []


def _run_from_cmdline(argv: Sequence[str]) -> str:
    for i, part in enumerate(argv):
        if part.startswith("--run="):
            return part.split("=", 1)[1]
        if part == "--run" and i + 1 < len(argv):
            return argv[i + 1]
    return "dummy"  # nanochat's default run name


def _process_base_dir(pid: int) -> str | None:
    """The NANOCHAT_BASE_DIR a process runs with (nanochat's default ~/.cache/nanochat when unset);
    None when its environment cannot be read (another user's process)."""
    try:
        with open(f"/proc/{pid}/environ", "rb") as fh:
            pairs = [item.split(b"=", 1) for item in fh.read().split(b"\0") if b"=" in item]
    except OSError:
        return None
    env = {k.decode(errors="replace"): v.decode(errors="replace") for k, v in pairs}
    base = env.get("NANOCHAT_BASE_DIR") or os.path.join(env.get("HOME", "~"), ".cache", "nanochat")
    return os.path.realpath(os.path.expanduser(base))


def find_trainings(
    state_dir: str | None, chdir: str | None = None, base_dir: str | None = None
) -> list[dict[str, Any]]:
    """The trainings running on this host: live runs of the pid files in ``state_dir``, plus any
    other ``scripts.base_train`` process group whose working directory is ``chdir`` (the runbook's
    hand-started runs), one entry per process group: {run_name, pid, pgid, pidfile, log, source}.

    With ``base_dir``, a hand-started process counts only when it uses that NANOCHAT_BASE_DIR (or
    its environment cannot be read): two lab "hosts" on one machine share a checkout path but not
    a base dir, and one must not take the other's node of the same arm for a rival.
    """
    found: dict[int, dict[str, Any]] = {}
    if state_dir and os.path.isdir(state_dir):
        for pidfile in sorted(glob.glob(os.path.join(state_dir, "*" + PIDFILE_SUFFIX))):
            try:
                record = read_pidfile(pidfile)
            except ArmsError:
                continue
            if record and record_alive(record):
                pgid = int(record.get("pgid", record["pid"]))
                found[pgid] = {
                    "run_name": record.get("run_name"),
                    "pid": record["pid"],
                    "pgid": pgid,
                    "pidfile": pidfile,
                    "log": record.get("log"),
                    "source": "pidfile",
                }
    if chdir:
        want = os.path.realpath(chdir)
        for entry in os.listdir("/proc"):
            if not entry.isdigit():
                continue
            pid = int(entry)
            argv = _cmdline(pid)
            if "scripts.base_train" not in argv:
                continue
            try:
                if os.path.realpath(os.readlink(f"/proc/{pid}/cwd")) != want:
                    continue
            except OSError:
                continue
            if base_dir is not None:
                theirs = _process_base_dir(pid)
                if theirs is not None and theirs != os.path.realpath(os.path.expanduser(base_dir)):
                    continue
            stat = proc_stat(pid)
            if stat is None or stat["state"] in ("Z", "X", "x") or stat["pgrp"] in found:
                continue
            pgid = stat["pgrp"]
            found[pgid] = {
                "run_name": _run_from_cmdline(argv),
                "pid": pgid if process_alive(pgid) else pid,
                "pgid": pgid,
                "pidfile": None,
                "log": None,
                "source": "process",
            }
    return sorted(found.values(), key=lambda t: t["pgid"])


_CKPT = re.compile(r"^(?:model|meta|optim)_(\d{6})(?:_rank\d+)?\.(?:pt|json)$")


def latest_checkpoint_step(base_dir: str, model_tag: str) -> int | None:
    """The last step with a checkpoint under ``base_checkpoints/<model_tag>`` on this host, or None.

    Rank-0's host has model_/meta_ files, every host optim_<step>_rank<r> files: any of them counts.
    For a multi-node arm, resume every node from the smallest of the hosts' answers.
    """
    folder = os.path.join(base_dir, "base_checkpoints", model_tag)
    steps = []
    for name in os.listdir(folder) if os.path.isdir(folder) else []:
        if m := _CKPT.match(name):
            steps.append(int(m.group(1)))
    return max(steps) if steps else None
