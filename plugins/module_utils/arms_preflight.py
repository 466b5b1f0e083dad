"""Preflight: refuse arms that are not comparable, before any GPU time is spent.

Two halves. ``host_facts`` runs on every arm host and reads what is really there: the nanochat
commit and TF32 state, the tokenizer's checksums, the data dir against its manifest, the files
nanochat itself will read (asked from nanochat's own code in the venv), the tokens the arm holds,
GPUs, disk and credentials. ``compare`` runs once on the controller over every host's facts and
returns one sentence per problem: the host, what differs, and what to run.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from ansible.module_utils.arms_budget import (
    compare_budgets,
    held_tokens,
    planned_tokens,
    scaling_params,
    validate_hyperparameters,
)
from ansible.module_utils.arms_command import train_flags
from ansible.module_utils.arms_common import ArmsError, human_bytes, load_env_file, playbook_command
from ansible.module_utils.arms_eval_bundle import bundle_problems, check_bundle
from ansible.module_utils.arms_manifest import read_manifest, sha256_file, verify_data_dir
from ansible.module_utils.arms_packing import budget_line, compare_passes, short_tokens, with_passes
from ansible.module_utils.arms_patch import tf32_plan
from ansible.module_utils.arms_rowgroups import check_ranks, row_group_rows
from ansible.module_utils.arms_rowgroups import nanochat_files as rowgroup_files

VAL_NAME = "shard_val.parquet"
# ask nanochat's own code which files it will read, from the checkout, with the venv
NANOCHAT_FILES_PROBE = (
    "import json, inspect\n"
    "from nanochat import dataset\n"
    "files = dataset.list_parquet_files()\n"
    "print(json.dumps([str(f) for f in files]))\n"
)


def repair(tag: str, host: str, inventory: str | None = None) -> str:
    # facts of a host that runs several arms go by host/arm (arms_family.fact_key): the repair is the host's
    return playbook_command("repair", inventory, tags=tag, limit=host.split("/")[0])


def _git_head(checkout: str) -> str | None:
    proc = subprocess.run(["git", "-C", checkout, "rev-parse", "HEAD"], capture_output=True, text=True)
    return proc.stdout.strip() if proc.returncode == 0 else None


def _tf32_state(checkout: str) -> str:
    try:
        with open(os.path.join(checkout, "nanochat", "common.py"), encoding="utf-8", newline="") as fh:
            plan = tf32_plan(fh.read())
    except FileNotFoundError:
        return "missing"
    except ArmsError:
        return "unknown"
    return "needs_patch" if plan.changed else plan.state


def _tokenizer(base_dir: str) -> dict[str, str]:
    folder = os.path.join(base_dir, "tokenizer")
    if not os.path.isdir(folder):
        return {}
    return {
        name: sha256_file(os.path.join(folder, name))
        for name in sorted(os.listdir(folder))
        if os.path.isfile(os.path.join(folder, name))
    }


# what nanochat's listing depends on, besides the data dir's entries: the code that lists and the base dir
LISTING_CODE = ("nanochat/dataset.py", "nanochat/common.py")
FILES_CACHE_DIR = os.path.join("~", ".cache", "nanochat-arms", "preflight")
FILES_CACHE_KEEP = 32


def _listing_key(checkout: str, venv: str, base_dir: str, data_dir: str) -> str | None:
    """A key for nanochat's answer: its listing code, the venv, the base dir and the data dir's entries."""
    try:
        code = [sha256_file(os.path.join(checkout, rel)) for rel in LISTING_CODE]
        entries = sorted(os.listdir(data_dir)) if os.path.isdir(data_dir) else []
        python = os.stat(os.path.join(venv, "bin", "python"))
    except OSError:
        return None
    raw = json.dumps([code, os.path.realpath(base_dir), data_dir, entries, python.st_ino, python.st_mtime_ns])
    return hashlib.sha256(raw.encode()).hexdigest()


def nanochat_files(
    checkout: str, venv: str, base_dir: str, data_dir: str | None = None, cache_dir: str | None = FILES_CACHE_DIR
) -> dict[str, Any]:
    """The parquet files nanochat's own dataset code lists, run in its venv with this base dir.

    Asking nanochat costs seconds (it imports torch). With ``data_dir`` and ``cache_dir``, its last answer
    is kept under a key of everything the answer depends on (the listing code's bytes, the venv, the base
    dir, the data dir's entries) and given again while that key holds: a re-run on a converged host does
    not ask again, a new, removed or renamed file, another venv or an edited dataset.py does.
    """
    key = _listing_key(checkout, venv, base_dir, data_dir) if data_dir is not None and cache_dir else None
    cache = os.path.join(os.path.expanduser(cache_dir), f"{key}.json") if key and cache_dir else None
    if cache is not None:
        try:
            with open(cache, encoding="utf-8") as fh:
                return {"ok": True, "files": json.load(fh)["files"], "cached": True}
        except (OSError, ValueError, KeyError, TypeError):
            pass
    answer = _ask_nanochat_files(checkout, venv, base_dir)
    if cache is not None and answer["ok"]:
        try:
            folder = os.path.dirname(cache)
            os.makedirs(folder, mode=0o700, exist_ok=True)
            tmp = f"{cache}.tmp{os.getpid()}"
            with open(tmp, "w", encoding="utf-8") as fh:
                json.dump({"files": answer["files"]}, fh)
            os.replace(tmp, cache)
            kept = sorted((os.path.join(folder, n) for n in os.listdir(folder)), key=os.path.getmtime)
            for stale in kept[:-FILES_CACHE_KEEP]:  # old answers (other data dirs, earlier listings) go
                os.unlink(stale)
        except OSError:
            pass
    return answer


def _ask_nanochat_files(checkout: str, venv: str, base_dir: str) -> dict[str, Any]:
    env = {**os.environ, "NANOCHAT_BASE_DIR": base_dir, "PYTHONDONTWRITEBYTECODE": "1"}
    python = os.path.join(venv, "bin", "python")
    try:
        proc = subprocess.run(
            [python, "-c", NANOCHAT_FILES_PROBE], cwd=checkout, env=env, capture_output=True, text=True, timeout=300
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        return {"ok": False, "error": str(exc)}
    if proc.returncode != 0:
        lines = [ln for ln in proc.stderr.strip().splitlines() if ln.strip()]
        return {"ok": False, "error": lines[-1] if lines else f"exit {proc.returncode}"}
    try:
        files = json.loads(proc.stdout.strip().splitlines()[-1])
    except (ValueError, IndexError):
        return {"ok": False, "error": f"unexpected answer {proc.stdout.strip()[:200]!r}"}
    return {"ok": True, "files": files}


def gpu_count() -> int | None:
    if not shutil.which("nvidia-smi"):
        return None
    proc = subprocess.run(["nvidia-smi", "-L"], capture_output=True, text=True)
    if proc.returncode != 0:
        return 0
    return sum(1 for line in proc.stdout.splitlines() if line.startswith("GPU "))


def host_facts(
    *,
    checkout: str,
    venv: str,
    base_dir: str,
    data_dir: str,
    env_file: str | None,
    check_gpus: bool,
) -> dict[str, Any]:
    facts: dict[str, Any] = {
        "commit": _git_head(checkout),
        "tf32": _tf32_state(checkout),
        "tokenizer": _tokenizer(base_dir),
        "data_dir": data_dir,
        "base_dir": base_dir,
    }
    try:
        manifest = read_manifest(data_dir)
    except ArmsError as exc:
        manifest = None
        facts["manifest_error"] = str(exc)
    facts["manifest"] = manifest is not None
    if manifest is not None:
        ver = verify_data_dir(data_dir, manifest)
        facts["verify"] = {"ok": len(ver.ok), "bad": ver.bad, "extra": ver.extra, "summary": ver.summary()}
        facts["manifest_files"] = [s["name"] for s in manifest["shards"]]
        facts["params"] = manifest.get("params", {})
        try:
            facts["held"] = held_tokens(manifest, data_dir)
        except Exception as exc:  # an unreadable shard must not hide the other checks
            facts["held"] = {"tokens": 0, "rule": f"could not estimate: {exc}"}
    present = sorted(f for f in os.listdir(data_dir) if f.endswith(".parquet")) if os.path.isdir(data_dir) else []
    if present:
        last = present[-1]
        facts["last_file"] = last
        facts["last_sha256"] = sha256_file(os.path.join(data_dir, last))
    facts["row_groups"] = _row_groups(data_dir)
    facts["nanochat"] = nanochat_files(checkout, venv, base_dir, data_dir)
    facts["free_bytes"] = shutil.disk_usage(base_dir if os.path.isdir(base_dir) else os.path.expanduser("~")).free
    facts["gpus"] = gpu_count() if check_gpus else None
    facts["wandb_key"] = bool(load_env_file(env_file).get("WANDB_API_KEY"))
    facts["eval_bundle"] = check_bundle(base_dir)
    return facts


def _row_groups(data_dir: str) -> dict[str, list[int]] | str:
    """Rows of each row group of every file nanochat reads, from the footers only (or why they are unreadable)."""
    try:
        return {os.path.basename(p): row_group_rows(p) for p in rowgroup_files(data_dir)}
    except Exception as exc:  # an unreadable footer must not hide the other checks
        return f"could not read the parquet footers: {exc}"


def check_rank_shares(host: str, arm: str, f: Mapping[str, Any], world_size: int) -> tuple[list[str], list[str]]:
    """(problems, warnings): every rank of the arm's world gets row groups from its training files and its val file."""
    footers = f.get("row_groups")
    if not isinstance(footers, dict):
        return ([f"{host} ({arm}): {footers}; re-run the arm's data step."] if footers else []), []
    result = check_ranks(list(footers), world_size, footers=footers)
    return (
        [f"{host} ({arm}): {p}" for p in result["problems"]],
        [f"{host} ({arm}): {w}" for w in result["warnings"]],
    )


def check_eval_bundle(
    facts: Mapping[str, Mapping[str, Any]],
    arm_of_host: Sequence[tuple[str, str]],
    reference: Mapping[str, Any] | None,
    inventory: str | None,
) -> list[str]:
    """Every arm host holds the CPU node's eval bundle, whole (``reference`` is given when the CORE metric is on)."""
    if not reference:
        return []
    held = [(host, arm, dict(facts[host].get("eval_bundle") or {})) for arm, host in arm_of_host]
    return bundle_problems(dict(reference), held, playbook_command("data", inventory, tags="eval"))


def checkpoint_bytes(depth: int) -> int:
    """A rough floor for one checkpoint: model weights + two AdamW moments in fp32."""
    return scaling_params(depth) * 4 * 3


def check_commits(
    facts: Mapping[str, Mapping[str, Any]], arm_hosts: Sequence[str], pin_sha: str | None, inventory: str | None
) -> list[str]:
    """The same nanochat commit (the pin) and TF32 state on every arm host."""
    problems: list[str] = []
    for host in arm_hosts:
        f = facts[host]
        if pin_sha and f.get("commit") != pin_sha:
            problems.append(
                f"{host}: nanochat is at {str(f.get('commit'))[:12]} but the experiment pins {pin_sha[:12]}; "
                f"move it with: {repair('checkout', host, inventory)}"
            )
        if f.get("tf32") in ("needs_patch", "unknown", "missing"):
            what = {
                "needs_patch": "still sets TF32 through the new fp32_precision API (torch.compile will crash)",
                "unknown": "sets TF32 in a way the TF32 role does not know",
                "missing": "has no nanochat/common.py",
            }[f["tf32"]]
            problems.append(f"{host}: nanochat/common.py {what}; repair with: {repair('tf32', host, inventory)}")
    # facts every host of an arm must agree on: (fact, how hosts differ, a value as shown, repair tag, what to do)
    agree: list[tuple[str, str, Callable[[Any], str], str, str]] = [
        (
            "commit",
            "are at different nanochat commits",
            lambda v: str(v)[:12],
            "checkout",
            "put them all at the pin with",
        ),
        ("tf32", "differ in their TF32 patch state", str, "tf32", "run"),
    ]
    for key, differ, show, tag, advice in agree:
        if len({facts[h].get(key) for h in arm_hosts}) > 1:
            problems.append(
                f"arm hosts {differ} ("
                + ", ".join(f"{h}: {show(facts[h].get(key))}" for h in arm_hosts)
                + f"); {advice}: {repair(tag, 'gpu', inventory)}"
            )
    return problems


def check_arm_settings(arms: Mapping[str, Mapping[str, Any]]) -> list[str]:
    """Arms set nothing of their own but their data (and group and run name; an expanded family member
    also its family and sweep, a placed arm its GPUs: arms_family)."""
    allowed = {"group", "run_name", "data", "family", "sweep", "gpus"}
    problems = []
    for arm, spec in arms.items():
        odd = sorted(set(spec) - allowed)
        if odd:
            problems.append(
                f"arm {arm} sets {', '.join(odd)} of its own; arms may differ only in their data: move "
                "model settings to experiment.model (shared by every arm)."
            )
    return problems


def check_world_sizes(
    arms: Mapping[str, Any], hosts_of: Mapping[str, Sequence[str]], model: Mapping[str, Any]
) -> list[str]:
    """Every arm trains on the same number of GPUs."""
    world = {arm: int(model["gpus_per_node"]) * len(hosts_of.get(arm, [])) for arm in arms}
    if len(set(world.values())) <= 1:
        return []
    return [
        "arms train on different numbers of GPUs ("
        + ", ".join(f"{a}: {w}" for a, w in world.items())
        + "), so their batches and step counts differ: give every arm's host group the same number of hosts."
    ]


def check_hyperparameters(
    arms: Mapping[str, Any], hosts_of: Mapping[str, Sequence[str]], model: Mapping[str, Any]
) -> list[str]:
    """nanochat's batch rules hold for every arm's world size."""
    extra_flags = dict(model.get("extra_flags") or {})
    problems = []
    for arm in arms:
        try:
            validate_hyperparameters(
                gpus_per_node=int(model["gpus_per_node"]),
                nnodes=len(hosts_of.get(arm, [])),
                device_batch_size=int(model["device_batch_size"]),
                total_batch_size=int(model["total_batch_size"]),
                max_seq_len=int(extra_flags.get("max-seq-len", extra_flags.get("max_seq_len", 2048))),
                depth=int(model["depth"]),
            )
        except ArmsError as exc:
            problems.append(f"arm {arm}: {exc}")
    return problems


def check_flags(arms: Mapping[str, Mapping[str, Any]], model: Mapping[str, Any]) -> list[str]:
    """Every arm would launch base_train with the same flags (the run name aside)."""
    flag_sets = {}
    for arm, spec in arms.items():
        flags = train_flags(
            depth=int(model["depth"]),
            run_name=spec.get("run_name", "dummy"),
            device_batch_size=int(model["device_batch_size"]),
            total_batch_size=int(model["total_batch_size"]),
            extra_flags=model.get("extra_flags") or {},
        )
        flags.pop("run", None)
        flag_sets[arm] = json.dumps(flags, sort_keys=True)
    if len(set(flag_sets.values())) > 1:
        return [f"arms would launch with different base_train flags: {flag_sets}"]
    return []


def check_tokenizers(
    facts: Mapping[str, Mapping[str, Any]], arm_hosts: Sequence[str], inventory: str | None
) -> list[str]:
    """The same tokenizer files on every arm host."""
    copy = playbook_command("tokenizer", inventory)
    problems = []
    reference_tok = None
    for host in arm_hosts:
        tok = facts[host].get("tokenizer") or {}
        if not tok:
            problems.append(
                f"{host}: no tokenizer in {facts[host].get('base_dir')}/tokenizer; train it once on the CPU "
                f"node and copy it with: {copy}"
            )
            continue
        if reference_tok is None:
            reference_tok = (host, tok)
        elif tok != reference_tok[1]:
            problems.append(
                f"{host}: its tokenizer files differ from {reference_tok[0]}'s (checksums of "
                f"{', '.join(sorted(set(tok) | set(reference_tok[1])))}); copy the one tokenizer to every arm "
                f"host with: {copy}"
            )
    return problems


def check_nanochat_reads(host: str, arm: str, f: Mapping[str, Any], inventory: str | None) -> list[str]:
    """nanochat's own code lists exactly the manifest's files, in the arm's data dir."""
    nano = f.get("nanochat", {})
    if not nano.get("ok"):
        return [
            f"{host} ({arm}): could not ask nanochat which files it reads ({nano.get('error')}); check "
            f"the venv with: {repair('deps', host, inventory)}"
        ]
    reads = [os.path.basename(p) for p in nano["files"]]
    dirs = sorted({os.path.dirname(p) for p in nano["files"]})
    if dirs and dirs != [os.path.normpath(f["data_dir"])]:
        return [
            f"{host} ({arm}): nanochat will read {', '.join(dirs)}, not the arm's data dir "
            f"{f['data_dir']} (e.g. a base_data_climbmix folder, which newer commits prefer); "
            "move that folder away or pin a commit that reads base_data."
        ]
    if reads != sorted(f.get("manifest_files", [])):
        unexpected = sorted(set(reads) - set(f.get("manifest_files", [])))
        absent = sorted(set(f.get("manifest_files", [])) - set(reads))
        return [
            f"{host} ({arm}): the files nanochat will read differ from the manifest"
            + (f"; not in the manifest: {', '.join(unexpected[:5])}" if unexpected else "")
            + (f"; not read: {', '.join(absent[:5])}" if absent else "")
            + ". Remove stray parquet files from the data dir or re-run the arm's data step."
        ]
    return []


def check_host_data(host: str, arm: str, f: Mapping[str, Any], inventory: str | None) -> list[str]:
    """One arm host's data dir: it has a manifest, matches it, and is what nanochat reads."""
    if not f.get("manifest"):
        return [
            f"{host} ({arm}): {f.get('data_dir')} has no manifest.json "
            f"{'(' + f['manifest_error'] + ') ' if f.get('manifest_error') else ''}so its shards cannot be "
            "trusted; fetch or transfer the arm's data with site.yml (or playbooks/data.yml)."
        ]
    problems = []
    ver = f.get("verify", {})
    if ver.get("bad"):
        problems.append(
            f"{host} ({arm}): the data dir does not match its manifest ({ver.get('summary')}); re-run the "
            "arm's download or transfer, which fetches only what is bad."
        )
    return problems + check_nanochat_reads(host, arm, f, inventory)


def val_reference(facts: Mapping[str, Mapping[str, Any]], arm_hosts: Sequence[str]) -> tuple[str, Any] | None:
    """(host, sha256) of the first arm host with a manifest whose last file is the shared val shard."""
    for host in arm_hosts:
        f = facts[host]
        if f.get("manifest") and f.get("last_file") == VAL_NAME:
            return host, f.get("last_sha256")
    return None


def check_val_shard(host: str, arm: str, f: Mapping[str, Any], reference: tuple[str, Any] | None) -> list[str]:
    """The shared validation shard is the host's last file in sort order, with the reference host's bytes."""
    last = f.get("last_file")
    if last != VAL_NAME:
        return [
            f"{host} ({arm}): the last file in sort order is {last}, not the shared validation shard "
            f"{VAL_NAME}, so this arm would validate on its own data; place the shared val shard with "
            "site.yml (playbooks/data.yml)."
        ]
    if reference is not None and f.get("last_sha256") != reference[1]:
        return [
            f"{host} ({arm}): its {VAL_NAME} differs from {reference[0]}'s (sha256 "
            f"{str(f.get('last_sha256'))[:12]} vs {str(reference[1])[:12]}); every arm must validate on the "
            "same shard: re-run playbooks/data.yml."
        ]
    return []


def check_data(
    facts: Mapping[str, Mapping[str, Any]], arm_of_host: Sequence[tuple[str, str]], inventory: str | None
) -> list[str]:
    """Every arm host's data: it matches its manifest, nanochat reads exactly it, the same val shard is last."""
    reference = val_reference(facts, [host for _, host in arm_of_host])
    problems = []
    for arm, host in arm_of_host:
        f = facts[host]
        problems += check_host_data(host, arm, f, inventory)
        if f.get("manifest"):
            problems += check_val_shard(host, arm, f, reference)
    return problems


def arm_measurements(
    facts: Mapping[str, Mapping[str, Any]],
    arms: Mapping[str, Any],
    hosts_of: Mapping[str, Sequence[str]],
    measured: Mapping[str, Any] | None,
) -> dict[str, dict[str, Any]]:
    """Per arm with a manifest: {"host", "budget" (nanochat_data_budget's, measured on the arm's first host) or
    None, "why" (why there is none), "error" (a problem sentence when the measurement failed)}.

    ``measured``: host -> what nanochat_data_budget returned there (its registered result) or its budget;
    a host missing, skipped, or in check mode without a cached measurement has none.
    """
    out: dict[str, dict[str, Any]] = {}
    for arm in arms:
        hosts = hosts_of.get(arm, [])
        if not hosts or not facts[hosts[0]].get("manifest"):
            continue
        host = hosts[0]
        result = (measured or {}).get(host)
        entry: dict[str, Any] = {"host": host, "budget": None, "why": None, "error": None}
        if not isinstance(result, Mapping) or not result:
            entry["why"] = f"{host} was not asked"
        elif "loader_tokens_per_pass" in result:
            entry["budget"] = dict(result)
        elif result.get("skipped"):
            entry["why"] = f"skipped on {host}"
        elif result.get("failed"):
            entry["why"] = f"the measurement failed on {host}"
            # a host without a tokenizer already has its problem sentence (check_tokenizers)
            if facts[host].get("tokenizer"):
                entry["error"] = (
                    f"{host} ({arm}): its data budget could not be measured with nanochat's loader: "
                    f"{str(result.get('msg') or 'no message').strip()}"
                )
        elif isinstance(result.get("budget"), Mapping):
            entry["budget"] = dict(result["budget"])
        else:
            entry["why"] = f"check mode on {host} (a real run measures it)"
        out[arm] = entry
    return out


def _estimated_line(row: Mapping[str, Any], why: str | None) -> str:
    return (
        f"{row['name']}: about {short_tokens(row['tokens_held'])} tokens held (estimated), {row['epochs']:.2f} passes "
        f"if every token held were trained on; not measured with nanochat's loader ({why or 'no measurement'})"
    )


def data_budget(
    facts: Mapping[str, Mapping[str, Any]],
    arms: Mapping[str, Any],
    hosts_of: Mapping[str, Sequence[str]],
    model: Mapping[str, Any],
    *,
    commit_date: str | None,
    allow_unequal_repeats: bool,
    repeat_tolerance: float,
    measured: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """The arms' passes over their data, with ``plan`` (the tokens the run needs) and ``lines`` (one per arm).

    Measured (``source: measured``): every compared arm's first host measured its data with nanochat's own
    loader (:func:`arm_measurements`): passes = tokens needed / tokens the loader yields a pass, compared by
    ``arms_packing.compare_passes``. When any arm has no measurement (check mode without a cached one, a
    failure), every arm falls back to the estimate (``source: estimated``, ``arms_budget.compare_budgets``:
    tokens needed / tokens held, one for one), and a warning says so. ArmsError when the plan cannot be made
    or the arms would repeat their data differently.
    """
    plan = planned_tokens(
        depth=int(model["depth"]),
        total_batch_size=int(model["total_batch_size"]),
        extra_flags=model.get("extra_flags") or {},
        commit_date=commit_date,
    )
    found = arm_measurements(facts, arms, hosts_of, measured)
    kw = {"tolerance": repeat_tolerance, "allow_unequal_repeats": allow_unequal_repeats}
    if found and all(m["budget"] is not None for m in found.values()):
        budgets = {arm: with_passes(m["budget"], plan["tokens"]) for arm, m in found.items()}
        budget = compare_passes(budgets, **kw)
        budget["lines"] = [budget_line(arm, b) for arm, b in budgets.items()]
        budget["source"] = "measured"
    else:
        rows = []
        for arm in found:
            held = (facts[found[arm]["host"]].get("held") or {}).get("tokens", 0)
            rows.append({"name": arm, "tokens_needed": plan["tokens"], "tokens_held": held})
        budget = compare_budgets(rows, **kw)
        budget["lines"] = [_estimated_line(r, found[r["name"]]["why"]) for r in budget["arms"]]
        budget["source"] = "estimated"
        if found:
            budget["warnings"].append(
                "the data budget is an estimate (tokens needed / tokens held, one for one; nanochat's loader crops "
                "part of every arm, at a rate of its own): "
                + "; ".join(f"{arm}: {m['why']}" for arm, m in found.items() if m["budget"] is None)
            )
    budget["plan"] = plan
    return budget


def check_resources(
    host: str,
    arm: str,
    f: Mapping[str, Any],
    *,
    model: Mapping[str, Any],
    run_name: str,
    check_gpus: bool,
    inventory: str | None,
) -> list[str]:
    """GPUs, disk for a checkpoint and the W&B key on one arm host."""
    problems = []
    if check_gpus:
        gpus = f.get("gpus")
        if gpus is None or gpus < int(model["gpus_per_node"]):
            problems.append(
                f"{host} ({arm}): nvidia-smi sees {gpus if gpus is not None else 'no'} GPUs but the arm asks "
                f"for {model['gpus_per_node']} per node; fix the node or experiment.model.gpus_per_node."
            )
    need_disk = checkpoint_bytes(int(model["depth"]))
    if f.get("free_bytes", 0) < need_disk:
        problems.append(
            f"{host} ({arm}): {human_bytes(f.get('free_bytes', 0))} free under {f.get('base_dir')}, less than "
            f"the {human_bytes(need_disk)} a depth-{model['depth']} checkpoint needs; free some disk."
        )
    if run_name != "dummy" and not f.get("wandb_key"):
        problems.append(
            f"{host} ({arm}): no W&B key in the secrets env file, but the run {run_name} logs to "
            f"W&B; give WANDB_API_KEY and run: {repair('wandb', host, inventory)}"
        )
    return problems


def compare(
    facts: Mapping[str, Mapping[str, Any]],
    *,
    arms: Mapping[str, Mapping[str, Any]],
    hosts_of: Mapping[str, Sequence[str]],
    model: Mapping[str, Any],
    pin_sha: str | None,
    commit_date: str | None,
    check_gpus: bool,
    allow_unequal_repeats: bool = False,
    repeat_tolerance: float = 0.1,
    inventory: str | None = None,
    measured: Mapping[str, Any] | None = None,
    eval_bundle: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """Every reason the arms are not comparable, as sentences; plus warnings and the budget table.

    ``inventory`` is the ``-i ...`` part of the commands the sentences name (``-i inventory/`` when not given).
    ``measured``: host -> nanochat_data_budget's result there (see :func:`data_budget`).
    ``eval_bundle`` (the CPU node's bundle, when the CORE metric is on) must be on every arm host.
    """
    arm_hosts = [h for arm in arms for h in hosts_of.get(arm, [])]
    arm_of_host = [(arm, host) for arm in arms for host in hosts_of.get(arm, [])]
    problems = [
        *check_commits(facts, arm_hosts, pin_sha, inventory),
        *check_arm_settings(arms),
        *check_world_sizes(arms, hosts_of, model),
        *check_hyperparameters(arms, hosts_of, model),
        *check_flags(arms, model),
        *check_tokenizers(facts, arm_hosts, inventory),
    ]
    problems += check_data(facts, arm_of_host, inventory)
    problems += check_eval_bundle(facts, arm_of_host, eval_bundle, inventory)
    warnings: list[str] = []
    for arm, host in arm_of_host:
        world = int(model["gpus_per_node"]) * len(hosts_of.get(arm, []))
        starving, uneven = check_rank_shares(host, arm, facts[host], world)
        problems += starving
        warnings += uneven
    budget: dict[str, Any] = {}
    problems += [m["error"] for m in arm_measurements(facts, arms, hosts_of, measured).values() if m["error"]]
    try:
        budget = data_budget(
            facts,
            arms,
            hosts_of,
            model,
            commit_date=commit_date,
            allow_unequal_repeats=allow_unequal_repeats,
            repeat_tolerance=repeat_tolerance,
            measured=measured,
        )
        warnings.extend(budget.get("warnings", []))
    except ArmsError as exc:
        problems.append(f"data budget: {exc}")
    for arm, host in arm_of_host:
        run_name = arms[arm].get("run_name", "dummy")
        problems += check_resources(
            host, arm, facts[host], model=model, run_name=run_name, check_gpus=check_gpus, inventory=inventory
        )
    return {"problems": problems, "warnings": warnings, "budget": budget, "ok": not problems}
