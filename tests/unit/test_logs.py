"""Parsing nanochat's rank-0 log and diagnosing the failure signatures seen in the wild."""

from __future__ import annotations

from pathlib import Path

import pytest
from ansible.module_utils.arms_logs import diagnose, parse_log, parse_step_line, progress_line, tail

# A run on a commit after 2026-02-10 (bf16_mfu, epoch/pq/rg, eta), as torchrun leaves it in the log.
NEW_RUN = """\
W0120 10:11:12.345000 4242 torch/distributed/run.py:803]
W0120 10:11:12.345000 4242 torch/distributed/run.py:803] *****************************************
W0120 10:11:12.345000 4242 torch/distributed/run.py:803] Setting OMP_NUM_THREADS environment variable for \
each process to be 1 in default, to avoid your system being overloaded, please further tune the variable for \
optimal performance in your application as needed.
Autodetected device type: cuda
Vocab size: 32,768
num_layers: 26
model_dim: 1664
Number of parameters: 1,382,481,920
Calculated number of iterations from target data:param ratio: 18,393
Total number of training tokens: 9,643,229,184
Step 00000 | Validation bpb: 3.271234
step 00000/18393 (0.00%) | loss: 10.397625 | lrm: 1.00 | dt: 45123.11ms | tok/sec: 11,619 | bf16_mfu: 0.97 \
| epoch: 1 pq: 0 rg: 0 | total time: 0.00m
step 00001/18393 (0.01%) | loss: 10.112233 | lrm: 1.00 | dt: 512.34ms | tok/sec: 1,023,456 | bf16_mfu: 45.67 \
| epoch: 1 pq: 0 rg: 8 | total time: 0.01m | eta: 157.0m
step 00250/18393 (1.36%) | loss: 4.567890 | lrm: 1.00 | dt: 511.00ms | tok/sec: 1,026,000 | bf16_mfu: 45.80 \
| epoch: 1 pq: 3 rg: 12 | total time: 2.13m | eta: 154.6m
Step 00250 | Validation bpb: 1.123456
Step 02000 | CORE metric: 0.2012
step 18392/18393 (99.99%) | loss: 2.345678 | lrm: 0.05 | dt: 510.00ms | tok/sec: 1,027,000 | bf16_mfu: 45.90 \
| epoch: 2 pq: 1 rg: 40 | total time: 157.01m | eta: 0.0m
Step 18393 | Validation bpb: 0.812345
Peak memory usage: 71234.56MiB
Total training time: 157.02m
Minimum validation bpb: 0.812345
"""

# An older commit (January 2026): mfu:, no epoch field, no eta, 4-decimal validation bpb.
OLD_RUN = """\
Number of iterations: 20
Step 00000 | Validation bpb: 3.2712
step 00000/00020 (0.00%) | loss: 10.397625 | lrm: 1.00 | dt: 812.00ms | tok/sec: 1,234 | mfu: 0.01 \
| total time: 0.00m
step 00001/00020 (5.00%) | loss: 9.876543 | lrm: 1.00 | dt: 123.45ms | tok/sec: 12,345 | mfu: 0.02 \
| total time: 0.01m
Step 00010 | Validation bpb: 1.9876
"""


def test_new_step_line_every_field() -> None:
    line = (
        "step 00100/05000 (2.00%) | loss: 3.456789 | lrm: 1.00 | dt: 512.34ms | tok/sec: 1,023,456 | "
        "bf16_mfu: 45.67 | epoch: 1 pq: 3 rg: 12 | total time: 1.23m | eta: 88.1m"
    )
    assert parse_step_line(line) == {
        "step": 100,
        "total": 5000,
        "pct": 2.0,
        "loss": 3.456789,
        "lrm": 1.0,
        "dt_ms": 512.34,
        "tok_per_sec": 1023456,
        "mfu": 45.67,
        "mfu_field": "bf16_mfu",
        "epoch": 1,
        "pq": 3,
        "rg": 12,
        "total_time_min": 1.23,
        "eta_min": 88.1,
    }


def test_old_step_line_mfu_without_epoch_or_eta() -> None:
    parsed = parse_step_line(
        "step 00005/00020 (25.00%) | loss: 5.123456 | lrm: 1.00 | dt: 123.45ms | tok/sec: 1,234 | "
        "mfu: 0.01 | total time: 0.05m"
    )
    assert parsed is not None
    assert (parsed["step"], parsed["total"], parsed["tok_per_sec"], parsed["mfu"]) == (5, 20, 1234, 0.01)
    assert parsed["mfu_field"] == "mfu"
    assert "epoch" not in parsed and "eta_min" not in parsed


