"""The noise band: is a difference between arms larger than what changing the random seed alone gives?

Controller-only (collect draws and writes it). Input is plain data, whatever builds the results
table: per-arm figures ``{"name", "family", "min_val_bpb", "final_val_bpb", "core"}`` (family: the
name of the arms that differ only in their seed, None for an arm of no family; any figure may be
None) and per-arm validation curves ``{arm: [(step, val_bpb), ...]}`` (what arms_logs.parse_log
gives as ``val``, the results table's ``series(...)["val"]``).

- :func:`family_stats`: per family with two or more values of a metric, n, mean, min, max, spread
  (max - min) and the sample standard deviation (n - 1 in the denominator).
- :func:`compare`: for every arm outside a family, its difference from the family's mean, in bpb (or
  CORE) and in units of the spread, and whether it is beyond seed noise (the rule: :func:`verdict`).
- :func:`sentences`: the plain sentences collect writes under the table.
- :func:`band_plot`: validation bpb against step, each family a shaded min-max band with its mean,
  every other arm a line.
"""

from __future__ import annotations

import io
import math
import statistics
from collections.abc import Mapping, Sequence
from typing import Any

from ansible.module_utils.arms_common import ArmsError, atomic_write_bytes

# metric -> (the word in a sentence, True when lower is better)
METRICS: dict[str, tuple[str, bool]] = {
    "min_val_bpb": ("bpb", True),
    "final_val_bpb": ("final bpb", True),
    "core": ("CORE", False),
}
PLOT_PNG = "noise_band.png"


def _families(results: Sequence[Mapping[str, Any]]) -> dict[str, list[Mapping[str, Any]]]:
    """{family: its members' results}, families and members in the order given."""
    out: dict[str, list[Mapping[str, Any]]] = {}
    for row in results:
        if not row.get("name"):
            raise ArmsError(f"every arm's figures need its name, not {dict(row)!r}.")
        if row.get("family"):
            out.setdefault(str(row["family"]), []).append(row)
    return out


def family_stats(results: Sequence[Mapping[str, Any]]) -> dict[str, dict[str, Any]]:
    """{family: {"members": [names], metric: stats or None}} for every family in ``results``.

    stats: {"n", "mean", "min", "max", "spread" (max - min), "sd" (sample standard deviation)} over
    the members that have a value; None when fewer than two do (no band for that metric).
    """
    out: dict[str, dict[str, Any]] = {}
    for family, rows in _families(results).items():
        entry: dict[str, Any] = {"members": [str(r["name"]) for r in rows]}
        for metric in METRICS:
            values = [float(r[metric]) for r in rows if r.get(metric) is not None]
            if len(values) < 2:
                entry[metric] = None
                continue
            entry[metric] = {
                "n": len(values),
                "mean": statistics.fmean(values),
                "min": min(values),
                "max": max(values),
                "spread": max(values) - min(values),
                "sd": statistics.stdev(values),
            }
        out[family] = entry
    return out


def verdict(diff: float, spread: float) -> str:
    """``beyond`` when |diff| > spread (strictly), else ``within``.

    The rule: an arm is beyond seed noise when its distance from the family's mean is larger than the
    whole spread (max - min) its seeds gave. Why the spread and not k standard deviations: with the 2
    to 5 seeds a pilot affords, the sample sd rests on 1 to 4 degrees of freedom and is itself
    uncertain by about half its value, while the spread is what changing the seed was actually seen
    to do, in the metric's own unit; it is also the band the plot draws, so sentence and picture
    agree: a "beyond" arm lies at least half a spread outside the band. (For n seeds the spread is at
    most sd x sqrt(2(n - 1)): for 2 or 3 seeds at most 2 sd, so this is never stricter than "2 sd"
    there; the table gives the sd beside it.) A spread of 0 (identical values) makes any non-zero
    difference "beyond"; the sentence then says the seeds gave identical values.
    """
    return "beyond" if abs(diff) > spread else "within"


