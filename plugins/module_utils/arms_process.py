"""Process control of a detached training run: start, liveness, stop, the host's other trainings.

:func:`start_detached` starts the launch in its own session (it survives the SSH connection and
Ansible ending), with a log file and a JSON pid file; :func:`is_alive` checks the pid is still *our*
process (boot id and start time); :func:`stop` signals the whole process group (SIGTERM, then
SIGKILL) and reports what it did; :func:`find_trainings` lists the trainings running on the host.
"""

from __future__ import annotations

import contextlib
import datetime as _dt
import fcntl
import glob
import json
import os
import re
import signal
import socket
import subprocess
import time
from collections.abc import Iterator, Mapping, Sequence
from typing import Any

from ansible.module_utils.arms_command import check_run_name
from ansible.module_utils.arms_common import ArmsError, atomic_write_json

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
    the run's NANOCHAT_BASE_DIR. A record without a base dir finds none: sibling arms share the
    checkout, and only the base dir tells their workers from this run's.
    """
    cwd = record.get("cwd")
    base = record.get("base_dir") or (record.get("env") or {}).get("NANOCHAT_BASE_DIR")
    if not cwd or not base:
        return []
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


def _claimed_gpus(value: Any) -> list[int] | None:
    """A run record's GPUs as a sorted list; None (the whole host) when it names none or is unreadable."""
    if not isinstance(value, list) or not all(isinstance(g, int) and not isinstance(g, bool) for g in value):
        return None
    return sorted(value)


def find_trainings(
    state_dir: str | None, chdir: str | None = None, base_dir: str | None = None
) -> list[dict[str, Any]]:
    """The trainings running on this host: live runs of the pid files in ``state_dir``, plus any
    other ``scripts.base_train`` process group whose working directory is ``chdir`` (the runbook's
    hand-started runs), one entry per process group: {run_name, pid, pgid, pidfile, log, source,
    base_dir, gpus, master_port}.

    What each training holds, so a launch can tell a rival from a sibling arm on a shared host:
    ``base_dir`` (its NANOCHAT_BASE_DIR, resolved; None when unknown), ``gpus`` (the GPU indices its
    launch claimed, [] for a CPU process sharing the host; None = the whole host: runs recorded before
    arms shared hosts, or started by hand) and ``master_port`` (the rendezvous port it listens on as
    node rank 0 of a multi-node arm, else None).

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
                env = record.get("env") if isinstance(record.get("env"), dict) else {}
                base = record.get("base_dir") or env.get("NANOCHAT_BASE_DIR")
                port = record.get("master_port")
                found[pgid] = {
                    "run_name": record.get("run_name"),
                    "pid": record["pid"],
                    "pgid": pgid,
                    "pidfile": pidfile,
                    "log": record.get("log"),
                    "source": "pidfile",
                    "base_dir": os.path.realpath(os.path.expanduser(str(base))) if base else None,
                    "gpus": _claimed_gpus(record.get("gpus")),
                    "master_port": port if isinstance(port, int) and not isinstance(port, bool) else None,
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
            theirs = _process_base_dir(pid)
            wanted = os.path.realpath(os.path.expanduser(base_dir)) if base_dir is not None else None
            if wanted is not None and theirs is not None and theirs != wanted:
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
                "base_dir": theirs,
                "gpus": None,
                "master_port": None,
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