def test_step_line_with_torchrun_prefix_and_unknown_tail_field() -> None:
    parsed = parse_step_line(
        "[default0]:step 00007/00020 (35.00%) | loss: 4.0 | tok/sec: 9,999,999 | newfield: 7 | total time: 0.10m"
    )
    assert parsed is not None
    assert parsed["step"] == 7 and parsed["tok_per_sec"] == 9999999 and parsed["total_time_min"] == 0.1


def test_validation_and_other_lines_are_not_step_lines() -> None:
    assert parse_step_line("Step 00250 | Validation bpb: 0.912345") is None
    assert parse_step_line("Calculated number of iterations from target data:param ratio: 18,393") is None


def test_parse_full_run_finished() -> None:
    parsed = parse_log(NEW_RUN)
    assert parsed["finished"] is True and parsed["started"] is True
    assert parsed["last_step"]["step"] == 18392 and parsed["last_step"]["epoch"] == 2
    assert parsed["num_iterations"] == 18393
    assert parsed["val"] == [(0, 3.271234), (250, 1.123456), (18393, 0.812345)]
    assert parsed["last_val_bpb"] == 0.812345
    assert parsed["core"] == [(2000, 0.2012)]
    assert parsed["min_val_bpb"] == 0.812345
    assert parsed["total_time_min"] == 157.02
    assert parsed["peak_memory_mib"] == 71234.56
    assert parsed["step_lines"] == 4


def test_parse_old_run_in_progress() -> None:
    parsed = parse_log(OLD_RUN)
    assert parsed["finished"] is False
    assert parsed["num_iterations"] == 20
    assert parsed["val"] == [(0, 3.2712), (10, 1.9876)]
    assert parsed["min_val_bpb"] == 1.9876  # no end line yet: the minimum seen so far
    assert parsed["total_time_min"] == 0.01  # from the last step line
    assert "step 1/20 (5.00%)" in progress_line(parsed) and "12,345 tok/s" in progress_line(parsed)


def test_parse_empty_log() -> None:
    parsed = parse_log("")
    assert parsed["last_step"] is None and parsed["started"] is False and parsed["finished"] is False
    assert progress_line(parsed) == "no step line yet"


def test_steps_are_thinned_keeping_first_and_last() -> None:
    lines = [
        f"step {i:05d}/01000 ({i / 10:.2f}%) | loss: 3.0 | lrm: 1.00 | dt: 1.00ms | tok/sec: 1,000 | "
        "mfu: 1.00 | total time: 0.01m"
        for i in range(1000)
    ]
    parsed = parse_log("\n".join(lines), max_steps=10)
    assert len(parsed["steps"]) == 10 and parsed["step_lines"] == 1000
    assert parsed["steps"][0]["step"] == 0 and parsed["steps"][-1]["step"] == 999
    assert parse_log("\n".join(lines), max_steps=0)["steps"] == []


def test_tail_counts_carriage_returns_as_line_ends() -> None:
    assert tail("a\nb\r\nc\rd\n\n", 3) == ["b", "c", "d"]
    assert tail("x\n", 0) == []


# --------------------------------------------------------------------------------------------
# diagnosis: one real-looking log per signature
# --------------------------------------------------------------------------------------------

TORCHRUN_FAILED = """\
E0120 10:11:20.000000 4242 torch/distributed/elastic/multiprocessing/api.py:874] failed (exitcode: 1) \
local_rank: 0 (pid: 4250) of binary: /home/ubuntu/nanochat/.venv/bin/python3
Traceback (most recent call last):
  File "/home/ubuntu/nanochat/.venv/bin/torchrun", line 10, in <module>
    sys.exit(main())
torch.distributed.elastic.multiprocessing.errors.ChildFailedError:
============================================================
scripts.base_train FAILED
------------------------------------------------------------
Root Cause (first observed failure):
[0]:
  time      : 2026-01-20_10:11:20
  host      : gpu-a
  rank      : 0 (local_rank: 0)
  exitcode  : 1 (pid: 4250)
  error_file: <N/A>
============================================================
"""