def compare(results: Sequence[Mapping[str, Any]], metric: str = "min_val_bpb") -> list[dict[str, Any]]:
    """For every family with a band on ``metric`` and every arm outside it with a value: one comparison.

    {"arm", "family", "metric", "value", "mean", "diff" (arm - mean), "spread", "sd", "n", "units"
    (diff / spread; None for a zero spread), "better" (True/False; None when equal), "verdict"
    (beyond | within)}. Lower is better for bpb, higher for CORE.
    """
    if metric not in METRICS:
        raise ArmsError(f"metric {metric!r} is not one of {', '.join(METRICS)}.")
    lower_better = METRICS[metric][1]
    out = []
    for family, entry in family_stats(results).items():
        stats = entry[metric]
        if stats is None:
            continue
        for row in results:
            if row.get("family") == family or row.get(metric) is None:
                continue
            diff = float(row[metric]) - stats["mean"]
            better = None if diff == 0 else (diff < 0) == lower_better
            out.append(
                {
                    "arm": str(row["name"]),
                    "family": family,
                    "metric": metric,
                    "value": float(row[metric]),
                    "mean": stats["mean"],
                    "diff": diff,
                    "spread": stats["spread"],
                    "sd": stats["sd"],
                    "n": stats["n"],
                    "units": diff / stats["spread"] if stats["spread"] > 0 else None,
                    "better": better,
                    "verdict": verdict(diff, stats["spread"]),
                }
            )
    return out


def fmt(value: float) -> str:
    """A bpb or CORE difference as a person reads it: 3 decimals, 2 significant digits below 0.001."""
    value = abs(value)
    if value == 0:
        return "0"
    return f"{value:.3f}" if value >= 0.001 else f"{value:.2g}"


def sentence(comparison: Mapping[str, Any]) -> str:
    """ "top16.5 is 0.031 bpb better than random16.5 (seed spread 0.004): beyond seed noise"."""
    word = METRICS[comparison["metric"]][0]
    arm, family, spread = comparison["arm"], comparison["family"], fmt(comparison["spread"])
    if comparison["better"] is None:
        head = f"{arm} is level with {family} in {word}"
    else:
        head = (
            f"{arm} is {fmt(comparison['diff'])} {word} {'better' if comparison['better'] else 'worse'} than {family}"
        )
    text = f"{head} (seed spread {spread}): {comparison['verdict']} seed noise"
    if comparison["spread"] == 0:
        text += f" (the {comparison['n']} seeds of {family} gave identical values: check that the seeds were applied)"
    return text


def sentences(results: Sequence[Mapping[str, Any]], metrics: Sequence[str] = tuple(METRICS)) -> list[str]:
    """Every sentence collect writes: the comparisons per metric, and a "no noise band" line for each
    family without two values of the headline metric (min val bpb, or the first of ``metrics``).

    With no family at all: "no noise band was measured (no arm has several seeds)".
    """
    families = _families(results)
    if not families:
        return ["no noise band was measured (no arm has several seeds)"]
    stats = family_stats(results)
    out = []
    headline = metrics[0]
    for family, rows in families.items():
        if stats[family][headline] is None:
            have = sum(1 for r in rows if r.get(headline) is not None)
            if len(rows) == 1:
                out.append(f"no noise band was measured (one seed of {family})")
            else:
                verb = "has" if have == 1 else "have"
                out.append(
                    f"no noise band was measured (only {have} of the {len(rows)} seeds of {family} {verb} a "
                    f"{METRICS[headline][0]} yet)"
                )
    for metric in metrics:
        out += [sentence(c) for c in compare(results, metric)]
    return out


