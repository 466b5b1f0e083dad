"""The measured MFU and what a run costs at it, in collect (issue 13): results.md and collect's stdout.

The GPU-like logs are the lab's real CPU log of top16.5 (its header: nanochat's banner, the model
config, ``Distributed world size``) with the step lines rewritten in nanochat's own step-line format
(``bf16_mfu:`` as b07604e prints it, ``mfu:`` and no epoch/eta as commits before 2026-02-10 do), so
every MFU the script reads is known in advance. The real ``scripts/collect_results.py`` runs on them;
the GPU-hours it prints are checked against ``arms_family.run_cost`` computed here.
"""

from __future__ import annotations

import json
import statistics
import subprocess
import sys
from pathlib import Path

from ansible.module_utils.arms_family import default_iterations, run_cost

ROOT = Path(__file__).resolve().parents[2]
LOGS = ROOT / "tests" / "fixtures" / "logs"
CLI = ROOT / "scripts" / "collect_results.py"
CPU_LOGS = {arm: LOGS / f"b07604e-cpu-{arm}.log" for arm in ("top16.5", "random16.5")}
H100 = 989e12
TBS = 524288
# the full run (inventory/group_vars/all/experiment.yml) and the README's pilot profile
MODEL = {"depth": 26, "device_batch_size": 32, "total_batch_size": TBS, "gpus_per_node": 8, "extra_flags": {}}
PROFILES = {"pilot": {"depth": 12, "num_iterations": 2205, "placement": {"gpus_per_arm": 1, "pack": True}}}
WARMUP = [1.2, 20.5, 30.1, 35.0, 38.2, 39.0, 40.3, 41.0, 41.2, 41.4, 41.5]  # steps 0-10: compile, warm-up


def gpu_log(mfus: list[float], *, world: int, total: int, old: bool = False) -> str:
    """The real log's header with ``world`` GPUs and ``total`` iterations, then a step line per MFU value
    (step 0 first), in nanochat's format: ``bf16_mfu:`` with epoch and eta, or (``old``) ``mfu:`` without."""
    header = CPU_LOGS["top16.5"].read_text().split("\nStep 00000 |")[0]
    header = header.replace("Distributed world size: 1", f"Distributed world size: {world}")
    header = header.replace(
        "Using user-provided number of iterations: 20", f"Using user-provided number of iterations: {total:,}"
    )
    lines = [header]
    minutes = 0.0
    for step, mfu in enumerate(mfus):
        dt = 30000.0 if step <= 10 else 1200.0 * 44.0 / mfu
        minutes += dt / 60000 if step > 10 else 0.0
        head = f"step {step:05d}/{total:05d} ({100 * step / total:.2f}%) | loss: {10.4 - step / 100:.6f} | lrm: 1.00"
        head += f" | dt: {dt:.2f}ms | tok/sec: {int(TBS / (dt / 1000)):,}"
        if old:
            lines.append(f"{head} | mfu: {mfu:.2f} | total time: {minutes:.2f}m")
        else:
            eta = f" | eta: {(total - step) * minutes / (step - 10):.1f}m" if step > 10 else ""
            lines.append(f"{head} | bf16_mfu: {mfu:.2f} | epoch: 1 | total time: {minutes:.2f}m{eta}")
    return "\n".join(lines) + "\n"


def timed(center: float, n: int) -> list[float]:
    """``n`` MFU values around ``center`` (steps after the warm-up), not in order."""
    return [round(center + ((i * 7) % 11 - 5) / 10, 2) for i in range(n)]


def collect(tmp: Path, logs: dict[str, str], *args: str) -> tuple[subprocess.CompletedProcess[str], str]:
    arms = []
    for arm, text in logs.items():
        (tmp / f"{arm}.log").write_text(text)
        arms += ["--arm", f"{arm}={tmp / f'{arm}.log'}"]
    out = tmp / "results"
    cmd = [sys.executable, str(CLI), "--experiment", "exp", "--out", str(out), *arms, *args]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    return proc, (out / "results.md").read_text()


def cost_arg(profile: str) -> str:
    return json.dumps({"model": MODEL, "profiles": PROFILES, "profile": profile})


def hours(value: float) -> str:
    """As the README writes GPU-hours: two significant digits below 10, one decimal above."""
    return f"{value:.1f}" if value >= 10 else f"{value:.2g}"


