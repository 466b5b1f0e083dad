"""Run a playbook through ansible-runner and summarise it (the CI entry and the integration tests).

ansible-runner writes the environment it was started with to ``artifacts/<ident>/command`` and the
envvars/extravars it was given to ``env/``. So secrets never reach it that way: the known secret
variables are taken out of the environment for the run and handed to the playbook through a 0600
vars file outside the private data dir, deleted afterwards; the artifacts are then scrubbed of
every secret value as a second line of defence.

This runs on the controller only (it imports ansible_runner); modules never import it.
"""

from __future__ import annotations

import json
import os
import shutil
import stat
import sys
import tempfile
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


@contextmanager
def secrets_vars_file(extra: dict[str, str]) -> Iterator[str | None]:
    """A 0600 vars file in a 0700 folder, removed when the run ends."""
    if not extra:
        yield None
        return
    folder = tempfile.mkdtemp(prefix="arms-secrets-")
    path = os.path.join(folder, "secrets.json")
    try:
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
    cmdline: list[str] = []
    if check:
        cmdline.append("--check")
    if diff:
        cmdline.append("--diff")
    started = time.time()
    with (
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
            cmdline=" ".join(cmdline) if cmdline else None,
            envvars={
                "ANSIBLE_CONFIG": os.path.join(project_dir, "ansible.cfg"),
                # the runner sets ANSIBLE_CALLBACK_PLUGINS to its own folder, which hides ansible.cfg's:
                # name the project's too, or arms_progress "cannot be loaded" (a warning in every run)
                "ANSIBLE_CALLBACK_PLUGINS": os.path.join(project_dir, "plugins", "callback"),
                "ANSIBLE_FORCE_COLOR": "0",
                "PYTHONUNBUFFERED": "1",
                "PATH": os.path.dirname(sys.executable) + os.pathsep + env.get("PATH", ""),
            },
            quiet=True,
            event_handler=_event_handler(summary, echo),
            suppress_env_files=True,
        )
    summary.elapsed_s = round(time.time() - started, 2)
    summary.status = result.status
    summary.rc = result.rc
    stats = result.stats or {}
    hosts = set().union(*[set((stats.get(k) or {}).keys()) for k in STAT_KEYS]) if stats else set()
    for host in sorted(hosts):
        summary.hosts[host] = HostStats(
            ok=(stats.get("ok") or {}).get(host, 0),
            changed=(stats.get("changed") or {}).get(host, 0),
            failed=(stats.get("failures") or {}).get(host, 0),
            unreachable=(stats.get("dark") or {}).get(host, 0),
            skipped=(stats.get("skipped") or {}).get(host, 0),
            rescued=(stats.get("rescued") or {}).get(host, 0),
            ignored=(stats.get("ignored") or {}).get(host, 0),
        )
    try:
        summary.stdout = result.stdout.read()
    except (OSError, ValueError):
        summary.stdout = ""
    scrub(pdd, list(secret_values.values()))
    if private_data_dir is None:
        shutil.rmtree(pdd, ignore_errors=True)  # nobody asked to keep the artifacts
    return summary


def write_summary(summary: Summary, path: str) -> None:
    from ansible.module_utils.arms_common import atomic_write_json

    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    atomic_write_json(path, summary.to_json())
