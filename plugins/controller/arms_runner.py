"""Run a playbook through ansible-runner and summarise it (the CI entry and the integration tests).

ansible-runner writes the environment it was started with to ``artifacts/<ident>/command`` and the
envvars/extravars it was given to ``env/``. So secrets never reach it that way: the known secret
variables are taken out of the environment for the run and handed to the playbook through a 0600
vars file outside the private data dir, deleted afterwards; the artifacts are then scrubbed of
every secret value as a second line of defence.

A killed entry leaves nothing running and, at the next start, nothing behind: ansible-playbook runs
under a guard (``scripts/_arms_playbook_guard.py``, :func:`guard_main`) that leads its own process
group and ends every process below it when the entry ends (SIGTERM, SIGINT, or SIGKILL through
PR_SET_PDEATHSIG); the secrets folder and the guard carry the entry's identity (pid and start
time), and :func:`clean_stale` removes the folders, and ends the guards, whose entry is gone.

This runs on the controller only (it imports ansible_runner); modules never import it.
"""

from __future__ import annotations

import contextlib
import ctypes
import json
import os
import shlex
import shutil
import signal
import stat
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from typing import Any

# environment variable -> the credentials role's variable
SECRET_ENV = {
    "WANDB_API_KEY": "credentials_wandb_api_key",
    "HF_TOKEN": "credentials_hf_token",
    "HUGGINGFACE_HUB_TOKEN": "credentials_hf_token",
    "AZURE_STORAGE_CONNECTION_STRING": "credentials_azure_connection_string",
    "AZURE_STORAGE_SAS_TOKEN": "credentials_azure_sas_token",
    "AZURE_STORAGE_ACCOUNT_KEY": "credentials_azure_account_key",
}
NON_SECRET_ENV = {"AZURE_STORAGE_ACCOUNT_URL": "credentials_azure_account_url"}
STAT_KEYS = ("ok", "changed", "failures", "dark", "skipped", "rescued", "ignored")
SECRETS_PREFIX = "arms-secrets-"
OWNER_FILE = "owner"
# set for the guard only (it takes it out of ansible-playbook's environment): the entry it belongs to
OWNER_ENV = "ARMS_RUN_OWNER"
GUARD = os.path.join(
    os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))), "scripts", "_arms_playbook_guard.py"
)
GRACE_S = 5.0  # between SIGTERM and SIGKILL when a run is ended
PR_SET_PDEATHSIG = 1


@dataclass
class HostStats:
    ok: int = 0
    changed: int = 0
    failed: int = 0
    unreachable: int = 0
    skipped: int = 0
    rescued: int = 0
    ignored: int = 0


@dataclass
class Summary:
    playbook: str
    inventory: str
    status: str = "unknown"
    rc: int = -1
    elapsed_s: float = 0.0
    hosts: dict[str, HostStats] = field(default_factory=dict)
    tasks: list[dict[str, Any]] = field(default_factory=list)
    failures: list[dict[str, Any]] = field(default_factory=list)
    runs: list[dict[str, Any]] = field(default_factory=list)
    progress: list[str] = field(default_factory=list)
    # per GPU host: from first contact to its arm's first step line, broken down (the arms_timeline callback)
    idle: list[dict[str, Any]] = field(default_factory=list)
    stdout: str = ""

    @property
    def ok(self) -> bool:
        return (
            self.rc == 0
            and self.status == "successful"
            and not any(h.failed or h.unreachable for h in self.hosts.values())
        )

    def changed_total(self, exclude_tasks: tuple[str, ...] = ()) -> dict[str, int]:
        """Changed results per host, not counting tasks whose name contains one of ``exclude_tasks``."""
        out: dict[str, int] = {h: 0 for h in self.hosts}
        for t in self.tasks:
            if t["status"] == "changed" and not any(x in t["task"] for x in exclude_tasks):
                out[t["host"]] = out.get(t["host"], 0) + 1
        return out

    def to_json(self) -> dict[str, Any]:
        data = asdict(self)
        data["ok"] = self.ok
        data.pop("stdout")
        return data


