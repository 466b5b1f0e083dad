"""The launch logic: flag styles, the torchrun command, nanochat's rules, the data budget, processes."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import textwrap
import time
from collections.abc import Iterator
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from ansible.module_utils.arms_budget import (
    compare_budgets,
    default_ratio,
    held_tokens,
    planned_tokens,
    scaling_params,
    validate_hyperparameters,
)
from ansible.module_utils.arms_command import (
    build_command,
    check_extra_env,
    choose_launcher,
    launched_program,
    script_flags,
)
from ansible.module_utils.arms_common import ArmsError
from ansible.module_utils.arms_flags import normalize_flags, render_flags
from ansible.module_utils.arms_identity import current_identity, identity_changes
from ansible.module_utils.arms_manifest import build_manifest, shard_entry
from ansible.module_utils.arms_process import (
    boot_id,
    find_trainings,
    group_is_ours,
    group_members,
    is_alive,
    latest_checkpoint_step,
    proc_stat,
    read_pidfile,
    run_paths,
    start_detached,
    stop,
)

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
VENV_TORCHRUN = os.path.join(ROOT, ".venv", "bin", "torchrun")

COMMON = {
    "venv": "/opt/nc/.venv",
    "base_dir": "/data/nanochat",
    "run_name": "exp-top16-d26-8gpu",
    "arm": "top16.5",
    "experiment": "exp16",
    "depth": 26,
    "device_batch_size": 32,
    "total_batch_size": 524288,
    "gpus_per_node": 8,
    "base_path": "/usr/bin:/bin",
}

# --------------------------------------------------------------------------------------------
# flags
# --------------------------------------------------------------------------------------------


def test_a_commit_date_that_is_no_date_is_refused() -> None:
    # (the flag style is read from the checkout's code: tests/unit/test_flags_from_code.py)
    with pytest.raises(ArmsError, match="not a date; expected YYYY-MM-DD"):
        default_ratio("last tuesday")


def test_render_flags_per_style() -> None:
    flags = {"device_batch_size": 32, "max-seq-len": 64, "fp8": True, "compile": False, "eval_tokens": None}
    assert render_flags(flags, "dash") == ["--device-batch-size=32", "--max-seq-len=64", "--fp8"]
    assert render_flags(flags, "underscore") == ["--device_batch_size=32", "--max_seq_len=64", "--fp8"]
    assert render_flags(flags, "configurator") == [
        "--device_batch_size=32",
        "--max_seq_len=64",
        "--fp8=True",
        "--compile=False",
    ]


def test_extra_flags_as_list_or_mapping_are_the_same() -> None:
    assert normalize_flags(["--max-seq-len=64", "eval_every=10", "--fp8"]) == normalize_flags(
        {"max_seq_len": "64", "eval-every": "10", "fp8": True}
    )
    with pytest.raises(ArmsError, match="given twice"):
        normalize_flags(["--max-seq-len=64", "--max_seq_len=128"])


# --------------------------------------------------------------------------------------------
# the command
# --------------------------------------------------------------------------------------------


def test_one_node_command_and_environment() -> None:
    argv, env = build_command(**COMMON, extra_flags={"max_seq_len": 2048, "core_metric_every": -1})
    assert argv == [
        "/opt/nc/.venv/bin/torchrun",
        "--standalone",
        "--nproc_per_node=8",
        "-m",
        "scripts.base_train",
        "--",
        "--depth=26",
        "--run=exp-top16-d26-8gpu",
        "--device-batch-size=32",
        "--total-batch-size=524288",
        "--model-tag=d26",
        "--max-seq-len=2048",
        "--core-metric-every=-1",
    ]
    assert env["NANOCHAT_BASE_DIR"] == "/data/nanochat"
    assert env["OMP_NUM_THREADS"] == "1"
    assert env["WANDB_RUN_GROUP"] == "exp16"
    assert env["WANDB_TAGS"] == "top16.5,exp16"
    assert env["PATH"] == "/opt/nc/.venv/bin:/usr/bin:/bin"
    assert "WANDB_MODE" not in env


def test_underscore_era_command_with_resume_and_wandb_mode() -> None:
    argv, env = build_command(
        **COMMON, flag_style="underscore", resume_from_step=2000, model_tag="top", wandb_mode="offline"
    )
    assert argv[-6:] == [
        "--depth=26",
        "--run=exp-top16-d26-8gpu",
        "--device_batch_size=32",
        "--total_batch_size=524288",
        "--model_tag=top",
        "--resume_from_step=2000",
    ]
    assert env["WANDB_MODE"] == "offline"


def test_two_node_command_uses_the_static_rendezvous_on_the_first_host() -> None:
    commands = [
        build_command(**COMMON, nnodes=2, node_rank=rank, rdzv_host="10.0.0.11", rdzv_port=29511)[0] for rank in (0, 1)
    ]
    for rank, argv in enumerate(commands):
        assert argv[1:7] == [
            "--nnodes=2",
            f"--node_rank={rank}",
            "--master_addr=10.0.0.11",
            "--master_port=29511",
            "--nproc_per_node=8",
            "-m",
        ]
    assert commands[0][7:] == commands[1][7:]  # same training flags on every node


def test_command_refusals_are_sentences() -> None:
    with pytest.raises(ArmsError, match="needs rdzv_host"):
        build_command(**COMMON, nnodes=2, node_rank=1)
    with pytest.raises(ArmsError, match=r"node_rank 2 is outside 0\.\.1"):
        build_command(**COMMON, nnodes=2, node_rank=2, rdzv_host="h")
    with pytest.raises(ArmsError, match="--depth repeats a flag the launcher sets"):
        build_command(**COMMON, extra_flags={"depth": 20})
    with pytest.raises(ArmsError, match="extra_env may not set WANDB_RUN_GROUP"):
        build_command(**COMMON, extra_env={"WANDB_RUN_GROUP": "other"})
    with pytest.raises(ArmsError, match="may only contain letters"):
        build_command(**{**COMMON, "run_name": "../etc"})


FAKE_TORCHRUN = """\
#!{python}
import json, os, sys
json.dump({{"argv": sys.argv[1:], "key": os.environ.get("WANDB_API_KEY"), "cwd": os.getcwd(),
           "base": os.environ.get("NANOCHAT_BASE_DIR"), "path0": os.environ["PATH"].split(":")[0]}},
          open(os.environ["FAKE_OUT"], "w"))
