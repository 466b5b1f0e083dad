"""Checks before a launch: nanochat's batch rules and the data budget of each arm.

:func:`validate_hyperparameters` applies nanochat's own divisibility rules; :func:`planned_tokens`,
:func:`held_tokens` and :func:`compare_budgets` compare the tokens a run will consume with the tokens
each arm holds, and refuse arms that would repeat their data differently.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from typing import Any

from ansible.module_utils.arms_common import ArmsError, human_bytes
from ansible.module_utils.arms_flags import DEFAULT_MAX_SEQ_LEN, commit_day, int_flag, normalize_flags

VOCAB_SIZE = 32768
ASPECT_RATIO = 64
HEAD_DIM = 128
BYTES_PER_TOKEN = 4.8  # nanochat's tokenizer on fineweb-edu-like English: about 4.8 characters a token


def validate_hyperparameters(
    *,
    gpus_per_node: int,
    nnodes: int,
    device_batch_size: int,
    total_batch_size: int,
    max_seq_len: int = DEFAULT_MAX_SEQ_LEN,
    depth: int = 1,
) -> dict[str, int]:
    """Apply nanochat's own rules before a launch; ArmsError with a sentence when one fails.

    - the world size (GPUs per node x nodes) must divide 32768 (the vocabulary rows are split across
      ranks by the optimizer);
    - the total batch (tokens) must be a multiple of device batch x max seq len x world size (the
      gradient-accumulation steps must be a whole number); -1 (auto, commits from 2026-02-05) skips it.

    Returns world_size, tokens_per_fwdbwd (one micro-step of all ranks) and grad_accum_steps (0 for auto).
    """
    for label, value in (
        ("depth", depth),
        ("gpus_per_node", gpus_per_node),
        ("nnodes", nnodes),
        ("device batch size", device_batch_size),
        ("max seq len", max_seq_len),
    ):
        if not isinstance(value, int) or value < 1:
            raise ArmsError(f"{label} must be a whole number of at least 1, got {value!r}.")
    world = gpus_per_node * nnodes
    if VOCAB_SIZE % world:
        raise ArmsError(
            f"{gpus_per_node} GPUs x {nnodes} node(s) = {world} processes does not divide {VOCAB_SIZE} "
            "(nanochat splits the vocabulary rows across ranks): use a power of two number of GPUs in total, "
            "e.g. 8 or 16."
        )
    per_fwdbwd = device_batch_size * max_seq_len * world
    if total_batch_size == -1:
        return {"world_size": world, "tokens_per_fwdbwd": per_fwdbwd, "grad_accum_steps": 0}
    if total_batch_size < 1 or total_batch_size % per_fwdbwd:
        fits = max(total_batch_size // per_fwdbwd, 1) * per_fwdbwd if total_batch_size > 0 else per_fwdbwd
        raise ArmsError(
            f"total batch size {total_batch_size} is not a multiple of device batch {device_batch_size} x "
            f"max seq len {max_seq_len} x world size {world} = {per_fwdbwd} tokens: use a total batch size "
            f"of {fits} (or another multiple of {per_fwdbwd}) or a smaller device batch size."
        )
    return {
        "world_size": world,
        "tokens_per_fwdbwd": per_fwdbwd,
        "grad_accum_steps": total_batch_size // per_fwdbwd,
    }


# --target-param-data-ratio's default by commit date (nanochat-interface.md, "Defaults that moved")
RATIO_DEFAULTS: tuple[tuple[str, float], ...] = (
    ("0000-01-01", 20.0),
    ("2026-01-07", 8.0),
    ("2026-01-17", 4.0),
    ("2026-01-27", 10.5),
    ("2026-03-24", 12.0),
)


def default_ratio(commit_date: str) -> float:
    """base_train's default --target-param-data-ratio at a commit of that date."""
    day = commit_day(commit_date)
    ratio = RATIO_DEFAULTS[0][1]
    for since, value in RATIO_DEFAULTS:
        if day >= since:
            ratio = value
    return ratio


