"""The stand-in nanochat (tests/lab/standin, built by tests/lab/build_standin.py) honours nanochat's
interface as ../shared/nanochat-interface.md describes it: stable tagged commits per era, CRLF shell
scripts, flags, data conventions, log lines, checkpoints, W&B, and the failure signatures.

Runs the real tools: git, the venv's python and torchrun (2 processes, gloo on CPU), W&B offline.
"""

from __future__ import annotations

import importlib.util
import json
import os
import random
import re
import shutil
import subprocess
import sys
from collections.abc import Iterator
from types import ModuleType
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
BUILDER = os.path.join(ROOT, "tests", "lab", "build_standin.py")
VENV_BIN = os.path.dirname(sys.executable)
TORCHRUN = os.path.join(VENV_BIN, "torchrun")
TIMEOUT = 300  # a hang (the thing the stand-in must not do) fails the test instead of blocking CI

TF32_LINES = {
    "era-underscore": 'torch.backends.cuda.matmul.fp32_precision = "tf32"',
    "era-cuda-matmul": 'torch.backends.cuda.matmul.fp32_precision = "tf32"',
    "era-fp32": 'torch.backends.fp32_precision = "tf32"',
    "era-fixed": 'torch.set_float32_matmul_precision("high")',
    "era-climbmix": 'torch.set_float32_matmul_precision("high")',
}
TF32_CRASH = (
    "torch._inductor.exc.InductorError: LoweringException: RuntimeError: PyTorch is checking whether "
    "allow_tf32_new is enabled for cuBlas matmul,Current status indicate that you have used mix of the legacy "
    "and new APIs to set the TF32 status for cublas matmul."
)
STEP_RE = re.compile(
    r"^step (\d{5})/(\d{5}) \((\d+\.\d\d)%\) \| loss: (\d+\.\d{6}) \| lrm: \d\.\d\d \| dt: \d+\.\d\dms \| "
    r"tok/sec: [\d,]+ \| (mfu|bf16_mfu): \d+\.\d\d \| epoch: (\d+) pq: (\d+) rg: (\d+) \| "
    r"total time: \d+\.\d\dm \| eta: \d+\.\dm$",
    re.M,
)
VAL_RE = re.compile(r"^Step (\d{5}) \| Validation bpb: (\d+\.\d{6})$", re.M)
TRAIN_FLAGS = [
    "--depth=26",
    "--device-batch-size=32",
    "--total-batch-size=524288",
    "--max-seq-len=64",
    "--eval-every=10",
    "--core-metric-every=-1",
    "--model-tag=d26",
]


# ----------------------------------------------------------------------------- helpers
def load_builder() -> ModuleType:
    spec = importlib.util.spec_from_file_location("build_standin", BUILDER)
    assert spec and spec.loader
    mod = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = mod  # its dataclasses look their module up
    spec.loader.exec_module(mod)
    return mod


bs = load_builder()


def git(*args: str, cwd: str | None = None) -> str:
    env = {k: v for k, v in os.environ.items() if not k.startswith("GIT_")}
    env.update(GIT_CONFIG_NOSYSTEM="1", GIT_CONFIG_GLOBAL=os.devnull)
    return subprocess.run(["git", *args], cwd=cwd, env=env, capture_output=True, check=True).stdout.decode()


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


def read_folder(folder: str) -> dict[str, bytes]:
    files = {}
    for name in sorted(os.listdir(folder)):
        with open(os.path.join(folder, name), "rb") as fh:
            files[name] = fh.read()
    return files


def wandb_runs(tmp: str) -> list[str]:
    folder = os.path.join(tmp, "wandb", "wandb")
    return sorted(d for d in os.listdir(folder) if d.startswith("offline-run-")) if os.path.isdir(folder) else []


# ----------------------------------------------------------------------------- fixtures
@pytest.fixture(scope="module")
def standin(tmp_path_factory: pytest.TempPathFactory) -> tuple[str, dict[str, str]]:
    missing = [m for m in ("rustbpe", "psutil", "tiktoken", "torch", "wandb") if importlib.util.find_spec(m) is None]
    if missing:
        pytest.fail(
            f"The stand-in nanochat needs {', '.join(missing)} in the test venv ({sys.executable}): "
            f"install them with `{sys.executable} -m pip install {' '.join(missing)}`"
        )
    dest = str(tmp_path_factory.mktemp("standin") / "nanochat.git")
    return dest, bs.build(dest)


