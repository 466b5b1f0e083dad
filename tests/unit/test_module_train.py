"""library/nanochat_train.py with real detached processes (a fake torchrun that prints nanochat's lines)."""

from __future__ import annotations

import contextlib
import glob
import json
import os
import signal
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from ansible.module_utils.arms_process import group_members, read_pidfile
from modtest import load_module, run_module

SECRET = "wandb_v1_" + "s3cr3t" * 12 + "abcde"  # 86 characters, like a new W&B key

# Stands in for <venv>/bin/torchrun: a process group of itself plus one "worker", printing nanochat's
# rank-0 lines. FAKE_MODE: train (default), crash (rustbpe missing), hang (never reaches a step).
FAKE_TORCHRUN = """\
#!{python}
import json, os, subprocess, sys, time
args = sys.argv[1:]
# torchrun: flags after "--"; a plain `python -m scripts.base_train FLAGS`: flags after the module
flags = args[args.index("--") + 1:] if "--" in args else args[args.index("scripts.base_train") + 1:]
def flag(name, default):
    for item in flags:
        if item.startswith("--" + name + "="):
            return item.split("=", 1)[1]
    return default
mode = os.environ.get("FAKE_MODE", "train")
steps = int(flag("num-iterations", "5"))
delay = float(os.environ.get("FAKE_DELAY", "0.05"))
worker = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(600)"])
seen = {{"argv": args, "worker": worker.pid, "key": os.environ.get("WANDB_API_KEY"), "cwd": os.getcwd(),
         "group": os.environ.get("WANDB_RUN_GROUP"), "tags": os.environ.get("WANDB_TAGS"),
         "base": os.environ.get("NANOCHAT_BASE_DIR"), "omp": os.environ.get("OMP_NUM_THREADS")}}
with open(os.environ["FAKE_OUT"], "w") as fh:
    json.dump(seen, fh)
print("Autodetected device type: cpu", flush=True)
if mode == "crash":
    print("[rank0]: Traceback (most recent call last):", flush=True)
    print("[rank0]:     import rustbpe", flush=True)
    print("[rank0]: ModuleNotFoundError: No module named 'rustbpe'", flush=True)
    worker.kill()
    sys.exit(1)
if mode == "hang":
    time.sleep(600)
print(f"Number of iterations: {{steps}}", flush=True)
for step in range(steps):
    print(f"step {{step:05d}}/{{steps:05d}} ({{100 * step / steps:.2f}}%) | loss: {{9 - step / steps:.6f}} | "
          f"lrm: 1.00 | dt: 50.00ms | tok/sec: 1,234 | mfu: 0.01 | epoch: 1 pq: 0 rg: {{step}} | "
          f"total time: {{step * delay / 60:.2f}}m | eta: 0.1m", flush=True)
    time.sleep(delay)
print(f"Step {{steps:05d}} | Validation bpb: 1.234567", flush=True)
print("Peak memory usage: 12.34MiB", flush=True)
print("Total training time: 0.01m", flush=True)
print("Minimum validation bpb: 1.234567", flush=True)
worker.kill()
"""


# the option lines the launcher reads its flag style from (as real nanochat's argparse declares them)
BASE_TRAIN_DASH = 'parser.add_argument("--device-batch-size", type=int, default=32)\n'
BASE_TRAIN_UNDERSCORE = 'parser.add_argument("--device_batch_size", type=int, default=32)\n'


