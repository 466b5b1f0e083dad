"""Read nanochat's rank-0 training log: progress (step/val/CORE/end lines) and failure diagnosis.

nanochat's ``scripts/base_train.py`` prints, on rank 0 only (see ../shared/nanochat-interface.md):

- step lines, whose tail has varied across commits, e.g.
  ``step 00100/05000 (2.00%) | loss: 3.456789 | lrm: 1.00 | dt: 512.34ms | tok/sec: 1,023,456 |
  bf16_mfu: 45.67 | epoch: 1 pq: 3 rg: 12 | total time: 1.23m | eta: 88.1m``
  (``mfu:`` before 2026-02-10, ``bf16_mfu:`` after; older lines have no epoch or eta field);
- validation lines ``Step 00250 | Validation bpb: 0.912345`` (4 decimals on older commits);
- CORE lines ``Step 02000 | CORE metric: 0.2012``;
- end lines ``Peak memory usage: ...MiB``, ``Total training time: ...m``, ``Minimum validation bpb: ...``;
- the iteration count (``Number of iterations: N``, or nanochat's longer forms such as
  ``Calculated number of iterations from target data:param ratio: N``).

The step line is parsed field by field (``key: value`` segments split on ``|``), so fields that a
commit adds or drops do not break it. :func:`diagnose` matches the log against the failure
signatures seen in the wild and names, for each, the exact repair command.

Only the standard library is used: this runs on every host.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from ansible.module_utils.arms_common import playbook_command

# ---------------------------------------------------------------------------------------------
# progress
# ---------------------------------------------------------------------------------------------

# "step 00100/05000 (2.00%)" possibly after a prefix (torchrun's "[default0]:" when --tee is used)
_STEP_HEAD = re.compile(r"(?:^|[\s:\]])step (\d+)/(\d+) \(([\d.]+)%\)")
_VAL = re.compile(r"Step (\d+) \| Validation bpb: ([\d.]+)")
_CORE = re.compile(r"Step (\d+) \| CORE metric: (-?[\d.]+)")
_PEAK = re.compile(r"Peak memory usage: ([\d.]+)\s*MiB")
_TOTAL_TIME = re.compile(r"Total training time: ([\d.]+)\s*m")
_MIN_VAL = re.compile(r"Minimum validation bpb: ([\d.]+)")
_NUM_ITER = re.compile(r"number of iterations.*:\s*([\d,]+)\s*$", re.IGNORECASE)
# base_train prints its model config before it takes the first batch of training data
_MODEL_CONFIG = re.compile(r"^(?:\[\w+\]:\s*)?Model config\b")
_PAIR = re.compile(r"([A-Za-z][\w/]*):\s*(\S+)")

# step-line field name -> (result key, converter)
_NUM = re.compile(r"-?[\d,]*\.?\d+(?:[eE][-+]?\d+)?")


def _number(value: str) -> float | None:
    match = _NUM.search(value)
    if not match:
        return None
    try:
        return float(match.group(0).replace(",", ""))
    except ValueError:
        return None


def _integer(value: str) -> int | None:
    number = _number(value)
    return None if number is None else int(number)


_FIELDS: dict[str, tuple[str, Callable[[str], float | int | None]]] = {
    "loss": ("loss", _number),
    "lrm": ("lrm", _number),
    "dt": ("dt_ms", _number),
    "tok/sec": ("tok_per_sec", _integer),
    "mfu": ("mfu", _number),
    "bf16_mfu": ("mfu", _number),
    "epoch": ("epoch", _integer),
    "pq": ("pq", _integer),
    "rg": ("rg", _integer),
    "total time": ("total_time_min", _number),
    "eta": ("eta_min", _number),
}


def split_lines(text: str) -> list[str]:
    """Lines of ``text``; a carriage return (progress bars, CRLF) also ends a line."""
    return [line for line in re.split(r"\r\n|\r|\n", text) if line.strip()]


def parse_step_line(line: str) -> dict[str, Any] | None:
    """The fields of one step line, or None when ``line`` is not a step line.

    Keys: step, total, pct, and whichever of loss, lrm, dt_ms, tok_per_sec, mfu (from ``mfu:`` or
    ``bf16_mfu:``; ``mfu_field`` says which), epoch, pq, rg, total_time_min, eta_min the line has.
    """
    head = _STEP_HEAD.search(line)
    if not head:
        return None
    out: dict[str, Any] = {
        "step": int(head.group(1)),
        "total": int(head.group(2)),
        "pct": float(head.group(3)),
    }
    for segment in line[head.end() :].split("|"):
        segment = segment.strip()
        if not segment:
            continue
        if segment.startswith("total time:") or segment.startswith("eta:"):
            pairs = [tuple(part.strip() for part in segment.split(":", 1))]
        else:  # "epoch: 1 pq: 3 rg: 12" carries several pairs
            pairs = _PAIR.findall(segment)
        for key, value in pairs:
            if key not in _FIELDS:
                continue
            name, convert = _FIELDS[key]
            converted = convert(value)
            if converted is not None:
                out[name] = converted
            if name == "mfu":
                out["mfu_field"] = key
    return out


def _thin(items: list[dict[str, Any]], limit: int | None) -> list[dict[str, Any]]:
    """At most ``limit`` items spread evenly over ``items``, always keeping the first and the last."""
    if limit is None or len(items) <= limit:
        return list(items)
    if limit <= 0:
        return []
    if limit == 1:
        return [items[-1]]
    last = len(items) - 1
    picks = sorted({round(i * last / (limit - 1)) for i in range(limit)})
    return [items[i] for i in picks]


def parse_log(text: str, max_steps: int | None = None) -> dict[str, Any]:
    """Everything the status report needs from a rank-0 log.

    Returns a dict with: ``last_step`` (the last step line's fields, or None), ``steps`` (every step
    line's fields, thinned to ``max_steps`` evenly spread entries when given; 0 = none),
    ``step_lines`` (how many step lines there were), ``val`` (list of (step, bpb)), ``last_val_bpb``,
    ``core`` (list of (step, value)), ``min_val_bpb`` (from the end line, else the minimum seen),
    ``num_iterations`` (printed count, else the step lines' total), ``peak_memory_mib``,
    ``total_time_min`` (end line, else the last step line's), ``finished`` (the end line
    ``Total training time`` appeared), ``started`` (at least one step line) and ``config_printed``
    (base_train's ``Model config:`` line, printed just before it takes its first batch of data).
    """
    steps: list[dict[str, Any]] = []
    val: list[tuple[int, float]] = []
    core: list[tuple[int, float]] = []
    min_val_end: float | None = None
    peak: float | None = None
    total_time_end: float | None = None
    num_iterations: int | None = None
    config_printed = False
    for line in split_lines(text):
        if "step " in line:
            parsed = parse_step_line(line)
            if parsed is not None:
                steps.append(parsed)
                continue
        if "Step " in line:
            if m := _VAL.search(line):
                val.append((int(m.group(1)), float(m.group(2))))
                continue
            if m := _CORE.search(line):
                core.append((int(m.group(1)), float(m.group(2))))
                continue
        if m := _MIN_VAL.search(line):
            min_val_end = float(m.group(1))
        elif m := _TOTAL_TIME.search(line):
            total_time_end = float(m.group(1))
        elif m := _PEAK.search(line):
            peak = float(m.group(1))
        elif m := _NUM_ITER.search(line):
            num_iterations = int(m.group(1).replace(",", ""))
        elif not config_printed and _MODEL_CONFIG.match(line):
            config_printed = True
    last = steps[-1] if steps else None
    if num_iterations is None and last is not None:
        num_iterations = last["total"]
    min_val = min_val_end if min_val_end is not None else (min(b for _, b in val) if val else None)
    total_time = total_time_end if total_time_end is not None else (last or {}).get("total_time_min")
    return {
        "last_step": last,
        "steps": _thin(steps, max_steps),
        "step_lines": len(steps),
        "val": val,
        "last_val_bpb": val[-1][1] if val else None,
        "core": core,
        "min_val_bpb": min_val,
        "num_iterations": num_iterations,
        "peak_memory_mib": peak,
        "total_time_min": total_time,
        "finished": total_time_end is not None,
        "started": bool(steps),
        "config_printed": config_printed,
    }


def tail(text: str, n: int = 40) -> list[str]:
    """The last ``n`` non-blank lines of ``text`` (carriage returns end lines too)."""
    if n <= 0:
        return []
    return split_lines(text)[-n:]


def progress_line(parsed: dict[str, Any]) -> str:
    """One human line from :func:`parse_log`'s result: step/total, loss, tok/sec, MFU, ETA, val bpb."""
    last = parsed.get("last_step")
    if not last:
        return "no step line yet"
    parts = [f"step {last['step']}/{last['total']} ({last['pct']:.2f}%)"]
    if "loss" in last:
        parts.append(f"loss {last['loss']:.4f}")
    if "tok_per_sec" in last:
        parts.append(f"{last['tok_per_sec']:,} tok/s")
    if "mfu" in last:
        parts.append(f"MFU {last['mfu']:.2f}")
    if "epoch" in last:
        parts.append(f"epoch {last['epoch']}")
    if "eta_min" in last:
        parts.append(f"ETA {last['eta_min']:.1f}m")
    if parsed.get("last_val_bpb") is not None:
        parts.append(f"val bpb {parsed['last_val_bpb']:.4f}")
    if parsed.get("finished"):
        parts.append("finished")
    return ", ".join(parts)


# ---------------------------------------------------------------------------------------------
# diagnosis
# ---------------------------------------------------------------------------------------------


EXPERIMENT_FILE = "inventory/group_vars/all/experiment.yml"


def repair_command(tag: str, host: str | None = None, inventory: str | None = None) -> str:
    """The exact repair command for a repair.yml tag (deps, tf32, crlf, wandb, hf)."""
    return playbook_command("repair", inventory, tags=tag, limit=_limit(host))


def _limit(host: str | None) -> str:
    return host or "<host>"


def _only(arm: str | None) -> dict[str, Any]:
    return {"arms_only": [arm or "<arm>"]}


def train_command(arm: str | None = None, inventory: str | None = None) -> str:
    """Launch one arm again: by arms_only, not --limit (the preflight needs every arm's hosts)."""
    return playbook_command("train", inventory, extra_vars=_only(arm))


def restart_command(arm: str | None = None, inventory: str | None = None) -> str:
    """Stop one arm (all of its hosts) and launch it again."""
    return f"{playbook_command('stop', inventory, extra_vars=_only(arm))} && {train_command(arm, inventory)}"


_MISSING_MODULE = re.compile(r"(?:ModuleNotFoundError|ImportError): No module named '?([\w.]+)'?")
_WANDB_KEY_LEN = re.compile(r"API key must be 40 characters long(?:, yours was (\d+))?")
_WANDB_NO_KEY = re.compile(r"No API key configured")
_TF32 = re.compile(r"mix of the legacy and new APIs to set the TF32|allow_tf32_new is enabled")
_OOM = re.compile(r"CUDA out of memory|(?:torch\.|torch\.cuda\.)?OutOfMemoryError")
_NCCL_TIMEOUT = re.compile(r"Watchdog caught collective operation timeout|ProcessGroupNCCL.*[Tt]imeout")
_NCCL = re.compile(
    r"NCCL error|ncclUnhandledCudaError|ncclSystemError|ncclInternalError|ncclRemoteError"
    r"|ncclInvalidUsage|ncclInvalidArgument"
)
_HF_UNAUTH = re.compile(r"sending unauthenticated requests to the HF Hub")
# bash prints "$'\r': command not found"; env prints "'bash\r': No such file"; "^M" is cat -v's form
_CRLF = re.compile(r"\$'\\r': command not found|'(?:ba)?sh\\r'|\^M: bad interpreter")
# the kernel's "bad interpreter" message carries a real carriage return, which split_lines cuts
_CRLF_RAW = re.compile(r"([^\n]*)\r: bad interpreter[^\n]*")
_RDZV = re.compile(
    r"RendezvousTimeoutError|RendezvousConnectionError|DistNetworkError|DistStoreError"
    r"|failed to listen on|[Aa]ddress already in use|Connection refused.*(?:store|rendezvous|TCPStore)"
)
# a worker killed by a signal (torchrun's failure summary), or torchrun itself signalled
_SIGNAL = re.compile(
    r"Signal (?P<n1>\d+) \((?P<name>SIG\w+)\) received by PID|exitcode\s*:\s*-(?P<n2>\d+)"
    r"|SignalException: Process \d+ got signal: (?P<n3>\d+)"
)
# "RuntimeError: ...", "torch.OutOfMemoryError: ...", optionally behind torch's "[rank0]:" prefix
_EXCEPTION = re.compile(r"^\s*(?:\[\w+\]:\s*)?(?:[\w.]+\.)?[A-Z]\w*(?:Error|Exception|Interrupt)\b.*")

_SIGNAL_NAMES = {
    "6": "SIGABRT",
    "9": "SIGKILL",
    "11": "SIGSEGV",
    "15": "SIGTERM",
    "2": "SIGINT",
    "1": "SIGHUP",
}

_CRLF_TITLE = (
    "A shell script has Windows (CRLF) line endings: the crlf role converts nanochat's "
    "*.sh files to LF and makes them executable."
)


def _finding(fid: str, title: str, evidence: str, repair: str, severity: str = "error") -> dict[str, str]:
    evidence = evidence.strip()
    if len(evidence) > 400:
        evidence = evidence[:397] + "..."
    return {"id": fid, "title": title, "evidence": evidence, "repair": repair, "severity": severity}


@dataclass(frozen=True)
class _Where:
    """What a finding's repair command names: the host (``-l``), the arm (``arms_only``), the inventory (``-i``)."""

    host: str | None
    arm: str | None
    inventory: str | None
    device_batch_size: int | None

    def repair(self, tag: str) -> str:
        return repair_command(tag, self.host, self.inventory)

    def restart(self) -> str:
        return restart_command(self.arm, self.inventory)

    def train(self) -> str:
        return train_command(self.arm, self.inventory)


# a signature reads one log line and gives (key, finding) pairs: a finding is kept once per (id, key)
Signature = Callable[[str, _Where], list[tuple[str, dict[str, str]]]]


def _missing_module(line: str, where: _Where) -> list[tuple[str, dict[str, str]]]:
    if not (m := _MISSING_MODULE.search(line)):
        return []
    module = m.group(1)
    top = module.split(".")[0]
    if top in ("scripts", "nanochat"):
        title = (
            f"Python cannot import '{module}': training was not started from the nanochat "
            "checkout (or the checkout is incomplete)."
        )
        return [(top, _finding("not_in_checkout", title, line, where.repair("checkout")))]
    title = (
        f"Python module '{top}' is missing from the nanochat venv; the deps role installs "
        "nanochat's dependencies (rustbpe, psutil, ...) into it."
    )
    return [(top, _finding("missing_module", title, line, where.repair("deps")))]


def _wandb(line: str, where: _Where) -> list[tuple[str, dict[str, str]]]:
    out = []
    if m := _WANDB_KEY_LEN.search(line):
        got = f" (the key has {m.group(1)} characters)" if m.group(1) else ""
        title = (
            "wandb in the venv is older than 0.22.3 and rejects the new 86-character wandb_v1_ API "
            f"key{got}; a re-login does not help: the deps role upgrades wandb in the venv."
        )
        out.append(("", _finding("wandb_key_length", title, line, where.repair("deps"))))
    if _WANDB_NO_KEY.search(line):
        title = (
            "W&B has no API key on this host: the credentials role writes it (or use the run name "
            "'dummy' to train without W&B)."
        )
        out.append(("", _finding("wandb_no_key", title, line, where.repair("wandb"))))
    return out


def _tf32(line: str, where: _Where) -> list[tuple[str, dict[str, str]]]:
    if not _TF32.search(line):
        return []
    title = (
        "torch.compile/Inductor crashed on nanochat's mix of the legacy and new TF32 APIs: the "
        "tf32 role rewrites the TF32 line in nanochat/common.py to "
        'torch.set_float32_matmul_precision("high").'
    )
    return [("", _finding("tf32_mixed_api", title, line, where.repair("tf32")))]


def _oom(line: str, where: _Where) -> list[tuple[str, dict[str, str]]]:
    if not _OOM.search(line):
        return []
    dbs = where.device_batch_size
    half = f" (e.g. {max(dbs // 2, 1)}, half of {dbs})" if dbs else ""
    title = (
        "A GPU ran out of memory: use a smaller device batch size"
        f"{half}; the total batch size stays, nanochat accumulates more gradient steps, and "
        "every arm must get the same value."
    )
    repair = (
        f"set experiment.model.device_batch_size in {EXPERIMENT_FILE} to a smaller power of two"
        f"{half} (every arm), then: {playbook_command('stop', where.inventory)} && "
        f"{playbook_command('train', where.inventory)}"
    )
    return [("", _finding("cuda_oom", title, line, repair))]


def _nccl(line: str, where: _Where) -> list[tuple[str, dict[str, str]]]:
    if _NCCL_TIMEOUT.search(line):
        title = (
            "A collective operation timed out (NCCL watchdog): a rank hung or died, or the "
            "network between nodes stalled; check the other ranks' hosts, nvidia-smi and the "
            "interconnect, then restart (resume from the last checkpoint if one exists)."
        )
        return [("", _finding("nccl_timeout", title, line, where.restart()))]
    if _NCCL.search(line):
        title = (
            "NCCL reported an error (GPU communication): check nvidia-smi and the driver on the host "
            "(and the network between nodes for a multi-node arm), then restart."
        )
        return [("", _finding("nccl_error", title, line, where.restart()))]
    return []


def _rendezvous(line: str, where: _Where) -> list[tuple[str, dict[str, str]]]:
    if not _RDZV.search(line):
        return []
    title = (
        "torchrun could not rendezvous: another process holds the rendezvous port, or the "
        "arm's first host is unreachable on it from the other nodes (firewall, wrong address); "
        "all nodes of an arm must be launched together."
    )
    return [("", _finding("rendezvous", title, line, where.restart()))]


def _crlf(line: str, where: _Where) -> list[tuple[str, dict[str, str]]]:
    if not _CRLF.search(line):
        return []
    return [("", _finding("crlf", _CRLF_TITLE, line, where.repair("crlf")))]


def _hf_unauthenticated(line: str, where: _Where) -> list[tuple[str, dict[str, str]]]:
    if not _HF_UNAUTH.search(line):
        return []
    title = (
        "Requests to the Hugging Face Hub are unauthenticated (low rate limits, slow or failed "
        "downloads): the credentials role sets HF_TOKEN for the runs."
    )
    return [("", _finding("hf_unauthenticated", title, line, where.repair("hf"), severity="warning"))]


def _killed(line: str, where: _Where) -> list[tuple[str, dict[str, str]]]:
    if not (m := _SIGNAL.search(line)):
        return []
    number = m.group("n1") or m.group("n2") or m.group("n3")
    name = m.group("name") or _SIGNAL_NAMES.get(number, f"signal {number}")
    if name not in ("SIGKILL", "SIGTERM", "SIGHUP", "SIGINT"):
        return []
    title = (
        f"A training process received {name}: stopped by hand, by the kernel's "
        "out-of-memory killer (check `dmesg | grep -i killed` on the host) or by the "
        "machine going down."
    )
    return [("", _finding("killed", title, line, where.train()))]


# in the order their findings are added for one line
SIGNATURES: tuple[Signature, ...] = (
    _missing_module,
    _wandb,
    _tf32,
    _oom,
    _nccl,
    _rendezvous,
    _crlf,
    _hf_unauthenticated,
    _killed,
)


def _signature_findings(text: str, lines: list[str], where: _Where) -> list[dict[str, str]]:
    """Each signature's findings, once per (id, key): in the order they first appear, with the last evidence."""
    found: dict[tuple[str, str], tuple[int, dict[str, str]]] = {}

    def add(pos: int, key: str, finding: dict[str, str]) -> None:
        ident = (finding["id"], key)
        first = found[ident][0] if ident in found else pos
        found[ident] = (first, finding)  # keep the first position, the last evidence line

    for pos, line in enumerate(lines):
        if line.startswith("step ") and "|" in line:
            continue  # a step line is progress, never a failure (fast path for long logs)
        for signature in SIGNATURES:
            for key, finding in signature(line, where):
                add(pos, key, finding)
    if raw := _CRLF_RAW.search(text):
        evidence = raw.group(0).replace("\r", "^M")
        add(len(lines), "", _finding("crlf", _CRLF_TITLE, evidence, where.repair("crlf")))
    return [f for _, f in sorted(found.values(), key=lambda item: item[0])]


def _end_finding(lines: list[str], exit_code: int | None, where: _Where) -> dict[str, str]:
    """Why a gone process's unfinished log ended when no signature says: ``died`` or ``vanished``."""
    last_exc = next(
        (line for line in reversed(lines) if _EXCEPTION.match(line) and "ChildFailedError" not in line),
        None,
    )
    if last_exc is not None or (exit_code is not None and exit_code != 0):
        return _finding(
            "died",
            "Training stopped on an error that matches no known signature"
            + (f" (exit code {exit_code})" if exit_code is not None else "")
            + ": read the log's last lines (the evidence is the last exception printed, or the last "
            "line).",
            last_exc or (lines[-1] if lines else "(empty log)"),
            playbook_command("status", where.inventory, limit=_limit(where.host)),
        )
    return _finding(
        "vanished",
        "The training process is gone and its log ends without an error or the end lines: it "
        "was killed from outside (kill -9, the out-of-memory killer, a reboot).",
        lines[-1] if lines else "(empty log)",
        where.train(),
    )


def diagnose(
    text: str,
    host: str | None = None,
    *,
    inventory: str | None = None,
    device_batch_size: int | None = None,
    arm: str | None = None,
    process_gone: bool = False,
    exit_code: int | None = None,
) -> list[dict[str, str]]:
    """Findings for every known failure signature in ``text`` (a training log).

    Each finding is ``{id, title, evidence, repair, severity}``: ``evidence`` is the (last) matching
    log line, ``repair`` the exact command that fixes it (``host`` fills ``-l``, ``arm`` fills
    ``arms_only``, ``inventory`` the ``-i ...`` part; ``<host>``/``<arm>``/``-i inventory/`` when
    unknown). Ids: ``missing_module`` (one per module), ``not_in_checkout``, ``wandb_key_length``,
    ``wandb_no_key``, ``tf32_mixed_api``, ``cuda_oom``, ``nccl_timeout``, ``nccl_error``,
    ``rendezvous``, ``crlf``, ``hf_unauthenticated`` (a warning), ``killed`` (only when no other
    error explains it: torchrun itself signals the other ranks when one fails) and, when
    ``process_gone`` and nothing else explains the end of an unfinished log, ``died`` (last
    exception line, or a non-zero ``exit_code``) or ``vanished`` (no error and no exit code: killed
    from outside). Errors come first, in the order they first appear in the log; warnings after them.
    """
    where = _Where(host=host, arm=arm, inventory=inventory, device_batch_size=device_batch_size)
    lines = split_lines(text)
    findings = _signature_findings(text, lines, where)
    errors = [f for f in findings if f["severity"] == "error"]
    warnings = [f for f in findings if f["severity"] != "error"]
    if any(f["id"] != "killed" for f in errors):
        # torchrun signals the other ranks when one fails: then a signal is a consequence, not the cause
        errors = [f for f in errors if f["id"] != "killed"]
    if process_gone and not errors and not parse_log(text, max_steps=0)["finished"]:
        errors.append(_end_finding(lines, exit_code, where))
    return errors + warnings
