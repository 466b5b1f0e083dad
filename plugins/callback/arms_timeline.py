"""Each GPU host's paid-but-idle time in this run: from first contact to its arm's first step line.

At the end of a run that launched an arm (site.yml, train.yml), print one line per GPU host:

    GPU time before training, per host (from first contact to the first step line):
      top: reached 13:50:01, first step 13:53:40 (3m39s): setup 2m01s, data 35s, preflight 9s, launch 25s,
           checks 5s, waiting on other hosts 24s

and, when the environment names ``ARMS_TIMELINE_FILE``, write the same figures there as JSON (the CI
entry puts them in its summary). A host's time is split by what ran for it: setup (the host-setup
roles), data (download, transfer, val shard, tokenizer, eval bundle: tasks tagged so, including those delegated
to the CPU node on its behalf), preflight, launch (nanochat_train starting the run and waiting for
its first step line), checks (the inputs), and what is left: waiting on other hosts (held at a play's start,
or a task's in a play that is not free, while another host was still at work). Ansible's own work between a
host's tasks (reading the last result, templating the next task, starting the next play; with several hosts
in a free play, one controller serving them in turn) is counted with the task it leads to: then the host is
not waiting on another host but on its own next step. Gathering a host's facts is setup. Only what lies between first
contact and the first step line is counted (the status read after the launch is not). Work in the
background counts under the task the host was running: the Azure download that runs while the CUDA venv
installs is setup time, and only the wait that outlasts the setup is data time. A background setup job
(the venv's install started with poll 0, arms_overlap_setup) counts as setup for as long as it ran (its
command's delta) while the data's steps ran: those seconds are then both setup and data, and the line
says how many overlapped.
"""

from __future__ import annotations

import json
import os
import re
import time
from dataclasses import dataclass, field
from typing import Any

from ansible.plugins.callback import CallbackBase

DOCUMENTATION = """
name: arms_timeline
type: aggregate
short_description: each GPU host's time from first contact to its arm's first step line, broken down
description:
  - At the end of a run that launched an arm, print per GPU host what the time before training went to,
    and write it as JSON to the file named by the environment variable ARMS_TIMELINE_FILE when set.
requirements:
  - enabled in ansible.cfg (callbacks_enabled)
"""

SETUP_ROLES = frozenset(
    {
        "system_packages",
        "uv",
        "nanochat_checkout",
        "nanochat_crlf",
        "nanochat_venv",
        "nanochat_tf32",
        "arms_tools",
        "credentials",
    }
)
DATA_TAGS = frozenset({"download", "transfer", "val", "tokenizer", "prepare", "eval"})
CATEGORIES = ("setup", "data", "preflight", "launch", "checks")
LAUNCH_ACTION = "nanochat_train"
# Ansible's fact gathering: what the setup roles read of a host (its user dir, Python, OS)
FACT_ACTIONS = frozenset({"setup", "gather_facts"})
INCLUDE_ROLE = frozenset({"include_role", "import_role"})
# nanochat_train states that only read a run (status.yml, stop.yml, collect.yml): not a launch
READ_STATES = frozenset({"status", "stopped", "absent"})


def category(action: str, role: str | None, tags: list[str], args: dict[str, Any]) -> str:
    """What a task is for, as far as a GPU host's time goes."""
    short = action.split(".")[-1]
    if short == LAUNCH_ACTION and str(args.get("state", "started")) not in READ_STATES:
        return "launch"
    # the host's facts, a setup role's own tasks, and the task that includes one (its tags say where it was
    # used, not what for)
    if short in FACT_ACTIONS or role in SETUP_ROLES or (short in INCLUDE_ROLE and args.get("name") in SETUP_ROLES):
        return "setup"
    if "preflight" in tags:
        return "preflight"
    if DATA_TAGS.intersection(tags):
        return "data"
    return "checks"


def fmt_s(seconds: float) -> str:
    seconds = max(0, round(seconds))
    h, rest = divmod(seconds, 3600)
    m, s = divmod(rest, 60)
    if h:
        return f"{h}h{m:02d}m"
    return f"{m}m{s:02d}s" if m else f"{s}s"


def union_seconds(spans: list[tuple[float, float]]) -> float:
    """The time covered by these (start, end) spans, each second once however many cover it."""
    total, reach = 0.0, float("-inf")
    for start, end in sorted(spans):
        if end > reach:
            total += end - max(start, reach)
            reach = end
    return total


def delta_seconds(delta: Any) -> float | None:
    """A command result's delta ("0:00:18.612345") in seconds; None when it is not one."""
    match = re.fullmatch(r"(\d+):(\d{2}):(\d{2}(?:\.\d+)?)", str(delta or ""))
    if not match:
        return None
    hours, minutes, seconds = match.groups()
    return int(hours) * 3600 + int(minutes) * 60 + float(seconds)


