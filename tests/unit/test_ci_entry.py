"""The CI entry (nanochat-arms-run): real ansible-runner runs of small playbooks on the controller."""

from __future__ import annotations

import json
import os
import secrets
import subprocess
import sys
from pathlib import Path
from typing import Any

import nanochat_arms_run
import pytest
from ansible.module_utils.arms_common import ArmsError

ROOT = Path(__file__).resolve().parents[2]
ENTRY = ROOT / "scripts" / "nanochat_arms_run.py"
FIXTURES = ROOT / "tests" / "fixtures"
INVENTORY = FIXTURES / "inventory.ini"

TORCHRUN = """#!/bin/sh
echo "Number of iterations: 1"
echo "step 00000/00001 (0.00%) | loss: 10.397625 | lrm: 1.00 | dt: 512.34ms | tok/sec: 4,000 | bf16_mfu: 0.10 \
| epoch: 1 pq: 0 rg: 0 | total time: 0.01m"
echo "Step 00001 | Validation bpb: 3.210000"
echo "Total training time: 0.01m"
echo "Minimum validation bpb: 3.210000"
"""


def run_entry(tmp_path: Path, *args: str, env_extra: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    """The entry as CI runs it: its own process, from the checkout, temporary files under tmp_path/tmp."""
    tmp = tmp_path / "tmp"
    tmp.mkdir(exist_ok=True)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("WANDB_", "HF_", "HUGGINGFACE_", "AZURE_"))}
    env.update(TMPDIR=str(tmp), **(env_extra or {}))
    return subprocess.run(
        [sys.executable, str(ENTRY), *args], cwd=ROOT, env=env, capture_output=True, text=True, timeout=300
    )


def leftovers(tmp_path: Path) -> list[str]:
    """The entry's own temporary folders and secret files left in its TMPDIR."""
    return sorted(p for p in os.listdir(tmp_path / "tmp") if p.startswith(("nanochat-arms-run-", "arms-secrets-")))


def prepare_workdir(work: Path) -> None:
    """What pass.yml expects: a nanochat-looking checkout, a torchrun stand-in, the progress state."""
    (work / "checkout" / "scripts").mkdir(parents=True)
    # argparse with dashed options, as real nanochat declares them (the launcher reads its flag style here)
    (work / "checkout" / "scripts" / "base_train.py").write_text(
        'parser.add_argument("--device-batch-size", type=int)\n'
    )
    (work / "venv" / "bin").mkdir(parents=True)
    (work / "venv" / "bin" / "torchrun").write_text(TORCHRUN)
    (work / "venv" / "bin" / "torchrun").chmod(0o755)
    (work / "progress").mkdir()
    (work / "progress" / "step.json").write_text(json.dumps({"line": "chunk 0 of 2"}))