def missing_module_log(module: str) -> str:
    ranks = "".join(
        f"""[rank{r}]: Traceback (most recent call last):
[rank{r}]:   File "<frozen runpy>", line 198, in _run_module_as_main
[rank{r}]:   File "/home/ubuntu/nanochat/scripts/base_train.py", line 24, in <module>
[rank{r}]:     from nanochat.tokenizer import get_tokenizer, get_token_bytes
[rank{r}]:   File "/home/ubuntu/nanochat/nanochat/tokenizer.py", line 12, in <module>
[rank{r}]:     import {module}
[rank{r}]: ModuleNotFoundError: No module named '{module}'
"""
        for r in range(2)
    )
    return ranks + TORCHRUN_FAILED


def ids(findings: list[dict[str, str]]) -> list[str]:
    return [f["id"] for f in findings]


@pytest.mark.parametrize("module", ["rustbpe", "psutil", "tabulate"])
def test_missing_module_goes_to_the_deps_role(module: str) -> None:
    findings = diagnose(missing_module_log(module), "gpu-a")
    assert ids(findings) == ["missing_module"]  # the same error from every rank is one finding
    (finding,) = findings
    assert f"'{module}'" in finding["title"]
    assert finding["evidence"] == f"[rank1]: ModuleNotFoundError: No module named '{module}'"
    assert finding["repair"] == "ansible-playbook playbooks/repair.yml -i inventory/ --tags deps -l gpu-a"


def test_two_missing_modules_are_two_findings_in_log_order() -> None:
    findings = diagnose(missing_module_log("rustbpe") + missing_module_log("psutil"))
    assert [f["title"].split("'")[1] for f in findings] == ["rustbpe", "psutil"]
    assert all(f["repair"].endswith("--tags deps -l <host>") for f in findings)


def test_running_outside_the_checkout_is_not_a_deps_problem() -> None:
    log = (
        "/home/ubuntu/nanochat/.venv/bin/python3: Error while finding module specification for "
        "'scripts.base_train' (ModuleNotFoundError: No module named 'scripts')\n"
    )
    findings = diagnose(log, "gpu-a")
    assert ids(findings) == ["not_in_checkout"]
    assert "checkout" in findings[0]["title"]


def test_wandb_no_api_key_goes_to_the_credentials_role() -> None:
    log = """\
wandb: Currently logged in as: nobody
wandb: ERROR No API key configured. Use `wandb login` to log in.
[rank0]: wandb.errors.errors.UsageError: No API key configured. Use `wandb login` to log in.
"""
    (finding,) = diagnose(log, "gpu-b")
    assert finding["id"] == "wandb_no_key"
    assert finding["repair"] == "ansible-playbook playbooks/repair.yml -i inventory/ --tags wandb -l gpu-b"
    assert finding["evidence"].startswith("[rank0]: wandb.errors")


@pytest.mark.parametrize(
    "line",
    [
        "[rank0]: ValueError: API key must be 40 characters long, yours was 86",
        "wandb: ERROR API key must be 40 characters long, yours was 86",
    ],
)
def test_wandb_new_key_with_old_wandb_goes_to_the_deps_role(line: str) -> None:
    (finding,) = diagnose("wandb: Appending key for api.wandb.ai to your netrc file\n" + line + "\n")
    assert finding["id"] == "wandb_key_length"
    assert "0.22.3" in finding["title"] and "86" in finding["title"]
    assert finding["repair"] == "ansible-playbook playbooks/repair.yml -i inventory/ --tags deps -l <host>"
    assert finding["evidence"] == line


TF32_MSG = (
    "PyTorch is checking whether allow_tf32_new is enabled for cuBlas matmul,Current status indicate that "
    "you have used mix of the legacy and new APIs to set the TF32 status for cublas matmul."
)


@pytest.mark.parametrize(
    "log",
    [
        f"[rank0]: torch._inductor.exc.InductorError: LoweringException: RuntimeError: {TF32_MSG}\n",
        "[rank0]: torch._dynamo.exc.BackendCompilerFailed: backend='inductor' raised:\n"
        f"[rank0]: RuntimeError: {TF32_MSG}\n"
        '[rank0]: Set TORCH_LOGS="+dynamo" and TORCHDYNAMO_VERBOSE=1 for more information\n',
    ],
)
def test_tf32_mixed_api_goes_to_the_tf32_role(log: str) -> None:
    findings = diagnose("step 00000/00020 (0.00%) | loss: 10.0 | total time: 0.00m\n" + log + TORCHRUN_FAILED, "a")
    assert ids(findings) == ["tf32_mixed_api"]
    assert findings[0]["repair"] == "ansible-playbook playbooks/repair.yml -i inventory/ --tags tf32 -l a"
    assert "allow_tf32_new" in findings[0]["evidence"]