@dataclass
class HostTimeline:
    """What one host did in this run: busy spans by category, first contact, the launch's outcome."""

    reached: float | None = None
    spans: dict[str, list[tuple[float, float]]] = field(default_factory=lambda: {cat: [] for cat in CATEGORIES})
    first_step: float | None = None  # when the launch task saw the first step line (this run started it)
    launch: str | None = None  # launched | already | failed
    last: float | None = None  # end of the host's last task
    tasks: list[tuple[float, float, str]] = field(default_factory=list)  # its own tasks, in the foreground

    def span(self, cat: str, start: float, end: float) -> None:
        if self.reached is None or start < self.reached:
            self.reached = start
        self.spans.setdefault(cat, []).append((start, max(start, end)))
        self.tasks.append((start, max(start, end), cat))
        self.last = end if self.last is None else max(self.last, end)

    def background(self, cat: str, start: float, end: float) -> None:
        """A job this host ran in the background (started with poll 0): its category's time while it ran."""
        self.spans.setdefault(cat, []).append((start, max(start, end)))

    def counted(
        self, end: float, barriers: list[float], others: list[tuple[float, float]]
    ) -> dict[str, list[tuple[float, float]]]:
        """The spans of each category between first contact and ``end``. A gap between two of the host's tasks
        is waiting on other hosts while a barrier in it held the host and another host (``others``: their
        tasks' spans) was still at work; the rest of the gap is Ansible's work towards the next task, which
        counts with that task."""
        spans = {cat: list(self.spans.get(cat, [])) for cat in CATEGORIES}
        lo = reach = self.reached if self.reached is not None else end
        for start, stop, cat in sorted(self.tasks):
            if start > reach:
                held = max((b for b in barriers if reach < b <= start), default=None)
                # held at a barrier: waiting until the last other host's task ended before it
                since = reach
                if held is not None:
                    since = max([reach] + [e for _, e in others if reach < e <= held])
                if start > since:
                    spans.setdefault(cat, []).append((since, start))
            reach = max(reach, stop)
        return {
            cat: [(max(a, lo), min(b, end)) for a, b in items if min(b, end) > max(a, lo)]
            for cat, items in spans.items()
        }

    def report(
        self, host: str, barriers: list[float] | None = None, others: list[tuple[float, float]] | None = None
    ) -> dict[str, Any]:
        """The host's figures: reached, first step, total, per category, and the waiting left over.
        ``barriers``: when every host was held for the slowest (a play's start, a task's start in a play
        that is not free); ``others``: the other hosts' tasks, (start, end)."""
        out: dict[str, Any] = {"host": host, "reached": self.reached, "first_step": self.first_step}
        out["launch"] = self.launch
        if self.reached is None or (self.first_step is None and self.launch == "already"):
            out["line"] = f"{host}: its arm's run was already running or finished before this run (nothing to wait for)"
            return out
        end = self.first_step if self.first_step is not None else (self.last or self.reached)
        total = end - self.reached
        spans = self.counted(end, barriers or [], others or [])
        busy = {cat: union_seconds(spans.get(cat, [])) for cat in CATEGORIES}
        parts = {cat: round(busy[cat], 1) for cat in CATEGORIES}
        # seconds when two things ran at once (the venv installing in the background while the data's steps ran)
        overlapped = sum(busy.values()) - union_seconds([sp for cat in CATEGORIES for sp in spans.get(cat, [])])
        waiting = max(0.0, total - sum(busy.values()) + overlapped)
        out.update(total_s=round(total, 1), seconds=parts, waiting_s=round(waiting, 1))
        out["overlapped_s"] = round(overlapped, 1)
        shown = ", ".join(f"{cat} {fmt_s(parts[cat])}" for cat in CATEGORIES if parts[cat] >= 0.5)
        if overlapped >= 0.5:
            shown += f" ({fmt_s(overlapped)} of them at once)"
        clock = time.strftime("%H:%M:%S", time.localtime(self.reached))
        if self.first_step is not None:
            head = f"first step {time.strftime('%H:%M:%S', time.localtime(end))}"
        else:
            head = f"NO first step line in this run (its launch {self.launch or 'did not run'}) by the end"
        out["line"] = (
            f"{host}: reached {clock}, {head} ({fmt_s(total)}): {shown}, waiting on other hosts {fmt_s(waiting)}"
        )
        return out


