"""Results side by side: one row per arm from its rank-0 log (and data manifest), a table and a plot.

The collect playbook fetches each arm's rank-0 training log (and its data manifest) to the
controller; this turns them into what a person compares:

- :func:`build_rows`: per arm, tokens seen (steps done x total batch size), epochs (tokens seen /
  training tokens the arm holds, :func:`arms_budget.held_tokens` on its manifest), the crop rate and
  passes over the data (tokens seen / tokens nanochat's loader yields a pass: the arm host's measurement,
  ``arms_packing.measure_budget``, which collect.yml fetches beside the log), final and
  minimum validation bpb, the last CORE metric, wall time and tok/sec (the median of the step
  lines: the first, compiling steps do not drag it down). The log is read by
  :func:`arms_logs.parse_log` only; it works on partial logs (mid-training, no end lines yet) and
  on an arm without a step line (the row says so).
- :func:`markdown_table`: the rows as a markdown table.
- :func:`plot`: a PNG with two panels, training loss and validation bpb against step, every arm on
  the same axes (matplotlib, Agg, imported only here: only the controller draws).
- :func:`write_results`: ``results.md`` (the table, the plot, a line per arm with its log and
  whether it finished) and ``loss.png`` in one folder, each written atomically; given the arms'
  seed families, also the noise band under the table (:func:`noise_markdown`, the sentences and
  band table of :mod:`arms_noise`) and ``noise_band.png`` (its band plot); and under the table each
  arm's measured MFU and what the run costs at it (:mod:`arms_mfu`).

Steps done is the last step line's step + 1: nanochat prints ``step i/N`` after optimizer step i
(0-based), so a finished run's last line is ``step N-1/N``.
"""

from __future__ import annotations

import datetime as _dt
import io
import os
import statistics
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, fields
from typing import Any

from ansible.module_utils.arms_budget import held_tokens
from ansible.module_utils.arms_common import ArmsError, atomic_write_bytes, human_bytes, human_seconds
from ansible.module_utils.arms_logs import parse_log
from arms_mfu import CostBasis, measure_rows, mfu_lines
from arms_noise import PLOT_PNG as NOISE_PNG
from arms_noise import band_table, family_stats, render_band_plot, sentences

RESULTS_MD = "results.md"
PLOT_PNG = "loss.png"
MISSING = "—"
COLUMNS = (
    "arm",
    "data",
    "tokens seen",
    "epochs",
    "crop rate",
    "passes over data",
    "final val bpb",
    "min val bpb",
    "CORE",
    "wall time",
    "tok/sec",
    "status",
)


@dataclass
class ArmInput:
    """What is known about one arm on the controller.

    ``log_text`` is the rank-0 training log (None: there is no log, e.g. the arm was not launched).
    ``data`` is a short description of the arm's data (derived from ``manifest`` when empty).
    ``facts`` (all optional): ``total_batch_size``, ``tokens_planned``, ``started`` and ``ended``
    (ISO 8601 or seconds since the epoch; both give the wall time), ``host``. A run's pid file
    record (``started``, ``host``) works as facts. ``budget`` is the arm's data measured with nanochat's
    own loader (``arms_packing.measure_budget``: ``loader_tokens_per_pass``, ``crop_rate``,
    ``tokens_held``, ``max_seq_len``), as the arm host caches it beside its data.
    """

    arm: str
    log_text: str | None = None
    data: str = ""
    host: str = ""
    manifest: Mapping[str, Any] | None = None
    facts: Mapping[str, Any] | None = None
    log_path: str = ""
    budget: Mapping[str, Any] | None = None