@pytest.fixture
def lab(tmp_path: Path) -> Iterator[dict[str, Any]]:
    """A checkout, a venv with the fake torchrun, a base dir, an env file; kills what tests start."""
    checkout = tmp_path / "nanochat"
    (checkout / "scripts").mkdir(parents=True)
    (checkout / "scripts" / "base_train.py").write_text(BASE_TRAIN_DASH)
    venv_bin = tmp_path / "venv" / "bin"
    venv_bin.mkdir(parents=True)
    torchrun = venv_bin / "torchrun"
    torchrun.write_text(FAKE_TORCHRUN.format(python=sys.executable))
    torchrun.chmod(0o755)
    # the venv's python, for the one-process launch (real nanochat on CPU): the same fake, one process
    (venv_bin / "python").write_text(FAKE_TORCHRUN.format(python=sys.executable))
    (venv_bin / "python").chmod(0o755)
    env_file = tmp_path / "secrets.env"
    env_file.write_text(f"WANDB_API_KEY={SECRET}\n")
    env_file.chmod(0o600)
    base = tmp_path / "base"
    base.mkdir()
    args = {
        "chdir": str(checkout),
        "venv": str(tmp_path / "venv"),
        "base_dir": str(base),
        "run_name": "run-a",
        "arm": "top16.5",
        "experiment": "exp16",
        "depth": 4,
        "device_batch_size": 2,
        "total_batch_size": 512,
        "gpus_per_node": 2,
        "extra_flags": {"max_seq_len": 128, "num_iterations": 5},
        "env_file": str(env_file),
        "extra_env": {"FAKE_OUT": str(tmp_path / "seen.json"), "WANDB_MODE": "offline"},
        "host": "gpu-a",
    }
    yield {"args": args, "tmp": tmp_path, "seen": tmp_path / "seen.json", "state": base / "arms_runs"}
    for pidfile in glob.glob(str(base / "arms_runs" / "*.pid.json")):
        record = read_pidfile(pidfile)
        if record:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(record["pgid"], signal.SIGKILL)


def run(capsys: pytest.CaptureFixture[str], args: dict[str, Any], **changes: Any) -> dict[str, Any]:
    check_mode = changes.pop("_check", False)
    return run_module("nanochat_train", {**args, **changes}, capsys, check_mode=check_mode)


def wait_until(predicate, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.05)


def seen(lab: dict[str, Any]) -> dict[str, Any]:
    wait_until(lambda: lab["seen"].exists() and lab["seen"].stat().st_size > 0)
    return json.loads(lab["seen"].read_text())


def cmdlines(pgid: int) -> str:
    out = []
    for pid in group_members(pgid):
        with contextlib.suppress(OSError):
            out.append(Path(f"/proc/{pid}/cmdline").read_bytes().decode(errors="replace"))
    return "\n".join(out)


def test_documentation_matches_the_argument_spec() -> None:
    mod = load_module("nanochat_train")
    options = yaml.safe_load(mod.DOCUMENTATION)["options"]
    assert set(options) == set(mod.ARGUMENT_SPEC)
    for name, spec in mod.ARGUMENT_SPEC.items():
        assert options[name]["type"] == spec["type"], name
        assert options[name].get("default") == spec.get("default"), name
        assert options[name].get("required", False) == spec.get("required", False), name
        assert options[name].get("choices") == spec.get("choices"), name
    yaml.safe_load(mod.EXAMPLES)
    assert set(yaml.safe_load(mod.RETURN)) >= {
        "pid",
        "pgid",
        "run_name",
        "log",
        "pidfile",
        "cmd",
        "started",
        "alive",
        "finished",
        "progress",
        "diagnosis",
        "msg",
    }


def test_launch_double_launch_status_other_run_and_stop(lab, capsys) -> None:
    args = {**lab["args"], "extra_flags": {"max_seq_len": 128, "num_iterations": 100000}}
    first = run(capsys, args, wait_for_step=True, start_timeout=30)
    assert first["changed"] is True and first["alive"] is True, first["msg"]
    assert first["progress"]["started"] and first["progress"]["last_step"]["total"] == 100000
    assert "Training started" in first["msg"]
    pid = first["pid"]

    # what the run got: flags, W&B grouping, the secret from the env file
    facts = seen(lab)
    assert facts["argv"][:3] == ["--standalone", "--nproc_per_node=2", "-m"]
    assert "--device-batch-size=2" in facts["argv"] and "--model-tag=d4" in facts["argv"]
    assert (facts["group"], facts["tags"], facts["omp"]) == ("exp16", "top16.5,exp16", "1")
    assert facts["key"] == SECRET and facts["cwd"] == args["chdir"]
    # ... but the secret is in no command line of the run's processes, nor in the result
    assert SECRET not in cmdlines(first["pgid"]) and "scripts.base_train" in cmdlines(first["pgid"])
    assert SECRET not in json.dumps(first)
    assert first["cmd"][0] == "/bin/bash" and first["env"]["WANDB_MODE"] == "offline"

    again = run(capsys, args, wait_for_step=True)
    assert again["changed"] is False and again["pid"] == pid and again["alive"]
    assert "already running" in again["msg"]

    status = run(capsys, args, state="status")
    assert status["changed"] is False and status["alive"] and status["progress"]["last_step"]["step"] >= 0
    assert status["msg"].startswith("run run-a is running")

    other = run(capsys, {**args, "run_name": "run-b"})
    assert other["failed"] is True
    assert f"run run-a (pid {pid}" in other["msg"] and "playbooks/stop.yml" in other["msg"]
    assert not os.path.exists(lab["state"] / "run-b.pid.json")  # nothing half-started

    stopped = run(capsys, args, state="stopped", stop_timeout=10)
    assert stopped["changed"] is True and stopped["alive"] is False
    assert stopped["msg"].startswith("stopped run run-a: sent SIGTERM to process group")
    assert group_members(first["pgid"]) == []  # the worker went with it
    assert run(capsys, args, state="stopped")["changed"] is False
    after = run(capsys, args, state="status")
    assert "was stopped at" in after["msg"] and after["diagnosis"] == []  # a stop is no failure