def secrets_from_env(env: dict[str, str]) -> tuple[dict[str, str], dict[str, str]]:
    """(extra vars for the playbook, the secret values) taken from ``env``."""
    extra: dict[str, str] = {}
    values: dict[str, str] = {}
    for name, var in {**SECRET_ENV, **NON_SECRET_ENV}.items():
        value = env.get(name)
        if value:
            extra.setdefault(var, value)
            if name in SECRET_ENV:
                values[name] = value
    return extra, values


# ---------------------------------------------------------------------------------------------
# who owns what a run leaves in /tmp: a process identity that survives pid reuse


def process_start(pid: int) -> str | None:
    """The start time of ``pid`` (clock ticks since boot, /proc/<pid>/stat field 22), None when it is gone."""
    fields = _stat_fields(pid)
    return fields[19] if fields and len(fields) > 19 else None


def _stat_fields(pid: int) -> list[str] | None:
    """/proc/<pid>/stat from its state on (field 3): state, ppid, pgrp, session, ... None when it is gone."""
    try:
        with open(f"/proc/{pid}/stat", encoding="utf-8", errors="replace") as fh:
            return fh.read().rsplit(")", 1)[-1].split()
    except OSError:
        return None


def owner_token(pid: int | None = None) -> str:
    """``pid:start`` of this process (or ``pid``): names the entry a secrets folder or a guard belongs to."""
    pid = os.getpid() if pid is None else pid
    return f"{pid}:{process_start(pid) or '?'}"


def owner_alive(token: str) -> bool:
    pid, _, start = token.strip().partition(":")
    return pid.isdigit() and process_start(int(pid)) == start


def _guards(uid: int) -> dict[int, str]:
    """Guards of this user, by pid, with the owner token in their environment (OWNER_ENV)."""
    found = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit() or int(entry) == os.getpid():
            continue
        try:
            if os.stat(f"/proc/{entry}").st_uid != uid:
                continue
            with open(f"/proc/{entry}/environ", "rb") as fh:
                env = fh.read().split(b"\0")
        except OSError:
            continue
        marks = [e.split(b"=", 1)[1].decode() for e in env if e.startswith(OWNER_ENV.encode() + b"=")]
        if marks:
            found[int(entry)] = marks[0]
    return found


def process_tree(root: int) -> list[int]:
    """``root`` and every process below it (by parent pid), root first."""
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            fields = _stat_fields(int(entry))
            if fields and len(fields) > 1:
                children.setdefault(int(fields[1]), []).append(int(entry))
    tree, todo = [], [root]
    while todo:
        pid = todo.pop()
        tree.append(pid)
        todo.extend(children.get(pid, []))
    return tree


def tree_groups(root: int) -> set[int]:
    """The process groups led by ``root`` or a process below it.

    ansible-playbook's workers call setsid(): they, and the modules they run, are in groups of their
    own, not in the guard's. Only groups whose leader is in the tree are named, never a stranger's.
    """
    tree = process_tree(root)
    members = set(tree)
    groups = set()
    for pid in tree:
        fields = _stat_fields(pid)
        if fields and len(fields) > 2 and int(fields[2]) in members:
            groups.add(int(fields[2]))
    return groups


def signal_groups(groups: set[int], sig: int) -> None:
    for group in groups:
        try:
            os.killpg(group, sig)
        except (ProcessLookupError, PermissionError):
            pass


def end_tree(root: int, grace: float = GRACE_S) -> bool:
    """SIGTERM every process group of ``root``'s tree, SIGKILL what is left after ``grace`` s. False if none."""
    groups = tree_groups(root)
    if not groups:
        return False
    signal_groups(groups, signal.SIGTERM)
    deadline = time.monotonic() + grace
    while time.monotonic() < deadline and any(_group_alive(g) for g in groups):
        time.sleep(0.1)
    signal_groups(groups, signal.SIGKILL)
    return True


def _group_alive(group: int) -> bool:
    try:
        os.killpg(group, 0)
    except (ProcessLookupError, PermissionError):
        return False
    return True


