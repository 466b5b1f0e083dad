#!/usr/bin/env python3
"""nanochat-arms-run: run a playbook through ansible-runner for CI; progress, a JSON summary, an exit code.

  nanochat-arms-run site.yml -i inventory/lab/ --summary ci-summary.json
  nanochat-arms-run playbooks/collect.yml -i inventory/ -e arms_wandb_mode=offline --limit arm_top

Prints the play and task names, each host's result (ok/changed/failed/unreachable, seconds) and the
progress lines of long steps while the playbook runs; then a short table per host, the training
runs launched (with their log paths), the slowest tasks and the failures. ``--summary PATH`` writes
the same as JSON: per host ok/changed/failed/unreachable/skipped/rescued/ignored, every task result
with its duration, the runs launched, the failures, the progress lines, runner status and rc.

Secrets: WANDB_API_KEY, HF_TOKEN, HUGGINGFACE_HUB_TOKEN and the AZURE_STORAGE_* credentials are
taken from the environment and handed to the playbook as the credentials role's variables
(credentials_wandb_api_key, ...) through a 0600 file outside ansible-runner's private data dir; they
are never in runner's artifacts (which are also scrubbed of them), in what this prints or in the
summary. Do not pass secrets with -e: extra vars are stored in the private data dir.

Ending it (SIGTERM, SIGINT, or SIGKILL) ends the playbook and everything it started on the controller;
a secrets file a killed run left in the temporary folder is removed at the next start.

Exit status: 0 the run succeeded; 1 a host failed or was unreachable, or ansible-runner did not
report success; 2 bad arguments. The private data dir (artifacts: job events, stdout) is a
temporary folder removed after a successful run and kept, with its path printed, after a failed one,
unless --private-data-dir names one (always kept).
"""

from __future__ import annotations

import argparse
import os
import re
import shlex
import shutil
import sys
import tempfile
from collections.abc import Callable
from typing import Any

# the scripts folder holds _arms_path; when run as an installed console script it is not on sys.path
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import _arms_path  # noqa: F401
from ansible.module_utils.arms_common import ArmsError, atomic_write_json, human_seconds
from arms_runner import SECRET_ENV, Summary, clean_stale, run_playbook, secrets_from_env

PROG = "nanochat-arms-run"
REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
MASK = "********"
ANSI = re.compile(r"\x1b\[[0-9;]*[A-Za-z]")  # ansible colours its errors: ansible-runner gives it a tty


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(
        prog=PROG,
        description=(__doc__ or "").splitlines()[0].split(": ", 1)[-1],
        epilog="Secrets come from the environment only (see the top of scripts/nanochat_arms_run.py).",
    )
    ap.add_argument("playbook", help="the playbook, e.g. site.yml or playbooks/collect.yml")
    ap.add_argument("-i", "--inventory", required=True, help="inventory file or folder, e.g. inventory/")
    ap.add_argument("-t", "--tags", default=None, help="only tasks with these tags (comma-separated)")
    ap.add_argument("--skip-tags", default=None, help="skip tasks with these tags (comma-separated)")
    ap.add_argument("-l", "--limit", default=None, help="only these hosts or groups (ansible's --limit)")
    ap.add_argument(
        "-e",
        "--extra-vars",
        action="append",
        default=[],
        metavar="VARS",
        help="key=value pairs, a JSON/YAML mapping, or @FILE (YAML/JSON); repeatable; no secrets here",
    )
    ap.add_argument("-C", "--check", action="store_true", help="check mode: predict, change nothing")
    ap.add_argument("-D", "--diff", action="store_true", help="show the differences of changed files")
    ap.add_argument("--summary", default=None, metavar="PATH", help="write the JSON summary to PATH")
    ap.add_argument(
        "--private-data-dir",
        default=None,
        metavar="DIR",
        help="ansible-runner's private data dir (artifacts); default: a temporary one, kept only on failure",
    )
    ap.add_argument(
        "--project-dir",
        default=None,
        metavar="DIR",
        help="the nanochat-arms checkout (its ansible.cfg is used); default: the current folder when it has "
        "an ansible.cfg, else the checkout this script belongs to",
    )
    ap.add_argument("-v", "--verbose", action="count", default=0, help="ansible's verbosity (-v, -vv, ...)")
    return ap.parse_args(argv)


# ---------------------------------------------------------------------------------------------
# arguments
# ---------------------------------------------------------------------------------------------