def nice_of(pid: int) -> int:
    with open(f"/proc/{pid}/stat") as fh:
        return int(fh.read().rsplit(")", 1)[1].split()[16])


def test_a_niced_run_runs_at_that_niceness_and_a_bad_one_is_refused(lab, capsys) -> None:
    args = {**lab["args"], "extra_flags": {"max_seq_len": 128, "num_iterations": 100000}, "niceness": 19}
    assert run(capsys, {**args, "niceness": 25})["msg"] == "niceness must be between 0 and 19, not 25."
    first = run(capsys, args, wait_for_step=True, start_timeout=30)
    try:
        assert first["changed"] is True
        members = group_members(first["pgid"])
        assert members and {nice_of(pid) for pid in members} == {19}
        if os.path.exists("/proc/self/autogroup"):  # the session's group is niced too, or nice means little
            with open(f"/proc/{first['pid']}/autogroup") as fh:
                assert fh.read().split()[-1] == "19"
    finally:
        assert run(capsys, args, state="stopped", stop_timeout=10)["alive"] is False


def test_finished_run_is_reported_not_restarted_unless_forced(lab, capsys) -> None:
    args = {**lab["args"], "extra_flags": {"max_seq_len": 128, "num_iterations": 3}}
    first = run(capsys, args, wait_for_step=True, start_timeout=30)
    assert first["changed"] is True
    wait_until(lambda: run(capsys, args, state="status")["finished"])
    done = run(capsys, args)
    assert done["changed"] is False and done["finished"] is True and done["exit_code"] == 0
    assert "already finished" in done["msg"] and done["progress"]["min_val_bpb"] == 1.234567
    assert "-e arms_force_restart=true" in done["msg"]  # the switch a playbook user passes
    assert done["diagnosis"] == []
    forced = run(capsys, args, force=True)
    assert forced["changed"] is True and forced["pid"] != first["pid"]
    # the first launch's log was kept aside, the new one starts empty of its lines
    assert len(glob.glob(str(lab["state"] / "run-a.*.log"))) == 1


def test_crash_before_the_first_step_fails_with_the_diagnosis(lab, capsys) -> None:
    args = {**lab["args"], "extra_env": {**lab["args"]["extra_env"], "FAKE_MODE": "crash"}}
    result = run(capsys, args, wait_for_step=True, start_timeout=30)
    assert result["failed"] is True
    assert "died before its first step (exit code 1)" in result["msg"]
    assert "'rustbpe'" in result["msg"]
    assert "ansible-playbook playbooks/repair.yml -i inventory/ --tags deps -l gpu-a" in result["msg"]
    assert result["diagnosis"][0]["id"] == "missing_module"
    assert result["log_tail"][-1] == "[rank0]: ModuleNotFoundError: No module named 'rustbpe'"


def test_killed_run_is_reported_with_its_diagnosis_then_relaunched(lab, capsys) -> None:
    args = {**lab["args"], "extra_flags": {"max_seq_len": 128, "num_iterations": 100000}}
    first = run(capsys, args, wait_for_step=True, start_timeout=30)
    os.killpg(first["pgid"], signal.SIGKILL)
    wait_until(lambda: not run(capsys, args, state="status")["alive"])
    status = run(capsys, args, state="status")
    assert status["alive"] is False and status["finished"] is False and status["exit_code"] is None
    assert [f["id"] for f in status["diagnosis"]] == ["vanished"]
    assert status["diagnosis"][0]["evidence"].startswith("step ")  # the last line it printed
    assert "is not running and did not finish" in status["msg"] and "killed from outside" in status["msg"]
    assert status["log_tail"]
    again = run(capsys, args)
    assert again["changed"] is True and again["alive"] and again["pid"] != first["pid"]