def clean_stale(tmpdir: str | None = None, legacy_age_s: float = 60.0) -> list[str]:
    """End what a killed entry left: its secrets folders and its playbook's processes. Returns what was done.

    A secrets folder of this user is removed when the entry named in its ``owner`` file is gone; a
    folder without one (made by a version before owner files) when older than ``legacy_age_s``
    (ansible-playbook reads the vars file once, at its start). A guard whose entry is gone (it
    normally ends with it) has its processes ended.
    """
    tmpdir = tmpdir or tempfile.gettempdir()
    uid = os.getuid()
    done: list[str] = []
    try:
        names = os.listdir(tmpdir)
    except OSError:
        names = []
    for name in names:
        path = os.path.join(tmpdir, name)
        if not name.startswith(SECRETS_PREFIX):
            continue
        try:
            st = os.lstat(path)
        except OSError:
            continue
        if not stat.S_ISDIR(st.st_mode) or st.st_uid != uid:
            continue
        try:
            with open(os.path.join(path, OWNER_FILE), encoding="utf-8") as fh:
                stale = not owner_alive(fh.read())
        except FileNotFoundError:
            stale = time.time() - st.st_mtime > legacy_age_s
        except OSError:
            continue
        if stale:
            shutil.rmtree(path, ignore_errors=True)
            done.append(f"removed {path} (the secrets of a run that was killed)")
    for pid, owner in _guards(uid).items():
        if not owner_alive(owner) and end_tree(pid):
            done.append(f"ended the playbook of a run that was killed (pid {pid})")
    return done


# ---------------------------------------------------------------------------------------------
# the guard: ansible-playbook's parent, ends everything below it with the entry


def _die_with_parent(sig: int) -> None:
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(PR_SET_PDEATHSIG, sig, 0, 0, 0)
    except (OSError, AttributeError):  # not Linux: SIGTERM/SIGINT still end the playbook
        pass


def guard_main(argv: list[str], playbook_bin: str = "ansible-playbook") -> int:
    """Run ``ansible-playbook argv``; end it and everything it started when the entry ends.

    ansible-runner starts this (``binary=``) in a session of its own. When the guard is told to stop
    (SIGTERM, SIGINT) or its entry dies, even by SIGKILL (PR_SET_PDEATHSIG then sends SIGTERM), every
    process group below it (the playbook's, and its workers': they call setsid) gets SIGTERM, then
    SIGKILL after GRACE_S.
    """
    owner = os.environ.get(OWNER_ENV, "")
    if os.getpgrp() != os.getpid():
        os.setpgid(0, 0)
    _die_with_parent(signal.SIGTERM)
    parent = owner.partition(":")[0]
    if parent.isdigit() and os.getppid() != int(parent):
        return 143  # the entry died before the guard could ask to be told: run nothing
    stopping = threading.Event()
    groups: set[int] = set()

    def stop(signum: int, frame: Any) -> None:
        if stopping.is_set():
            return
        stopping.set()
        groups.update(tree_groups(os.getpid()))
        groups.discard(os.getpgrp())
        signal_groups(groups, signal.SIGTERM)
        for pid in process_tree(os.getpid())[1:]:  # the playbook itself, in the guard's own group
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGTERM)

    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, stop)
    env = {k: v for k, v in os.environ.items() if k != OWNER_ENV}
    try:
        child = subprocess.Popen([playbook_bin, *argv], env=env)
    except OSError as exc:
        print(f"nanochat-arms: cannot start {playbook_bin}: {exc.strerror or exc}", file=sys.stderr)
        return 127
    while True:
        try:
            rc = child.wait(timeout=0.2)
            break
        except subprocess.TimeoutExpired:
            if not stopping.is_set():
                continue
            try:
                rc = child.wait(timeout=GRACE_S)
            except subprocess.TimeoutExpired:
                rc = -signal.SIGKILL
            break
    if stopping.is_set():
        # what is left of the playbook's groups (a module's children, a worker that ignored SIGTERM)
        deadline = time.monotonic() + GRACE_S
        while time.monotonic() < deadline and any(_group_alive(g) for g in groups):
            time.sleep(0.1)
        signal_groups(groups, signal.SIGKILL)
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        os.killpg(os.getpgrp(), signal.SIGKILL if rc == -signal.SIGKILL else signal.SIGTERM)
    return rc if rc >= 0 else 128 - rc