def as_arm_input(arm: ArmInput | Mapping[str, Any]) -> ArmInput:
    """An :class:`ArmInput` from itself or from a mapping with the same keys (``log`` = ``log_text``)."""
    if isinstance(arm, ArmInput):
        return arm
    if not isinstance(arm, Mapping):
        raise ArmsError(f"an arm must be a mapping with at least 'arm' and 'log_text', not {arm!r}.")
    data = dict(arm)
    if "log" in data and "log_text" not in data:
        data["log_text"] = data.pop("log")
    known = {f.name for f in fields(ArmInput)}
    unknown = sorted(set(data) - known)
    if unknown:
        raise ArmsError(f"unknown arm keys {', '.join(unknown)}; expected some of {', '.join(sorted(known))}.")
    if not data.get("arm"):
        raise ArmsError("every arm needs a name ('arm').")
    return ArmInput(**data)


# ---------------------------------------------------------------------------------------------
# rows
# ---------------------------------------------------------------------------------------------


def describe_data(manifest: Mapping[str, Any] | None) -> str:
    """A short description of an arm's data from its manifest (source, shards, size)."""
    if not manifest:
        return ""
    kind = str(manifest.get("kind") or "data")
    source = manifest.get("source") or {}
    params = manifest.get("params") or {}
    if kind == "azure_blob":
        where = str(source.get("container") or "?")
        if source.get("prefix"):
            where += "/" + str(source["prefix"]).strip("/")
        text = f"Azure {where}"
    elif kind == "random_subset":
        text = str(source.get("dataset") or "?")
        if params.get("ratio") is not None:
            text += f" random {float(params['ratio']):.1%}"
        if params.get("seed") is not None:
            text += f" seed {params['seed']}"
    else:
        text = kind
    totals = manifest.get("totals") or {}
    shards = totals.get("shards", len(manifest.get("shards") or []))
    size = totals.get("bytes")
    text += f", {shards} shards"
    if size:
        text += f" {human_bytes(float(size))}"
    return text


def _timestamp(value: Any) -> float | None:
    """Seconds since the epoch from an ISO 8601 string or a number; None when absent or unreadable."""
    if value is None or value == "":
        return None
    if isinstance(value, (int, float)):
        return float(value)
    try:
        stamp = _dt.datetime.fromisoformat(str(value).strip().replace("Z", "+00:00"))
    except ValueError:
        return None
    if stamp.tzinfo is None:
        stamp = stamp.replace(tzinfo=_dt.UTC)
    return stamp.timestamp()


def _positive_int(value: Any) -> int | None:
    try:
        number = int(value)
    except (TypeError, ValueError):
        return None
    return number if number > 0 else None


def _held(arm: ArmInput) -> dict[str, Any] | None:
    if not arm.manifest:
        return None
    try:
        return held_tokens(arm.manifest)
    except (KeyError, TypeError, ValueError, AttributeError) as exc:
        raise ArmsError(
            f"the data manifest of arm {arm.arm} is not a nanochat-arms manifest ({type(exc).__name__}: {exc}); "
            "fetch the arm's manifest.json again or leave it out."
        ) from None


def _measured(arm: ArmInput) -> dict[str, Any] | None:
    """The arm's measured budget (tokens a pass, crop rate), checked; None when there is none."""
    if not arm.budget:
        return None
    budget = dict(arm.budget)
    try:
        per_pass = int(budget["loader_tokens_per_pass"])
        crop = float(budget["crop_rate"])
    except (KeyError, TypeError, ValueError):
        per_pass, crop = 0, -1.0
    if per_pass <= 0 or not 0.0 <= crop <= 1.0:
        raise ArmsError(
            f"the data budget of arm {arm.arm} is not one nanochat_data_budget measured (it needs "
            "loader_tokens_per_pass > 0 and a crop_rate between 0 and 1); fetch the arm's budget.json again or "
            "leave it out."
        )
    budget["loader_tokens_per_pass"], budget["crop_rate"] = per_pass, crop
    return budget


def _wall_time(facts: Mapping[str, Any], parsed: Mapping[str, Any] | None) -> tuple[float | None, str | None]:
    """The run's wall time in seconds and where it comes from (the run's facts first, then the log)."""
    started, ended = _timestamp(facts.get("started")), _timestamp(facts.get("ended"))
    if started is not None and ended is not None and ended >= started:
        return ended - started, "run facts (ended - started)"
    if parsed and parsed["total_time_min"] is not None:
        return parsed["total_time_min"] * 60.0, "log (nanochat's total training time)"
    return None, None


