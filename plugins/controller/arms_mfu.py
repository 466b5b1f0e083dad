"""The MFU a run measured, and what a run costs at it (issue 13): the lines collect puts under the table.

nanochat prints, on every step line, the model FLOPs utilization in percent (``mfu:`` before
2026-02-10, ``bf16_mfu:`` after; :func:`arms_logs.parse_step_line` reads both into ``mfu``):
FLOPs a token x total batch size / dt / (peak FLOP/s of one GPU x world size). So a run's
GPU-hours at an MFU are :func:`arms_family.run_cost`'s: FLOPs a token x tokens / (peak x MFU).

- :func:`measure`: an arm's measured MFU, the median over its step lines after step
  :data:`WARMUP_STEPS` (base_train counts training time only from step 11 on, ``if step > 10``:
  steps 0-10 compile and warm up; the median keeps a few slow steps later on from moving it), with
  the GPU count it ran on (nanochat's ``Distributed world size`` line). MFU 0 (nanochat on CPU) or
  no MFU field is "no MFU measured", never a figure.
- :func:`cost_sentence`: at the arms' measured MFU, the GPU-hours of this run as collected and,
  for a profiled run (a pilot), of the full run, or, for the full run, of each profile it declares;
  from the experiment's ``model`` (:func:`arms_family.cost_config`), never from a guessed MFU.
- :func:`mfu_lines`: one line per arm plus the cost sentence, for results.md and stdout.
"""

from __future__ import annotations

import re
import statistics
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from ansible.module_utils.arms_common import ArmsError
from ansible.module_utils.arms_family import FamilyError, apply_profile, cost_config, run_cost

# base_train adds a step's dt to its total training time only from step 11 on (``if step > 10``)
WARMUP_STEPS = 10
# nanochat's peak bf16 FLOP/s of one H100 SXM GPU, the GPU its MFU is measured against by default
H100_PEAK_FLOPS = 989e12
_WORLD_SIZE = re.compile(r"Distributed world size: (\d+)")


@dataclass(frozen=True)
class CostBasis:
    """What the cost sentence is computed from: the full run's ``model`` section and ``profiles`` (as the
    experiment file declares them, families expanded), the profile collected ("" for the full run) and
    the peak FLOP/s of one GPU that nanochat measured the MFU against."""

    model: Mapping[str, Any]
    profiles: Mapping[str, Any] = field(default_factory=dict)
    profile: str = ""
    peak_flops: float = H100_PEAK_FLOPS


def cost_basis(data: Any, peak_flops: float = H100_PEAK_FLOPS) -> CostBasis:
    """A :class:`CostBasis` from collect's JSON ``{"model": {...}, "profiles": {...}, "profile": "pilot"}``;
    ArmsError with a sentence when it is not that shape."""
    if not isinstance(data, Mapping) or not isinstance(data.get("model"), Mapping):
        raise ArmsError(
            'the cost basis must be a JSON object with the experiment\'s model section, e.g. {"model": '
            '{"depth": 26, "total_batch_size": 524288}, "profiles": {}, "profile": ""}.'
        )
    profiles = data.get("profiles") or {}
    profile = data.get("profile") or ""
    if not isinstance(profiles, Mapping) or not isinstance(profile, str):
        raise ArmsError("the cost basis' profiles must be a JSON object and its profile a name (or empty).")
    if profile and profile not in profiles:
        raise ArmsError(f"the cost basis names profile {profile!r}, which its profiles do not declare.")
    if not peak_flops > 0:
        raise ArmsError(f"the peak FLOP/s of a GPU is {peak_flops!r}; give a positive number (H100 SXM: 989e12).")
    return CostBasis(model=data["model"], profiles=profiles, profile=profile, peak_flops=float(peak_flops))


def world_size(log_text: str | None) -> int | None:
    """The GPU (process) count the run ran on, from nanochat's ``Distributed world size: N`` line."""
    found = _WORLD_SIZE.findall(log_text or "")
    return int(found[-1]) if found else None


def measure(parsed: Mapping[str, Any] | None, log_text: str | None = None) -> dict[str, Any]:
    """An arm's measured MFU: {mfu (percent, None when not measured), steps (how many step lines the
    median is of), field ("bf16_mfu" or "mfu"), gpus (None when the log does not say), reason (why
    there is no MFU, else None)}."""
    out: dict[str, Any] = {"mfu": None, "steps": 0, "field": None, "gpus": world_size(log_text), "reason": None}
    if parsed is None:
        out["reason"] = "no log"
        return out
    timed = [s for s in parsed["steps"] if s["step"] > WARMUP_STEPS]
    values = [s["mfu"] for s in timed if s.get("mfu") is not None]
    if not timed:
        out["reason"] = f"no MFU measured yet (no step line after step {WARMUP_STEPS}, nanochat's warm-up)"
    elif not values:
        out["reason"] = "no MFU measured (its step lines carry no MFU)"
    elif statistics.median(values) <= 0:
        out["reason"] = "no MFU measured (a CPU run: nanochat prints MFU 0 there)"
    else:
        out.update(mfu=float(statistics.median(values)), steps=len(values))
        out["field"] = next(s["mfu_field"] for s in reversed(timed) if s.get("mfu_field"))
    return out