@contextmanager
def cancel_on_signals() -> Iterator[tuple[Callable[[], bool], Callable[[], bool]]]:
    """SIGTERM and SIGINT end the run: the guard is asked to end the playbook, then ansible-runner is told.

    Yields (``cancel_callback`` for ansible-runner, whether a signal came). ansible-runner answers a
    cancel with SIGKILL to the guard's group, which would orphan ansible's workers (they have their
    own sessions): so it is told only when the guard has not ended the playbook after its grace time.
    """
    asked_at: list[float] = []
    if threading.current_thread() is not threading.main_thread():
        yield (lambda: False), (lambda: False)
        return
    me = owner_token()

    def handler(signum: int, frame: Any) -> None:
        if asked_at:
            return
        asked_at.append(time.monotonic())
        for pid, owner in _guards(os.getuid()).items():
            if owner == me:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGTERM)

    def cancel() -> bool:
        return bool(asked_at) and time.monotonic() - asked_at[0] > 2 * GRACE_S + 5

    saved = {sig: signal.signal(sig, handler) for sig in (signal.SIGTERM, signal.SIGINT)}
    try:
        yield cancel, lambda: bool(asked_at)
    finally:
        for sig, old in saved.items():
            signal.signal(sig, old)


@contextmanager
def secrets_vars_file(extra: dict[str, str]) -> Iterator[str | None]:
    """A 0600 vars file in a 0700 folder, removed when the run ends (or, if the entry is killed, at the next start)."""
    if not extra:
        yield None
        return
    folder = tempfile.mkdtemp(prefix=SECRETS_PREFIX)
    path = os.path.join(folder, "secrets.json")
    try:
        with open(os.path.join(folder, OWNER_FILE), "w", encoding="utf-8") as fh:
            fh.write(owner_token())
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, stat.S_IRUSR | stat.S_IWUSR)
        with os.fdopen(fd, "w") as fh:
            json.dump(extra, fh)
        yield path
    finally:
        shutil.rmtree(folder, ignore_errors=True)


@contextmanager
def env_without(names: list[str]) -> Iterator[None]:
    saved = {n: os.environ.pop(n) for n in names if n in os.environ}
    try:
        yield
    finally:
        os.environ.update(saved)


def scrub(folder: str, secrets: list[str]) -> int:
    """Replace every secret value in files under ``folder`` with ********; returns files changed."""
    secrets = [s for s in secrets if len(s) >= 6]
    changed = 0
    for dirpath, _, files in os.walk(folder):
        for name in files:
            path = os.path.join(dirpath, name)
            try:
                with open(path, "rb") as fh:
                    data = fh.read()
            except OSError:
                continue
            new = data
            for s in secrets:
                new = new.replace(s.encode(), b"********")
            if new != data:
                with open(path, "wb") as fh:
                    fh.write(new)
                changed += 1
    return changed


