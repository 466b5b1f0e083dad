"""The data budget measured with the REAL nanochat loader (b07604e) and a real tokenizer trained by nanochat's code.

The prediction comes from a sample (a fifth of the arm's documents); the truth is nanochat's own loader
run over the WHOLE arm: the rows it yields in one steady-state pass (its epoch 5: the loader's buffer
keeps documents longer than a row until it holds little else, which takes some 10**4 documents, the
first passes of a small arm but a negligible part of a real one), counted from the loader's own epoch
field.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from ansible.module_utils.arms_common import ArmsError, atomic_write_json
from ansible.module_utils.arms_packing import (
    budget_key,
    cache_path,
    compare_passes,
    load_nanochat,
    load_tokenizer,
    measure_budget,
    read_cache,
    short_tokens,
)
from arms_fixture import make_table
from modtest import run_module
from nanochat_real import nanochat_at_pin

T = 512
FILES, DOCS_PER_FILE, GROUP = 5, 2000, 500
WARM_PASSES = 4  # 40000 documents: the loader's buffer is full of documents longer than a row by then


def write_arm(data_dir: Path, text_bytes_mean: int, seed: int) -> None:
    """An arm as nanochat reads it: shard_0000N.parquet (train) and a last file (val), a ``text`` column."""
    data_dir.mkdir(parents=True)
    rng = np.random.default_rng(seed)
    for i in range(FILES):
        table = make_table(rng, DOCS_PER_FILE, "CC-MAIN-2013-20", text_bytes_mean=text_bytes_mean).select(["text"])
        pq.write_table(table, str(data_dir / f"shard_{i:05d}.parquet"), row_group_size=GROUP)
    pq.write_table(table.slice(0, 200), str(data_dir / "shard_val.parquet"), row_group_size=100)


@pytest.fixture(scope="module")
def lab(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    checkout = nanochat_at_pin(tmp_path_factory)
    base = tmp_path_factory.mktemp("base")
    write_arm(base / "long" / "base_data", 1500, seed=3)
    write_arm(base / "short" / "base_data", 800, seed=4)
    nc = load_nanochat(str(checkout), base_dir=str(base))
    # what scripts/tok_train.py does: RustBPETokenizer.train_from_iterator on training text, then save()
    texts = pq.read_table(str(base / "long" / "base_data" / "shard_00000.parquet")).column("text").to_pylist()
    nc.tokenizer.RustBPETokenizer.train_from_iterator(iter(texts), 1024).save(str(base / "tokenizer"))
    return {"checkout": str(checkout), "base": base, "nc": nc, "tokenizer_dir": str(base / "tokenizer")}


def real_rows_in_one_pass(lab: dict[str, Any], data_dir: str) -> int:
    """nanochat's loader over the whole arm, unchanged: the rows it yields in one pass once steady (while its
    state says epoch WARM_PASSES + 1)."""
    nc = lab["nc"]
    tok = load_tokenizer(nc, lab["tokenizer_dir"])
    saved, nc.dataset.DATA_DIR = nc.dataset.DATA_DIR, data_dir
    try:
        loader = nc.dataloader.tokenizing_distributed_data_loader_with_state_bos_bestfit(
            tok, 1, T, split="train", device="cpu"
        )
        rows = 0
        for _x, _y, state in loader:
            if state["epoch"] == WARM_PASSES + 2:
                return rows
            rows += state["epoch"] == WARM_PASSES + 1
    finally:
        nc.dataset.DATA_DIR = saved
    raise AssertionError("unreachable")


def budget(lab: dict[str, Any], arm: str, **kw: Any) -> dict[str, Any]:
    return measure_budget(
        checkout=lab["checkout"],
        tokenizer_dir=lab["tokenizer_dir"],
        data_dir=str(lab["base"] / arm / "base_data"),
        max_seq_len=T,
        sample_docs=FILES * DOCS_PER_FILE // 5,
        seed=7,
        **kw,
    )


ITERATIONS, BATCH = 400, 32 * T


@pytest.fixture(scope="module")
def budgets(lab: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {arm: budget(lab, arm, num_iterations=ITERATIONS, total_batch_size=BATCH) for arm in ("long", "short")}


@pytest.mark.parametrize("arm", ["long", "short"])
def test_predicted_tokens_per_pass_are_within_5_percent_of_the_real_loader(
    lab: dict[str, Any], budgets: dict[str, dict[str, Any]], arm: str
) -> None:
    predicted = budgets[arm]
    real_rows = real_rows_in_one_pass(lab, str(lab["base"] / arm / "base_data"))
    error = predicted["loader_tokens_per_pass"] / (real_rows * T) - 1
    print(
        f"{arm}: predicted {predicted['loader_tokens_per_pass']:,} tokens a pass, real {real_rows * T:,} ({error:+.2%})"
    )
    assert abs(error) < 0.05
    assert predicted["train_rows"] == FILES * DOCS_PER_FILE and predicted["sample_rows"] == 2000
    assert predicted["packing"] == "bestfit" and 0 < predicted["crop_rate"] < 0.9


def test_arms_with_longer_documents_lose_more_to_cropping(budgets: dict[str, dict[str, Any]]) -> None:
    long, short = budgets["long"], budgets["short"]
    assert long["crop_rate"] > short["crop_rate"] + 0.05
    # the tokens held are not what a pass yields: cropping takes its share, and a row feeds T of its T+1 tokens
    assert long["loader_tokens_per_pass"] == int(long["tokens_held"] * (1 - long["crop_rate"]) / (T + 1)) * T


def test_the_same_seed_gives_the_same_figures(lab: dict[str, Any], budgets: dict[str, dict[str, Any]]) -> None:
    assert budget(lab, "short", num_iterations=ITERATIONS, total_batch_size=BATCH) == budgets["short"]


def test_unequal_repeats_are_refused_with_both_arms_figures(budgets: dict[str, dict[str, Any]]) -> None:
    long, short = budgets["long"], budgets["short"]
    assert long["tokens_needed"] == ITERATIONS * BATCH
    assert long["passes"] == round(ITERATIONS * BATCH / long["loader_tokens_per_pass"], 4)
    # both repeat; the short documents hold fewer tokens, so their arm goes over its data more often
    assert short["passes"] > 1.1 * long["passes"] > 1.1
    with pytest.raises(ArmsError) as err:
        compare_passes({"random": long, "top": short}, tolerance=0.1)
    msg = str(err.value)
    assert msg.startswith(f"arms repeat their data differently: top makes {short['passes']:.2f} passes (")
    assert f"and random makes {long['passes']:.2f} passes" in msg and "arms_repeat_tolerance 10%" in msg
    assert f"after cropping {long['crop_rate']:.0%}" in msg and f"after cropping {short['crop_rate']:.0%}" in msg
    allowed = compare_passes({"random": long, "top": short}, tolerance=0.1, allow_unequal_repeats=True)
    assert not allowed["comparable"] and any("allowed by arms_allow_unequal_repeats" in w for w in allowed["warnings"])
    assert compare_passes({"random": long, "top": short}, tolerance=10.0)["comparable"]


def test_a_checkout_that_is_not_nanochat_is_refused_with_a_sentence(lab: dict[str, Any], tmp_path: Path) -> None:
    with pytest.raises(ArmsError, match="is not a nanochat checkout"):
        measure_budget(
            checkout=str(tmp_path), tokenizer_dir=lab["tokenizer_dir"], data_dir=str(lab["base"] / "long" / "base_data")
        )


def test_a_single_file_arm_has_no_training_data(lab: dict[str, Any], tmp_path: Path) -> None:
    data = tmp_path / "base_data"
    data.mkdir()
    os.link(lab["base"] / "short" / "base_data" / "shard_00000.parquet", data / "shard_00000.parquet")
    with pytest.raises(ArmsError, match="holds 1 parquet file"):
        measure_budget(checkout=lab["checkout"], tokenizer_dir=lab["tokenizer_dir"], data_dir=str(data))


def training_shards_only(lab: dict[str, Any], arm: str, folder: Path) -> Path:
    """The arm's training shards alone (hard links), as the CPU node keeps them: no val file last."""
    data = folder / "prepared" / arm / "base_data"
    data.mkdir(parents=True)
    for i in range(FILES):
        name = f"shard_{i:05d}.parquet"
        os.link(lab["base"] / arm / "base_data" / name, data / name)
    return data