def _hours(value: float) -> str:
    """GPU-hours as the README writes them: 0.58, 2.3, 37.2, 1,490."""
    if value >= 1000:
        return f"{value:,.0f}"
    return f"{value:.1f}" if value >= 10 else f"{value:.2g}"


def _config(basis: CostBasis, profile: str) -> dict[str, Any] | None:
    """The cost_config of the full run ("") or of one of its profiles; None when it has no depth and total
    batch size, or the profile cannot be applied (validate.yml says why; no figure is guessed)."""
    try:
        model = apply_profile({"model": basis.model, "profiles": basis.profiles}, profile or None)["model"]
    except FamilyError:
        return None
    return cost_config(model)


def _shape(config: Mapping[str, Any]) -> str:
    return f"d{config['depth']}, {config['num_iterations']:,} steps"


def cost_sentence(measured: Mapping[str, Mapping[str, Any]], basis: CostBasis | None, arms: int) -> str:
    """One sentence: what this run, and the other configuration(s), cost in GPU-hours at the MFU measured
    (the median of the arms' when several measured one); ``arms`` is how many arms the run has."""
    mfus = [m["mfu"] for m in measured.values() if m.get("mfu")]
    if not mfus:
        return "No MFU measured, so no GPU-hours are given"
    mfu = statistics.median(mfus)
    if basis is None:
        return "No GPU-hours: collect_results.py was given no --cost (the experiment's model section)"
    if mfu > 100:
        return (
            f"No GPU-hours: the MFU measured, {mfu:.1f}%, is above 100%, so nanochat measured it against another "
            f"peak than {basis.peak_flops:.3g} FLOP/s; give the GPU's peak (experiment.gpu_peak_flops)"
        )
    here = _config(basis, basis.profile)
    if here is None:
        return "No GPU-hours: the experiment's model has no depth or total batch size (whole numbers) to count from"

    def hours(config: Mapping[str, Any]) -> float:
        return run_cost(peak_flops=basis.peak_flops, mfu=mfu / 100, **config)["gpu_hours"]

    which = f"{mfu:.1f}% MFU" + (f" (the median of the {len(mfus)} arms')" if len(mfus) > 1 else "")
    run = f"the {basis.profile} run" if basis.profile else "this run"

    def each(cost: float) -> str:
        return f"{_hours(cost)} GPU-hours an arm" + (f", {_hours(cost * arms)} for {arms} arms" if arms > 1 else "")

    text = (
        f"At {which} of {basis.peak_flops / 1e12:,.0f} TFLOP/s a GPU, {run} ({_shape(here)}) takes {each(hours(here))}"
    )
    said = []
    for other in [""] if basis.profile else list(basis.profiles):
        config = _config(basis, other)
        if config is not None:
            name = f"the {other} profile" if other else "the full run"
            said.append(f"{name} ({_shape(config)}) would take {each(hours(config))}")
    if said:
        text += "; " + "; ".join(said) + " (an estimate: MFU changes with depth and GPU count)"
    return text


def arm_mfu_line(arm: str, measured: Mapping[str, Any]) -> str:
    """``top16.5: 44.8% (median of 18,382 steps on 8 GPUs)``, or the arm and why there is no MFU."""
    if measured.get("mfu") is None:
        return f"{arm}: {measured['reason']}"
    gpus = measured.get("gpus")
    where = f" on {gpus} GPU{'s' if gpus != 1 else ''}" if gpus else ""
    return f"{arm}: {measured['mfu']:.1f}% (median of {measured['steps']:,} steps{where})"


def mfu_lines(
    measured: Mapping[str, Mapping[str, Any]], basis: CostBasis | None, arms: int | None = None
) -> dict[str, Any]:
    """{"arms": a line per arm (:func:`arm_mfu_line`), "cost": :func:`cost_sentence`, "markdown": both as
    results.md's lines}."""
    lines = [arm_mfu_line(arm, m) for arm, m in measured.items()]
    cost = cost_sentence(measured, basis, arms if arms is not None else len(measured))
    markdown = [
        f"MFU measured (the median of nanochat's per-step MFU after step {WARMUP_STEPS}, the steps it times):",
        "",
        *[f"- **{arm}**{line[len(arm) :]}." for arm, line in zip(measured, lines, strict=True)],
        "",
        f"{cost}.",
    ]
    return {"arms": lines, "cost": cost, "markdown": markdown}


def measure_rows(
    rows: Sequence[Mapping[str, Any]], parsed: Mapping[str, Mapping[str, Any]], logs: Mapping[str, str | None]
) -> dict[str, dict[str, Any]]:
    """{arm: :func:`measure`} for the results rows; a stale run's MFU is left out (not this experiment's run)."""
    out = {}
    for row in rows:
        arm = row["arm"]
        if row.get("state") == "stale":
            out[arm] = {"mfu": None, "steps": 0, "field": None, "gpus": None, "reason": "not used (a stale run)"}
        else:
            out[arm] = measure(parsed.get(arm), logs.get(arm))
    return out