def test_cuda_oom_names_the_device_batch_size_variable() -> None:
    log = (
        "[rank3]: torch.OutOfMemoryError: CUDA out of memory. Tried to allocate 3.00 GiB. GPU 3 has a total "
        "capacity of 79.10 GiB of which 1.06 GiB is free.\n" + TORCHRUN_FAILED
    )
    (finding,) = diagnose(log, "gpu-a", device_batch_size=32)
    assert finding["id"] == "cuda_oom"
    assert "experiment.model.device_batch_size" in finding["repair"]
    assert "inventory/group_vars/all/experiment.yml" in finding["repair"]
    assert "16" in finding["repair"]  # half of 32
    assert finding["evidence"].startswith("[rank3]: torch.OutOfMemoryError")


@pytest.mark.parametrize(
    "line",
    [
        "[rank5]: torch.distributed.DistBackendError: NCCL error in: ../torch/csrc/distributed/c10d/"
        "ProcessGroupNCCL.cpp:1970, unhandled cuda error (run with NCCL_DEBUG=INFO for details), "
        "NCCL version 2.21.5",
        "[rank5]: ncclUnhandledCudaError: Call to CUDA function failed.",
        "[rank2]: RuntimeError: ncclSystemError: System call (e.g. socket, malloc) or external library call "
        "failed or device error.",
    ],
)
def test_nccl_errors(line: str) -> None:
    (finding,) = diagnose(line + "\n", "gpu-a", arm="top16.5")
    assert finding["id"] == "nccl_error"
    # a restart names the arm, not the host: the preflight refuses a --limit without every arm's hosts
    assert finding["repair"] == (
        'ansible-playbook playbooks/stop.yml -i inventory/ -e \'{"arms_only": ["top16.5"]}\' && '
        'ansible-playbook playbooks/train.yml -i inventory/ -e \'{"arms_only": ["top16.5"]}\''
    )


def test_nccl_watchdog_timeout() -> None:
    line = (
        "[rank1]:[E120 10:41:12.000000000 ProcessGroupNCCL.cpp:616] [Rank 1] Watchdog caught collective "
        "operation timeout: WorkNCCL(SeqNum=1234, OpType=ALLREDUCE, NumelIn=1, NumelOut=1, "
        "Timeout(ms)=600000) ran for 600010 milliseconds before timing out."
    )
    (finding,) = diagnose(line + "\n")
    assert finding["id"] == "nccl_timeout"
    assert finding["evidence"].startswith("[rank1]:[E120")


def test_hf_unauthenticated_is_a_warning_after_errors() -> None:
    log = (
        "Warning: You are sending unauthenticated requests to the HF Hub. Please set a HF_TOKEN to enable "
        "higher rate limits and faster downloads.\n" + missing_module_log("psutil")
    )
    findings = diagnose(log, "gpu-a")
    assert ids(findings) == ["missing_module", "hf_unauthenticated"]
    assert findings[1]["severity"] == "warning"
    assert findings[1]["repair"] == "ansible-playbook playbooks/repair.yml -i inventory/ --tags hf -l gpu-a"


@pytest.mark.parametrize(
    "log",
    [
        "runs/speedrun.sh: line 2: $'\\r': command not found\n",
        "/usr/bin/env: 'bash\\r': No such file or directory\n",
        "bash: ./speedrun.sh: /bin/bash\r: bad interpreter: No such file or directory\n",
    ],
)
def test_crlf_scripts_go_to_the_crlf_role(log: str) -> None:
    (finding,) = diagnose(log, "gpu-a")
    assert finding["id"] == "crlf"
    assert finding["repair"] == "ansible-playbook playbooks/repair.yml -i inventory/ --tags crlf -l gpu-a"


def test_killed_by_sigkill() -> None:
    log = OLD_RUN + (
        "W0120 10:20:00.000000 4242 torch/distributed/elastic/multiprocessing/api.py:900] Sending "
        "process 4251 closing signal SIGTERM\n"
        "E0120 10:20:01.000000 4242 torch/distributed/elastic/multiprocessing/api.py:874] failed "
        "(exitcode: -9) local_rank: 0 (pid: 4250) of binary: /home/ubuntu/nanochat/.venv/bin/python3\n"
        "  traceback : Signal 9 (SIGKILL) received by PID 4250\n"
    )
    findings = diagnose(log, "gpu-a", process_gone=True)
    assert ids(findings) == ["killed"]
    assert "SIGKILL" in findings[0]["title"] and "dmesg" in findings[0]["title"]


