"""Results side by side: the comparison table's numbers, the plot, and the collect CLI, from real-looking logs."""

from __future__ import annotations

import json
import os
import struct
import subprocess
import sys
from pathlib import Path

import collect_results
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from ansible.module_utils.arms_common import ArmsError
from ansible.module_utils.arms_manifest import build_manifest, shard_entry
from arms_results import (
    ArmInput,
    build_rows,
    markdown_table,
    plot,
    series,
    write_results,
)

ROOT = Path(__file__).resolve().parents[2]
CLI = ROOT / "scripts" / "collect_results.py"
TBS = 524288
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def step_line(step: int, total: int, loss: float, tok: int, *, new: bool = True, minutes: float = 0.0) -> str:
    """A step line in nanochat's format: after 2026-02-10 (bf16_mfu, epoch/pq/rg, eta) or before (mfu:)."""
    head = f"step {step:05d}/{total:05d} ({100 * step / total:.2f}%) | loss: {loss:.6f} | lrm: 1.00 | dt: 512.34ms"
    if new:
        return (
            f"{head} | tok/sec: {tok:,} | bf16_mfu: 45.67 | epoch: 1 pq: {step // 4} rg: {step % 4} "
            f"| total time: {minutes:.2f}m | eta: 88.1m"
        )
    return f"{head} | tok/sec: {tok:,} | mfu: 0.02 | total time: {minutes:.2f}m"


# The top arm, finished: 20 steps, the first one compiling (slow), val at 0/10/20, CORE at the end.
TOP_STEPS = [
    step_line(i, 20, 10.0 - 0.3 * i, 11_619 if i == 0 else 1_000_000 + 100 * i, minutes=0.6 * i) for i in range(20)
]
TOP_LOG = "\n".join(
    [
        "Autodetected device type: cuda",
        "Vocab size: 32,768",
        "Number of iterations: 20",
        "Step 00000 | Validation bpb: 3.271200",
        *TOP_STEPS[:10],
        "Step 00010 | Validation bpb: 0.950000",
        *TOP_STEPS[10:],
        "Step 00020 | Validation bpb: 0.960000",
        "Step 00020 | CORE metric: 0.2012",
        "Peak memory usage: 71234.56MiB",
        "Total training time: 12.50m",
        "Minimum validation bpb: 0.950000",
        "",
    ]
)

# The random arm mid-training, on an older commit (mfu:, no epoch/eta, 4-decimal bpb), CRLF line ends.
RANDOM_LOG = "\r\n".join(
    [
        "Number of iterations: 20",
        "Step 00000 | Validation bpb: 3.2801",
        *[step_line(i, 20, 10.2 - 0.25 * i, 900_000 + 1000 * i, new=False, minutes=0.05 * i) for i in range(6)],
        "Step 00005 | Validation bpb: 1.5012",
        *[step_line(i, 20, 10.2 - 0.25 * i, 900_000 + 1000 * i, new=False, minutes=0.05 * i) for i in range(6, 8)],
    ]
)

# An arm whose torchrun started but printed no step yet.
STARTING_LOG = "Autodetected device type: cuda\nVocab size: 32,768\nNumber of iterations: 20\n"


def top_manifest() -> dict:
    """A manifest whose writer recorded the training tokens (exact epochs)."""
    shards = [
        {"name": f"shard_0000{i}.parquet", "rows": 10, "bytes": 1000, "row_groups": 8, "sha256": c * 64, "role": role}
        for i, (c, role) in enumerate((("a", "train"), ("b", "val")))
    ]
    return build_manifest(
        "azure_blob",
        {"account": "devstoreaccount1", "container": "quratingfiltered", "prefix": ""},
        {"download_mode": "bulk"},
        shards,
        {"train_tokens": 5 * TBS},
    )


