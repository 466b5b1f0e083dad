"""What a run would fetch is there before launch, and a run starved of data is named by the status.

(a) nanochat's CORE eval bundle: the lab's CPU node places a local zip of the real bundle's shape
(.lab/data/eval_bundle.zip, written by scripts/lab.sh; arms_eval_bundle_src in inventory/lab) once, and the
data step places it on every arm host with the same sha256. The lab's runs skip CORE (core-metric-every: -1),
so arms_eval_bundle_always makes the placement and the preflight's check run anyway.

(b) a run starved on purpose: the real nanochat, launched by train.yml with the preflight skipped, on a base
dir of its own whose only training file has no row group (the lab trains one process, world size 1, so rank
0 gets nothing). nanochat prints its model config, then its loader spins forever; status.yml names the rank
and the file.
"""

from __future__ import annotations

import hashlib
import json
import os
import time
from typing import Any

import pytest
from conftest import LAB, converge, failure_text, lab_overrides, on_host, play

pytestmark = pytest.mark.lab
ARM_HOSTS = ("top", "random")
RECORD = "~/.cache/nanochat/eval_bundle/.nanochat-arms-bundle.json"
REPAIR = "ansible-playbook playbooks/data.yml -i inventory/lab/ --tags eval"


@pytest.fixture(scope="module")
def data(lab):
    converge(lab, "playbooks/setup.yml", "playbooks/data.yml", "playbooks/tokenizer.yml")
    return lab


def recorded_sha(host: str) -> str:
    return json.loads(on_host(host, f"cat {RECORD}").stdout)["sha256"]


def test_the_eval_bundle_is_on_every_arm_host_with_the_cpu_nodes_checksum(data) -> None:
    with open(os.path.join(LAB, "data", "eval_bundle.zip"), "rb") as fh:
        lab_zip = hashlib.sha256(fh.read()).hexdigest()
    assert recorded_sha("cpu") == lab_zip
    for host in ARM_HOSTS:
        assert recorded_sha(host) == lab_zip
        zip_sha = on_host(host, "sha256sum ~/.cache/nanochat/eval_bundle.zip").stdout.split()[0]
        assert zip_sha == lab_zip
        # where nanochat's evaluate_core looks: with the folder there it never downloads
        on_host(
            host, "test -f ~/.cache/nanochat/eval_bundle/core.yaml && test -d ~/.cache/nanochat/eval_bundle/eval_data"
        )
    again = play("playbooks/data.yml", data, tags="eval")
    assert again.ok, failure_text(again)
    assert {h: s.changed for h, s in again.hosts.items()} == dict.fromkeys(again.hosts, 0)
    sent = [t["task"] for t in again.tasks if t["status"] != "skipped" and t["task"].startswith("Files are sent")]
    assert sent == [], "a second run sent the bundle again"
    assert "arms-transfer" not in on_host("top", "cat ~/.ssh/authorized_keys").stdout


def test_the_preflight_refuses_a_changed_or_missing_bundle_and_the_data_step_repairs_it(data) -> None:
    on_host("top", "printf 'edited' >> ~/.cache/nanochat/eval_bundle/core.yaml")
    on_host("random", "rm -rf ~/.cache/nanochat/eval_bundle ~/.cache/nanochat/eval_bundle.zip")
    summary = play("playbooks/preflight.yml", data)
    assert not summary.ok
    text = failure_text(summary)
    assert "top (top16.5): " in text and "differs from the bundle placed there" in text
    assert "random (random16.5): " in text and "eval_bundle is missing" in text
    assert REPAIR in text
    repaired = play("playbooks/data.yml", data, tags="eval")
    assert repaired.ok, failure_text(repaired)
    assert repaired.hosts["top"].changed >= 1 and repaired.hosts["random"].changed >= 1
    assert recorded_sha("top") == recorded_sha("random") == recorded_sha("cpu")
    assert play("playbooks/preflight.yml", data).ok