def test_a_vanished_process_is_reported_only_when_gone_and_unfinished() -> None:
    assert diagnose(OLD_RUN) == []  # running: nothing wrong
    (finding,) = diagnose(OLD_RUN, "gpu-a", process_gone=True)
    assert finding["id"] == "vanished"
    assert finding["evidence"] == "Step 00010 | Validation bpb: 1.9876"  # the last line it printed
    assert diagnose(NEW_RUN, process_gone=True) == []  # finished normally


def test_an_unknown_error_is_reported_with_its_exception_line() -> None:
    log = OLD_RUN + "[rank0]: Traceback (most recent call last):\n[rank0]: KeyError: 'bos'\n" + TORCHRUN_FAILED
    (finding,) = diagnose(log, process_gone=True)
    assert finding["id"] == "died"
    assert finding["evidence"] == "[rank0]: KeyError: 'bos'"


def test_a_clean_finished_run_has_no_findings() -> None:
    assert diagnose(NEW_RUN, "gpu-a") == []


def test_a_non_zero_exit_without_an_exception_is_died_not_vanished() -> None:
    (finding,) = diagnose(OLD_RUN + "Segmentation fault (core dumped)\n", process_gone=True, exit_code=139)
    assert finding["id"] == "died" and "exit code 139" in finding["title"]
    assert finding["evidence"] == "Segmentation fault (core dumped)"


def test_signals_torchrun_sends_after_a_rank_failed_are_not_the_cause() -> None:
    log = missing_module_log("rustbpe") + "  traceback : Signal 15 (SIGTERM) received by PID 4251\n"
    assert ids(diagnose(log, process_gone=True)) == ["missing_module"]


def test_torchrun_itself_terminated() -> None:
    log = OLD_RUN + ("torch.distributed.elastic.multiprocessing.api.SignalException: Process 32727 got signal: 15\n")
    (finding,) = diagnose(log, "gpu-a", process_gone=True)
    assert finding["id"] == "killed" and "SIGTERM" in finding["title"]


# ---- logs of real runs: nanochat at b07604e on the lab's CPU hosts (make lab, recorded 2026-12-01) ----
REAL_LOGS = Path(__file__).resolve().parents[1] / "fixtures" / "logs"


def real_log(arm: str) -> str:
    return (REAL_LOGS / f"b07604e-cpu-{arm}.log").read_text()


@pytest.mark.parametrize("arm", ["top16.5", "random16.5"])
def test_a_real_finished_run_is_parsed_step_by_step(arm: str) -> None:
    text = real_log(arm)
    parsed = parse_log(text)
    # the banner, nanochat's logging lines with colour codes and wandb's summary are not step lines
    assert parsed["step_lines"] == 20 and parsed["num_iterations"] == 20
    assert [step for step, _ in parsed["val"]] == [0, 10, 20]
    assert parsed["finished"] is True and parsed["last_step"]["step"] == 19
    assert parsed["last_step"]["mfu_field"] == "bf16_mfu"
    printed = float(text.split("Minimum validation bpb: ")[1].split()[0])
    assert parsed["min_val_bpb"] == printed == min(bpb for _, bpb in parsed["val"])
    assert "finished" in progress_line(parsed)
    # a clean real run has nothing to diagnose (the SDPA fallback and wandb offline lines are no faults)
    assert diagnose(text, "top") == []


def test_a_real_run_cut_mid_training_is_in_progress() -> None:
    text = real_log("top16.5")
    cut = text[: text.index("step 00012/00020")]
    parsed = parse_log(cut)
    assert parsed["started"] is True and parsed["finished"] is False
    assert parsed["last_step"]["step"] == 11 and parsed["last_val_bpb"] == parsed["val"][-1][1]
    assert "step 11/20" in progress_line(parsed)
    assert diagnose(cut, "top", process_gone=True)[0]["id"] == "vanished"


def test_a_real_run_that_crashed_after_its_model_config_names_the_cause() -> None:
    text = real_log("random16.5")
    head = text[: text.index("Step 00000 | Validation bpb")]
    crashed = head + "Traceback (most recent call last):\nModuleNotFoundError: No module named 'rustbpe'\n"
    findings = diagnose(crashed, "random", process_gone=True, exit_code=1)
    assert findings[0]["id"] == "missing_module" and "--tags deps -l random" in findings[0]["repair"]
