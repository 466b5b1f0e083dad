"""The stand-in nanochat (tests/lab/standin, built by tests/lab/build_standin.py): one deterministic
tagged commit that honours nanochat's interface as of b07604e, and that really trains on several
processes and across nodes (torchrun with gloo on CPU), which real nanochat cannot do without GPUs.

Runs the real tools: git, the venv's python and torchrun (2 processes, gloo on CPU), W&B offline.
"""

from __future__ import annotations

import importlib.util
import json
import os
import random
import re
import shutil
import socket
import subprocess
import sys
from collections.abc import Iterator
from types import ModuleType
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from ansible.module_utils.arms_flags import flag_style_of_checkout, tok_train_flag_style_of_checkout
from ansible.module_utils.arms_logs import parse_log
from ansible.module_utils.arms_patch import SCRIPT_PATTERNS, crlf_apply, tf32_apply

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
BUILDER = os.path.join(ROOT, "tests", "lab", "build_standin.py")
REAL_LOG = os.path.join(ROOT, "tests", "fixtures", "logs", "b07604e-cpu-top16.5.log")
VENV_BIN = os.path.dirname(sys.executable)
TORCHRUN = os.path.join(VENV_BIN, "torchrun")
TIMEOUT = 300  # a hang (the thing the stand-in must not do) fails the test instead of blocking CI

# nanochat's step line at b07604e (eta only after the first 10 steps), as the real log has it
STEP_RE = re.compile(
    r"^step (\d{5})/(\d{5}) \((\d+\.\d\d)%\) \| loss: (\d+\.\d{6}) \| lrm: \d\.\d\d \| dt: \d+\.\d\dms \| "
    r"tok/sec: [\d,]+ \| bf16_mfu: \d+\.\d\d \| epoch: (\d+) \| total time: \d+\.\d\dm( \| eta: \d+\.\dm)?$",
    re.M,
)
VAL_RE = re.compile(r"^Step (\d{5}) \| Validation bpb: (\d+\.\d{6})$", re.M)
# rank-0 lines of real nanochat that the stand-in prints too (numbers left out)
REAL_LINE_HEADS = (
    "Distributed world size: ",
    "Vocab size: ",
    "Model config:",
    "Parameter counts:",
    "Estimated FLOPs per token: ",
    "Using user-provided number of iterations: ",
    "Total number of training tokens: ",
    "Tokens : Scaling params ratio: ",
    "Total training FLOPs estimate: ",
    "Tokens / micro-batch / rank: ",
    "Tokens / micro-batch: ",
    "Total batch size ",
    "Saved model parameters to: ",
    "Saved metadata to: ",
    "Saved optimizer state to: ",
    "Peak memory usage: ",
    "Total training time: ",
    "Minimum validation bpb: ",
)
TRAIN_FLAGS = [
    "--depth=26",
    "--device-batch-size=4",
    "--total-batch-size=1024",  # 4 x 64 x 2 processes = 512: 2 micro-batches a step
    "--max-seq-len=64",
    "--eval-every=10",
    "--eval-tokens=2048",
    "--core-metric-every=-1",
    "--sample-every=-1",
    "--model-tag=d26",
]


# ----------------------------------------------------------------------------- helpers
def load_builder() -> ModuleType:
    spec = importlib.util.spec_from_file_location("build_standin", BUILDER)
    assert spec and spec.loader
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


bs = load_builder()


def git(*args: str, cwd: str | None = None, env: dict[str, str] | None = None) -> str:
    full_env = {k: v for k, v in os.environ.items() if not k.startswith("GIT_")}
    full_env.update(GIT_CONFIG_NOSYSTEM="1", GIT_CONFIG_GLOBAL=os.devnull, **(env or {}))
    return subprocess.run(["git", *args], cwd=cwd, env=full_env, capture_output=True, check=True).stdout.decode()


def git_bytes(repo: str, spec: str) -> bytes:
    return subprocess.run(["git", "-C", repo, "show", spec], capture_output=True, check=True).stdout


def checkout(repo: str, tag: str, dest: str) -> str:
    git("clone", "-q", repo, dest)
    git("-c", "advice.detachedHead=false", "checkout", "-q", tag, cwd=dest)
    return dest