def _run_state(
    facts: Mapping[str, Any], parsed: Mapping[str, Any] | None, last: Mapping[str, Any] | None
) -> tuple[str, str]:
    """(state, status): no_log, finished, not_started, partial, or stale (whatever the log says)."""
    if facts.get("stale"):
        # made from something else than the experiment declares now (nanochat_train's identity check)
        changes = "; ".join(str(c) for c in facts.get("identity_changes") or []) or "its identity differs"
        return "stale", f"STALE, not this experiment's result: {changes}"
    if parsed is None:
        return "no_log", "no log"
    if parsed["finished"]:
        return "finished", "finished"
    if last is None:
        return "not_started", "no step line yet"
    return "partial", f"at step {last['step']}/{last['total']} ({last['pct']:.2f}%), not finished"


def build_row(
    arm: ArmInput | Mapping[str, Any],
    total_batch_size: int | None = None,
    parsed: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """The comparison row of one arm (see :func:`build_rows` for the keys).

    ``parsed`` is :func:`arms_logs.parse_log` of the arm's log when the caller has it already.
    """
    arm = as_arm_input(arm)
    facts = dict(arm.facts or {})
    tbs = _positive_int(facts.get("total_batch_size")) or _positive_int(total_batch_size)
    if arm.log_text is None:
        parsed = None
    elif parsed is None:
        parsed = parse_log(arm.log_text)
    steps = parsed["steps"] if parsed else []
    last = parsed["last_step"] if parsed else None

    steps_done = last["step"] + 1 if last else (0 if parsed else None)
    num_iterations = parsed["num_iterations"] if parsed else None
    tokens_seen = steps_done * tbs if (steps_done is not None and tbs) else None
    tokens_planned = _positive_int(facts.get("tokens_planned"))
    if tokens_planned is None and num_iterations and tbs:
        tokens_planned = num_iterations * tbs

    held = _held(arm)
    tokens_held = held["tokens"] if held and held.get("tokens") else None
    epochs = tokens_seen / tokens_held if (tokens_seen is not None and tokens_held) else None
    measured = _measured(arm)
    per_pass = measured["loader_tokens_per_pass"] if measured else None

    rates = [s["tok_per_sec"] for s in steps if s.get("tok_per_sec") is not None]
    core = parsed["core"] if parsed else []

    wall_s, wall_source = _wall_time(facts, parsed)
    finished = bool(parsed and parsed["finished"])
    state, status = _run_state(facts, parsed, last)

    return {
        "arm": arm.arm,
        "data": arm.data or describe_data(arm.manifest),
        "host": arm.host or str(facts.get("host") or ""),
        "log_path": arm.log_path,
        "state": state,
        "status": status,
        "finished": finished,
        "steps_done": steps_done,
        "num_iterations": num_iterations,
        "total_batch_size": tbs,
        "tokens_seen": tokens_seen,
        "tokens_planned": tokens_planned,
        "tokens_held": tokens_held,
        "tokens_held_rule": held.get("rule") if held else None,
        "epochs": epochs,
        "crop_rate": measured["crop_rate"] if measured else None,
        "loader_tokens_per_pass": per_pass,
        "measured_tokens_held": measured.get("tokens_held") if measured else None,
        "measured_max_seq_len": measured.get("max_seq_len") if measured else None,
        "passes": tokens_seen / per_pass if (tokens_seen is not None and per_pass) else None,
        "passes_planned": tokens_planned / per_pass if (tokens_planned and per_pass) else None,
        "loader_epoch": last.get("epoch") if last else None,
        "final_val_bpb": parsed["last_val_bpb"] if parsed else None,
        "final_val_step": parsed["val"][-1][0] if parsed and parsed["val"] else None,
        "min_val_bpb": parsed["min_val_bpb"] if parsed else None,
        "core": core[-1][1] if core else None,
        "core_step": core[-1][0] if core else None,
        "wall_time_s": wall_s,
        "wall_time_source": wall_source,
        "tok_per_sec": statistics.median(rates) if rates else None,
        "last_loss": last.get("loss") if last else None,
        "step_lines": parsed["step_lines"] if parsed else 0,
    }


def build_rows(
    arms: Sequence[ArmInput | Mapping[str, Any]],
    total_batch_size: int | None = None,
    parsed: Mapping[str, Mapping[str, Any]] | None = None,
) -> list[dict[str, Any]]:
    """One row per arm, in the order given.

    Keys: arm, data, host, log_path, state (finished | partial | not_started | no_log), status (a
    short sentence for the table), finished, steps_done, num_iterations, total_batch_size,
    tokens_seen (steps done x total batch size; None without a batch size), tokens_planned,
    tokens_held and tokens_held_rule (from the manifest; None without one), epochs (tokens seen /
    tokens held), crop_rate, loader_tokens_per_pass, measured_tokens_held and measured_max_seq_len (the
    arm's measured budget; None without one), passes (tokens seen / tokens the loader yields a pass) and
    passes_planned (tokens planned / the same), loader_epoch (the loader's epoch on the last step line),
    final_val_bpb and final_val_step (the last validation line), min_val_bpb, core and core_step (the last CORE line),
    wall_time_s and wall_time_source (run facts' ended - started, else nanochat's total training
    time), tok_per_sec (median over the step lines), last_loss, step_lines. Unknown values are None.

    ``total_batch_size`` (tokens per optimizer step, the experiment's) applies to every arm whose
    facts do not name their own. ``parsed``: {arm: parse_log result} for logs already parsed.
    """
    inputs = [as_arm_input(a) for a in arms]
    if not inputs:
        raise ArmsError("no arms to compare: give at least one arm with its log.")
    names = [a.arm for a in inputs]
    dupes = sorted({n for n in names if names.count(n) > 1})
    if dupes:
        raise ArmsError(f"arm {dupes[0]} is given twice; give each arm once.")
    parsed = parsed or {}
    return [build_row(a, total_batch_size, parsed.get(a.arm)) for a in inputs]


# ---------------------------------------------------------------------------------------------
# table
# ---------------------------------------------------------------------------------------------


def format_count(n: float | None) -> str:
    """1234567 -> 1.23M (three significant digits, K/M/B/T)."""
    if n is None:
        return MISSING
    for div, unit in ((1e12, "T"), (1e9, "B"), (1e6, "M"), (1e3, "K")):
        if abs(n) >= div:
            value = n / div
            return f"{value:.3g}{unit}" if value < 1000 else f"{value:,.0f}{unit}"
    return f"{n:.0f}"


def _fmt(value: float | None, spec: str) -> str:
    return MISSING if value is None else format(value, spec)


def _cell(text: str) -> str:
    return str(text).replace("|", "\\|").replace("\n", " ").strip() or MISSING


def table_cells(row: Mapping[str, Any]) -> list[str]:
    """The table's cells of one row, in :data:`COLUMNS` order."""
    seen = format_count(row.get("tokens_seen"))
    if row.get("tokens_seen") is not None and row.get("tokens_planned") and not row.get("finished"):
        seen += f" of {format_count(row['tokens_planned'])}"
    passes = _fmt(row.get("passes"), ".2f")
    if row.get("passes") is not None and row.get("passes_planned") is not None and not row.get("finished"):
        passes += f" of {row['passes_planned']:.2f}"
    core = _fmt(row.get("core"), ".4f")
    if row.get("core") is not None and row.get("core_step") is not None:
        core += f" (step {row['core_step']})"
    return [
        _cell(row.get("arm", "")),
        _cell(row.get("data", "")),
        seen,
        _fmt(row.get("epochs"), ".2f"),
        _fmt(row.get("crop_rate"), ".1%"),
        passes,
        _fmt(row.get("final_val_bpb"), ".4f"),
        _fmt(row.get("min_val_bpb"), ".4f"),
        core,
        MISSING if row.get("wall_time_s") is None else human_seconds(row["wall_time_s"]),
        _fmt(row.get("tok_per_sec"), ",.0f"),
        _cell(row.get("status", "")),
    ]


def markdown_table(rows: Sequence[Mapping[str, Any]]) -> str:
    """The rows as a markdown table (header, alignment line, one line per arm), ending in a newline."""
    right = set(COLUMNS) - {"arm", "data", "status"}  # figures are right-aligned
    lines = [
        "| " + " | ".join(COLUMNS) + " |",
        "| " + " | ".join("---:" if c in right else "---" for c in COLUMNS) + " |",
    ]
    lines += ["| " + " | ".join(table_cells(row)) + " |" for row in rows]
    return "\n".join(lines) + "\n"


# ---------------------------------------------------------------------------------------------
# plot
# ---------------------------------------------------------------------------------------------


def series(log: str | Mapping[str, Any] | None) -> dict[str, list[tuple[int, float]]]:
    """{"loss": [(step, training loss)], "val": [(step, validation bpb)]} of a log's text or parse_log result."""
    if not log:
        return {"loss": [], "val": []}
    parsed = parse_log(log) if isinstance(log, str) else log
    loss = [(s["step"], s["loss"]) for s in parsed["steps"] if s.get("loss") is not None]
    return {"loss": loss, "val": [(int(s), float(b)) for s, b in parsed["val"]]}


def render_plot(arms_series: Mapping[str, Mapping[str, Sequence[tuple[int, float]]]], title: str) -> bytes:
    """The PNG bytes of the two-panel plot (see :func:`plot`)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(12, 4.8), dpi=100, layout="constrained")
    FigureCanvasAgg(fig)
    ax_loss, ax_val = fig.subplots(1, 2)
    colors = [f"C{i % 10}" for i in range(len(arms_series))]
    for color, (name, data) in zip(colors, arms_series.items(), strict=True):
        loss = list(data.get("loss") or [])
        val = list(data.get("val") or [])
        label = name if (loss or val) else f"{name} (no step line yet)"
        ax_loss.plot([s for s, _ in loss], [v for _, v in loss], color=color, linewidth=1.0, label=label)
        ax_val.plot([s for s, _ in val], [v for _, v in val], color=color, marker="o", markersize=3, label=label)
    ax_loss.set_title("training loss")
    ax_loss.set_xlabel("step")
    ax_loss.set_ylabel("loss")
    ax_val.set_title("validation bpb")
    ax_val.set_xlabel("step")
    ax_val.set_ylabel("bits per byte")
    for ax in (ax_loss, ax_val):
        ax.grid(True, alpha=0.3)
        if arms_series:
            ax.legend()
    fig.suptitle(title)
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", metadata={"Software": None})
    return buffer.getvalue()


def plot(arms_series: Mapping[str, Mapping[str, Sequence[tuple[int, float]]]], path: str, title: str = "") -> str:
    """Write a PNG to ``path``: training loss (left) and validation bpb (right) against step.

    ``arms_series``: {arm: {"loss": [(step, loss)], "val": [(step, bpb)]}} (see :func:`series`);
    every arm on the same axes with the same color in both panels, a legend, ``title`` above.
    An arm without points is still in the legend ("no step line yet"). Written atomically.
    """
    data = render_plot(arms_series, title)
    atomic_write_bytes(path, data)
    return path


# ---------------------------------------------------------------------------------------------
# the results folder
# ---------------------------------------------------------------------------------------------


def arm_line(row: Mapping[str, Any]) -> str:
    """One markdown bullet per arm: its log, whether it finished, its data budget."""
    where = f" on {row['host']}" if row.get("host") else ""
    log = f"log `{row['log_path']}`" if row.get("log_path") else "log"
    if row["state"] == "no_log":
        text = f"no log yet (the arm was not launched, or its log was not fetched){where}"
    elif row["state"] == "finished":
        text = f"{log}{where}: finished after {row['steps_done']} steps"
    elif row["state"] == "not_started":
        text = f"{log}{where}: no step line yet (starting, or it stopped before its first step)"
    elif row["state"] == "stale":
        text = f"{log}{where}: {row['status']}"
    else:
        text = f"{log}{where}: not finished, {row['status'].split(', not finished')[0]}"
    if row.get("tokens_held"):
        text += f"; holds about {format_count(row['tokens_held'])} training tokens ({row['tokens_held_rule']})"
    if row.get("loader_tokens_per_pass"):
        text += (
            f"; nanochat's loader yields {format_count(row['loader_tokens_per_pass'])} tokens a pass of "
            f"{format_count(row['measured_tokens_held'])} held (it crops {row['crop_rate']:.1%} at "
            f"T={row['measured_max_seq_len']}, measured on the arm's host)"
        )
    if row.get("loader_epoch"):
        text += f"; the loader was in epoch {row['loader_epoch']} at the last step line"
    return f"- **{row['arm']}**: {text}."


# ---------------------------------------------------------------------------------------------
# the noise band (issue 13): the rows' figures in arms_noise's shape
# ---------------------------------------------------------------------------------------------

NOISE_FIGURES = ("min_val_bpb", "final_val_bpb", "core")


def noise_figures(rows: Sequence[Mapping[str, Any]], families: Mapping[str, str | None]) -> list[dict[str, Any]]:
    """arms_noise's input, one per row: {name, family, min_val_bpb, final_val_bpb, core}.

    ``families`` is {arm: its seed family or None} (arms_family.seed_families, the arms_seed_families
    filter). A stale run's figures are left out (None): it is not this experiment's result, so it
    neither widens a band nor is compared with one.
    """
    out = []
    for row in rows:
        stale = row.get("state") == "stale"
        figures = {k: None if stale else row.get(k) for k in NOISE_FIGURES}
        out.append({"name": row["arm"], "family": families.get(row["arm"]), **figures})
    return out


def has_band(figures: Sequence[Mapping[str, Any]]) -> bool:
    """Some family has two or more values of some metric: there is a band to tabulate and draw."""
    return any(v is not None for entry in family_stats(figures).values() for k, v in entry.items() if k != "members")


def noise_markdown(figures: Sequence[Mapping[str, Any]], plot_name: str | None = NOISE_PNG) -> list[str]:
    """The noise band section of results.md: the rule, a sentence per comparison (or that no band was
    measured), each family's band table, and the band plot (``plot_name``, None when none was drawn)."""
    lines = [
        "## Noise band",
        "",
        "Arms that differ only in their data seed form a family; the spread (max - min) of its seeds is what "
        "changing the seed alone does. Another arm is beyond seed noise when its distance from the family's "
        "mean is larger than that spread.",
        "",
        *[f"- {text}." for text in sentences(figures)],
    ]
    if has_band(figures):
        lines += ["", band_table(figures).rstrip("\n")]
    if plot_name:
        lines += [
            "",
            f"![validation bpb against step: each seed family a band (min to max), other arms lines]({plot_name})",
        ]
    return lines


def results_markdown(
    experiment: str,
    rows: Sequence[Mapping[str, Any]],
    plot_name: str = PLOT_PNG,
    noise: Sequence[str] = (),
    mfu: Sequence[str] = (),
) -> str:
    """The content of results.md; ``noise`` the noise band section's lines (:func:`noise_markdown`), if any;
    ``mfu`` the measured MFU and cost lines under the table (:func:`arms_mfu.mfu_lines`' markdown), if any."""
    now = _dt.datetime.now(_dt.UTC).replace(microsecond=0).isoformat()
    batch = {r["total_batch_size"] for r in rows if r.get("total_batch_size")}
    batch_text = ", ".join(f"{b:,}" for b in sorted(batch)) if batch else "unknown"
    parts = [
        f"# Results: {experiment}",
        "",
        f"Collected {now}. Tokens seen = steps done x total batch size ({batch_text} tokens a step); "
        "epochs = tokens seen / training tokens the arm holds (estimated from its data manifest); "
        "crop rate = the share of the arm's tokens nanochat's loader crops away when it packs documents into "
        "rows, and passes over data = tokens seen / tokens the loader yields a pass (both measured with "
        "nanochat's own loader on the arm's host; 'of N' is the planned run); "
        "tok/sec is the median over the step lines; final val bpb is the last validation line so far.",
        "",
        markdown_table(rows).rstrip("\n"),
        "",
        *([*mfu, ""] if mfu else []),
        f"![training loss and validation bpb against step, all arms]({plot_name})",
        "",
        *([*noise, ""] if noise else []),
        "## Arms",
        "",
        *[arm_line(r) for r in rows],
        "",
    ]
    return "\n".join(parts)


def write_results(
    folder: str,
    experiment: str,
    arms: Sequence[ArmInput | Mapping[str, Any]],
    total_batch_size: int | None = None,
    families: Mapping[str, str | None] | None = None,
    cost: CostBasis | None = None,
) -> dict[str, Any]:
    """Write ``results.md`` and ``loss.png`` into ``folder``; {"markdown": path, "plot": path, "rows": rows,
    "noise": the noise band's sentences, "noise_plot": path or None, "mfu": :func:`arms_mfu.mfu_lines`}.

    Under the table: each arm's measured MFU and, with ``cost`` (the experiment's model and profiles,
    :class:`arms_mfu.CostBasis`), what the run and the other configuration cost in GPU-hours at it.

    ``families`` ({arm: seed family or None}, arms_family.seed_families) adds the noise band under
    the table, and ``noise_band.png`` when some family has a band (two seeds with validation points);
    without it there is no noise band section. Everything is computed before anything is written,
    and each file is written atomically, so bad input leaves the folder as it was.
    """
    if not experiment:
        raise ArmsError("the experiment needs a name (it titles the table and the plot).")
    inputs = [as_arm_input(a) for a in arms]
    parsed = {a.arm: parse_log(a.log_text) for a in inputs if a.log_text is not None}
    rows = build_rows(inputs, total_batch_size, parsed)
    curves = {a.arm: series(parsed.get(a.arm)) for a in inputs}
    png = render_plot(curves, experiment)
    noise: list[str] = []
    said: list[str] = []
    noise_png = None
    if families is not None:
        unknown = sorted(set(families) - {a.arm for a in inputs})
        if unknown:
            raise ArmsError(f"the seed families name arm {unknown[0]}, which is not among the arms collected.")
        figures = noise_figures(rows, families)
        if has_band(figures):
            fresh = {r["arm"]: curves[r["arm"]]["val"] for r in rows if r["state"] != "stale"}
            noise_png = render_band_plot(fresh, families, f"{experiment}: seed noise band")
        noise = noise_markdown(figures, NOISE_PNG if noise_png else None)
        said = sentences(figures)
    mfu = mfu_lines(measure_rows(rows, parsed, {a.arm: a.log_text for a in inputs}), cost, len(rows))
    md = results_markdown(experiment, rows, noise=noise, mfu=mfu["markdown"])
    try:
        os.makedirs(folder, exist_ok=True)
    except OSError as exc:
        raise ArmsError(f"cannot create the results folder {folder} ({exc.strerror}); give a writable --out.") from exc
    md_path = os.path.join(folder, RESULTS_MD)
    png_path = os.path.join(folder, PLOT_PNG)
    atomic_write_bytes(png_path, png)
    noise_path = os.path.join(folder, NOISE_PNG) if noise_png else None
    if noise_path and noise_png:
        atomic_write_bytes(noise_path, noise_png)
    atomic_write_bytes(md_path, md.encode("utf-8"))
    return {
        "markdown": md_path,
        "plot": png_path,
        "rows": rows,
        "noise": said,
        "noise_plot": noise_path,
        "mfu": mfu,
    }