def random_manifest(folder: Path) -> dict:
    """A manifest of real parquet shards (held tokens estimated from the training files' bytes)."""
    folder.mkdir(parents=True, exist_ok=True)
    entries = []
    for i, role in enumerate(("train", "train", "val")):
        path = folder / f"shard_{i:05d}.parquet"
        texts = [f"document {i}-{j} " + "lorem ipsum " * (10 + j) for j in range(64)]
        pq.write_table(pa.table({"text": texts}), path, row_group_size=8, compression="zstd")
        entries.append(shard_entry(str(path), role=role))
    return build_manifest(
        "random_subset",
        {"kind": "hub", "dataset": "airtrain-ai/fineweb-edu-fortified", "config": None, "split": "train"},
        {"ratio": 0.165, "seed": 42, "rows_per_shard": 64},
        entries,
    )


def png_size(path: Path) -> tuple[int, int]:
    data = path.read_bytes()
    assert data[:8] == PNG_MAGIC, f"{path} is not a PNG"
    width, height = struct.unpack(">II", data[16:24])
    return width, height


def test_rows_of_a_finished_and_a_partial_arm(tmp_path: Path) -> None:
    manifest = random_manifest(tmp_path / "random")
    rows = build_rows(
        [
            ArmInput(arm="top16.5", log_text=TOP_LOG, manifest=top_manifest(), host="arms-top"),
            ArmInput(arm="random16.5", log_text=RANDOM_LOG, manifest=manifest),
        ],
        total_batch_size=TBS,
    )
    top, rnd = rows
    # finished: 20 steps (last line step 19/20) x the total batch; the manifest says 5 batches held
    assert top["state"] == "finished" and top["finished"] is True
    assert top["steps_done"] == 20 and top["num_iterations"] == 20
    assert top["tokens_seen"] == 20 * TBS
    assert top["tokens_held"] == 5 * TBS
    assert top["epochs"] == pytest.approx(4.0)
    assert top["final_val_bpb"] == pytest.approx(0.96) and top["final_val_step"] == 20
    assert top["min_val_bpb"] == pytest.approx(0.95)
    assert top["core"] == pytest.approx(0.2012) and top["core_step"] == 20
    assert top["wall_time_s"] == pytest.approx(750.0)  # "Total training time: 12.50m"
    # the median ignores the slow compiling first step (the mean would not)
    assert top["tok_per_sec"] == 1_000_950
    assert top["data"].startswith("Azure quratingfiltered, 2 shards")

    # partial: 8 steps done of 20, no end lines, an older commit's format with CRLF
    assert rnd["state"] == "partial" and rnd["finished"] is False
    assert rnd["steps_done"] == 8
    assert rnd["tokens_seen"] == 8 * TBS and rnd["tokens_planned"] == 20 * TBS
    train_bytes = sum(s["bytes"] for s in manifest["shards"] if s["name"] != "shard_00002.parquet")
    held = int(train_bytes * 3.0 / 4.8)  # held_tokens' rule without stats: parquet bytes x 3 / 4.8
    assert rnd["tokens_held"] == held
    assert rnd["epochs"] == pytest.approx(8 * TBS / held)
    assert rnd["final_val_bpb"] == pytest.approx(1.5012) and rnd["min_val_bpb"] == pytest.approx(1.5012)
    assert rnd["core"] is None
    assert rnd["wall_time_s"] == pytest.approx(0.35 * 60)  # the last step line's total time
    assert rnd["tok_per_sec"] == pytest.approx(903_500)  # median of 900,000 .. 907,000
    assert "step 7/20" in rnd["status"] and "not finished" in rnd["status"]
    assert rnd["data"].startswith("airtrain-ai/fineweb-edu-fortified random 16.5% seed 42, 3 shards")