def write_shards(data_dir: str, row_groups: list[int], rows: int = 16, seed: int = 42) -> list[str]:
    """nanochat-style shards: shard_0000N.parquet, a ``text`` column, ``row_groups[i]`` row groups each."""
    os.makedirs(data_dir, exist_ok=True)
    rng = random.Random(seed)
    text = "the of and to in is was for on with as by at from that this river city school music people data"
    words = text.split()
    paths = []
    for i, n in enumerate(row_groups):
        path = os.path.join(data_dir, f"shard_{i:05d}.parquet")
        with pq.ParquetWriter(path, pa.schema([("text", pa.string())])) as writer:
            for _ in range(n):
                docs = [" ".join(rng.choice(words) for _ in range(rng.randint(30, 120))) for _ in range(rows)]
                writer.write_table(pa.table({"text": docs}))
        paths.append(path)
    return paths


def base_env(base_dir: str, tmp: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("WANDB_", "NANOCHAT_"))}
    env.update(
        NANOCHAT_BASE_DIR=base_dir,
        OMP_NUM_THREADS="1",
        PYTHONUNBUFFERED="1",
        WANDB_MODE="offline",
        WANDB_DIR=os.path.join(tmp, "wandb"),
        WANDB_CONFIG_DIR=os.path.join(tmp, "wandb-config"),
        WANDB_CACHE_DIR=os.path.join(tmp, "wandb-cache"),
        WANDB_SILENT="true",
    )
    os.makedirs(env["WANDB_DIR"], exist_ok=True)
    return env


def run(cmd: list[str], cwd: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=TIMEOUT, check=False)


