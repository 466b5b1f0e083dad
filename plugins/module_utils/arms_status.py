"""How a run's status reads: the status table's rows, the "idle since" note and the note on a run that prints
nothing after its model config (standard library only).

The module (arms_run's status) and the playbooks (status.yml, through the ``arms_status_rows`` filter)
word a run's state here, once.
"""

from __future__ import annotations

import calendar
import time
from typing import Any

TAIL_SHOWN = 8


def idle_note(ended: str | None, now: float | None = None) -> str:
    """ " Its GPUs have been idle since HH:MM UTC (N min): release them ..." for a run that ended, else ''."""
    if not ended:
        return ""
    try:
        then = calendar.timegm(time.strptime(ended[:19], "%Y-%m-%dT%H:%M:%S"))
    except ValueError:
        return ""
    minutes = max(0, int(((time.time() if now is None else now) - then) // 60))
    span = f"{minutes} min" if minutes < 120 else f"{minutes / 60:.1f} h"
    return (
        f" Its GPUs have been idle since {ended[11:16]} UTC ({span}): release the node once its results are "
        "collected (playbooks/collect.yml)."
    )


def stall_note(silent_s: float, cause: str | None, world_size: int, stop_command: str, error: str | None = None) -> str:
    """What a live run that printed its model config but no step line for ``silent_s`` seconds is doing.

    With ``cause`` ("rank N has no row group in FILE", arms_rowgroups.starvation_cause) the run is starved
    of data and never trains; without it the data is not the reason (``error``: it could not be read).
    """
    silent = f"no step line and no output for {max(0, int(silent_s // 60))} min after the model config"
    if cause:
        return (
            f"{silent}: {cause}, so nanochat's loader spins on that rank forever and the run never trains; stop it "
            f"({stop_command}) and re-shard the arm's data with at least {world_size} row group(s) a file (the "
            "preflight refuses such data)."
        )
    if error:
        return f"{silent}; whether a rank is starved of data could not be told: {error}"
    return (
        f"{silent}; every rank of {world_size} has a row group in each file it reads, so it is not starved of "
        "data: a first step still compiling, or a rank on another node that hangs (read its log)."
    )


def state_word(status: dict[str, Any]) -> str:
    if status.get("alive"):
        return f"alive pid {status.get('pid')}"
    return "finished" if status.get("finished") else "NOT RUNNING"


def status_rows(host: str, arm: str, status: dict[str, Any], gpu_util: list[int] | None = None) -> list[str]:
    """The status table's lines for one host: state, progress, val bpb, GPU use, log; why a dead run died."""
    util = [int(u) for u in gpu_util or []]
    val = (status.get("progress") or {}).get("last_val_bpb")
    row = [
        host,
        arm,
        state_word(status),
        status.get("progress_line") or "no step yet",
        f"val bpb {val if val is not None else '-'}",
    ]
    if util:
        row.append(f"GPU {sum(util) // len(util)}%")
    if not status.get("alive") and status.get("ended"):
        row.append(f"idle since {status['ended'][11:16]} UTC")
    row.append(f"log {status.get('log')}")
    rows = [" | ".join(row)]
    if status.get("alive") and status.get("stall"):
        rows.append(f"    {host}: {status['stall']['note']}")
    if status.get("stale"):
        rows.append(
            f"    {host}: It is stale: {'; '.join(status.get('identity_changes') or [])}. Not this experiment's "
            "result: -e arms_force_restart=true trains it again."
        )
    if not status.get("alive") and not status.get("finished"):
        for d in status.get("diagnosis") or []:
            rows.append(f"    {host}: {d['title']} -> {d['repair']}   ({d['evidence']})")
        rows.extend(f"    {host} log | {line}" for line in (status.get("log_tail") or [])[-TAIL_SHOWN:])
    if not status.get("alive") and status.get("ended"):
        rows.append(f"    {host}:{idle_note(status['ended'])}")
    return rows
