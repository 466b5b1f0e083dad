"""The noise band: family arithmetic, the beyond/within/one-seed sentences and the band plot (arms_noise)."""

from __future__ import annotations

import re
import statistics
import struct
import sys
from pathlib import Path

import pytest
from ansible.module_utils.arms_common import ArmsError
from ansible.module_utils.arms_logs import parse_log

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "plugins" / "controller"))  # the controller folder becomes importable by name

from arms_noise import band, band_plot, band_table, compare, family_stats, sentences, verdict

LOGS = ROOT / "tests" / "fixtures" / "logs"
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def shifted(text: str, delta: float) -> str:
    """A log whose every validation bpb (and the end line's minimum) is moved by ``delta``: another seed."""

    def move(m: re.Match[str]) -> str:
        return f"{m.group(1)}{float(m.group(2)) + delta:.6f}"

    return re.sub(r"((?:Validation bpb|Minimum validation bpb): )([0-9.]+)", move, text)


def figures(name: str, family: str | None, text: str) -> tuple[dict, list[tuple[int, float]]]:
    """The adapter collect would use: arms_logs.parse_log (the results table's parser) -> arms_noise's inputs."""
    parsed = parse_log(text)
    core = parsed["core"]
    row = {
        "name": name,
        "family": family,
        "min_val_bpb": parsed["min_val_bpb"],
        "final_val_bpb": parsed["last_val_bpb"],
        "core": core[-1][1] if core else None,
    }
    return row, [(int(s), float(b)) for s, b in parsed["val"]]


def lab(deltas: tuple[float, float]) -> tuple[list[dict], dict[str, list[tuple[int, float]]]]:
    """The lab's real logs: top16.5, and random16.5 at seed 42 (real) plus two seeds made by shifting it."""
    top = (LOGS / "b07604e-cpu-top16.5.log").read_text()
    rand = (LOGS / "b07604e-cpu-random16.5.log").read_text()
    arms = [
        figures("top16.5", None, top),
        figures("random16.5", "random16.5", rand),
        figures("random16.5-s43", "random16.5", shifted(rand, deltas[0])),
        figures("random16.5-s44", "random16.5", shifted(rand, deltas[1])),
    ]
    return [a[0] for a in arms], {a[0]["name"]: a[1] for a in arms}


def test_family_arithmetic_on_fixed_numbers() -> None:
    results = [
        {"name": "r42", "family": "r", "min_val_bpb": 1.0, "final_val_bpb": 1.05, "core": 0.20},
        {"name": "r43", "family": "r", "min_val_bpb": 1.2, "final_val_bpb": 1.25, "core": None},
        {"name": "r44", "family": "r", "min_val_bpb": 1.1, "final_val_bpb": 1.15, "core": 0.22},
        {"name": "top", "family": None, "min_val_bpb": 0.9, "final_val_bpb": 1.17, "core": 0.30},
    ]
    stats = family_stats(results)["r"]
    assert stats["members"] == ["r42", "r43", "r44"]
    # mean (1.0 + 1.2 + 1.1) / 3 = 1.1; deviations -0.1, 0.1, 0: sd = sqrt(0.02 / 2) = 0.1; spread 0.2
    bpb = stats["min_val_bpb"]
    assert (bpb["n"], bpb["min"], bpb["max"]) == (3, 1.0, 1.2)
    assert bpb["mean"] == pytest.approx(1.1) and bpb["sd"] == pytest.approx(0.1) and bpb["spread"] == pytest.approx(0.2)
    # CORE: two of three seeds have one: mean 0.21, spread 0.02, sd sqrt(2 x 0.01^2 / 1) = 0.0141421
    core = stats["core"]
    assert core["n"] == 2 and core["mean"] == pytest.approx(0.21) and core["sd"] == pytest.approx(0.0141421356)
    (c,) = compare(results, "min_val_bpb")
    # top: 0.9 - 1.1 = -0.2, exactly one spread: not more than the spread, so within
    assert c["arm"] == "top" and c["diff"] == pytest.approx(-0.2) and c["units"] == pytest.approx(-1.0)
    assert c["better"] is True and c["verdict"] == "within"
    (f,) = compare(results, "final_val_bpb")
    # 1.17 - 1.15 = +0.02 bpb: worse, 0.1 spreads
    assert f["better"] is False and f["units"] == pytest.approx(0.1) and f["verdict"] == "within"
    (k,) = compare(results, "core")
    # CORE 0.30 - 0.21 = 0.09 > spread 0.02: higher CORE is better, beyond
    assert k["better"] is True and k["units"] == pytest.approx(4.5) and k["verdict"] == "beyond"


def test_the_rule_is_strictly_more_than_the_spread() -> None:
    assert verdict(0.0041, 0.004) == "beyond"
    assert verdict(-0.0041, 0.004) == "beyond"
    assert verdict(0.004, 0.004) == "within"
    assert verdict(0.0, 0.0) == "within"


