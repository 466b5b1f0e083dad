"""The noise band in collect (issue 13): results.md under the table and noise_band.png, from fixed logs.

The logs are the lab's real CPU logs of top16.5 and random16.5 (seed 42); the other seeds of
random16.5 are that log with every validation bpb moved (test_noise's ``shifted``), so every figure
the table and the sentences show is known in advance.
"""

from __future__ import annotations

import json
import statistics
import struct
import subprocess
import sys
from pathlib import Path

import collect_results
import pytest
from arms_results import write_results
from test_noise import shifted

ROOT = Path(__file__).resolve().parents[2]
LOGS = ROOT / "tests" / "fixtures" / "logs"
CLI = ROOT / "scripts" / "collect_results.py"
TOP = (LOGS / "b07604e-cpu-top16.5.log").read_text()
RANDOM = (LOGS / "b07604e-cpu-random16.5.log").read_text()
SEEDS = {"random16.5": 0.0, "random16.5-s43": 0.002, "random16.5-s44": -0.001}
# what arms_seed_families gives for the expanded lab experiment with seeds [42, 43, 44]
FAMILIES = {"top16.5": None, **{arm: "random16.5" for arm in SEEDS}}


def png_size(path: Path) -> tuple[int, int]:
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n", f"{path} is not a PNG"
    return struct.unpack(">II", data[16:24])


def arms(stale: tuple[str, ...] = ()) -> list[dict]:
    """The four arms' inputs; the ``stale`` ones made from other inputs (their run.json says so)."""
    out = [{"arm": "top16.5", "log_text": TOP}]
    for arm, delta in SEEDS.items():
        facts = {"stale": True, "identity_changes": ["commit a -> b"]} if arm in stale else None
        out.append({"arm": arm, "log_text": shifted(RANDOM, delta), "facts": facts})
    return out


def test_three_seeds_give_a_band_the_sentences_and_the_plot(tmp_path: Path) -> None:
    written = write_results(str(tmp_path), "lab-pilot", arms(), total_batch_size=2048, families=FAMILIES)
    md = (tmp_path / "results.md").read_text()
    # after the table (and its plot), before the list of arms
    assert md.index("| arm | data |") < md.index("## Noise band") < md.index("## Arms")
    # min val bpb of the seeds: 2.510941, 2.512941, 2.509941 -> mean 2.511274, spread 0.003
    values = [2.510941, 2.512941, 2.509941]
    mean, sd = statistics.fmean(values), statistics.stdev(values)
    assert f"| random16.5 | min val bpb | 3 | {mean:.4f} | 2.5099 | 2.5129 | 0.0030 | {sd:.4f} |" in md
    assert "| random16.5 | final val bpb | 3 |" in md and "| random16.5 | core |" not in md  # no CORE on CPU
    # top16.5 at 2.505775 is 0.0055 below the mean: more than the spread
    said = "top16.5 is 0.005 bpb better than random16.5 (seed spread 0.003): beyond seed noise"
    assert f"- {said}." in md and written["noise"][0] == said
    assert (
        "![validation bpb against step: each seed family a band (min to max), other arms lines](noise_band.png)" in md
    )
    assert written["noise_plot"] == str(tmp_path / "noise_band.png")
    assert png_size(tmp_path / "noise_band.png") == (1200, 540)


def test_one_seed_says_no_noise_band_was_measured_and_draws_none(tmp_path: Path) -> None:
    one = [a for a in arms() if a["arm"] in ("top16.5", "random16.5")]
    written = write_results(str(tmp_path), "lab", one, families={"top16.5": None, "random16.5": "random16.5"})
    md = (tmp_path / "results.md").read_text()
    assert "- no noise band was measured (one seed of random16.5)." in md
    assert "| family | metric |" not in md and "noise_band.png" not in md
    assert written["noise_plot"] is None and not (tmp_path / "noise_band.png").exists()
    # without families (a hand-run collect that does not name them) there is no noise band section
    write_results(str(tmp_path), "lab", one)
    assert "## Noise band" not in (tmp_path / "results.md").read_text()


def test_a_stale_seed_is_left_out_of_the_band(tmp_path: Path) -> None:
    written = write_results(str(tmp_path), "lab", arms(stale=("random16.5-s43",)), families=FAMILIES)
    md = (tmp_path / "results.md").read_text()
    # 2.510941 and 2.509941 only: spread 0.001; top16.5 is 0.005 away
    assert "| random16.5 | min val bpb | 2 | 2.5104 | 2.5099 | 2.5109 | 0.0010 |" in md
    assert written["noise"][0].endswith("(seed spread 0.001): beyond seed noise")


def run_cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, str(CLI), *args], capture_output=True, text=True, timeout=120)


def test_cli_with_what_collect_fetched_and_the_families(tmp_path: Path) -> None:
    """collect.yml passes --families (the arms_seed_families filter, as JSON) with --collected."""
    for a in arms():
        (tmp_path / a["arm"]).mkdir()
        (tmp_path / a["arm"] / "train.log").write_text(a["log_text"])
    proc = run_cli(
        "--experiment",
        "lab-pilot",
        "--out",
        str(tmp_path),
        "--families",
        json.dumps(FAMILIES),
        "--collected",
        *FAMILIES,
    )
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.splitlines()
    assert "noise band: top16.5 is 0.005 bpb better than random16.5 (seed spread 0.003): beyond seed noise." in lines
    assert lines[-1].endswith(f"loss.png and {tmp_path / 'noise_band.png'}")


@pytest.mark.parametrize(
    ("families", "message"),
    [
        ("{not json", "--families is not valid JSON"),
        ('["random16.5"]', "--families must be a JSON object"),
        ('{"random16.5": 3}', "--families must be a JSON object"),
        ('{"random16.5-s45": "random16.5"}', "name arm random16.5-s45, which is not among the arms collected"),
    ],
)
def test_cli_bad_families_are_a_sentence_and_write_nothing(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], families: str, message: str
) -> None:
    (tmp_path / "train.log").write_text(RANDOM)
    out = tmp_path / "out"
    argv = ["--experiment", "x", "--out", str(out), "--arm", f"random16.5={tmp_path / 'train.log'}"]
    assert collect_results.main([*argv, "--families", families]) == 1
    err = capsys.readouterr().err
    assert err.startswith("error: ") and message in err
    assert not out.exists()