def band_table(results: Sequence[Mapping[str, Any]]) -> str:
    """A markdown table of each family's band: metric, seeds, mean, min, max, spread, sd."""
    lines = [
        "| family | metric | seeds | mean | min | max | spread | sd |",
        "| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for family, entry in family_stats(results).items():
        for metric in METRICS:
            s = entry[metric]
            if s is None:
                continue
            cells = [f"{s[k]:.4f}" for k in ("mean", "min", "max", "spread", "sd")]
            lines.append(f"| {family} | {metric.replace('_', ' ')} | {s['n']} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


# ---------------------------------------------------------------------------------------------
# the band plot
# ---------------------------------------------------------------------------------------------


def band(curves: Sequence[Sequence[tuple[int, float]]]) -> list[tuple[int, float, float, float]]:
    """[(step, min, max, mean)] at every step where at least two of the curves have a point.

    Members mid-training end at different steps; the band stops where fewer than two remain.
    """
    by_step: dict[int, list[float]] = {}
    for curve in curves:
        for step, value in curve:
            by_step.setdefault(int(step), []).append(float(value))
    return [(step, min(v), max(v), statistics.fmean(v)) for step, v in sorted(by_step.items()) if len(v) >= 2]


def _draw(
    ax: Any,
    curves: Mapping[str, Sequence[tuple[int, float]]],
    members: Mapping[str, list[str]],
    since: int,
) -> None:
    """One panel: each family's band (min-max, shaded, edges thin) and dashed mean, then the other arms."""
    color = 0
    banded: set[str] = set()
    for family, arms in members.items():
        points = [p for p in band([curves[a] for a in arms]) if p[0] >= since]
        if not points:
            continue
        banded.update(arms)
        c = f"C{color % 10}"
        color += 1
        steps = [p[0] for p in points]
        lows, highs = [p[1] for p in points], [p[2] for p in points]
        ax.fill_between(steps, lows, highs, color=c, alpha=0.3, linewidth=0)
        ax.plot(steps, lows, color=c, linewidth=0.6)
        ax.plot(steps, highs, color=c, linewidth=0.6)
        label = f"{family}: {len(arms)} seeds, mean (dashed) and min-max band"
        ax.plot(steps, [p[3] for p in points], color=c, linestyle="--", linewidth=1.4, label=label)
    for arm, curve in curves.items():
        if arm in banded:
            continue
        c = f"C{color % 10}"
        color += 1
        shown = [(s, v) for s, v in curve if s >= since]
        label = arm if curve else f"{arm} (no validation point yet)"
        ax.plot([s for s, _ in shown], [v for _, v in shown], color=c, marker="o", markersize=4, label=label)
    ax.set_xlabel("step")
    ax.grid(True, alpha=0.3)
    if curves:
        ax.legend(fontsize="small")


def render_band_plot(
    curves: Mapping[str, Sequence[tuple[int, float]]], families: Mapping[str, str | None], title: str = ""
) -> bytes:
    """The PNG bytes of :func:`band_plot`."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure
    from matplotlib.ticker import MaxNLocator

    fig = Figure(figsize=(12, 5.4), dpi=100, layout="constrained")
    FigureCanvasAgg(fig)
    ax_all, ax_end = fig.subplots(1, 2)
    members: dict[str, list[str]] = {}
    for arm in curves:
        if families.get(arm):
            members.setdefault(str(families[arm]), []).append(arm)
    last = max((s for curve in curves.values() for s, _ in curve), default=0)
    _draw(ax_all, curves, members, 0)
    _draw(ax_end, curves, members, last // 2)
    ax_all.set_ylabel("validation bits per byte")
    ax_all.set_title("whole run")
    ax_end.set_title(f"second half, zoomed (from step {last // 2})")
    for ax in (ax_all, ax_end):
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    fig.suptitle(title or "validation bpb: seed noise band and arms")
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", metadata={"Software": None})
    return buffer.getvalue()


def band_plot(
    curves: Mapping[str, Sequence[tuple[int, float]]],
    families: Mapping[str, str | None],
    path: str,
    title: str = "",
) -> str:
    """Write a PNG to ``path``: validation bpb against step, each family (two or more arms with the
    same ``families`` value and validation points at a common step) a shaded min-max band with its
    mean dashed, every other arm a line with markers; the left panel the whole run, the right one the
    second half zoomed (the first evaluations' high bpb would flatten the band to a line). Written
    atomically; returns ``path``."""
    for arm, curve in curves.items():
        for point in curve:
            if len(point) != 2 or not all(isinstance(x, (int, float)) and math.isfinite(x) for x in point):
                raise ArmsError(f"arm {arm}'s curve holds {point!r}; give (step, val_bpb) pairs of numbers.")
    atomic_write_bytes(path, render_band_plot(curves, families, title))
    return path