def _event_handler(summary: Summary, echo: Callable[[str], None] | None) -> Callable[[dict[str, Any]], bool]:
    starts: dict[tuple[str, str], float] = {}

    def handle(event: dict[str, Any]) -> bool:
        kind = event.get("event", "")
        data = event.get("event_data", {})
        host = data.get("host") or ""
        task = data.get("task") or ""
        key = (host, data.get("task_uuid", ""))
        if kind == "runner_on_start":
            starts[key] = time.time()
        elif kind in ("runner_on_ok", "runner_on_failed", "runner_on_unreachable", "runner_on_skipped"):
            res = data.get("res") or {}
            status = {
                "runner_on_ok": "changed" if res.get("changed") else "ok",
                "runner_on_failed": "ignored" if data.get("ignore_errors") else "failed",
                "runner_on_unreachable": "unreachable",
                "runner_on_skipped": "skipped",
            }[kind]
            duration = data.get("duration")
            if duration is None and key in starts:
                duration = time.time() - starts[key]
            summary.tasks.append(
                {
                    "host": host,
                    "task": task,
                    # the same task on several hosts: they ran it together (one task, not one a host in turn)
                    "uuid": data.get("task_uuid", ""),
                    "action": data.get("task_action", ""),
                    "status": status,
                    "duration_s": round(float(duration or 0.0), 3),
                }
            )
            msg = ""
            if status in ("failed", "unreachable"):
                msg = failure_message(res)
                summary.failures.append({"host": host, "task": task, "msg": msg[:2000]})
            if echo and status == "ok" and data.get("task_action", "").endswith("debug") and "msg" in res:
                # what a playbook says on purpose (the status table, training started, results)
                msg_lines = res["msg"] if isinstance(res["msg"], list) else str(res["msg"]).splitlines()
                for text in msg_lines:
                    echo(f"    {text}")
            elif echo and status != "skipped":
                # ansible-runner drops `changed` from a no_log result: ok or changed is unknown there
                shown = "done (no_log)" if status == "ok" and "censored" in res else status
                line = f"  {shown}: [{host}] ({float(duration or 0.0):.1f}s)"
                first = msg.strip().splitlines()[0] if msg.strip() else ""
                echo(line + (f" {first[:300]}" if first else ""))
            if (
                isinstance(res, dict)
                and res.get("run_name")
                and res.get("pid")
                and data.get("task_action", "").endswith("nanochat_train")
            ):
                # status and stop report the same run again: one entry per (host, run), the latest wins
                summary.runs[:] = [r for r in summary.runs if (r["host"], r["run_name"]) != (host, res.get("run_name"))]
                summary.runs.append(
                    {
                        "host": host,
                        "arm": res.get("arm") or ((res.get("invocation") or {}).get("module_args") or {}).get("arm"),
                        "run_name": res.get("run_name"),
                        "pid": res.get("pid"),
                        "log": res.get("log"),
                        "alive": res.get("alive"),
                        "changed": res.get("changed"),
                    }
                )
        elif kind == "runner_retry":
            line = (data.get("res") or {}).get("progress_line")
            if line:
                summary.progress.append(f"[{host}] {line}")
                if echo:
                    echo(f"  [{host}] {line}")
        elif kind == "playbook_on_play_start" and echo:
            echo(f"PLAY {data.get('play', '')}")
        elif kind == "playbook_on_task_start" and echo:
            echo(f"TASK {data.get('task', '')}")
        return True

    return handle


def failure_message(res: dict[str, Any]) -> str:
    """What a failed result says; for a loop, the failed items' own messages (not "One or more items failed")."""
    items = [r for r in res.get("results") or [] if isinstance(r, dict) and r.get("failed")]
    if items:
        return "\n".join(str(r.get("msg") or r.get("stderr") or "failed") for r in items)
    return str(res.get("msg") or res.get("stderr") or "")


def _runner_env(project_dir: str, env: dict[str, str]) -> dict[str, str]:
    """The environment ansible-runner gives ansible-playbook (no secrets: they go through a vars file)."""
    return {
        "ANSIBLE_CONFIG": os.path.join(project_dir, "ansible.cfg"),
        # the runner sets ANSIBLE_CALLBACK_PLUGINS to its own folder, which hides ansible.cfg's:
        # name the project's too, or arms_progress "cannot be loaded" (a warning in every run)
        "ANSIBLE_CALLBACK_PLUGINS": os.path.join(project_dir, "plugins", "callback"),
        "ANSIBLE_FORCE_COLOR": "0",
        "PYTHONUNBUFFERED": "1",
        "PATH": os.path.dirname(sys.executable) + os.pathsep + env.get("PATH", ""),
        # ansible-runner turns host key checking off unless told: keep ansible.cfg's (on)
        "ANSIBLE_HOST_KEY_CHECKING": env.get("ANSIBLE_HOST_KEY_CHECKING", "True"),
        OWNER_ENV: owner_token(),
    }