def test_an_arm_without_step_lines_or_without_a_log_says_so() -> None:
    starting, missing = build_rows(
        [ArmInput(arm="late", log_text=STARTING_LOG), ArmInput(arm="absent", log_text=None)], total_batch_size=TBS
    )
    assert starting["state"] == "not_started" and starting["status"] == "no step line yet"
    assert starting["steps_done"] == 0 and starting["tokens_seen"] == 0
    assert starting["tokens_planned"] == 20 * TBS  # from "Number of iterations: 20"
    assert starting["epochs"] is None and starting["tok_per_sec"] is None and starting["final_val_bpb"] is None
    assert missing["state"] == "no_log" and missing["status"] == "no log"
    assert missing["tokens_seen"] is None and missing["min_val_bpb"] is None
    table = markdown_table([starting, missing])
    assert "| late |" in table and "no step line yet" in table and "| absent |" in table and "no log" in table


def test_run_facts_give_the_wall_time_and_their_own_batch_size() -> None:
    (row,) = build_rows(
        [
            ArmInput(
                arm="top16.5",
                log_text=TOP_LOG,
                facts={
                    "started": "2026-03-01T10:00:00+00:00",
                    "ended": "2026-03-01T12:30:00Z",
                    "total_batch_size": 1024,
                },
            )
        ],
        total_batch_size=TBS,
    )
    assert row["wall_time_s"] == pytest.approx(2.5 * 3600)
    assert row["wall_time_source"].startswith("run facts")
    assert row["tokens_seen"] == 20 * 1024


def test_a_run_made_from_other_inputs_is_marked_stale_in_the_table() -> None:
    facts = {"stale": True, "identity_changes": ["nanochat commit b07604ebaa6d -> 0a23f8764394"]}
    rows = build_rows([ArmInput(arm="top16.5", log_text=TOP_LOG, facts=facts)], total_batch_size=TBS)
    assert rows[0]["state"] == "stale"
    assert rows[0]["status"] == "STALE, not this experiment's result: nanochat commit b07604ebaa6d -> 0a23f8764394"
    (line,) = [r for r in markdown_table(rows).splitlines() if r.startswith("| top16.5 ")]
    assert line.endswith("| STALE, not this experiment's result: nanochat commit b07604ebaa6d -> 0a23f8764394 |")
    # the numbers of the old run are still shown: the mark says they are not this experiment's
    assert rows[0]["min_val_bpb"] is not None


def test_without_a_batch_size_tokens_and_epochs_are_unknown() -> None:
    (row,) = build_rows([ArmInput(arm="top16.5", log_text=TOP_LOG, manifest=top_manifest())])
    assert row["tokens_seen"] is None and row["epochs"] is None
    assert row["min_val_bpb"] == pytest.approx(0.95)  # the rest of the row still holds


def test_bad_arm_lists_are_refused_with_a_sentence() -> None:
    with pytest.raises(ArmsError, match="no arms"):
        build_rows([])
    with pytest.raises(ArmsError, match="given twice"):
        build_rows([ArmInput(arm="a", log_text=TOP_LOG), {"arm": "a", "log": RANDOM_LOG}])
    with pytest.raises(ArmsError, match="unknown arm keys colour"):
        build_rows([{"arm": "a", "log_text": "", "colour": "red"}])
    with pytest.raises(ArmsError, match="not a nanochat-arms manifest"):
        build_rows([ArmInput(arm="a", log_text=TOP_LOG, manifest={"shards": [{"rows": 3}, {"rows": 4}]})], TBS)


