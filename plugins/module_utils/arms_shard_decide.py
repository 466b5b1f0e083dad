"""What a random-subset run does with the data dir it is given: the decision alone, from plain data.

:func:`arms_shard.prepare_random_subset` first reads what is there (a :class:`Found`), then asks
:func:`decide` (and, once the source is listed, :func:`decide_after_listing`) what to do, then does it.
Check mode predicts its result from the same :class:`Decision` (:func:`prediction`), so the prediction
and the run cannot drift apart. Nothing here reads or writes a file.

The five answers:

* ``prepare``: nothing of ours there; write the data dir.
* ``resume``: an interrupted run with the same parameters; finish it (its finished units and shards stay).
* ``repair``: the manifest is ours and matches, some shards are missing or damaged; rewrite them.
* ``reuse``: complete and verified; at most remove foreign parquet files (with force) and restore the
  validation artifact.
* ``replace``: made otherwise, or foreign files, and force is given; replace what a run owns, whole.
* refuse: :attr:`Decision.refusal` is the sentence, naming the caller's force switch (``force_hint``:
  ``pass --force`` on the CLI, the task's ``force: true`` in a playbook).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

PREPARE = "prepare"
RESUME = "resume"
REPAIR = "repair"
REUSE = "reuse"
REPLACE = "replace"
REFUSE = "refuse"

# the switch named by refusals when the caller says nothing else (the Python API: Options.force)
DEFAULT_FORCE_HINT = "pass force=true"


@dataclass(frozen=True)
class Wanted:
    """What the run would make: compared with what the data dir and the work dir say they hold."""

    kind: str
    source: dict[str, Any]
    params: dict[str, Any]
    data_dir: str
    work_dir: str
    val_dir: str


@dataclass(frozen=True)
class Found:
    """What the data dir and the work dir hold, read before anything is decided."""

    manifest: dict[str, Any] | None = None  # None: no manifest
    bad: tuple[str, ...] = ()  # shards of a matching manifest that are missing or damaged
    extra: tuple[str, ...] = ()  # parquet files a matching manifest does not name
    val_ok: bool = True  # the validation artifact matches the manifest's val shard
    state: dict[str, Any] | None = None  # the work dir's record of an interrupted run
    parquet: tuple[str, ...] = ()  # every parquet file in the data dir (read when there is no manifest)
    checked: str = ""  # how a matching manifest's shards were checked, in words ("12 verified")


@dataclass(frozen=True)
class Decision:
    action: str
    refusal: str = ""  # the sentence, when action is REFUSE
    remove: tuple[str, ...] = ()  # foreign parquet files to remove (force)
    repair: tuple[str, ...] = ()  # shards to rewrite
    restore_val: bool = False  # copy the val shard to the validation artifact again


def differences(old: dict[str, Any], new: dict[str, Any]) -> str:
    """``key old -> new`` for what differs (the sampling rule named in words), at most six."""
    keys = sorted(set(old) | set(new))
    diffs = [f"{k} {old.get(k)!r} -> {new.get(k)!r}" for k in keys if old.get(k) != new.get(k) and k != "rule"]
    if old.get("rule") != new.get("rule"):
        diffs.append("the sampling rule (made by another tool version)")
    return ", ".join(diffs[:6])


def foreign_refusal(data_dir: str, names: list[str] | tuple[str, ...], force_hint: str) -> str:
    shown = ", ".join(names[:3]) + (f" and {len(names) - 3} more" if len(names) > 3 else "")
    return (
        f"{data_dir} holds parquet files this run did not make ({shown}); nanochat would train on them too: "
        f"{force_hint} to replace the data dir whole, or choose another data_dir."
    )


def _refuse(sentence: str) -> Decision:
    return Decision(REFUSE, refusal=sentence)


def _matches(record: dict[str, Any], wanted: Wanted) -> bool:
    return record.get("source") == wanted.source and record.get("params") == wanted.params


def decide(found: Found, wanted: Wanted, *, force: bool, force_hint: str = DEFAULT_FORCE_HINT) -> Decision:
    """What to do with the data dir, before the source is read (a complete data dir never needs it)."""
    manifest = found.manifest
    if manifest is not None:
        if manifest.get("kind") != wanted.kind or not _matches(manifest, wanted):
            if force:
                return Decision(REPLACE)
            what = "; ".join(
                d
                for d in (
                    differences(manifest.get("source") or {}, wanted.source),
                    differences(manifest.get("params") or {}, wanted.params),
                )
                if d
            )
            return _refuse(
                f"{wanted.data_dir} holds shards made with other parameters "
                f"({what or 'kind ' + str(manifest.get('kind'))}); {force_hint} to replace it whole, or choose "
                "another data_dir."
            )
        if found.extra and not force:
            return _refuse(foreign_refusal(wanted.data_dir, found.extra, force_hint))
        if found.bad:
            return Decision(REPAIR, remove=found.extra, repair=found.bad)
        return Decision(REUSE, remove=found.extra, restore_val=not found.val_ok)
    state = found.state
    resume = state is not None and _matches(state, wanted)
    if state is not None and not resume:
        if force:
            return Decision(REPLACE)
        return _refuse(
            f"{wanted.data_dir} has an interrupted run with other parameters (its work dir {wanted.work_dir}: "
            f"{differences(state.get('params') or {}, wanted.params) or 'another source'}); {force_hint} to "
            "replace it, or re-run with the same parameters to finish it."
        )
    if found.parquet and not resume:
        if force:
            return Decision(REPLACE)
        return _refuse(foreign_refusal(wanted.data_dir, found.parquet, force_hint))
    return Decision(RESUME if resume else PREPARE)


def decide_after_listing(
    decision: Decision,
    found: Found,
    parts: list[list[Any]],
    wanted: Wanted,
    *,
    force: bool,
    force_hint: str = DEFAULT_FORCE_HINT,
) -> Decision:
    """A resume holds only while the source's files (path, size) are those the interrupted run started from."""
    if decision.action != RESUME or (found.state or {}).get("parts") == parts:
        return decision
    if force:
        return Decision(REPLACE)
    return _refuse(
        f"the source's files changed since the interrupted run in {wanted.work_dir} started; {force_hint} "
        "to start over from the current files."
    )


def prediction(decision: Decision, wanted: Wanted) -> tuple[bool, str]:
    """(changed, message) check mode reports for ``decision``, before any estimate of the work is added.

    For prepare, resume and replace the message is the start of a sentence the caller completes with
    its estimate of the shards to write.
    """
    data_dir = wanted.data_dir
    if decision.action == REUSE:
        fixes = [f"remove {n}" for n in decision.remove]
        if decision.restore_val:
            fixes.append(f"restore the validation artifact in {wanted.val_dir}")
        if not fixes:
            return False, f"{data_dir} is complete; nothing to do."
        return True, f"would {', '.join(fixes)}"
    if decision.action == REPAIR:
        bad = decision.repair
        shown = ", ".join(bad[:3]) + (f" and {len(bad) - 3} more" if len(bad) > 3 else "")
        removed = f"; remove {', '.join(decision.remove)}" if decision.remove else ""
        return True, f"would repair {data_dir}: rewrite {shown}{removed}"
    if decision.action == REFUSE:
        raise ValueError("a refusal has no prediction: raise its sentence")
    verb = {PREPARE: "write", RESUME: "resume", REPLACE: "replace"}[decision.action]
    return True, f"would {verb} {data_dir}"