def test_a_pilot_says_its_mfu_per_arm_and_what_it_and_the_full_run_cost_at_it(tmp_path: Path) -> None:
    top, rand = timed(44.0, 29), timed(42.0, 29)
    logs = {
        "top16.5": gpu_log(WARMUP + top, world=1, total=2205),
        "random16.5": gpu_log(WARMUP + rand, world=1, total=2205),
    }
    proc, md = collect(tmp_path, logs, "--total-batch-size", str(TBS), "--cost", cost_arg("pilot"))

    # each arm: the median of its step lines after step 10 (nanochat's timed steps), on the log's 1 GPU
    top_mfu, rand_mfu = statistics.median(top), statistics.median(rand)
    for arm, mfu in (("top16.5", top_mfu), ("random16.5", rand_mfu)):
        line = f"{arm}: {mfu:.1f}% (median of 29 steps on 1 GPU)"
        assert f"MFU {line}" in proc.stdout.splitlines()
        assert f"- **{arm}**: {mfu:.1f}% (median of 29 steps on 1 GPU)." in md
    # the warm-up steps are left out: with them every median would be lower
    assert statistics.median(WARMUP + top) < top_mfu
    assert f"{statistics.median(WARMUP + top):.1f}%" not in md

    # the cost sentence: the arms' median MFU, the pilot's GPU-hours and the full run's at that MFU
    mfu = statistics.median([top_mfu, rand_mfu]) / 100
    pilot = run_cost(depth=12, num_iterations=2205, total_batch_size=TBS, peak_flops=H100, mfu=mfu)["gpu_hours"]
    full_steps = default_iterations(26, TBS)
    full = run_cost(depth=26, num_iterations=full_steps, total_batch_size=TBS, peak_flops=H100, mfu=mfu)["gpu_hours"]
    sentence = (
        f"At {mfu * 100:.1f}% MFU (the median of the 2 arms') of 989 TFLOP/s a GPU, the pilot run (d12, 2,205 "
        f"steps) takes {hours(pilot)} GPU-hours an arm, {hours(2 * pilot)} for 2 arms; the full run (d26, "
        f"{full_steps:,} steps) would take {hours(full)} GPU-hours an arm, {hours(2 * full)} for 2 arms "
        "(an estimate: MFU changes with depth and GPU count)"
    )
    assert f"cost: {sentence}." in proc.stdout.splitlines()
    assert f"{sentence}." in md
    assert full_steps == 18_393  # the README's full run
    # under the table, before the plot
    assert md.index("| arm | data |") < md.index("- **top16.5**: ") < md.index(sentence) < md.index("![training loss")


def test_a_full_run_of_the_older_era_says_what_its_pilot_would_cost_on_another_gpu(tmp_path: Path) -> None:
    mfus = timed(38.0, 40)
    log = gpu_log(WARMUP + mfus, world=8, total=default_iterations(26, TBS), old=True)
    assert "| mfu: " in log and "bf16_mfu" not in log.split("Step 00000")[-1]
    proc, md = collect(tmp_path, {"top16.5": log}, "--cost", cost_arg(""), "--peak-flops", "312e12")

    mfu = statistics.median(mfus)
    assert f"MFU top16.5: {mfu:.1f}% (median of 40 steps on 8 GPUs)" in proc.stdout
    full = run_cost(depth=26, num_iterations=18393, total_batch_size=TBS, peak_flops=312e12, mfu=mfu / 100)
    pilot = run_cost(depth=12, num_iterations=2205, total_batch_size=TBS, peak_flops=312e12, mfu=mfu / 100)
    sentence = (
        f"At {mfu:.1f}% MFU of 312 TFLOP/s a GPU, this run (d26, 18,393 steps) takes {hours(full['gpu_hours'])} "
        f"GPU-hours an arm; the pilot profile (d12, 2,205 steps) would take {hours(pilot['gpu_hours'])} GPU-hours "
        "an arm (an estimate: MFU changes with depth and GPU count)"
    )
    assert f"cost: {sentence}." in proc.stdout.splitlines() and f"{sentence}." in md
    # a slower GPU's peak: the same MFU is fewer FLOP/s, so more GPU-hours than on an H100
    h100 = run_cost(depth=26, num_iterations=18393, total_batch_size=TBS, peak_flops=H100, mfu=mfu / 100)
    assert full["gpu_hours"] > 3 * h100["gpu_hours"]


def test_a_cpu_run_says_no_mfu_was_measured_and_gives_no_gpu_hours(tmp_path: Path) -> None:
    logs = {arm: path.read_text() for arm, path in CPU_LOGS.items()}
    assert "bf16_mfu: 0.00" in logs["top16.5"]
    proc, md = collect(tmp_path, logs, "--total-batch-size", "2048", "--cost", cost_arg("pilot"))
    for arm in CPU_LOGS:
        assert f"MFU {arm}: no MFU measured (a CPU run: nanochat prints MFU 0 there)" in proc.stdout
        assert f"- **{arm}**: no MFU measured (a CPU run" in md
    assert "cost: No MFU measured, so no GPU-hours are given." in proc.stdout
    assert "GPU-hours an arm" not in md and "GPU-hours an arm" not in proc.stdout


def test_a_run_still_in_its_warm_up_has_no_mfu_yet(tmp_path: Path) -> None:
    proc, md = collect(tmp_path, {"top16.5": gpu_log(WARMUP[:6], world=8, total=2205)}, "--cost", cost_arg("pilot"))
    assert "MFU top16.5: no MFU measured yet (no step line after step 10, nanochat's warm-up)" in proc.stdout
    assert "no GPU-hours" in md


def test_a_malformed_cost_basis_is_refused_with_a_sentence(tmp_path: Path) -> None:
    (tmp_path / "a.log").write_text(gpu_log(WARMUP + timed(40.0, 5), world=1, total=2205))
    base = [
        sys.executable,
        str(CLI),
        "--experiment",
        "exp",
        "--out",
        str(tmp_path / "r"),
        "--arm",
        f"a={tmp_path / 'a.log'}",
    ]
    for cost, said in (
        ("{not json", "--cost is not valid JSON"),
        (json.dumps({"model": MODEL, "profiles": {}, "profile": "pilot"}), "names profile 'pilot'"),
    ):
        proc = subprocess.run([*base, "--cost", cost], capture_output=True, text=True, timeout=120)
        assert proc.returncode == 1 and said in proc.stderr
        assert not (tmp_path / "r" / "results.md").exists()