def test_markdown_table_shows_the_numbers() -> None:
    rows = build_rows(
        [
            ArmInput(arm="top16.5", log_text=TOP_LOG, manifest=top_manifest(), data="Azure top 16.5% | QuRating"),
            ArmInput(arm="random16.5", log_text=RANDOM_LOG),
        ],
        total_batch_size=TBS,
    )
    table = markdown_table(rows)
    lines = table.splitlines()
    assert lines[0].startswith("| arm | data | tokens seen | epochs | crop rate | passes over data | final val bpb |")
    assert len(lines) == 4
    top = lines[2]
    # the pipe in the data description is escaped, so every line has the same number of columns
    assert "Azure top 16.5% \\| QuRating" in top
    assert {line.replace("\\|", "").count("|") for line in lines} == {13}
    for cell in ("10.5M", "4.00", "0.9600", "0.9500", "0.2012 (step 20)", "12m30s", "1,000,950", "finished"):
        assert f" {cell} " in top, (cell, top)
    # a partial arm: tokens seen out of the planned total; no manifest -> epochs unknown
    rnd = lines[3]
    assert " 4.19M of 10.5M " in rnd and " — " in rnd and " 1.5012 " in rnd and "903,500" in rnd


def test_plot_writes_a_two_panel_png(tmp_path: Path) -> None:
    path = tmp_path / "loss.png"
    plot({"top16.5": series(TOP_LOG), "random16.5": series(RANDOM_LOG), "late": series(STARTING_LOG)}, str(path), "exp")
    assert png_size(path) == (1200, 480)
    assert path.stat().st_size > 20_000
    assert series(RANDOM_LOG)["val"] == [(0, 3.2801), (5, 1.5012)]
    assert [s for s, _ in series(TOP_LOG)["loss"]] == list(range(20))
    assert not [p for p in os.listdir(tmp_path) if p != "loss.png"]  # no temporary file left behind


def test_write_results_mid_training_then_finished(tmp_path: Path) -> None:
    out = tmp_path / "results" / "exp"
    partial_top = "\n".join(TOP_LOG.splitlines()[:9])  # 5 step lines, no end lines
    first = write_results(
        str(out),
        "qurating-top-vs-random-d26",
        [
            {"arm": "top16.5", "log_text": partial_top, "log_path": "results/exp/top16.5/train.log"},
            {"arm": "random16.5", "log_text": None, "log_path": "results/exp/random16.5/train.log"},
        ],
        total_batch_size=TBS,
    )
    assert first["markdown"] == str(out / "results.md") and first["plot"] == str(out / "loss.png")
    md = (out / "results.md").read_text()
    assert md.startswith("# Results: qurating-top-vs-random-d26")
    assert "![training loss and validation bpb against step, all arms](loss.png)" in md
    assert "- **top16.5**: log `results/exp/top16.5/train.log`: not finished, at step 4/20 (20.00%)" in md
    assert "- **random16.5**: no log yet" in md
    assert png_size(out / "loss.png") == (1200, 480)

    second = write_results(
        str(out),
        "qurating-top-vs-random-d26",
        [
            ArmInput(arm="top16.5", log_text=TOP_LOG, log_path="top.log", manifest=top_manifest()),
            ArmInput(arm="random16.5", log_text=RANDOM_LOG, log_path="random.log"),
        ],
        total_batch_size=TBS,
    )
    md = (out / "results.md").read_text()
    assert "- **top16.5**: log `top.log`: finished after 20 steps; holds about 2.62M training tokens" in md
    assert "- **random16.5**: log `random.log`: not finished, at step 7/20" in md
    assert [r["state"] for r in second["rows"]] == ["finished", "partial"]
    assert sorted(os.listdir(out)) == ["loss.png", "results.md"]


def run_cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, str(CLI), *args], capture_output=True, text=True, timeout=120)


