"""Waiting for an async job on a host while showing its progress.

Long steps run as Ansible async jobs (an SSH hiccup does not kill them). ``job_status`` reads the
job's status file (what async_status reads) and the step's progress state file, so the wait loop
can print "rows 1.2M/7.3M, 45 MB/s, eta 3m" on every poll and hand back the step's own result.
"""

from __future__ import annotations

import json
import os
import time
from typing import Any


def read_progress_line(progress_file: str | None) -> str | None:
    if not progress_file:
        return None
    try:
        with open(os.path.expanduser(progress_file), encoding="utf-8") as fh:
            data = json.load(fh)
    except (OSError, ValueError):
        return None
    return data.get("line") if isinstance(data, dict) else None


def read_log_line(progress_log: str | None, max_bytes: int = 4096) -> str | None:
    """The last non-empty line of a text log (rsync's --info=progress2 output, say)."""
    if not progress_log:
        return None
    try:
        with open(os.path.expanduser(progress_log), "rb") as fh:
            fh.seek(0, os.SEEK_END)
            size = fh.tell()
            fh.seek(max(0, size - max_bytes))
            tail = fh.read().decode("utf-8", "replace")
    except OSError:
        return None
    lines = [ln.strip() for ln in tail.replace("\r", "\n").splitlines() if ln.strip()]
    return " ".join(lines[-1].split()) if lines else None


def log_tail(progress_log: str, n: int = 4, max_bytes: int = 16384) -> list[str]:
    """The last ``n`` non-empty lines of a text log (what failed, for the error message)."""
    try:
        with open(os.path.expanduser(progress_log), "rb") as fh:
            fh.seek(0, os.SEEK_END)
            fh.seek(max(0, fh.tell() - max_bytes))
            text = fh.read().decode("utf-8", "replace")
    except OSError:
        return []
    lines = [" ".join(ln.split()) for ln in text.replace("\r", "\n").splitlines() if ln.strip()]
    return lines[-n:]


def job_status(
    jid: str, async_dir: str, progress_file: str | None = None, progress_log: str | None = None
) -> dict[str, Any]:
    """{"finished": bool, "result": the job's result once finished, "progress_line": ...}."""
    path = os.path.join(os.path.expanduser(async_dir), jid)
    line = read_progress_line(progress_file) or read_log_line(progress_log)
    try:
        with open(path, encoding="utf-8") as fh:
            raw = fh.read()
    except FileNotFoundError:
        return {"finished": False, "found": False, "progress_line": line or "waiting for the job to start"}
    try:
        data = json.loads(raw) if raw.strip() else {"started": 1}
    except ValueError:
        data = {"started": 1}
    if data.get("started") == 1 and not data.get("finished"):
        return {"finished": False, "found": True, "progress_line": line or "running"}
    data.pop("started", None)
    data.pop("finished", None)
    data.pop("results_file", None)
    return {"finished": True, "found": True, "result": data, "progress_line": line}


def wait_for_job(
    jid: str,
    async_dir: str,
    progress_file: str | None = None,
    progress_log: str | None = None,
    wait: float = 0.0,
    interval: float = 0.1,
) -> dict[str, Any]:
    """:func:`job_status`, but waiting up to ``wait`` seconds for the job to finish (returns as soon as it does).

    A short job (a no-op sync, a small transfer) is then seen finished within ``interval`` of its end,
    instead of one ``until`` delay later; a long one still reports its progress every ``wait`` seconds.
    """
    deadline = time.monotonic() + max(0.0, wait)
    while True:
        status = job_status(jid, async_dir, progress_file, progress_log)
        if status["finished"] or time.monotonic() >= deadline:
            return status
        time.sleep(interval)