def python(cwd: str, env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return run([sys.executable, *args], cwd, env)


def torchrun(cwd: str, env: dict[str, str], *flags: str, nproc: int = 2) -> subprocess.CompletedProcess[str]:
    return run(
        [TORCHRUN, "--standalone", f"--nproc_per_node={nproc}", "-m", "scripts.base_train", "--", *flags], cwd, env
    )


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def torchrun_two_nodes(cwd: str, env: dict[str, str], *flags: str) -> list[subprocess.CompletedProcess[str]]:
    """Two torchrun "nodes" of one process each on this machine, with the static rendezvous the lab uses."""
    port = free_port()
    procs = [
        subprocess.Popen(
            [
                TORCHRUN,
                "--nnodes=2",
                f"--node_rank={rank}",
                "--master_addr=127.0.0.1",
                f"--master_port={port}",
                "--nproc_per_node=1",
                "-m",
                "scripts.base_train",
                "--",
                *flags,
            ],
            cwd=cwd,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for rank in (0, 1)
    ]
    done = []
    for proc in procs:
        try:
            out, err = proc.communicate(timeout=TIMEOUT)
        except subprocess.TimeoutExpired:
            for other in procs:
                other.kill()
            raise
        done.append(subprocess.CompletedProcess(proc.args, proc.returncode, out, err))
    return done


def wandb_runs(tmp: str) -> list[str]:
    folder = os.path.join(tmp, "wandb", "wandb")
    return sorted(d for d in os.listdir(folder) if d.startswith("offline-run-")) if os.path.isdir(folder) else []


def ok(proc: subprocess.CompletedProcess[str]) -> str:
    assert proc.returncode == 0, (
        f"exit {proc.returncode}\nSTDOUT:\n{proc.stdout[-4000:]}\nSTDERR:\n{proc.stderr[-4000:]}"
    )
    return proc.stdout


# ----------------------------------------------------------------------------- fixtures
@pytest.fixture(scope="module")
def standin(tmp_path_factory: pytest.TempPathFactory) -> tuple[str, dict[str, str]]:
    dest = str(tmp_path_factory.mktemp("standin") / "nanochat.git")
    return dest, bs.build(dest)


@pytest.fixture(scope="module")
def trained(standin: tuple[str, dict[str, str]], tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    """tok_train, then 2 processes x 1 node for 20 steps (W&B offline), then 1 process x 2 nodes to step 22."""
    missing = [m for m in ("rustbpe", "psutil", "tiktoken", "torch", "wandb") if importlib.util.find_spec(m) is None]
    if missing:
        pytest.fail(
            f"The stand-in nanochat needs {', '.join(missing)} in the test venv ({sys.executable}): "
            f"install them with `{sys.executable} -m pip install {' '.join(missing)}`"
        )
    repo, _ = standin
    tmp = str(tmp_path_factory.mktemp("trained"))
    work = checkout(repo, bs.TAG, os.path.join(tmp, "nanochat"))
    base = os.path.join(tmp, "base")
    write_shards(os.path.join(base, "base_data"), [4, 4, 2])  # 2 training shards + the val shard
    env = base_env(base, tmp)
    out: dict[str, Any] = {"tmp": tmp, "work": work, "base": base, "env": env}
    out["tok"] = python(
        work, env, "-m", "scripts.tok_train", "--max-chars=200000", "--doc-cap=2000", "--vocab-size=512"
    )
    wandb_env = dict(env, WANDB_RUN_GROUP="lab-experiment", WANDB_TAGS="top16.5,lab-experiment")
    out["train"] = torchrun(work, wandb_env, "--run=standin-test", "--num-iterations=20", *TRAIN_FLAGS)
    out["wandb_after_train"] = wandb_runs(tmp)
    out["resume"] = torchrun_two_nodes(
        work, env, "--run=dummy", "--num-iterations=22", "--resume-from-step=20", *TRAIN_FLAGS
    )
    out["wandb_after_resume"] = wandb_runs(tmp)
    yield out


# ----------------------------------------------------------------------------- the repo
def test_builds_give_the_same_commit_id_and_rebuilding_changes_nothing(
    standin: tuple[str, dict[str, str]], tmp_path: Any
) -> None:
    repo, tags = standin
    assert list(tags) == ["standin"] == [bs.TAG]
    assert tags["standin"] == git("rev-parse", "refs/heads/master", cwd=repo).strip()
    assert git("rev-list", "--count", "--all", cwd=repo).strip() == "1"
    assert git("tag", cwd=repo).split() == ["standin"]
    assert git("log", "-1", "--format=%ad %ae", "--date=short", cwd=repo).split() == [
        "2026-03-03",
        "standin@nanochat-arms.invalid",
    ]
    other = bs.build(str(tmp_path / "again"))
    assert other == tags  # same id in another folder, another run

    head_mtime = os.stat(os.path.join(repo, ".git", "HEAD")).st_mtime_ns
    assert bs.build(repo) == tags
    assert bs.build(repo, force=True) == tags
    assert os.stat(os.path.join(repo, ".git", "HEAD")).st_mtime_ns == head_mtime  # left as it was

    cli = subprocess.run([sys.executable, BUILDER, repo], capture_output=True, text=True, check=True)
    assert cli.stdout.split() == ["standin", tags["standin"]]


def test_builder_refuses_a_folder_that_is_something_else(tmp_path: Any) -> None:
    target = tmp_path / "busy"
    target.mkdir()
    (target / "notes.txt").write_text("mine\n")
    with pytest.raises(bs.StandinError, match="not the stand-in repo"):
        bs.build(str(target), force=True)
    assert sorted(os.listdir(tmp_path)) == ["busy"]  # nothing half-built left next to it
    assert (target / "notes.txt").read_text() == "mine\n"

    # a repo with someone else's commit is refused, --force or not
    foreign = tmp_path / "foreign"
    bs.build(str(foreign))
    (foreign / "notes.txt").write_text("mine\n")
    git("add", "notes.txt", cwd=str(foreign))
    who = {"GIT_AUTHOR_NAME": "me", "GIT_AUTHOR_EMAIL": "me@example.invalid"}
    who |= {"GIT_COMMITTER_NAME": "me", "GIT_COMMITTER_EMAIL": "me@example.invalid"}
    git("commit", "-q", "-m", "mine", cwd=str(foreign), env=who)
    git("tag", "-f", "standin", cwd=str(foreign))
    with pytest.raises(bs.StandinError, match="not the stand-in repo"):
        bs.build(str(foreign), force=True)
    assert (foreign / "notes.txt").read_text() == "mine\n"


def test_an_older_multi_era_build_is_replaced_only_with_force(tmp_path: Any) -> None:
    """The lab's .lab/nanochat-standin.git of before: a commit per era, tagged era-*, by the stand-in."""
    old = str(tmp_path / "old")
    os.makedirs(old)
    git("init", "-q", "--initial-branch=master", cwd=old)
    for i, tag in enumerate(("era-underscore", "era-cuda-matmul", "era-fp32", "era-fixed", "era-climbmix")):
        with open(os.path.join(old, "speedrun.sh"), "wb") as fh:
            fh.write(f"#!/bin/bash\r\necho {tag}\r\n".encode())
        git("add", "-A", cwd=old)
        date = f"2026-01-{10 + i:02d}T12:00:00+00:00"
        who = {
            f"GIT_{role}_{key}": value
            for role in ("AUTHOR", "COMMITTER")
            for key, value in (("NAME", bs.AUTHOR_NAME), ("EMAIL", bs.AUTHOR_EMAIL), ("DATE", date))
        }
        git("commit", "-q", "-m", tag, cwd=old, env=who)
        git("tag", tag, cwd=old)
    with pytest.raises(bs.StandinError, match=r"older build of the stand-in.*--force"):
        bs.build(old)
    assert "era-fp32" in git("tag", cwd=old).split()  # left as it was
    cli = subprocess.run([sys.executable, BUILDER, "--force", old], capture_output=True, text=True, check=False)
    assert cli.returncode == 0, cli.stderr
    assert git("tag", cwd=old).split() == ["standin"]
    assert git("rev-list", "--count", "--all", cwd=old).strip() == "1"
    assert not any(name.startswith(".old.build-") for name in os.listdir(tmp_path))


def test_the_commit_honours_todays_interface_with_nothing_to_repair(
    standin: tuple[str, dict[str, str]], tmp_path: Any
) -> None:
    repo, _ = standin
    listing = [line.split(None, 3) for line in git("ls-tree", "-r", bs.TAG, cwd=repo).splitlines()]
    modes = {path: mode for mode, _kind, _sha, path in listing}
    assert {p: m for p, m in modes.items() if p.endswith(".sh")} == {
        "runs/runcpu.sh": "100755",
        "runs/speedrun.sh": "100755",
    }
    assert {"pyproject.toml", "scripts/base_train.py", "scripts/tok_train.py", "nanochat/common.py"} <= set(modes)
    assert ".gitattributes" not in modes and "uv.lock" not in modes
    for path in modes:
        data = git_bytes(repo, f"{bs.TAG}:{path}")
        assert b"\r" not in data, f"{path} has CR characters"
        assert b"standin-only" not in data and b"standin-end" not in data, f"{path} has a template marker"
    dataset = git_bytes(repo, f"{bs.TAG}:nanochat/dataset.py").decode()
    assert 'DATA_DIR = os.path.join(base_dir, "base_data")' in dataset and "climbmix" not in dataset

    # the project's own repairs and flag reading find nothing to do and dashed flags
    work = checkout(repo, bs.TAG, str(tmp_path / "nanochat"))
    tf32 = tf32_apply(work, check_mode=True)
    assert (tf32.changed, tf32.state) == (False, "already_fixed")
    crlf = crlf_apply(work, list(SCRIPT_PATTERNS), check_mode=True)
    assert not crlf.changed and crlf.scripts == ["runs/runcpu.sh", "runs/speedrun.sh"]
    assert flag_style_of_checkout(work) == "dash" == tok_train_flag_style_of_checkout(work)


# ----------------------------------------------------------------------------- running it
@pytest.mark.slow
def test_two_processes_train_log_like_nanochat_checkpoint_and_report_to_wandb(trained: dict[str, Any]) -> None:
    ok(trained["tok"])
    assert sorted(os.listdir(os.path.join(trained["base"], "tokenizer"))) == ["token_bytes.pt", "tokenizer.pkl"]
    proc = trained["train"]
    out = ok(proc)
    log = out + proc.stderr  # nanochat's logger lines go to stderr
    steps = STEP_RE.findall(out)
    assert [int(s[0]) for s in steps] == list(range(20))  # rank 0 only: each step once
    assert {s[1] for s in steps} == {"00020"}
    assert [bool(s[5]) for s in steps] == [False] * 11 + [True] * 9  # eta from step 11 on, as nanochat
    assert float(steps[-1][3]) < float(steps[0][3])  # it learns
    vals = [(int(s), float(b)) for s, b in VAL_RE.findall(out)]
    assert [s for s, _ in vals] == [0, 10, 20]
    assert vals[-1][1] < vals[0][1]
    assert "Distributed world size: 2" in log
    assert "Using user-provided number of iterations: 20" in out
    assert "Total batch size 1,024 => gradient accumulation steps: 2" in out
    assert f"Minimum validation bpb: {min(b for _, b in vals):.6f}" in out
    with open(REAL_LOG, encoding="utf-8") as fh:
        real = fh.read()
    for head in REAL_LINE_HEADS:  # the lines are real nanochat's: the recorded lab log has them too
        assert head in real, head
        assert head in log, head

    # the project's log parser reads it as it reads real nanochat's
    parsed = parse_log(log)
    assert (parsed["step_lines"], parsed["last_step"]["step"], parsed["num_iterations"]) == (20, 19, 20)
    assert parsed["val"] == vals and parsed["min_val_bpb"] == min(b for _, b in vals)
    assert parsed["finished"] and parsed["peak_memory_mib"] == 0.0

    ckpt = os.path.join(trained["base"], "base_checkpoints", "d26")
    for name in ("model_000020.pt", "meta_000020.json", "optim_000020_rank0.pt", "optim_000020_rank1.pt"):
        assert os.path.isfile(os.path.join(ckpt, name)), name
    with open(os.path.join(ckpt, "meta_000020.json"), encoding="utf-8") as fh:
        meta = json.load(fh)
    assert meta["step"] == 20 and meta["world_size"] == 2 and meta["user_config"]["run"] == "standin-test"

    runs = trained["wandb_after_train"]
    assert len(runs) == 1, runs  # one offline run: rank 0 only
    run_dir = os.path.join(trained["tmp"], "wandb", "wandb", runs[0])
    (record,) = [f for f in os.listdir(run_dir) if f.endswith(".wandb")]
    with open(os.path.join(run_dir, record), "rb") as fh:
        data = fh.read()
    # name from --run; group and tags from the environment; the metrics nanochat logs
    for needle in (b"standin-test", b"lab-experiment", b"top16.5", b"val/bpb", b"train/loss"):
        assert needle in data, needle


@pytest.mark.slow
def test_two_nodes_resume_from_the_saved_step(trained: dict[str, Any]) -> None:
    node0, node1 = trained["resume"]
    out = ok(node0)
    ok(node1)
    assert "Distributed world size: 2" in node0.stderr
    assert "Resuming optimization from step 20" in out
    assert [int(s[0]) for s in STEP_RE.findall(out)] == [20, 21]
    assert not STEP_RE.search(node1.stdout)  # only global rank 0 prints
    ckpt = os.path.join(trained["base"], "base_checkpoints", "d26")
    assert {"model_000022.pt", "optim_000022_rank0.pt", "optim_000022_rank1.pt", "meta_000020.json"} <= set(
        os.listdir(ckpt)
    )
    assert trained["wandb_after_resume"] == trained["wandb_after_train"]  # --run=dummy: no W&B run


@pytest.mark.slow
def test_loader_conditions_that_hang_nanochat_exit_with_the_cause(trained: dict[str, Any], tmp_path: Any) -> None:
    flags = ["--run=dummy", "--num-iterations=2", "--device-batch-size=4", "--total-batch-size=512", "--max-seq-len=64"]
    # a val shard with 1 row group under 2 processes: rank 1 gets none
    starved = str(tmp_path / "starved")
    write_shards(os.path.join(starved, "base_data"), [2, 1])
    shutil.copytree(os.path.join(trained["base"], "tokenizer"), os.path.join(starved, "tokenizer"))
    proc = torchrun(trained["work"], dict(trained["env"], NANOCHAT_BASE_DIR=starved), *flags)
    assert proc.returncode != 0
    assert "Rank 1 of 2 gets no row group of the val split" in proc.stdout + proc.stderr
    # a single parquet file: the train split is empty
    single = str(tmp_path / "single")
    write_shards(os.path.join(single, "base_data"), [4])
    shutil.copytree(os.path.join(trained["base"], "tokenizer"), os.path.join(single, "tokenizer"))
    proc = python(trained["work"], dict(trained["env"], NANOCHAT_BASE_DIR=single), "-m", "scripts.base_train", *flags)
    assert proc.returncode != 0
    assert "The train split is empty" in proc.stderr and "single parquet file" in proc.stderr