sys.exit(int(os.environ.get("FAKE_RC", "0")))
"""


def write_fake_torchrun(folder: str) -> str:
    path = os.path.join(folder, "torchrun")
    with open(path, "w", encoding="utf-8") as fh:
        fh.write(FAKE_TORCHRUN.format(python=sys.executable))
    os.chmod(path, 0o755)
    return path


def test_wrapper_sources_the_secret_inside_the_process_and_records_the_exit_code(tmp_path) -> None:
    fake = write_fake_torchrun(str(tmp_path))
    secret = "wandb_v1_" + "k" * 77
    env_file = tmp_path / "secrets.env"
    env_file.write_text(f"WANDB_API_KEY={secret}\n")
    env_file.chmod(0o600)
    exit_file = str(tmp_path / "run.exit")
    argv, env = build_command(**COMMON, env_file=str(env_file), exit_file=exit_file, torchrun=fake)
    assert secret not in json.dumps([argv, env])
    out = tmp_path / "seen.json"
    proc = subprocess.run(argv, env={**os.environ, **env, "FAKE_OUT": str(out), "FAKE_RC": "3"}, cwd=tmp_path)
    assert proc.returncode == 3
    seen = json.loads(out.read_text())
    assert seen["key"] == secret  # the run got it, from the file
    assert seen["argv"][:3] == ["--standalone", "--nproc_per_node=8", "-m"]
    assert seen["base"] == "/data/nanochat" and seen["path0"] == "/opt/nc/.venv/bin"
    assert Path(exit_file).read_text().strip() == "3"


# --------------------------------------------------------------------------------------------
# nanochat's rules
# --------------------------------------------------------------------------------------------


def test_valid_hyperparameters_give_the_accumulation_steps() -> None:
    facts = validate_hyperparameters(gpus_per_node=8, nnodes=1, device_batch_size=32, total_batch_size=524288)
    assert facts == {"world_size": 8, "tokens_per_fwdbwd": 524288, "grad_accum_steps": 1}
    facts = validate_hyperparameters(gpus_per_node=8, nnodes=1, device_batch_size=16, total_batch_size=524288)
    assert facts["grad_accum_steps"] == 2


def test_world_size_must_divide_the_vocabulary() -> None:
    with pytest.raises(ArmsError) as exc:
        validate_hyperparameters(gpus_per_node=8, nnodes=3, device_batch_size=32, total_batch_size=524288)
    assert str(exc.value).startswith("8 GPUs x 3 node(s) = 24 processes does not divide 32768")


def test_total_batch_must_be_a_multiple_of_one_micro_step() -> None:
    with pytest.raises(ArmsError) as exc:
        validate_hyperparameters(gpus_per_node=8, nnodes=2, device_batch_size=32, total_batch_size=524288)
    message = str(exc.value)
    assert "total batch size 524288 is not a multiple of device batch 32 x max seq len 2048 x world size 16" in message
    assert "use a total batch size of 1048576" in message
    with pytest.raises(ArmsError, match=r"max seq len 1000"):
        validate_hyperparameters(
            gpus_per_node=2, nnodes=1, device_batch_size=4, total_batch_size=1024, max_seq_len=1000
        )


# --------------------------------------------------------------------------------------------
# data budget
# --------------------------------------------------------------------------------------------


def test_scaling_params_formula() -> None:
    # width 26 x 64 = 1664; 12 x 26 x 1664^2 + 32768 x 1664
    assert scaling_params(26) == 12 * 26 * 1664**2 + 32768 * 1664 == 918_421_504


@pytest.mark.parametrize(
    ("date", "ratio"),
    [
        ("2025-12-31", 20.0),
        ("2026-01-07", 8.0),
        ("2026-01-17", 4.0),
        ("2026-02-01", 10.5),
        ("2026-03-24", 12.0),
    ],
)
def test_default_ratio_moves_with_the_commit(date: str, ratio: float) -> None:
    assert default_ratio(date) == ratio


def test_planned_tokens_from_ratio_or_explicit_iterations() -> None:
    plan = planned_tokens(depth=26, total_batch_size=524288, commit_date="2026-02-01")
    assert plan["num_iterations"] == int(10.5 * 918_421_504) // 524288 == 18393
    assert plan["tokens"] == 18393 * 524288
    plan = planned_tokens(depth=26, total_batch_size=524288, extra_flags={"target_param_data_ratio": 20})
    assert plan["num_iterations"] == 20 * 918_421_504 // 524288
    plan = planned_tokens(depth=26, total_batch_size=524288, extra_flags=["--num-iterations=20"])
    assert (plan["num_iterations"], plan["tokens"]) == (20, 20 * 524288)
    with pytest.raises(ArmsError, match="needs the nanochat commit date"):
        planned_tokens(depth=26, total_batch_size=524288)
    with pytest.raises(ArmsError, match="explicit total batch size"):
        planned_tokens(depth=26, total_batch_size=-1, commit_date="2026-02-01")


def write_shards(folder: str, texts_per_file: list[list[str]]) -> dict:
    os.makedirs(folder, exist_ok=True)
    entries = []
    for i, texts in enumerate(texts_per_file):
        path = os.path.join(folder, f"shard_{i:05d}.parquet")
        pq.write_table(pa.table({"text": texts}), path, row_group_size=2, compression="zstd")
        entries.append(shard_entry(path, role="val" if i == len(texts_per_file) - 1 else "train"))
    return build_manifest("random_subset", {}, {}, entries)


def test_held_tokens_from_the_parquet_footers(tmp_path) -> None:
    doc = "The quick brown fox jumps over the lazy dog. " * 100  # 4,500 bytes
    manifest = write_shards(str(tmp_path), [[doc] * 8, [doc] * 8, [doc] * 2])
    held = held_tokens(manifest, str(tmp_path))
    text_bytes = 16 * len(doc)  # two training files; the last file is the val split
    assert held["train_files"] == 2 and held["train_rows"] == 16
    assert abs(held["text_bytes"] - text_bytes) / text_bytes < 0.01
    assert held["tokens"] == pytest.approx(text_bytes / 4.8, rel=0.01)
    # recorded facts win over estimates
    manifest["stats"] = {"train_tokens": 12345}
    assert held_tokens(manifest, str(tmp_path))["tokens"] == 12345


def test_budget_warns_on_repetition_and_refuses_unequal_repetition() -> None:
    same = compare_budgets(
        [
            {"name": "top16.5", "tokens_needed": 100, "tokens_held": 400},
            {"name": "random16.5", "tokens_needed": 100, "tokens_held": 150},
        ]
    )
    assert same["comparable"] and same["warnings"] == []  # neither repeats: fractions of an epoch differ
    both = compare_budgets(
        [
            {"name": "top16.5", "tokens_needed": 200, "tokens_held": 100},
            {"name": "random16.5", "tokens_needed": 200, "tokens_held": 98},
        ]
    )
    assert both["comparable"] and len(both["warnings"]) == 2
    assert both["warnings"][0].startswith("arm top16.5 will repeat data")
    arms = [
        {"name": "top16.5", "tokens_needed": 1000, "tokens_held": 2000},
        {"name": "random16.5", "tokens_needed": 1000, "tokens_held": 400},
    ]
    with pytest.raises(ArmsError) as exc:
        compare_budgets(arms)
    assert "random16.5 makes 2.50 passes over its data and top16.5 1.00" in str(exc.value)
    assert "give random16.5 more data" in str(exc.value)
    allowed = compare_budgets(arms, allow_unequal_repeats=True)
    assert not allowed["comparable"] and allowed["warnings"][-1].endswith("(overridden)")


# --------------------------------------------------------------------------------------------
# process control, with real processes
# --------------------------------------------------------------------------------------------

WORKER = """\
import os, subprocess, sys, time
child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(300)"])
open(sys.argv[1], "w").write(str(child.pid))
print("step 00000/00010 (0.00%) | loss: 9.0 | total time: 0.00m", flush=True)
time.sleep(300)
"""


def wait_for(predicate, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.05)


@pytest.fixture
def cleanup() -> Iterator[list[int]]:
    """Process groups started by a test; killed at the end whatever happened."""
    groups: list[int] = []
    yield groups
    for pgid in groups:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(pgid, signal.SIGKILL)


def start_worker(tmp_path, name: str = "run-a") -> tuple[dict, dict, str]:
    script = tmp_path / "worker.py"
    script.write_text(WORKER)
    paths = run_paths(str(tmp_path / "state"), name)
    child_file = str(tmp_path / f"{name}.child")
    record = start_detached(
        [sys.executable, str(script), child_file, "scripts.base_train", f"--run={name}"],
        {"NANOCHAT_BASE_DIR": str(tmp_path)},
        cwd=str(tmp_path),
        log_path=paths["log"],
        pidfile=paths["pidfile"],
        run_name=name,
        exit_file=paths["exit_file"],
    )
    deadline = time.monotonic() + 20
    while not os.path.exists(child_file) or not Path(child_file).read_text():
        assert time.monotonic() < deadline, "the worker did not start"
        time.sleep(0.05)
    return record, paths, child_file


def test_detached_run_is_alive_logged_and_stopped_as_a_group(tmp_path, cleanup) -> None:
    record, paths, child_file = start_worker(tmp_path)
    cleanup.append(record["pgid"])
    assert record["pgid"] == record["pid"] and os.getpgid(record["pid"]) == record["pid"]
    assert os.getsid(record["pid"]) == record["pid"]  # its own session: no SIGHUP when SSH goes
    assert is_alive(paths["pidfile"])
    child = int(Path(child_file).read_text())
    assert child in group_members(record["pgid"])
    deadline = time.monotonic() + 10
    while "step 00000/00010" not in Path(paths["log"]).read_text():
        assert time.monotonic() < deadline
        time.sleep(0.05)
    outcome = stop(paths["pidfile"], timeout=10)
    assert outcome["signals"] == ["SIGTERM"] and outcome["stopped"] and outcome["was_alive"]
    assert "all its processes exited" in outcome["msg"]
    assert not is_alive(paths["pidfile"])
    assert not os.path.exists(f"/proc/{child}") or Path(f"/proc/{child}/stat").read_text().split()[2] == "Z"
    assert read_pidfile(paths["pidfile"])["stop_signals"] == ["SIGTERM"]
    assert stop(paths["pidfile"])["signals"] == []  # second stop: nothing to do


def test_stop_escalates_to_sigkill(tmp_path, cleanup) -> None:
    script = tmp_path / "stubborn.py"
    script.write_text(
        "import signal, time\nsignal.signal(signal.SIGTERM, signal.SIG_IGN)\nprint('up', flush=True)\ntime.sleep(300)\n"
    )
    paths = run_paths(str(tmp_path / "state"), "stubborn")
    record = start_detached(
        [sys.executable, str(script)],
        {},
        cwd=str(tmp_path),
        log_path=paths["log"],
        pidfile=paths["pidfile"],
        run_name="stubborn",
    )
    cleanup.append(record["pgid"])
    while "up" not in Path(paths["log"]).read_text():
        time.sleep(0.05)
    outcome = stop(paths["pidfile"], timeout=0.5)
    assert outcome["signals"] == ["SIGTERM", "SIGKILL"] and outcome["stopped"]


def test_a_reused_pid_is_not_taken_for_our_run(tmp_path, cleanup) -> None:
    record, paths, _ = start_worker(tmp_path)
    cleanup.append(record["pgid"])
    data = read_pidfile(paths["pidfile"])
    data["start_ticks"] -= 1  # as if the pid now belonged to a process started at another time
    with open(paths["pidfile"], "w") as fh:
        json.dump(data, fh)
    assert not is_alive(paths["pidfile"])


def test_the_run_survives_its_caller_exiting(tmp_path, cleanup) -> None:
    caller = tmp_path / "caller.py"
    caller.write_text(
        textwrap.dedent(
            f"""
            import sys
            sys.path.insert(0, {os.path.join(ROOT, "scripts")!r})
            import _arms_path
            from ansible.module_utils.arms_process import start_detached
            start_detached(
                [sys.executable, "-c", "import time; time.sleep(300)"], {{}}, cwd={str(tmp_path)!r},
                log_path={str(tmp_path / "r.log")!r}, pidfile={str(tmp_path / "r.pid.json")!r}, run_name="r",
            )
            """
        )
    )
    subprocess.run([sys.executable, str(caller)], check=True, timeout=60)
    record = read_pidfile(str(tmp_path / "r.pid.json"))
    cleanup.append(record["pgid"])
    assert is_alive(str(tmp_path / "r.pid.json"))


def test_find_trainings_sees_pidfiles_and_hand_started_runs(tmp_path, cleanup) -> None:
    record, _, _ = start_worker(tmp_path, "run-a")
    cleanup.append(record["pgid"])
    checkout = tmp_path / "checkout"
    checkout.mkdir()
    hand = subprocess.Popen(
        [sys.executable, "-c", "import time; time.sleep(300)", "-m", "scripts.base_train", "--", "--run=manual"],
        cwd=checkout,
        start_new_session=True,
        env={**os.environ, "NANOCHAT_BASE_DIR": str(tmp_path / "base")},
    )
    cleanup.append(hand.pid)
    # wait for the exec (until then /proc shows the forking parent's command line)
    wait_for(lambda: b"scripts.base_train" in Path(f"/proc/{hand.pid}/cmdline").read_bytes())
    # another node's base dir on the same machine (the lab): not a rival
    assert find_trainings(None, str(checkout), str(tmp_path / "node2-base")) == []
    found = find_trainings(str(tmp_path / "state"), str(checkout), str(tmp_path / "base"))
    by_name = {t["run_name"]: t for t in found}
    assert by_name["run-a"]["source"] == "pidfile" and by_name["run-a"]["pid"] == record["pid"]
    assert by_name["manual"]["source"] == "process" and by_name["manual"]["pid"] == hand.pid
    hand.kill()
    hand.wait()
    assert [t["run_name"] for t in find_trainings(str(tmp_path / "state"), str(checkout))] == ["run-a"]


def test_latest_checkpoint_step(tmp_path) -> None:
    folder = tmp_path / "base_checkpoints" / "d26"
    assert latest_checkpoint_step(str(tmp_path), "d26") is None
    folder.mkdir(parents=True)
    for name in ("model_001000.pt", "meta_001000.json", "optim_002000_rank1.pt", "notes.txt"):
        (folder / name).write_bytes(b"")
    assert latest_checkpoint_step(str(tmp_path), "d26") == 2000


@pytest.mark.slow
def test_two_node_command_runs_under_real_torchrun_with_rank0_on_node_rank_0(tmp_path) -> None:
    """Two 'nodes' on this machine (127.0.0.2 as the first host), 2 CPU processes each, gloo."""
    checkout = tmp_path / "checkout"
    (checkout / "scripts").mkdir(parents=True)
    (checkout / "scripts" / "__init__.py").write_text("")
    (checkout / "scripts" / "base_train.py").write_text(
        textwrap.dedent(
            """
            import os, sys
            import torch, torch.distributed as dist
            dist.init_process_group("gloo")
            t = torch.ones(1)
            dist.all_reduce(t)
            if dist.get_rank() == 0:
                world, total = dist.get_world_size(), int(t.item())
                print(f"rank0 world {world} sum {total} args {sys.argv[1:]}", flush=True)
            dist.destroy_process_group()
            """
        )
    )
    common = {
        **COMMON,
        "gpus_per_node": 2,
        "venv": os.path.join(ROOT, ".venv"),
        "base_path": os.environ["PATH"],
    }
    with socket.socket() as probe:  # a free port on the first host's address
        probe.bind(("127.0.0.2", 0))
        port = probe.getsockname()[1]
    procs = []
    with contextlib.ExitStack() as stack:
        for rank in (1, 0):  # the second node first: rank 0 must still land on node rank 0
            argv, env = build_command(**common, nnodes=2, node_rank=rank, rdzv_host="127.0.0.2", rdzv_port=port)
            log = stack.enter_context(open(tmp_path / f"node{rank}.log", "w"))
            proc = subprocess.Popen(argv, cwd=checkout, env={**os.environ, **env}, stdout=log, stderr=log)
            stack.callback(proc.kill)
            procs.append(proc)
            time.sleep(1)
        assert [p.wait(timeout=180) for p in procs] == [0, 0]
    node0 = (tmp_path / "node0.log").read_text()
    assert "rank0 world 4 sum 4" in node0 and "--depth=26" in node0
    assert "rank0" not in (tmp_path / "node1.log").read_text()


# ---- one-process CPU launch (real nanochat on CPU trains only as one plain process) ----


@pytest.mark.parametrize(
    ("launcher", "nnodes", "gpus", "device", "has_gpu", "want"),
    [
        ("auto", 1, 1, "cpu", True, "python"),  # asked for CPU: runcpu.sh's way even on a GPU host
        ("auto", 1, 1, "", False, "python"),  # autodetect on a host without a GPU
        ("auto", 1, 1, "", True, "torchrun"),  # one GPU: torchrun as the runbook
        ("auto", 1, 8, "", True, "torchrun"),
        ("auto", 1, 2, "cpu", False, "torchrun"),  # several processes need torchrun (the stand-in's gloo)
        ("auto", 2, 1, "cpu", False, "torchrun"),
        ("torchrun", 1, 1, "cpu", False, "torchrun"),
        ("python", 1, 1, "", True, "python"),
    ],
)
def test_the_launcher_is_python_for_one_cpu_process_else_torchrun(launcher, nnodes, gpus, device, has_gpu, want):
    got = choose_launcher(launcher, nnodes=nnodes, gpus_per_node=gpus, device_type=device, has_gpu=has_gpu)
    assert got == want


def test_python_launcher_for_several_processes_is_refused_with_a_sentence() -> None:
    with pytest.raises(ArmsError, match="starts ONE process, but the arm asks for 8 per node"):
        choose_launcher("python", nnodes=1, gpus_per_node=8)


def test_python_launch_argv_is_runcpu_shaped_and_its_flags_are_found_again() -> None:
    argv, env = build_command(
        venv="/v",
        base_dir="/b",
        run_name="r",
        arm="a",
        experiment="e",
        depth=2,
        device_batch_size=32,
        total_batch_size=2048,
        gpus_per_node=1,
        extra_flags={"max-seq-len": 64, "device-type": "cpu"},
        launcher="python",
        exit_file="/s/r.exit",
    )
    inner = argv[argv.index("/v/bin/python") :]
    assert inner[:3] == ["/v/bin/python", "-m", "scripts.base_train"] and "--" not in inner
    assert launched_program(argv) == "/v/bin/python"
    assert script_flags(argv) == inner[3:] and "--device-type=cpu" in inner
    assert env["NANOCHAT_BASE_DIR"] == "/b"


# ---- run identity ----


def test_identity_changes_name_each_field_that_moved() -> None:
    was = {
        "commit": "a" * 40,
        "source_edits": ["nanochat/common.py"],
        "launcher": "python x1",
        "flags": ["--depth=2", "--resume-from-step=10"],
        "tokenizer": "1" * 64,
        "data": "2" * 64,
        "val": "shard_val.parquet 3",
    }
    assert identity_changes(was, {**was, "flags": ["--depth=2"]}) == []  # a resume is the same run
    now = {**was, "commit": "b" * 40, "flags": ["--depth=4"], "val": "shard_val.parquet 4"}
    changes = identity_changes(was, now)
    assert changes == [
        f"nanochat commit {'a' * 12} -> {'b' * 12}",
        "base_train flags --depth=2 -> --depth=4",
        "val shard shard_val.parquet 3 -> shard_val.parquet 4",
    ]
    assert identity_changes(None, now) == [
        "the run recorded no identity (it was started by an older nanochat-arms or by hand)"
    ]


def test_current_identity_reads_commit_edits_tokenizer_and_manifest(tmp_path) -> None:
    import subprocess

    repo = tmp_path / "nanochat"
    (repo / "nanochat").mkdir(parents=True)
    (repo / "nanochat" / "common.py").write_text("x = 1\n")
    git = ["git", "-c", "user.name=t", "-c", "user.email=t@t", "-C", str(repo)]
    subprocess.run(["git", "init", "-q", str(repo)], check=True)
    subprocess.run([*git, "add", "-A"], check=True)
    subprocess.run([*git, "commit", "-qm", "c"], check=True)
    base = tmp_path / "base"
    (base / "tokenizer").mkdir(parents=True)
    (base / "tokenizer" / "tokenizer.pkl").write_bytes(b"tok")
    data = base / "base_data"
    data.mkdir()
    shards = [
        {"name": "shard_00000.parquet", "bytes": 10, "sha256": "s0", "role": "train"},
        {"name": "shard_val.parquet", "bytes": 10, "sha256": "sv", "role": "val"},
    ]
    (data / "manifest.json").write_text(json.dumps({"format": "nanochat-arms-manifest/1", "shards": shards}))
    kw = {"chdir": str(repo), "base_dir": str(base), "data_dir": str(data), "launcher": "python", "processes": 1}
    first = current_identity(flags=["--depth=2"], **kw)
    assert len(first["commit"]) == 40 and first["source_edits"] == [] and first["val"] == "shard_val.parquet sv"
    (repo / "nanochat" / "common.py").write_text("x = 2\n")  # e.g. the TF32 patch
    second = current_identity(flags=["--depth=2"], **kw)
    assert second["source_edits"] == ["nanochat/common.py"]
    assert identity_changes(first, second) == ["edits to the checkout none -> nanochat/common.py"]


# ---- security: stop never signals a stranger; extra_env cannot load code ----


def test_stop_after_the_pid_was_reused_leaves_the_new_process_alone(tmp_path, cleanup) -> None:
    """A finished run's pid now belongs to an unrelated `setsid sleep` (a group leader of its own)."""
    stranger = subprocess.Popen(["setsid", "sleep", "60"])
    cleanup.append(stranger.pid)
    wait_for(lambda: os.getpgid(stranger.pid) == stranger.pid)
    ticks = proc_stat(stranger.pid)["start_ticks"]
    paths = run_paths(str(tmp_path / "state"), "old-run")
    os.makedirs(os.path.dirname(paths["pidfile"]))
    # the old run's record: same pid and group, same boot, but it started earlier than the stranger
    record = {"pid": stranger.pid, "pgid": stranger.pid, "start_ticks": ticks - 50, "boot_id": boot_id()}
    Path(paths["pidfile"]).write_text(json.dumps({**record, "run_name": "old-run", "cwd": str(tmp_path)}))
    assert not is_alive(paths["pidfile"])
    outcome = stop(paths["pidfile"], timeout=2, kill_timeout=1)
    assert outcome["signals"] == [] and "nothing to stop" in outcome["msg"]
    assert stranger.poll() is None, "stop() killed a process that was not the run's"