def test_beyond_seed_noise_on_the_lab_logs() -> None:
    """Seeds at 2.510941, +0.002, -0.001: mean 2.511274, spread 0.003; top16.5 at 2.505775 is 0.0055 away."""
    results, _ = lab((0.002, -0.001))
    bpb = family_stats(results)["random16.5"]["min_val_bpb"]
    assert bpb["mean"] == pytest.approx((2.510941 + 2.512941 + 2.509941) / 3)
    assert bpb["spread"] == pytest.approx(0.003)
    assert bpb["sd"] == pytest.approx(statistics.stdev([2.510941, 2.512941, 2.509941]))
    lines = sentences(results)
    assert lines[0] == "top16.5 is 0.005 bpb better than random16.5 (seed spread 0.003): beyond seed noise"
    assert lines[1] == "top16.5 is 0.005 final bpb better than random16.5 (seed spread 0.003): beyond seed noise"
    assert len(lines) == 2  # the lab's CPU runs print no CORE line: no CORE sentence


def test_within_seed_noise_on_the_lab_logs() -> None:
    """Seeds at 2.510941, +0.004, -0.004: mean 2.510941, spread 0.008; top16.5 is 0.005166 away."""
    results, _ = lab((0.004, -0.004))
    (c,) = compare(results)
    assert c["diff"] == pytest.approx(2.505775 - 2.510941)
    assert c["units"] == pytest.approx((2.505775 - 2.510941) / 0.008)
    assert sentences(results, ["min_val_bpb"]) == [
        "top16.5 is 0.005 bpb better than random16.5 (seed spread 0.008): within seed noise"
    ]


def test_one_seed_measures_no_noise_band() -> None:
    results, _ = lab((0.0, 0.0))
    results = results[:2]  # top16.5 and the one real seed, as arms_seed_families names them today
    assert sentences(results) == ["no noise band was measured (one seed of random16.5)"]
    assert sentences([dict(r, family=None) for r in results]) == [
        "no noise band was measured (no arm has several seeds)"
    ]


def test_seeds_without_a_value_yet_say_so() -> None:
    results, _ = lab((0.002, -0.001))
    for row in results[2:]:
        row["min_val_bpb"] = row["final_val_bpb"] = None
    assert sentences(results)[0] == "no noise band was measured (only 1 of the 3 seeds of random16.5 has a bpb yet)"


def test_identical_seeds_are_pointed_out() -> None:
    results, _ = lab((0.0, 0.0))
    line = sentences(results, ["min_val_bpb"])[0]
    assert line.startswith("top16.5 is 0.005 bpb better than random16.5 (seed spread 0): beyond seed noise")
    assert "gave identical values: check that the seeds were applied" in line


def test_small_differences_keep_two_significant_digits() -> None:
    results = [
        {"name": "a", "family": "f", "min_val_bpb": 1.0001},
        {"name": "b", "family": "f", "min_val_bpb": 1.0003},
        {"name": "x", "family": None, "min_val_bpb": 1.0009},
    ]
    assert sentences(results, ["min_val_bpb"]) == [
        "x is 0.0007 bpb worse than random16.5 (seed spread 0.0002): beyond seed noise".replace("random16.5", "f")
    ]


def test_the_band_table_lists_each_metric_with_a_band() -> None:
    results, _ = lab((0.002, -0.001))
    table = band_table(results).splitlines()
    assert table[2] == "| random16.5 | min val bpb | 3 | 2.5113 | 2.5099 | 2.5129 | 0.0030 | 0.0015 |"
    assert len(table) == 4  # min and final val bpb; no CORE


def test_the_band_spans_steps_two_members_share() -> None:
    curves = [[(0, 3.0), (10, 2.0), (20, 1.5)], [(0, 3.2), (10, 2.4)], [(0, 3.1)]]
    assert band(curves) == [(0, 3.0, 3.2, pytest.approx(3.1)), (10, 2.0, 2.4, pytest.approx(2.2))]


def png_size(data: bytes) -> tuple[int, int]:
    assert data[:8] == PNG_MAGIC
    return struct.unpack(">II", data[16:24])


def test_the_band_plot_is_written_from_the_lab_logs(tmp_path: Path) -> None:
    results, curves = lab((0.002, -0.001))
    families = {r["name"]: r["family"] for r in results}
    path = band_plot(curves, families, str(tmp_path / "noise_band.png"), "lab: top16.5 vs 3 seeds of random16.5")
    data = Path(path).read_bytes()
    assert png_size(data) == (1200, 540)  # two panels: the whole run and the second half zoomed
    assert len(data) > 20_000  # axes, a band, a dashed mean, a line with markers, a legend
    # the same inputs draw the same bytes
    again = band_plot(curves, families, str(tmp_path / "again.png"), "lab: top16.5 vs 3 seeds of random16.5")
    assert Path(again).read_bytes() == data
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".tmp")] == []


def test_a_bad_curve_is_refused_before_anything_is_written(tmp_path: Path) -> None:
    with pytest.raises(ArmsError, match="give \\(step, val_bpb\\) pairs"):
        band_plot({"a": [(0, float("nan"))]}, {}, str(tmp_path / "x.png"))
    assert not (tmp_path / "x.png").exists()