@pytest.fixture(scope="module")
def fp32_run(standin: tuple[str, dict[str, str]], tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    """era-fp32 (the lab's pin): tok_train twice, torchrun unpatched, patched, then resumed."""
    repo, _ = standin
    tmp = str(tmp_path_factory.mktemp("fp32"))
    work = checkout(repo, "era-fp32", os.path.join(tmp, "nanochat"))
    base = os.path.join(tmp, "base")
    write_shards(os.path.join(base, "base_data"), [4, 4, 2])  # 2 training shards + the val shard
    env = base_env(base, tmp)  # NANOCHAT_STANDIN_NO_TF32_CRASH unset
    out: dict[str, Any] = {"tmp": tmp, "work": work, "base": base, "env": env}
    tok_flags = ["-m", "scripts.tok_train", "--max-chars=200000", "--doc-cap=2000", "--vocab-size=512"]
    out["tok1"] = python(work, env, *tok_flags)
    out["tok_files1"] = read_folder(os.path.join(base, "tokenizer"))
    out["tok2"] = python(work, env, *tok_flags)
    out["tok_files2"] = read_folder(os.path.join(base, "tokenizer"))

    out["crash"] = torchrun(work, env, "--run=dummy", "--num-iterations=20", *TRAIN_FLAGS)
    out["wandb_after_crash"] = wandb_runs(tmp)
    out["ckpt_after_crash"] = os.path.exists(os.path.join(base, "base_checkpoints"))

    common = os.path.join(work, "nanochat", "common.py")  # the project's TF32 patch, by hand
    with open(common, encoding="utf-8") as fh:
        text = fh.read()
    with open(common, "w", encoding="utf-8") as fh:
        fh.write(text.replace(TF32_LINES["era-fp32"], TF32_LINES["era-fixed"]))
    wandb_env = dict(env, WANDB_RUN_GROUP="lab-experiment", WANDB_TAGS="top16.5,lab-experiment")
    out["train"] = torchrun(work, wandb_env, "--run=standin-test", "--num-iterations=20", *TRAIN_FLAGS)
    out["wandb_after_train"] = wandb_runs(tmp)
    out["resume"] = torchrun(work, env, "--run=dummy", "--num-iterations=22", "--resume-from-step=20", *TRAIN_FLAGS)
    out["wandb_after_resume"] = wandb_runs(tmp)
    yield out


def ok(proc: subprocess.CompletedProcess[str]) -> str:
    assert proc.returncode == 0, (
        f"exit {proc.returncode}\nSTDOUT:\n{proc.stdout[-4000:]}\nSTDERR:\n{proc.stderr[-4000:]}"
    )
    return proc.stdout


# ----------------------------------------------------------------------------- the repo
def test_builds_give_the_same_commit_ids_and_rebuilding_changes_nothing(
    standin: tuple[str, dict[str, str]], tmp_path: Any
) -> None:
    repo, tags = standin
    assert list(tags) == list(bs.ERA_TAGS)
    other = bs.build(str(tmp_path / "again"))
    assert other == tags  # same ids in another folder, another run
    assert git("rev-parse", "HEAD", cwd=repo).strip() == tags["era-climbmix"]
    assert git("log", "-1", "--format=%ad %an", "--date=short", "era-fp32", cwd=repo).startswith("2026-02-01 ")

    head_mtime = os.stat(os.path.join(repo, ".git", "HEAD")).st_mtime_ns
    assert bs.build(repo) == tags
    assert os.stat(os.path.join(repo, ".git", "HEAD")).st_mtime_ns == head_mtime  # left as it was

    cli = subprocess.run([sys.executable, BUILDER, repo], capture_output=True, text=True, check=True)
    assert [line.split() for line in cli.stdout.splitlines()] == [[t, s] for t, s in tags.items()]


def test_builder_refuses_a_folder_that_is_something_else(tmp_path: Any) -> None:
    target = tmp_path / "busy"
    target.mkdir()
    (target / "notes.txt").write_text("mine\n")
    with pytest.raises(bs.StandinError, match="not the stand-in repo"):
        bs.build(str(target))
    assert sorted(os.listdir(tmp_path)) == ["busy"]  # nothing half-built left next to it
    assert (target / "notes.txt").read_text() == "mine\n"

    stale = tmp_path / "stale"
    bs.build(str(stale))
    git("tag", "-f", "era-fixed", "era-fp32", cwd=str(stale))  # an older build: same tags, other commits
    with pytest.raises(bs.StandinError, match="--force"):
        bs.build(str(stale))
    fresh = bs.build(str(stale), force=True)
    assert git("rev-parse", "era-fixed", cwd=str(stale)).strip() == fresh["era-fixed"] != fresh["era-fp32"]


def test_template_markers_select_lines_per_era_and_bad_markers_are_refused() -> None:
    text = "a\n# standin-only: era-fp32 era-fixed\nb\n# standin-end\nc"
    assert bs.select_era_lines(text, "era-fp32", "x.py") == "a\nb\nc"
    assert bs.select_era_lines(text, "era-climbmix", "x.py") == "a\nc"
    with pytest.raises(bs.StandinError, match=r"x\.py:1: a standin-only marker needs known era tags"):
        bs.select_era_lines("# standin-only: era-typo\n# standin-end", "era-fp32", "x.py")
    with pytest.raises(bs.StandinError, match=r"x\.py:1: standin-only marker without a standin-end"):
        bs.select_era_lines("# standin-only: era-fp32\nb", "era-fp32", "x.py")
    flags = ["max-seq-len", "run"]
    assert bs.underscore_flags("--max-seq-len=64 --max-seq-lens --nproc_per_node=2", flags) == (
        "--max_seq_len=64 --max-seq-lens --nproc_per_node=2"
    )


def test_shell_scripts_are_stored_crlf_without_execute_bit(standin: tuple[str, dict[str, str]], tmp_path: Any) -> None:
    repo, _ = standin
    for tag in bs.ERA_TAGS:
        listing = [line.split(None, 3) for line in git("ls-tree", "-r", tag, cwd=repo).splitlines()]
        scripts = {path: mode for mode, _kind, _sha, path in listing if path.endswith(".sh")}
        if tag == "era-underscore":
            assert set(scripts) == {"speedrun.sh", "runcpu.sh"}
        else:
            assert set(scripts) == {"runs/speedrun.sh", "runs/runcpu.sh"}
        assert set(scripts.values()) == {"100644"}, f"{tag}: a script is executable in git"
        for path in scripts:
            data = git_bytes(repo, f"{tag}:{path}")
            assert data.startswith(b"#!/bin/bash\r\n") and data.count(b"\n") == data.count(b"\r\n"), (tag, path)
    # any checkout keeps them CRLF and not executable, even one with core.autocrlf=true
    clone = str(tmp_path / "clone")
    git("-c", "core.autocrlf=true", "clone", "-q", repo, clone)
    speedrun = os.path.join(clone, "runs", "speedrun.sh")
    assert b"\r\n" in open(speedrun, "rb").read()
    assert not os.access(speedrun, os.X_OK)


def test_each_era_has_its_tf32_line_flag_style_and_data_dir(standin: tuple[str, dict[str, str]]) -> None:
    repo, _ = standin
    for tag, line in TF32_LINES.items():
        common = git_bytes(repo, f"{tag}:nanochat/common.py").decode()
        tf32_lines = [s.strip() for s in common.splitlines() if "fp32_precision" in s or "float32_matmul" in s]
        assert tf32_lines == [line], tag
        train = git_bytes(repo, f"{tag}:scripts/base_train.py").decode()
        dataset = git_bytes(repo, f"{tag}:nanochat/dataset.py").decode()
        tree = git("ls-tree", "-r", "--name-only", tag, cwd=repo)
        assert "standin-only" not in train + common + dataset  # the template's markers never ship
        if tag == "era-underscore":
            assert '"--device_batch_size"' in train and "--device-batch-size" not in train
            assert "--max_chars" in git_bytes(repo, f"{tag}:speedrun.sh").decode()
        else:
            assert '"--device-batch-size"' in train and "--device_batch_size" not in train
        assert ("base_data_climbmix" in dataset) == (tag == "era-climbmix")
        assert ('"bf16_mfu"' in train) == (tag in ("era-fixed", "era-climbmix"))
        assert "uv.lock" not in tree and "pyproject.toml" in tree


# ----------------------------------------------------------------------------- running it
@pytest.mark.slow
def test_tok_train_writes_the_same_tokenizer_from_the_same_data(fp32_run: dict[str, Any]) -> None:
    ok(fp32_run["tok1"])
    ok(fp32_run["tok2"])
    assert sorted(fp32_run["tok_files1"]) == ["token_bytes.pt", "tokenizer.pkl"]
    assert fp32_run["tok_files1"] == fp32_run["tok_files2"]


@pytest.mark.slow
def test_tf32_line_of_the_pin_crashes_like_nanochat_at_the_first_step(fp32_run: dict[str, Any]) -> None:
    crash = fp32_run["crash"]
    assert crash.returncode != 0
    output = crash.stdout + crash.stderr
    assert TF32_CRASH in output
    assert "Number of iterations: 20" in crash.stdout  # it got as far as the first step
    assert not STEP_RE.search(crash.stdout)
    assert not fp32_run["ckpt_after_crash"]


@pytest.mark.slow
def test_patched_checkout_trains_logs_checkpoints_and_reports_to_wandb(fp32_run: dict[str, Any]) -> None:
    out = ok(fp32_run["train"])
    steps = STEP_RE.findall(out)
    assert [int(s[0]) for s in steps] == list(range(20))  # rank 0 only: each step once
    assert {s[1] for s in steps} == {"00020"} and {s[4] for s in steps} == {"mfu"}
    assert float(steps[-1][3]) < float(steps[0][3])  # it learns
    assert "Total batch size 524,288 => gradient accumulation steps: 128" in out
    assert "Number of iterations: 20" in out
    vals = [(int(s), float(b)) for s, b in VAL_RE.findall(out)]
    assert [s for s, _ in vals] == [0, 10, 20]
    assert vals[-1][1] < vals[0][1]
    assert re.search(r"^Peak memory usage: \d+\.\d\dMiB$", out, re.M)
    assert re.search(r"^Total training time: \d+\.\d\dm$", out, re.M)
    assert f"Minimum validation bpb: {min(b for _, b in vals):.6f}" in out

    ckpt = os.path.join(fp32_run["base"], "base_checkpoints", "d26")
    for name in ("model_000020.pt", "meta_000020.json", "optim_000020_rank0.pt", "optim_000020_rank1.pt"):
        assert os.path.isfile(os.path.join(ckpt, name)), name
    with open(os.path.join(ckpt, "meta_000020.json"), encoding="utf-8") as fh:
        meta = json.load(fh)
    assert meta["step"] == 20 and meta["world_size"] == 2 and meta["user_config"]["run"] == "standin-test"

    runs = sorted(set(fp32_run["wandb_after_train"]) - set(fp32_run["wandb_after_crash"]))
    assert len(runs) == 1, runs  # one offline run: rank 0 only
    run_dir = os.path.join(fp32_run["tmp"], "wandb", "wandb", runs[0])
    (record,) = [f for f in os.listdir(run_dir) if f.endswith(".wandb")]
    with open(os.path.join(run_dir, record), "rb") as fh:
        data = fh.read()
    # name from --run; group and tags from the environment; the metrics nanochat logs
    for needle in (b"standin-test", b"lab-experiment", b"top16.5", b"val/bpb", b"train/loss"):
        assert needle in data, needle


@pytest.mark.slow
def test_resume_continues_from_the_saved_step_without_wandb_for_dummy(fp32_run: dict[str, Any]) -> None:
    out = ok(fp32_run["resume"])
    assert "Resuming optimization from step 20" in out
    assert [int(s[0]) for s in STEP_RE.findall(out)] == [20, 21]
    ckpt = os.path.join(fp32_run["base"], "base_checkpoints", "d26")
    assert {"model_000022.pt", "optim_000022_rank1.pt", "meta_000020.json"} <= set(os.listdir(ckpt))
    assert fp32_run["wandb_after_resume"] == fp32_run["wandb_after_train"]  # --run=dummy: no W&B run


@pytest.mark.slow
def test_loader_conditions_that_hang_nanochat_exit_with_the_cause(fp32_run: dict[str, Any], tmp_path: Any) -> None:
    env = dict(fp32_run["env"], NANOCHAT_STANDIN_NO_TF32_CRASH="1")
    flags = ["--run=dummy", "--num-iterations=2", "--device-batch-size=4", "--total-batch-size=512", "--max-seq-len=64"]
    # a val shard with 1 row group under 2 processes: rank 1 gets none
    starved = str(tmp_path / "starved")
    write_shards(os.path.join(starved, "base_data"), [2, 1])
    shutil.copytree(os.path.join(fp32_run["base"], "tokenizer"), os.path.join(starved, "tokenizer"))
    proc = torchrun(fp32_run["work"], dict(env, NANOCHAT_BASE_DIR=starved), *flags)
    assert proc.returncode != 0
    assert "Rank 1 of 2 gets no row group of the val split" in proc.stdout + proc.stderr
    # a single parquet file: the train split is empty
    single = str(tmp_path / "single")
    write_shards(os.path.join(single, "base_data"), [4])
    shutil.copytree(os.path.join(fp32_run["base"], "tokenizer"), os.path.join(single, "tokenizer"))
    proc = python(fp32_run["work"], dict(env, NANOCHAT_BASE_DIR=single), "-m", "scripts.base_train", *flags)
    assert proc.returncode != 0
    assert "The train split is empty" in proc.stderr and "single parquet file" in proc.stderr


@pytest.mark.slow
def test_bad_setups_fail_with_nanochats_errors(fp32_run: dict[str, Any], tmp_path: Any) -> None:
    work, env = fp32_run["work"], dict(fp32_run["env"], NANOCHAT_STANDIN_NO_TF32_CRASH="1")
    # a venv without rustbpe (here: no site-packages at all) fails on the first import, like nanochat
    proc = python(work, env, "-S", "-m", "scripts.tok_train")
    assert "ModuleNotFoundError: No module named 'rustbpe'" in proc.stderr
    # a total batch that is no multiple of device batch x seq len x world size
    flags = ["--device-batch-size=3", "--max-seq-len=64", "--total-batch-size=1000", "--num-iterations=1"]
    proc = python(work, env, "-m", "scripts.base_train", *flags)
    assert proc.returncode != 0 and "AssertionError: total batch size 1,000 is not a multiple" in proc.stderr
    # no tokenizer yet
    proc = python(work, dict(env, NANOCHAT_BASE_DIR=str(tmp_path)), "-m", "scripts.base_train", *flags)
    assert proc.returncode != 0 and "Tokenizer not found at" in proc.stderr and "scripts.tok_train" in proc.stderr


def test_era_underscore_rejects_dashed_flags(standin: tuple[str, dict[str, str]], tmp_path: Any) -> None:
    work = checkout(standin[0], "era-underscore", str(tmp_path / "nanochat"))
    env = base_env(str(tmp_path / "base"), str(tmp_path))
    proc = python(work, env, "-m", "scripts.base_train", "--device-batch-size=32")
    assert proc.returncode == 2
    assert "unrecognized arguments: --device-batch-size=32" in proc.stderr
    assert "--device_batch_size" in proc.stderr  # the usage line shows the style it wants


def test_era_climbmix_reads_base_data_climbmix_when_it_exists(
    standin: tuple[str, dict[str, str]], tmp_path: Any
) -> None:
    base = str(tmp_path / "base")
    write_shards(os.path.join(base, "base_data"), [1, 1], rows=2)
    env = base_env(base, str(tmp_path))
    probe = (
        "import importlib, os, nanochat.dataset as d\n"
        "print([os.path.relpath(p, os.environ['NANOCHAT_BASE_DIR']) for p in d.list_parquet_files()])\n"
        "os.makedirs(os.path.join(os.environ['NANOCHAT_BASE_DIR'], 'base_data_climbmix'))\n"
        "open(os.path.join(os.environ['NANOCHAT_BASE_DIR'], 'base_data_climbmix', 'shard_00000.parquet'), 'w')\n"
        "open(os.path.join(os.environ['NANOCHAT_BASE_DIR'], 'base_data_climbmix', 'shard_00001.parquet.tmp'), 'w')\n"
        "d = importlib.reload(d)\n"
        "print([os.path.relpath(p, os.environ['NANOCHAT_BASE_DIR']) for p in d.list_parquet_files()])\n"
    )
    only_base_data = "['base_data/shard_00000.parquet', 'base_data/shard_00001.parquet']"
    work = checkout(standin[0], "era-climbmix", str(tmp_path / "climbmix"))
    before, after = ok(python(work, env, "-c", probe)).splitlines()
    assert before == only_base_data
    assert after == "['base_data_climbmix/shard_00000.parquet']"  # and the unfinished .tmp is skipped
    shutil.rmtree(os.path.join(base, "base_data_climbmix"))
    work = checkout(standin[0], "era-fixed", str(tmp_path / "fixed"))
    assert ok(python(work, env, "-c", probe)).splitlines() == [only_base_data, only_base_data]