def test_force_replaces_another_run(lab, capsys) -> None:
    args = {**lab["args"], "extra_flags": {"max_seq_len": 128, "num_iterations": 100000}}
    first = run(capsys, args, wait_for_step=True, start_timeout=30)
    second = run(capsys, {**args, "run_name": "run-b"}, force=True, stop_timeout=10)
    assert second["changed"] is True and second["alive"]
    assert second["stop"][0]["signals"] == ["SIGTERM"] and second["stop"][0]["run_name"] == "run-a"
    assert group_members(first["pgid"]) == []


def test_timeout_without_a_step_line_fails_and_leaves_the_run(lab, capsys) -> None:
    args = {**lab["args"], "extra_env": {**lab["args"]["extra_env"], "FAKE_MODE": "hang"}}
    result = run(capsys, args, wait_for_step=True, start_timeout=2)
    assert result["failed"] is True
    assert "printed no step line within 2s; it is still running" in result["msg"]
    assert result["alive"] is True


def test_check_mode_predicts_without_starting(lab, capsys) -> None:
    result = run(capsys, lab["args"], _check=True)
    assert result["changed"] is True and result["msg"] == "would start run run-a."
    assert result["cmd"][-1] == "--num-iterations=5"
    assert not os.path.exists(lab["state"] / "run-a.pid.json") and not lab["seen"].exists()


def test_resume_latest_uses_the_last_checkpoint(lab, capsys) -> None:
    folder = Path(lab["args"]["base_dir"]) / "base_checkpoints" / "d4"
    folder.mkdir(parents=True)
    for name in ("model_000002.pt", "meta_000002.json", "optim_000002_rank0.pt"):
        (folder / name).write_bytes(b"")
    result = run(capsys, lab["args"], resume_latest=True, wait_for_step=True, start_timeout=30)
    assert result["resume_step"] == 2 and "resumed from step 2" in result["msg"]
    assert "--resume-from-step=2" in seen(lab)["argv"]


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        (
            {"total_batch_size": 1000},
            "total batch size 1000 is not a multiple of device batch 2 x max seq len 128",
        ),
        ({"gpus_per_node": 3}, "3 GPUs x 1 node(s) = 3 processes does not divide 32768"),
        ({"nnodes": 2, "node_rank": 1, "total_batch_size": 1024}, "needs rdzv_host"),
        ({"chdir": "/nonexistent"}, "is not a nanochat checkout"),
        ({"extra_flags": {"run": "x"}}, "--run repeats a flag the launcher sets"),
        ({"run_name": "a b"}, "may only contain letters"),
        ({"launcher": "python"}, "launcher python starts ONE process"),
    ],
)
def test_bad_input_fails_with_a_sentence_and_starts_nothing(lab, capsys, changes, message) -> None:
    result = run(capsys, lab["args"], **changes)
    assert result["failed"] is True and message in result["msg"]
    assert not lab["seen"].exists()


def test_env_file_readable_by_others_is_refused(lab, capsys) -> None:
    os.chmod(lab["args"]["env_file"], 0o644)
    result = run(capsys, lab["args"])
    assert result["failed"] is True and "chmod 600" in result["msg"]
    assert not lab["seen"].exists()


def test_the_flag_style_is_read_from_the_checkouts_own_base_train(lab, capsys) -> None:
    Path(lab["args"]["chdir"], "scripts", "base_train.py").write_text(BASE_TRAIN_UNDERSCORE)
    result = run(capsys, lab["args"], wait_for_step=True, start_timeout=30)
    assert result["flag_style"] == "underscore"
    assert "--device_batch_size=2" in seen(lab)["argv"]