def test_the_module_measures_once_then_reads_what_it_cached_beside_the_data(
    lab: dict[str, Any], budgets: dict[str, dict[str, Any]], capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    data = training_shards_only(lab, "long", tmp_path)
    model = {"depth": 2, "total_batch_size": BATCH, "extra_flags": {"max-seq-len": T, "num-iterations": ITERATIONS}}
    args = {
        "checkout": lab["checkout"],
        "tokenizer_dir": lab["tokenizer_dir"],
        "data_dir": str(data),
        "val_last": False,  # the CPU node's prepared shards: every file trains
        "arm": "long",
        "model": model,  # T and the run's tokens come from the experiment's model
        "sample_docs": 2000,
        "seed": 7,
    }
    cache = tmp_path / "prepared" / "long" / "base_data.budget.json"
    # check mode measures nothing and writes nothing
    predicted = run_module("nanochat_data_budget", args, capsys, check_mode=True)
    assert predicted["budget"] is None and predicted["source"] == "check_mode" and not cache.exists()
    assert predicted["msg"] == "long: would measure its data budget with nanochat's loader at T=512 (check mode)"

    first = run_module("nanochat_data_budget", args, capsys)
    # the same training files as the arm host's data dir (whose last file is val): the same figures
    expected = {**budgets["long"], "data_dir": str(data)}
    assert first["changed"] is False and first["source"] == "measured" and first["budget"] == expected
    assert first["cache_file"] == str(cache) and cache.exists()
    assert first["plan"]["rule"] == f"num_iterations {ITERATIONS} (explicit flag)"
    assert first["msg"].startswith(f"long: {short_tokens(expected['tokens_held'])} tokens held, ")
    assert (
        f"(nanochat's loader crops {expected['crop_rate']:.1%} at T=512), {expected['passes']:.2f} passes"
        in (first["msg"])
    )

    # nothing changed: the cache is read (check mode too), the figures are the same
    for check_mode in (False, True):
        again = run_module("nanochat_data_budget", args, capsys, check_mode=check_mode)
        assert again["source"] == "cache" and again["budget"] == expected and again["msg"].endswith(" (cached)")

    # another sequence length is another measurement: not read from the cache
    other = run_module("nanochat_data_budget", {**args, "model": {**model, "extra_flags": {}}}, capsys, check_mode=True)
    assert other["source"] == "check_mode"

    bad = run_module("nanochat_data_budget", {**args, "tokenizer_dir": str(lab["base"])}, capsys)
    assert bad["failed"] and bad["msg"].startswith(f"no tokenizer.pkl in {lab['base']}")


def test_the_cache_key_follows_the_data_the_tokenizer_and_the_loader(tmp_path: Path) -> None:
    """What a cached measurement was made from (cheap: footers, a tokenizer file and nanochat's source)."""
    data = tmp_path / "base_data"
    data.mkdir()
    for name in ("shard_00000.parquet", "shard_00001.parquet", "shard_val.parquet"):
        pq.write_table(pa.table({"text": [name]}), str(data / name))
    (tmp_path / "tokenizer").mkdir()
    (tmp_path / "tokenizer" / "tokenizer.pkl").write_bytes(b"tok")
    (tmp_path / "nanochat" / "nanochat").mkdir(parents=True)
    loader = tmp_path / "nanochat" / "nanochat" / "dataloader.py"
    loader.write_text("# best-fit\n")
    kw = {
        "checkout": str(tmp_path / "nanochat"),
        "tokenizer_dir": str(tmp_path / "tokenizer"),
        "data_dir": str(data),
        "max_seq_len": 2048,
        "sample_docs": 20000,
        "seed": 42,
        "val_last": True,
    }
    key = budget_key(**kw)
    assert [name for name, _ in key["train_files"]] == ["shard_00000.parquet", "shard_00001.parquet"]
    assert cache_path(str(data)) == str(tmp_path / "base_data.budget.json")  # beside the data dir, never in it
    # the CPU node's prepared shards (no val file) and the arm host's copy (the val shard last): the same key
    prepared = tmp_path / "prepared" / "base_data"
    prepared.mkdir(parents=True)
    for name in ("shard_00000.parquet", "shard_00001.parquet"):
        os.link(data / name, prepared / name)
    assert budget_key(**{**kw, "data_dir": str(prepared), "val_last": False}) == key
    atomic_write_json(cache_path(str(data)), {"key": key, "budget": {"tokens_held": 1}})
    assert read_cache(cache_path(str(data)), budget_key(**kw)) == {"tokens_held": 1}
    assert budget_key(**{**kw, "max_seq_len": 1024}) != key
    assert budget_key(**{**kw, "val_last": False})["train_files"][-1][0] == "shard_val.parquet"
    (tmp_path / "tokenizer" / "tokenizer.pkl").write_bytes(b"another tokenizer")
    assert read_cache(cache_path(str(data)), budget_key(**kw)) is None
    (tmp_path / "tokenizer" / "tokenizer.pkl").write_bytes(b"tok")
    loader.write_text("# another loader\n")  # another nanochat commit
    assert read_cache(cache_path(str(data)), budget_key(**kw)) is None
    loader.write_text("# best-fit\n")
    pq.write_table(pa.table({"text": ["other", "rows"]}), str(data / "shard_00001.parquet"))  # no manifest: size
    assert read_cache(cache_path(str(data)), budget_key(**kw)) is None
    # with a manifest, its sha256 of each training file is the key (the preflight checks the files against it)
    manifest = {"shards": [{"name": n, "sha256": n[:1] * 64} for n in ("shard_00000.parquet", "shard_00001.parquet")]}
    (data / "manifest.json").write_text(json.dumps(manifest))
    assert budget_key(**kw)["train_files"][1] == ["shard_00001.parquet", "s" * 64]


ERA_PROBE = """
import json, sys
sys.path[:0] = sys.argv[1].split(",")
import _arms_path, nanochat_real
nanochat_real.hf_tokenizers_importable()
from ansible.module_utils.arms_packing import measure_budget
print(json.dumps(measure_budget(checkout=sys.argv[2], tokenizer_dir=sys.argv[3], data_dir=sys.argv[4], max_seq_len=512,
                                sample_docs=2000, seed=7)))
"""


@pytest.mark.parametrize(
    ("commit", "packing"),
    [("eb7bbc1", "stream"), ("43c29dd", "bestfit")],  # 2026-01-04: streams every token; 2026-01-13: first best-fit
)
def test_older_eras_measure_with_their_own_loader(
    lab: dict[str, Any],
    budgets: dict[str, dict[str, Any]],
    tmp_path_factory: pytest.TempPathFactory,
    commit: str,
    packing: str,
) -> None:
    import json
    import subprocess
    import sys

    from test_nanochat_eras import clone_nanochat, worktree

    checkout = worktree(clone_nanochat(tmp_path_factory), commit, tmp_path_factory.mktemp(commit) / "nanochat")
    here = os.path.dirname(os.path.abspath(__file__))
    paths = ",".join([os.path.join(os.path.dirname(here), "..", "scripts"), os.path.dirname(here), here])
    data = str(lab["base"] / "long" / "base_data")
    proc = subprocess.run(
        [sys.executable, "-c", ERA_PROBE, paths, str(checkout), lab["tokenizer_dir"], data],
        capture_output=True,
        text=True,
        timeout=600,
        env={**os.environ, "NANOCHAT_BASE_DIR": str(lab["base"])},
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    assert result["packing"] == packing
    assert result["tokens_held"] == budgets["long"]["tokens_held"]  # same tokenizer, same sample
    if packing == "stream":  # nothing cropped: a pass yields what the arm holds
        assert result["crop_rate"] == 0 and result["loader_tokens_per_pass"] == result["tokens_held"]
    else:  # before e1dafc5 ("Reduce token waste in BOS bestfit by cropping shortest doc") it cropped the first
        print(f"{commit}: crop {result['crop_rate']:.1%}, at the pin {budgets['long']['crop_rate']:.1%}")
        assert budgets["long"]["crop_rate"] + 0.05 < result["crop_rate"] < 0.9


def test_a_python_without_nanochats_dependencies_gets_a_sentence(tmp_path: Path) -> None:
    """A checkout whose loader cannot be imported (here: a dependency missing), in a process of its own."""
    import subprocess
    import sys

    (tmp_path / "nanochat").mkdir()
    (tmp_path / "nanochat" / "__init__.py").write_text("")
    (tmp_path / "nanochat" / "dataloader.py").write_text("import a_dependency_this_python_lacks\n")
    here = os.path.dirname(os.path.abspath(__file__))
    code = (
        "import sys; sys.path[:0] = sys.argv[1:3]\n"
        "import _arms_path\n"
        "from ansible.module_utils.arms_packing import load_nanochat\n"
        "from ansible.module_utils.arms_common import ArmsError\n"
        "try:\n    load_nanochat(sys.argv[3])\nexcept ArmsError as exc:\n    print(exc)\n"
    )
    scripts = os.path.join(os.path.dirname(os.path.dirname(here)), "scripts")
    proc = subprocess.run([sys.executable, "-c", code, scripts, here, str(tmp_path)], capture_output=True, text=True)
    assert proc.stdout.startswith(f"could not import nanochat's loader from {tmp_path} (ModuleNotFoundError: ")
    assert "run this with the python of nanochat's venv" in proc.stdout