def test_a_passing_run_exits_0_with_a_summary(tmp_path: Path) -> None:
    work = tmp_path / "work"
    prepare_workdir(work)
    summary_path = tmp_path / "ci" / "summary.json"
    proc = run_entry(
        tmp_path,
        "tests/fixtures/playbooks/pass.yml",
        "-i",
        "tests/fixtures/inventory.ini",
        "-e",
        f"workdir={work}",
        "--summary",
        str(summary_path),
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    summary: dict[str, Any] = json.loads(summary_path.read_text())
    assert summary["ok"] is True and summary["status"] == "successful" and summary["rc"] == 0
    assert summary["playbook"] == "tests/fixtures/playbooks/pass.yml"
    assert summary["hosts"] == {
        "localhost": {"ok": 4, "changed": 4, "failed": 0, "unreachable": 0, "skipped": 0, "rescued": 0, "ignored": 0}
    }
    tasks = {t["task"]: t for t in summary["tasks"]}
    assert list(tasks) == [
        "The runs folder exists",
        "A background step runs",
        "The background step is done (progress below)",
        "The training run is launched",
    ]
    assert all(t["host"] == "localhost" and t["status"] == "changed" and t["duration_s"] > 0 for t in tasks.values())
    # the wait polled at least twice, one second apart
    assert tasks["The background step is done (progress below)"]["duration_s"] >= 1.0
    assert tasks["The training run is launched"]["action"] == "nanochat_train"
    # the run launched, with its log, which holds the stand-in's step line
    (run,) = summary["runs"]
    assert run["host"] == "localhost" and run["run_name"] == "ci-demo" and run["arm"] == "demo"
    assert run["log"] == str(work / "runs" / "ci-demo.log") and run["pid"] > 0
    assert "step 00000/00001" in Path(run["log"]).read_text()
    assert summary["progress"] and all(p.startswith("[localhost] chunk ") for p in summary["progress"])
    assert summary["failures"] == [] and summary["private_data_dir"] is None

    out = proc.stdout
    assert "PLAY A small experiment on the controller" in out
    assert "TASK The training run is launched" in out and "  changed: [localhost]" in out
    assert "  [localhost] chunk " in out  # a progress line, while the step ran
    assert "RUNS LAUNCHED" in out and f"ci-demo (arm demo), pid {run['pid']}, log {run['log']}" in out
    assert out.rstrip().splitlines()[-2].startswith("OK: tests/fixtures/playbooks/pass.yml succeeded")
    # success: the temporary private data dir is gone
    assert leftovers(tmp_path) == []


def test_a_failed_task_or_an_unreachable_host_exits_non_zero(tmp_path: Path) -> None:
    summary_path = tmp_path / "summary.json"
    proc = run_entry(
        tmp_path, "tests/fixtures/playbooks/fail.yml", "-i", str(INVENTORY), "--summary", str(summary_path)
    )
    assert proc.returncode == 1
    summary = json.loads(summary_path.read_text())
    assert summary["ok"] is False and summary["status"] == "failed"
    assert summary["hosts"]["localhost"]["failed"] == 1 and summary["hosts"]["localhost"]["ok"] == 1
    assert summary["hosts"]["ghost"]["unreachable"] == 1
    failures = {f["host"]: f for f in summary["failures"]}
    assert failures["localhost"]["task"] == "The GPU is visible"
    assert failures["localhost"]["msg"] == "no GPU 1 on localhost: this host cannot train an arm"
    assert failures["ghost"]["task"] == "The host is reachable" and "Connection refused" in failures["ghost"]["msg"]
    assert "Never reached" not in {t["task"] for t in summary["tasks"]}
    # failure: the artifacts are kept for the post-mortem, and the summary says where
    assert Path(summary["private_data_dir"], "artifacts").is_dir()
    assert "FAILURES" in proc.stdout and "no GPU 1 on localhost" in proc.stdout
    assert "FAILED: tests/fixtures/playbooks/fail.yml: failed or unreachable: ghost, localhost" in proc.stdout
    assert f"artifacts: {summary['private_data_dir']}" in proc.stdout


def test_secrets_from_the_environment_reach_the_playbook_and_nothing_else(tmp_path: Path) -> None:
    wandb_key = "wandb_v1_" + secrets.token_hex(40)[:77]  # an 86-character key
    hf_token = "hf_" + secrets.token_hex(17)
    work, pdd, summary_path = tmp_path / "work", tmp_path / "pdd", tmp_path / "summary.json"
    work.mkdir()
    proc = run_entry(
        tmp_path,
        "tests/fixtures/playbooks/secret.yml",
        "-i",
        str(INVENTORY),
        "-e",
        json.dumps({"workdir": str(work)}),
        "--private-data-dir",
        str(pdd),
        "--summary",
        str(summary_path),
        env_extra={"WANDB_API_KEY": wandb_key, "HF_TOKEN": hf_token},
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    # the playbook got the key (as credentials_wandb_api_key; its assert checked the env had none)
    assert (work / "wandb.key").read_text() == wandb_key
    files = [p for p in pdd.rglob("*") if p.is_file()]
    assert any("job_events" in str(p) for p in files)
    for secret in (wandb_key, hf_token):
        for path in files:
            assert secret.encode() not in path.read_bytes(), f"{secret[:6]}... leaked into {path}"
        assert secret not in proc.stdout and secret not in proc.stderr
        assert secret not in summary_path.read_text()
    # the careless debug task did print it: the scrubbed artifacts show where it was
    assert any(b"the key is ********" in p.read_bytes() for p in files)
    assert leftovers(tmp_path) == []  # the 0600 secrets vars file is gone too


def test_bad_arguments_exit_2_with_a_sentence(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    cases = [
        (["no/such/playbook.yml", "-i", str(INVENTORY)], "the playbook no/such/playbook.yml does not exist"),
        ([str(FIXTURES / "playbooks" / "pass.yml"), "-i", "nowhere/"], "the inventory nowhere/ does not exist"),
        ([str(FIXTURES / "playbooks" / "pass.yml"), "-i", str(INVENTORY), "-e", "workdir"], "is not key=value"),
        (
            [str(FIXTURES / "playbooks" / "pass.yml"), "-i", str(INVENTORY), "-e", "credentials_wandb_api_key=abc"],
            "a secret: extra vars are stored",
        ),
    ]
    for argv, message in cases:
        assert nanochat_arms_run.main(argv) == 2
        err = capsys.readouterr().err
        assert err.startswith("nanochat-arms-run: error: ") and message in err, err


def test_extra_vars_forms_merge_left_to_right(tmp_path: Path) -> None:
    (tmp_path / "vars.yml").write_text("arms_wandb_mode: offline\nnested: {a: 1}\n")
    got = nanochat_arms_run.parse_extra_vars(
        ["arms_skip_download=true note='two words'", f"@{tmp_path / 'vars.yml'}", '{"nested": {"b": 2}, "n": 3}']
    )
    assert got == {
        "arms_skip_download": "true",
        "note": "two words",
        "arms_wandb_mode": "offline",
        "nested": {"b": 2},
        "n": 3,
    }
    with pytest.raises(ArmsError, match="must hold a mapping"):
        (tmp_path / "list.yml").write_text("- a\n- b\n")
        nanochat_arms_run.parse_extra_vars([f"@{tmp_path / 'list.yml'}"])


def test_a_playbook_ansible_refuses_shows_ansibles_words(tmp_path: Path) -> None:
    proc = run_entry(tmp_path, "tests/fixtures/playbooks/broken.yml", "-i", str(INVENTORY))
    assert proc.returncode == 1
    assert "(no host ran a task)" in proc.stdout
    assert "ANSIBLE OUTPUT (last lines)" in proc.stdout
    assert "couldn't resolve module/action 'ansible.builtin.pingg'" in proc.stdout
    assert "\x1b[" not in proc.stdout  # no terminal colour codes in a CI log
    assert "FAILED: tests/fixtures/playbooks/broken.yml: ansible-runner status failed" in proc.stdout