class Timeline:
    """Collects spans from callback events; the arithmetic, apart from Ansible's objects."""

    def __init__(self) -> None:
        self.hosts: dict[str, HostTimeline] = {}
        self._started: dict[tuple[str, str], float] = {}
        self._jobs: dict[tuple[str, str], float] = {}  # (host, job id): when the task that started it began
        self.barriers: list[float] = []  # when every host was held for the slowest

    def host(self, name: str) -> HostTimeline:
        return self.hosts.setdefault(name, HostTimeline())

    def barrier(self, now: float) -> None:
        """Every host waited until now for the slowest one (a play starts; a task starts in a play that is not free)."""
        self.barriers.append(now)

    def start(self, host: str, task_uuid: str, now: float) -> None:
        self._started[(host, task_uuid)] = now

    def end(
        self, host: str, task_uuid: str, cat: str, now: float, status: str, result: dict[str, Any] | None = None
    ) -> None:
        start = self._started.pop((host, task_uuid), None)
        if start is None or status == "skipped":
            return
        line = self.host(host)
        line.span(cat, start, now)
        self._job(host, cat, start, now, result or {})
        if cat == "launch":
            result = result or {}
            if status != "ok":
                line.launch = "failed"
            elif result.get("changed"):
                line.launch, line.first_step = "launched", now
            else:
                line.launch = "already"

    def _job(self, host: str, cat: str, start: float, now: float, result: dict[str, Any]) -> None:
        """A setup job started in the background, or its end (async_status with the command's delta)."""
        jid = result.get("ansible_job_id")
        if not jid or cat != "setup":
            return
        if result.get("started") and not result.get("finished"):
            self._jobs[(host, str(jid))] = start
            return
        began = self._jobs.pop((host, str(jid)), None)
        ran = delta_seconds(result.get("delta"))
        if began is not None and ran is not None:
            # it cannot have ended after the task that saw it end
            self.host(host).background(cat, began, min(began + ran, now))

    def launched_hosts(self) -> list[str]:
        return [h for h, t in self.hosts.items() if t.launch is not None]

    def report(self) -> list[dict[str, Any]]:
        return [self.hosts[h].report(h, self.barriers, self._others(h)) for h in self.launched_hosts()]

    def _others(self, host: str) -> list[tuple[float, float]]:
        return [(a, b) for name, line in self.hosts.items() if name != host for a, b, _ in line.tasks]


class CallbackModule(CallbackBase):
    CALLBACK_VERSION = 2.0
    CALLBACK_TYPE = "aggregate"
    CALLBACK_NAME = "arms_timeline"
    CALLBACK_NEEDS_ENABLED = True

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.timeline = Timeline()
        self._free = False  # the play running has the free strategy

    @staticmethod
    def _category(task: Any, result: dict[str, Any]) -> str:
        role = task._role.get_name(include_role_fqcn=False) if task._role else None
        # the arguments the module really got (the task's own may still be templates, e.g. state: "{{ x }}")
        args = (result.get("invocation") or {}).get("module_args") or task.args or {}
        return category(task.action or "", role, list(task.tags or []), dict(args))

    def v2_playbook_on_play_start(self, play: Any) -> None:
        self.timeline.barrier(time.time())
        self._free = str(play.strategy or "") == "free"

    def v2_playbook_on_task_start(self, task: Any, is_conditional: bool) -> None:
        # linear: a task starts once every host is done with the one before; free: once per host, no barrier
        if not self._free:
            self.timeline.barrier(time.time())

    def v2_runner_on_start(self, host: Any, task: Any) -> None:
        self.timeline.start(host.get_name(), task._uuid, time.time())

    def _end(self, result: Any, status: str) -> None:
        task = result._task
        self.timeline.end(
            result._host.get_name(),
            task._uuid,
            self._category(task, result._result),
            time.time(),
            status,
            result._result,
        )

    def v2_runner_on_ok(self, result: Any) -> None:
        self._end(result, "ok")

    def v2_runner_on_failed(self, result: Any, ignore_errors: bool = False) -> None:
        self._end(result, "ok" if ignore_errors else "failed")

    def v2_runner_on_unreachable(self, result: Any) -> None:
        self._end(result, "failed")

    def v2_runner_on_skipped(self, result: Any) -> None:
        self._end(result, "skipped")

    def v2_playbook_on_stats(self, stats: Any) -> None:
        rows = self.timeline.report()
        if not rows:
            return
        self._display.display("GPU time before training, per host (from first contact to the first step line):")
        for row in rows:
            self._display.display(f"  {row['line']}")
        path = os.environ.get("ARMS_TIMELINE_FILE")
        if path:
            tmp = f"{path}.tmp-{os.getpid()}"
            with open(tmp, "w", encoding="utf-8") as fh:
                json.dump({"hosts": rows}, fh, indent=2)
            os.replace(tmp, path)