def host_stats(stats: dict[str, Any]) -> dict[str, HostStats]:
    """Per-host counts from ansible-runner's play recap stats."""
    hosts = set().union(*[set((stats.get(k) or {}).keys()) for k in STAT_KEYS]) if stats else set()
    return {
        host: HostStats(
            ok=(stats.get("ok") or {}).get(host, 0),
            changed=(stats.get("changed") or {}).get(host, 0),
            failed=(stats.get("failures") or {}).get(host, 0),
            unreachable=(stats.get("dark") or {}).get(host, 0),
            skipped=(stats.get("skipped") or {}).get(host, 0),
            rescued=(stats.get("rescued") or {}).get(host, 0),
            ignored=(stats.get("ignored") or {}).get(host, 0),
        )
        for host in sorted(hosts)
    }


def run_playbook(
    playbook: str,
    inventory: str,
    *,
    project_dir: str,
    private_data_dir: str | None = None,
    extravars: dict[str, Any] | None = None,
    tags: str | None = None,
    skip_tags: str | None = None,
    limit: str | None = None,
    check: bool = False,
    diff: bool = False,
    verbosity: int = 0,
    echo: Callable[[str], None] | None = None,
    env: dict[str, str] | None = None,
) -> Summary:
    """Run ``playbook`` against ``inventory`` with ansible-runner; never leaks secrets to its artifacts."""
    import ansible_runner

    env = dict(os.environ if env is None else env)
    project_dir = os.path.abspath(project_dir)
    playbook = os.path.abspath(os.path.join(project_dir, playbook))
    inventory = os.path.abspath(os.path.join(project_dir, inventory))
    summary = Summary(
        playbook=os.path.relpath(playbook, project_dir), inventory=os.path.relpath(inventory, project_dir)
    )
    pdd = private_data_dir or tempfile.mkdtemp(prefix="arms-runner-")
    os.makedirs(pdd, exist_ok=True)
    os.chmod(pdd, 0o700)
    extra_secret_vars, secret_values = secrets_from_env(env)
    timeline_file = os.path.join(pdd, "timeline.json")
    cmdline: list[str] = []
    if check:
        cmdline.append("--check")
    if diff:
        cmdline.append("--diff")
    started = time.time()
    with (
        cancel_on_signals() as (cancelled, signalled),
        secrets_vars_file(extra_secret_vars) as vars_file,
        env_without(list(SECRET_ENV) + list(NON_SECRET_ENV)),
    ):
        if vars_file:
            cmdline += ["-e", f"@{vars_file}"]
        result = ansible_runner.run(
            private_data_dir=pdd,
            project_dir=project_dir,
            playbook=playbook,
            inventory=inventory,
            extravars=extravars or {},
            tags=tags,
            skip_tags=skip_tags,
            limit=limit,
            verbosity=verbosity,
            # the guard runs ansible-playbook (binary=): runner then leaves the playbook to the command line
            cmdline=shlex.join([*cmdline, playbook]),
            envvars={**_runner_env(project_dir, env), "ARMS_TIMELINE_FILE": timeline_file},
            quiet=True,
            event_handler=_event_handler(summary, echo),
            cancel_callback=cancelled,
            binary=GUARD,
            suppress_env_files=True,
        )
    summary.elapsed_s = round(time.time() - started, 2)
    summary.status = "canceled" if signalled() else result.status
    summary.rc = result.rc
    summary.hosts.update(host_stats(result.stats or {}))
    summary.idle = read_timeline(timeline_file)
    try:
        summary.stdout = result.stdout.read()
    except (OSError, ValueError):
        summary.stdout = ""
    scrub(pdd, list(secret_values.values()))
    if private_data_dir is None:
        shutil.rmtree(pdd, ignore_errors=True)  # nobody asked to keep the artifacts
    return summary


def read_timeline(path: str) -> list[dict[str, Any]]:
    """The arms_timeline callback's per-host figures, or [] when the run launched nothing."""
    try:
        with open(path, encoding="utf-8") as fh:
            return list(json.load(fh).get("hosts", []))
    except (OSError, ValueError, AttributeError):
        return []


def write_summary(summary: Summary, path: str) -> None:
    from ansible.module_utils.arms_common import atomic_write_json

    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    atomic_write_json(path, summary.to_json())