def test_real_nanochat_evaluates_core_on_the_placed_bundle_without_downloading(data) -> None:
    """The lab's runs skip CORE; this one run (2 steps, CORE at its last step) turns it on to show that the
    bundle the data step placed is the one real nanochat reads (measured: evaluate_core on the lab's tiny
    bundle takes under a second on CPU with a depth-2 model)."""
    ov = lab_overrides()
    ov["model"]["extra_flags"].update({"num-iterations": 2, "core-metric-every": 2})
    ov["arms"]["random16.5"]["run_name"] = "lab-core"
    extravars = {"experiment_overrides": ov, "arms_only": ["random16.5"], "arms_force_restart": True}
    extravars["arms_allow_unequal_repeats"] = True
    try:
        trained = play("playbooks/train.yml", data, extravars=extravars)  # the preflight checks the bundle: CORE is on
        assert trained.ok, failure_text(trained)
        log_path = "~/.local/share/nanochat-arms/runs/lab-core.log"
        for _ in range(60):  # until the run has ended (a poll: the lab trains at nice 19)
            if on_host("random", f"grep -c 'Total training time' {log_path} || true").stdout.strip() not in ("", "0"):
                break
            time.sleep(5)
        log = on_host("random", f"cat {log_path}").stdout
        assert "Step 00002 | CORE metric: " in log, log[-3000:]
        assert "Evaluating: jeopardy (1-shot, type: language_modeling)" in log
        # nanochat's download_file_with_lock leaves eval_bundle.zip.lock beside the zip when it downloads
        assert on_host("random", "ls ~/.cache/nanochat").stdout.split().count("eval_bundle.zip.lock") == 0
    finally:
        play("playbooks/stop.yml", data, extravars=extravars)
        on_host("random", "rm -f ~/.cache/nanochat/base_checkpoints/d2/*_000002*")


# -------------------------------------------------------------------------------------------------
# (b) a run starved of data
# -------------------------------------------------------------------------------------------------

STARVED = "lab-starved"
# the only training file has no row group at all (written by the nanochat venv's pyarrow); the val file is
# the lab's shared one, so the data dir has the usual shape
MAKE_STARVED = (
    'set -e; b=~/.cache/nanochat-starved; rm -rf "$b"; mkdir -p "$b/base_data"; '
    'cp -r ~/.cache/nanochat/tokenizer "$b/"; '
    'cp ~/.cache/nanochat/base_data/shard_val.parquet "$b/base_data/"; '
    '~/nanochat/.venv/bin/python -c "import sys, pyarrow as pa, pyarrow.parquet as pq; '
    'pq.ParquetWriter(sys.argv[1], pa.schema([(\'text\', pa.string())])).close()" "$b/base_data/shard_00000.parquet"'
)


def starved_vars(home: str, **more: Any) -> dict[str, Any]:
    ov = lab_overrides()
    ov["arms"]["random16.5"]["run_name"] = STARVED  # a run of its own: the lab's random run is left alone
    return {
        "experiment_overrides": ov,
        "nanochat_base_dir": f"{home}/.cache/nanochat-starved",
        "arms_only": ["random16.5"],
        **more,
    }


def test_the_status_of_a_run_starved_of_data_names_the_rank_and_the_file(data) -> None:
    home = on_host("random", "echo $HOME").stdout.strip()
    on_host("random", MAKE_STARVED)
    try:
        started = play(
            "playbooks/train.yml",
            data,
            limit="random",
            skip_tags="preflight",  # the preflight would refuse this data: "rank 0 of 1 has no row group in ..."
            extravars=starved_vars(home, arms_start_timeout=60, arms_force_restart=True),
        )
        assert not started.ok  # it never prints a step line
        assert "printed no step line within 60s; it is still running" in failure_text(started)
        cause = "rank 0 has no row group in shard_00000.parquet (0 row groups)"
        status = started
        for _ in range(18):  # until nanochat has printed its model config and been silent arms_run_stall_after s
            status = play(
                "playbooks/status.yml", data, limit="random", extravars=starved_vars(home, arms_run_stall_after=20)
            )
            assert status.ok, failure_text(status)
            if cause in status.stdout:
                break
            time.sleep(10)
        assert cause in status.stdout, status.stdout[-3000:]
        assert "random | random16.5 | alive pid" in status.stdout
        assert "no step line and no output for" in status.stdout and "after the model config" in status.stdout
        assert "ansible-playbook playbooks/stop.yml -i inventory/lab/ -l random" in status.stdout
        log = on_host("random", f"cat ~/.local/share/nanochat-arms/runs/{STARVED}.log").stdout
        assert "Model config:" in log and "step 0" not in log
    finally:
        stopped = play("playbooks/stop.yml", data, limit="random", extravars=starved_vars(home))
        on_host("random", "rm -rf ~/.cache/nanochat-starved")
        assert stopped.ok, failure_text(stopped)