def test_cli_writes_the_table_and_plot(tmp_path: Path) -> None:
    top_dir, rnd_dir = tmp_path / "top16.5", tmp_path / "random16.5"
    top_dir.mkdir()
    rnd_dir.mkdir()
    (top_dir / "train.log").write_text(TOP_LOG)
    (top_dir / "manifest.json").write_text(json.dumps(top_manifest()))
    (rnd_dir / "train.log").write_bytes(RANDOM_LOG.encode())
    facts = tmp_path / "top.pid.json"
    facts.write_text(json.dumps({"pid": 1, "started": "2026-03-01T10:00:00+00:00", "host": "arms-top"}))
    out = tmp_path / "out"
    proc = run_cli(
        "--experiment",
        "exp",
        "--out",
        str(out),
        "--total-batch-size",
        str(TBS),
        f"--arm=top16.5={top_dir / 'train.log'}:{top_dir / 'manifest.json'}",
        f"--arm=random16.5={rnd_dir / 'train.log'}:{rnd_dir / 'manifest.json'}",  # manifest not fetched
        f"--arm=spare={tmp_path / 'spare' / 'train.log'}",  # never launched
        "--data=random16.5=HF random 16.5%",
        f"--facts=top16.5={facts}",
    )
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.splitlines()
    assert lines[0].startswith("| arm | data |")
    assert lines[2].startswith("| top16.5 | Azure quratingfiltered") and " 4.00 " in lines[2]
    assert lines[3].startswith("| random16.5 | HF random 16.5% | 4.19M of 10.5M |")
    assert lines[4].startswith("| spare |") and "no log" in lines[4]
    assert "random16.5 has no manifest" in proc.stderr and "spare has no log" in proc.stderr
    assert "on arms-top" in (out / "results.md").read_text()
    assert png_size(out / "loss.png") == (1200, 480)


def test_cli_reads_what_collect_fetched_into_the_results_folder(tmp_path: Path) -> None:
    """collect.yml names the arms only (--collected): their files are found in OUT/<arm>/."""
    out = tmp_path / "results"
    (out / "top16.5").mkdir(parents=True)
    (out / "top16.5" / "train.log").write_text(TOP_LOG)
    (out / "top16.5" / "manifest.json").write_text(json.dumps(top_manifest()))
    (out / "top16.5" / "run.json").write_text(json.dumps({"stale": True, "identity_changes": ["commit a -> b"]}))
    proc = run_cli(
        "--experiment", "exp", "--out", str(out), "--total-batch-size", str(TBS), "--collected", "top16.5", "spare"
    )
    assert proc.returncode == 0, proc.stderr
    rows = proc.stdout.splitlines()
    assert rows[2].startswith("| top16.5 | Azure quratingfiltered") and "STALE" in rows[2]
    assert rows[3].startswith("| spare |") and "no log" in rows[3]


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--arm", "top16.5"], "is not NAME=LOGFILE"),
        (["--arm", "a=x.log", "--arm", "a=y.log"], "names arm a twice"),
        (["--arm", "a=x.log", "--data", "b=text"], "--data names arm b, which no --arm gives"),
        (["--arm", "a=x.log", "--total-batch-size", "0"], "is not a token count"),
        (["--arm", "a=LOG:BAD"], "not valid JSON"),
        (["--arm", "a=LOG:OTHER"], "not a nanochat-arms manifest"),
        (["--collected", "../etc"], "holds characters other than"),
        ([], "no arm given"),
    ],
)
def test_cli_bad_input_is_a_sentence_and_writes_nothing(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], args: list[str], message: str
) -> None:
    (tmp_path / "train.log").write_text(TOP_LOG)
    (tmp_path / "bad.json").write_text("{not json")
    (tmp_path / "other.json").write_text(json.dumps({"format": "something-else", "shards": []}))
    args = [
        a.replace("LOG", str(tmp_path / "train.log"))
        .replace("BAD", str(tmp_path / "bad.json"))
        .replace("OTHER", str(tmp_path / "other.json"))
        for a in args
    ]
    out = tmp_path / "out"
    assert collect_results.main(["--experiment", "exp", "--out", str(out), *args]) == 1
    err = capsys.readouterr().err
    assert err.startswith("error: ") and message in err
    assert not out.exists()