def parse_extra_vars(items: list[str], cwd: str | None = None) -> dict[str, Any]:
    """-e values merged left to right: ``k=v k2=v2`` (strings), a YAML/JSON mapping, or ``@FILE``."""
    import yaml

    out: dict[str, Any] = {}
    for item in items:
        text = item.strip()
        if not text:
            continue
        if text.startswith("@"):
            path = os.path.join(cwd or os.getcwd(), os.path.expanduser(text[1:]))
            try:
                with open(path, encoding="utf-8") as fh:
                    data = yaml.safe_load(fh)
            except OSError as exc:
                raise ArmsError(
                    f"-e {item}: cannot read {path} ({exc.strerror}); give an existing vars file."
                ) from None
            except yaml.YAMLError as exc:
                raise ArmsError(f"-e {item}: {path} is not YAML or JSON ({exc}).") from None
            if data is None:
                continue
            if not isinstance(data, dict):
                raise ArmsError(f"-e {item}: {path} must hold a mapping of variables, not a {type(data).__name__}.")
            out.update(data)
        elif text.startswith("{"):
            try:
                data = yaml.safe_load(text)
            except yaml.YAMLError as exc:
                raise ArmsError(f"-e {item!r} is not a JSON/YAML mapping ({exc}).") from None
            if not isinstance(data, dict):
                raise ArmsError(f"-e {item!r} must be a mapping of variables.")
            out.update(data)
        else:
            try:
                words = shlex.split(text)
            except ValueError as exc:
                raise ArmsError(f"-e {item!r}: {exc}; quote values with spaces as key='a b'.") from None
            for word in words:
                key, sep, value = word.partition("=")
                if not sep or not key.isidentifier():
                    raise ArmsError(
                        f"-e {item!r}: {word!r} is not key=value; give variables as key=value, a JSON mapping, "
                        "or @FILE."
                    )
                out[key] = value
    return out


def project_dir(given: str | None) -> str:
    if given:
        if not os.path.isfile(os.path.join(given, "ansible.cfg")):
            raise ArmsError(f"--project-dir {given} has no ansible.cfg; give the nanochat-arms checkout.")
        return os.path.abspath(given)
    if os.path.isfile(os.path.join(os.getcwd(), "ansible.cfg")):
        return os.getcwd()
    return REPO


def existing(path: str, what: str) -> str:
    full = os.path.abspath(os.path.expanduser(path))
    if not os.path.exists(full):
        raise ArmsError(f"the {what} {path} does not exist (looked at {full}); give a path from the current folder.")
    return full


# ---------------------------------------------------------------------------------------------
# output
# ---------------------------------------------------------------------------------------------


def masker(secrets: list[str]) -> Callable[[str], str]:
    """A function replacing every secret value in a text with ********."""
    values = sorted({s for s in secrets if len(s) >= 6}, key=len, reverse=True)

    def mask(text: str) -> str:
        for value in values:
            text = text.replace(value, MASK)
        return text

    return mask


def _masked(obj: Any, mask: Callable[[str], str]) -> Any:
    if isinstance(obj, str):
        return mask(obj)
    if isinstance(obj, dict):
        return {k: _masked(v, mask) for k, v in obj.items()}
    if isinstance(obj, list):
        return [_masked(v, mask) for v in obj]
    return obj


def summary_json(summary: Summary, artifacts: str | None, mask: Callable[[str], str]) -> dict[str, Any]:
    data = summary.to_json()
    data["private_data_dir"] = artifacts
    return _masked(data, mask)


def final_table(summary: Summary, top: int = 5) -> list[str]:
    """The lines printed after the run: hosts, runs launched, slowest tasks, failures."""
    keys = ("ok", "changed", "failed", "unreachable", "skipped", "rescued", "ignored")
    width = max([len("HOST"), *(len(h) for h in summary.hosts)])
    lines = ["", f"{'HOST':<{width}}  " + "  ".join(f"{k:>{max(len(k), 3)}}" for k in keys)]
    for host, stats in summary.hosts.items():
        lines.append(f"{host:<{width}}  " + "  ".join(f"{getattr(stats, k):>{max(len(k), 3)}}" for k in keys))
    if not summary.hosts:
        lines.append("(no host ran a task)")
    if summary.runs:
        lines += ["", "RUNS LAUNCHED"]
        for run in summary.runs:
            arm = f" (arm {run['arm']})" if run.get("arm") else ""
            lines.append(f"  {run['host']}: {run['run_name']}{arm}, pid {run['pid']}, log {run.get('log')}")
    timed = sorted(summary.tasks, key=lambda t: t["duration_s"], reverse=True)[:top]
    if timed:
        lines += ["", "SLOWEST TASKS"]
        lines += [f"  {t['duration_s']:>8.1f}s  {t['host']}  {t['task']}" for t in timed]
    if summary.failures:
        lines += ["", "FAILURES"]
        lines += [
            f"  {f['host']} | {f['task']} | {f['msg'].strip().splitlines()[0] if f['msg'].strip() else ''}"
            for f in summary.failures
        ]
    return lines