def test_a_group_whose_leader_is_gone_is_still_the_runs(tmp_path, cleanup) -> None:
    record, paths, child_file = start_worker(tmp_path)
    cleanup.append(record["pgid"])
    child = int(Path(child_file).read_text())
    os.kill(record["pid"], signal.SIGKILL)  # the launcher dies, its worker stays in the group
    wait_for(lambda: not is_alive(paths["pidfile"]))
    assert group_is_ours(read_pidfile(paths["pidfile"]))
    assert stop(paths["pidfile"], timeout=10)["stopped"]
    wait_for(lambda: not os.path.exists(f"/proc/{child}") or Path(f"/proc/{child}/stat").read_text().split()[2] == "Z")


@pytest.mark.parametrize(
    ("key", "message"),
    [
        ("LD_PRELOAD", "changes which code the run loads"),
        ("LD_LIBRARY_PATH", "changes which code the run loads"),
        ("PYTHONPATH", "changes which code the run loads"),
        ("BASH_ENV", "changes which code the run loads"),
        ("PATH", "the launcher sets it"),
        ("CUDA_VISIBLE_DEVICES", "pass the arm's GPUs as cuda_visible_devices"),
        ("A B", "is not a variable name"),
        ("X=Y", "is not a variable name"),
    ],
)
def test_extra_env_that_would_load_code_is_refused(key: str, message: str) -> None:
    with pytest.raises(ArmsError, match=message):
        check_extra_env(key, "/tmp/evil.so")
    check_extra_env("WANDB_MODE", "offline")  # what extra_env is for