def model_width(depth: int) -> int:
    """nanochat's model width: depth x aspect ratio 64, rounded up to whole heads of 128."""
    raw = depth * ASPECT_RATIO
    return -(-raw // HEAD_DIM) * HEAD_DIM


def scaling_params(depth: int, vocab_size: int = VOCAB_SIZE) -> int:
    """The parameter count nanochat's data:param ratio is applied to, estimated from depth.

    Formula: 12 x layers x width^2 (per layer: attention q, k, v, o = 4 width^2 and the MLP's two
    width x 4 width matrices = 8 width^2) + vocab x width (the lm_head). The token embedding (and
    the value embeddings of later commits) are left out, as nanochat leaves embeddings out of its
    "scaling params". depth 26: width 1664, 918,421,504. An estimate: norms and biases are ignored.
    """
    width = model_width(depth)
    return 12 * depth * width * width + vocab_size * width


def planned_tokens(
    *,
    depth: int,
    total_batch_size: int,
    extra_flags: Mapping[str, Any] | Sequence[str] | None = None,
    commit_date: str | None = None,
    max_seq_len: int | None = None,
) -> dict[str, Any]:
    """Tokens the run will consume = num_iterations x total batch size, with nanochat's iteration rule.

    num_iterations: the ``num_iterations`` extra flag when > 0; else ``target_flops`` / (flops per
    token x total batch) when that flag is > 0 (flops per token = 6 x scaling params + 12 x layers x
    width x seq len, nanochat's estimate); else target_param_data_ratio (the extra flag, or the
    commit date's default) x :func:`scaling_params` // total batch size.
    """
    flags = normalize_flags(extra_flags)
    if total_batch_size is None or int(total_batch_size) <= 0:
        raise ArmsError(
            "the data budget needs an explicit total batch size (nanochat's -1/auto depends on its own "
            "scaling rule): set the experiment's total batch size, e.g. 524288."
        )
    total_batch_size = int(total_batch_size)
    params = scaling_params(depth)
    explicit = int_flag(flags, "num_iterations", -1)
    target_flops = float(flags.get("target_flops", -1) or -1)
    seq_len = int(max_seq_len or int_flag(flags, "max_seq_len", DEFAULT_MAX_SEQ_LEN))
    out: dict[str, Any] = {"scaling_params": params, "total_batch_size": total_batch_size, "ratio": None}
    if explicit > 0:
        iterations = explicit
        out["rule"] = f"num_iterations {explicit} (explicit flag)"
    elif target_flops > 0:
        per_token = 6 * params + 12 * depth * model_width(depth) * seq_len
        iterations = round(target_flops / (per_token * total_batch_size))
        out["rule"] = f"target_flops {target_flops:g} / ({per_token:,} flops/token x {total_batch_size})"
    else:
        if "target_param_data_ratio" in flags:
            ratio = float(flags["target_param_data_ratio"])
            origin = "flag"
        elif commit_date:
            ratio = default_ratio(commit_date)
            origin = f"default at {commit_day(commit_date)}"
        else:
            raise ArmsError(
                "the data budget needs the nanochat commit date (the default data:param ratio moved "
                "between commits) or an explicit num_iterations or target_param_data_ratio flag."
            )
        iterations = int(ratio * params) // total_batch_size
        out["ratio"] = ratio
        out["rule"] = f"target_param_data_ratio {ratio:g} ({origin}) x {params:,} scaling params // {total_batch_size}"
    out["num_iterations"] = iterations
    out["tokens"] = iterations * total_batch_size
    return out


def _train_names(manifest: Mapping[str, Any]) -> list[str]:
    """The manifest's files nanochat trains on: all but the last in sort order (the last = val)."""
    names = sorted(s["name"] for s in manifest.get("shards", []))
    return names[:-1]


def held_tokens(
    manifest: Mapping[str, Any],
    data_dir: str | None = None,
    *,
    bytes_per_token: float = BYTES_PER_TOKEN,
    text_column: str = "text",
    assumed_compression: float = 3.0,
    sample_groups: int = 32,
) -> dict[str, Any]:
    """Estimated training tokens an arm holds, from its manifest (and its files' footers when given).

    Training files are the manifest's files except the last in sort order (nanochat's val split).
    In order of preference: ``stats.train_tokens`` recorded by whoever wrote the manifest;
    ``stats.train_text_bytes`` (or ``train_chars``) / ``bytes_per_token``; with ``data_dir``, train
    rows x the mean UTF-8 bytes of the text column a row, measured by reading at most
    ``sample_groups`` row groups spread evenly over the training files (exact when there are no
    more row groups than that; footer sizes are not used: dictionary encoding hides repeated
    documents that nanochat does read), / ``bytes_per_token``; else the files' bytes x
    ``assumed_compression`` / ``bytes_per_token`` (rough: parquet bytes are compressed).
    """
    stats = manifest.get("stats") or {}
    names = _train_names(manifest)
    entries = {s["name"]: s for s in manifest.get("shards", [])}
    rows = sum(int(entries[n].get("rows", 0)) for n in names)
    base: dict[str, Any] = {"train_files": len(names), "train_rows": rows}
    if stats.get("train_tokens"):
        return {**base, "tokens": int(stats["train_tokens"]), "rule": "manifest stats.train_tokens"}
    for key in ("train_text_bytes", "train_chars"):
        if stats.get(key):
            text_bytes = int(stats[key])
            return {
                **base,
                "tokens": int(text_bytes / bytes_per_token),
                "text_bytes": text_bytes,
                "rule": f"manifest stats.{key} / {bytes_per_token} bytes per token",
            }
    if data_dir is not None:
        text_bytes, sampled_rows = _sample_text_bytes(data_dir, names, text_column, sample_groups)
        per_row = text_bytes / sampled_rows if sampled_rows else 0.0
        estimate = int(per_row * rows)
        return {
            **base,
            "tokens": int(estimate / bytes_per_token),
            "text_bytes": estimate,
            "sampled_rows": sampled_rows,
            "rule": (
                f"train rows x mean text bytes a row ({per_row:,.0f}, measured on {sampled_rows} rows) / "
                f"{bytes_per_token} bytes per token"
            ),
        }
    file_bytes = sum(int(entries[n].get("bytes", 0)) for n in names)
    return {
        **base,
        "tokens": int(file_bytes * assumed_compression / bytes_per_token),
        "rule": (f"parquet bytes x {assumed_compression} (assumed compression) / {bytes_per_token} bytes per token"),
    }


def _sample_text_bytes(data_dir: str, names: Sequence[str], column: str, limit: int) -> tuple[int, int]:
    """UTF-8 bytes and rows of ``column`` in at most ``limit`` row groups spread evenly over ``names``."""
    import pyarrow.compute as pc
    import pyarrow.parquet as pq

    groups: list[tuple[str, int]] = []
    for name in names:
        path = os.path.join(data_dir, name)
        meta = pq.ParquetFile(path).metadata
        if column not in meta.schema.names:
            raise ArmsError(
                f"{path} has no {column!r} column: nanochat reads only that column, so this arm holds no text there."
            )
        groups += [(path, rg) for rg in range(meta.num_row_groups)]
    if len(groups) > limit > 0:
        step = len(groups) / limit
        groups = [groups[int(i * step)] for i in range(limit)]
    text_bytes = rows = 0
    files: dict[str, Any] = {}
    for path, rg in groups:
        handle = files.setdefault(path, pq.ParquetFile(path))
        table = handle.read_row_group(rg, columns=[column])
        lengths = pc.binary_length(table.column(0))
        text_bytes += int(pc.sum(lengths).as_py() or 0)
        rows += table.num_rows
    return text_bytes, rows


def compare_budgets(
    arms: Sequence[Mapping[str, Any]],
    *,
    tolerance: float = 0.1,
    allow_unequal_repeats: bool = False,
) -> dict[str, Any]:
    """Compare, for every arm, the tokens its run will consume with the tokens it holds.

    ``arms``: [{name, tokens_needed, tokens_held}, ...]. An arm whose run needs more than it holds
    repeats data (nanochat's loader starts a new epoch silently): a warning. Arms repeat
    *differently* when their effective passes over the data (max(epochs, 1): under one epoch nothing
    repeats) differ by more than ``tolerance`` (relative, 0.1 = 10%): then the comparison between
    arms measures repetition as well as data, and this raises ArmsError unless
    ``allow_unequal_repeats`` (then it is one more warning).

    Returns {"arms": [{name, tokens_needed, tokens_held, epochs, repeats}], "warnings": [...],
    "comparable": bool}.
    """
    rows = []
    warnings = []
    for arm in arms:
        name = str(arm["name"])
        needed = int(arm["tokens_needed"])
        held = int(arm["tokens_held"])
        if held <= 0:
            raise ArmsError(
                f"arm {name} holds no training tokens (its data dir has no training shard besides the val "
                "shard): prepare or fetch its data first."
            )
        epochs = needed / held
        rows.append(
            {
                "name": name,
                "tokens_needed": needed,
                "tokens_held": held,
                "epochs": round(epochs, 4),
                "repeats": epochs > 1.0,
            }
        )
        if epochs > 1.0:
            warnings.append(
                f"arm {name} will repeat data: its run reads {_tokens(needed)} tokens but the arm "
                f"holds about {_tokens(held)} ({epochs:.2f} epochs); nanochat starts over silently."
            )
    comparable = True
    if len(rows) > 1:
        passes = {r["name"]: max(r["epochs"], 1.0) for r in rows}
        low = min(passes, key=lambda n: passes[n])
        high = max(passes, key=lambda n: passes[n])
        if passes[high] > passes[low] * (1.0 + tolerance):
            comparable = False
            sentence = (
                f"arms repeat their data differently: {high} makes {passes[high]:.2f} passes over its "
                f"data and {low} {passes[low]:.2f} (tolerance {tolerance:.0%}), so the comparison would "
                f"measure repetition, not data: give {high} more data (or train fewer iterations for "
                "every arm), or override the data budget check if this is intended."
            )
            if not allow_unequal_repeats:
                raise ArmsError(sentence)
            warnings.append(sentence + " (overridden)")
    return {"arms": rows, "warnings": warnings, "comparable": comparable}


def _tokens(n: int) -> str:
    return human_bytes(n).replace(" B", "").replace("KB", "K").replace("MB", "M").replace("GB", "G").replace("TB", "T")