def verdict(summary: Summary) -> str:
    bad = [h for h, s in summary.hosts.items() if s.failed or s.unreachable]
    if summary.ok:
        return f"OK: {summary.playbook} succeeded in {human_seconds(summary.elapsed_s)}"
    why = [f"ansible-runner status {summary.status} (rc {summary.rc})"]
    if bad:
        why.insert(0, f"failed or unreachable: {', '.join(bad)}")
    return f"FAILED: {summary.playbook}: {'; '.join(why)}"


# ---------------------------------------------------------------------------------------------
# main
# ---------------------------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)

    def out(line: str) -> None:
        print(mask(ANSI.sub("", line)), flush=True)

    mask = masker(list(secrets_from_env(dict(os.environ))[1].values()))
    # a run killed before (SIGKILL, a cancelled CI job) may have left its secrets file or its playbook
    for line in clean_stale():
        out(f"{PROG}: {line}")
    try:
        project = project_dir(args.project_dir)
        playbook = existing(args.playbook, "playbook")
        inventory = existing(args.inventory, "inventory")
        extravars = parse_extra_vars(args.extra_vars)
        leaked = sorted(k for k in extravars if k in SECRET_ENV.values())
        if leaked:
            raise ArmsError(
                f"-e sets {leaked[0]}, a secret: extra vars are stored in ansible-runner's private data dir; "
                "export it in the environment instead (see --help)."
            )
    except ArmsError as exc:
        print(f"{PROG}: error: {mask(str(exc))}", file=sys.stderr)
        return 2

    keep = args.private_data_dir is not None
    pdd = os.path.abspath(args.private_data_dir) if keep else tempfile.mkdtemp(prefix="nanochat-arms-run-")
    out(
        f"{PROG}: {os.path.relpath(playbook)} on {os.path.relpath(inventory)}" + (" (check mode)" if args.check else "")
    )
    try:
        summary = run_playbook(
            playbook,
            inventory,
            project_dir=project,
            private_data_dir=pdd,
            extravars=extravars,
            tags=args.tags,
            skip_tags=args.skip_tags,
            limit=args.limit,
            check=args.check,
            diff=args.diff,
            verbosity=args.verbose,
            echo=out,
        )
    except Exception as exc:  # ansible-runner missing, ansible-playbook not found, ...: a sentence, not a trace
        summary = Summary(playbook=os.path.relpath(playbook, project), inventory=os.path.relpath(inventory, project))
        summary.status = "error"
        summary.failures.append({"host": "", "task": "", "msg": f"{type(exc).__name__}: {exc}"})
        out(f"{PROG}: ansible-runner could not run the playbook: {type(exc).__name__}: {exc}")

    for line in final_table(summary):
        out(line)
    if summary.idle:  # the arms_timeline callback's lines: what each GPU host's time before training went to
        out("")
        out("GPU time before training, per host (from first contact to the first step line):")
        for row in summary.idle:
            out(f"  {row['line']}")
    if not summary.ok and not summary.failures and summary.stdout.strip():
        # no task failed: a syntax error, a missing role, no inventory... ansible's own words say what
        out("")
        out("ANSIBLE OUTPUT (last lines)")
        for line in summary.stdout.strip().splitlines()[-20:]:
            out(f"  {line}")
    kept = keep or not summary.ok
    if args.summary:
        try:
            path = os.path.abspath(args.summary)
            os.makedirs(os.path.dirname(path), exist_ok=True)
            atomic_write_json(path, summary_json(summary, pdd if kept else None, mask))
        except OSError as exc:
            print(f"{PROG}: error: cannot write the summary {args.summary} ({exc.strerror}).", file=sys.stderr)
            return 1
    out("")
    out(verdict(summary))
    if args.summary:
        out(f"summary: {os.path.abspath(args.summary)}")
    if kept:
        out(f"artifacts: {pdd}")
    else:
        shutil.rmtree(pdd, ignore_errors=True)
    return 0 if summary.ok else 1


if __name__ == "__main__":
    sys.exit(main())