# Each arm's data as nanochat's loader packs it (nanochat_data_budget's figures at T=2048; the top arm's longer
# documents lose more to cropping): the README's data budget example is this table.
TOP_BUDGET = {"tokens_held": 5 * TBS, "loader_tokens_per_pass": 25 * TBS // 8, "crop_rate": 0.375, "max_seq_len": 2048}
RANDOM_BUDGET = {"tokens_held": 8 * TBS, "loader_tokens_per_pass": 6 * TBS, "crop_rate": 0.25, "max_seq_len": 2048}


def test_the_table_gives_each_arms_crop_rate_and_passes_over_what_the_loader_yields() -> None:
    rows = build_rows(
        [
            ArmInput(arm="top16.5", log_text=TOP_LOG, manifest=top_manifest(), budget=TOP_BUDGET),
            ArmInput(arm="random16.5", log_text=RANDOM_LOG, budget=RANDOM_BUDGET),
        ],
        total_batch_size=TBS,
    )
    top, rnd = rows
    # finished: 20 batches seen; the arm holds 5 (epochs 4.00), but the loader yields 3.125 a pass: 6.4 passes
    assert top["epochs"] == pytest.approx(4.0) and top["passes"] == pytest.approx(6.4) and top["crop_rate"] == 0.375
    # mid-run: 8 steps of 20 planned over 6 batches a pass
    assert rnd["passes"] == pytest.approx(8 / 6) and rnd["passes_planned"] == pytest.approx(20 / 6)
    lines = markdown_table(rows).splitlines()
    assert lines[0].startswith("| arm | data | tokens seen | epochs | crop rate | passes over data | final val bpb |")
    assert " | 4.00 | 37.5% | 6.40 | 0.9600 |" in lines[2]
    assert " | — | 25.0% | 1.33 of 3.33 | 1.5012 |" in lines[3]
    assert {line.count("|") for line in lines} == {13}


def test_the_results_page_says_what_the_loader_yields_of_what_each_arm_holds(tmp_path: Path) -> None:
    arms = [ArmInput(arm="top16.5", log_text=TOP_LOG, log_path="top.log", budget=TOP_BUDGET)]
    write_results(str(tmp_path), "exp", arms, total_batch_size=TBS)
    md = (tmp_path / "results.md").read_text()
    assert "nanochat's loader yields 1.64M tokens a pass of 2.62M held (it crops 37.5% at T=2048" in md
    assert "passes over data = tokens seen / tokens the loader yields a pass" in md


def test_a_budget_that_is_not_a_measurement_is_refused_with_a_sentence() -> None:
    with pytest.raises(ArmsError, match="the data budget of arm a is not one nanochat_data_budget measured"):
        build_rows([ArmInput(arm="a", log_text=TOP_LOG, budget={"crop_rate": 1.5, "loader_tokens_per_pass": 10})])


def test_cli_reads_the_budget_the_arm_host_cached_beside_its_data(tmp_path: Path) -> None:
    """collect.yml fetches <data_dir>.budget.json ({"key": ..., "budget": ...}) into OUT/<arm>/budget.json."""
    out = tmp_path / "results"
    (out / "top16.5").mkdir(parents=True)
    (out / "top16.5" / "train.log").write_text(TOP_LOG)
    (out / "top16.5" / "budget.json").write_text(json.dumps({"key": {"max_seq_len": 2048}, "budget": TOP_BUDGET}))
    (out / "random16.5").mkdir(parents=True)
    (out / "random16.5" / "train.log").write_bytes(RANDOM_LOG.encode())
    proc = run_cli(
        "--experiment", "exp", "--out", str(out), "--total-batch-size", str(TBS), "--collected", "top16.5", "random16.5"
    )
    assert proc.returncode == 0, proc.stderr
    rows = proc.stdout.splitlines()
    assert rows[2].startswith("| top16.5 |") and " | 37.5% | 6.40 | " in rows[2]
    assert rows[3].startswith("| random16.5 |") and " | — | — | " in rows[3]
    assert "random16.5 has no data budget" in proc.stderr and "crop rate and passes are unknown" in proc.stderr