def test_one_cpu_process_starts_as_plain_python_and_stops_like_torchrun(lab, capsys) -> None:
    args = {**lab["args"], "gpus_per_node": 1, "extra_flags": {"max_seq_len": 128, "device_type": "cpu"}}
    args["extra_env"] = {**args["extra_env"], "FAKE_DELAY": "1"}
    started = run(capsys, args, wait_for_step=True, start_timeout=30)
    assert started["changed"] is True and started["launcher"] == "python", started["msg"]
    argv = seen(lab)["argv"]
    # `python -m scripts.base_train FLAGS` as runs/runcpu.sh: no torchrun, no `--` before the flags
    assert argv[:2] == ["-m", "scripts.base_train"] and "--" not in argv
    assert "--device-type=cpu" in argv and "--run=run-a" in argv
    assert "torchrun" not in cmdlines(started["pgid"])
    status = run(capsys, args, state="status")
    assert status["alive"] is True and status["stale"] is False
    stopped = run(capsys, args, state="stopped", stop_timeout=10)
    assert stopped["changed"] is True and stopped["alive"] is False
    assert group_members(started["pgid"]) == []


def test_a_run_made_from_other_inputs_is_refused_and_marked_stale(lab, capsys) -> None:
    args = {**lab["args"], "extra_flags": {"max_seq_len": 128, "num_iterations": 3}}
    tokenizer = Path(args["base_dir"], "tokenizer")
    tokenizer.mkdir()
    (tokenizer / "tokenizer.pkl").write_bytes(b"tokenizer one")
    assert run(capsys, args, wait_for_step=True, start_timeout=30)["changed"] is True
    wait_until(lambda: run(capsys, args, state="status")["finished"])
    assert run(capsys, args)["msg"].startswith("run run-a already finished")

    # the experiment now declares another run length and the tokenizer was trained again
    changed = {**args, "extra_flags": {"max_seq_len": 128, "num_iterations": 4}}
    (tokenizer / "tokenizer.pkl").write_bytes(b"tokenizer two")
    status = run(capsys, changed, state="status")
    assert status["stale"] is True and "It is stale" in status["msg"]
    assert any("--num-iterations=3 -> --num-iterations=4" in c for c in status["identity_changes"])
    assert any(c.startswith("tokenizer (sha256)") for c in status["identity_changes"])
    refused = run(capsys, changed)
    assert refused["failed"] is True and "not this experiment's result" in refused["msg"]
    assert "-e arms_force_restart=true" in refused["msg"] and "new run_name" in refused["msg"]
    assert "--num-iterations=3 -> --num-iterations=4" in refused["msg"]
    # resuming its checkpoint is refused too; force trains it again from the new inputs
    assert run(capsys, changed, resume_latest=True)["failed"] is True
    forced = run(capsys, changed, force=True, wait_for_step=True, start_timeout=30)
    assert forced["changed"] is True and forced["stale"] is False
    assert run(capsys, changed, state="status")["identity_changes"] == []


def test_four_launches_at_once_start_one_training(lab) -> None:
    """Each launch is its own process (as four Ansible forks would be): the launch lock lets one start."""
    import subprocess

    root = Path(__file__).resolve().parents[2]
    runner = (
        "import json, sys\n"
        f"sys.path[:0] = [{str(root / 'scripts')!r}, {str(root / 'tests')!r}]\n"
        "import _arms_path\n"
        "from ansible.module_utils.testing import patch_module_args\n"
        "from modtest import load_module\n"
        "with patch_module_args(json.loads(sys.argv[1])):\n"
        "    try:\n"
        "        load_module('nanochat_train').main()\n"
        "    except SystemExit:\n"
        "        pass\n"
    )
    args = {**lab["args"], "extra_env": {**lab["args"]["extra_env"], "FAKE_DELAY": "1"}}
    procs = [
        subprocess.Popen([sys.executable, "-c", runner, json.dumps(args)], stdout=subprocess.PIPE, text=True)
        for _ in range(4)
    ]
    results = [json.loads(p.communicate(timeout=120)[0].strip().splitlines()[-1]) for p in procs]
    assert not any(r.get("failed") for r in results), [r["msg"] for r in results]
    started = [r for r in results if r["changed"]]
    assert len(started) == 1, [r["msg"] for r in results]
    assert all("already running" in r["msg"] for r in results if not r["changed"])
    # one launcher group on the host, and it is the one the pid file names
    launchers = [
        pid
        for pid in os.listdir("/proc")
        if pid.isdigit()
        and os.path.exists(f"/proc/{pid}/cmdline")
        and str(Path(args["venv"], "bin", "torchrun")).encode() in Path(f"/proc/{pid}/cmdline").read_bytes()
    ]
    assert len({os.getpgid(int(pid)) for pid in launchers}) == 1
    assert read_pidfile(str(lab["state"] / "run-a.pid.json"))["pid"] == started[0]["pid"]
