#!/usr/bin/env python3
"""Shard a deterministic random subset of a dataset into nanochat's parquet format (the runbook's step).

    python scripts/prepare_hf_random_subset.py \\
      --dataset airtrain-ai/fineweb-edu-fortified --split train --ratio 0.165 --seed 42 \\
      --data-dir ~/.cache/nanochat/base_data --rows-per-shard 14000

Same logic as the nanochat_random_subset module (plugins/module_utils/arms_shard.py): keyed-hash
sampling of the row ids, a bounded-memory deterministic shuffle, shards whose row-group count is a
multiple of --world-size, a manifest.json, resumable after a kill (re-run the same command). Progress
lines go to stderr; the last stdout line is the summary (or the result as JSON with --json).

The Hugging Face token is read from HF_TOKEN / HUGGINGFACE_HUB_TOKEN only: a token on the command line
would be visible to every user of the machine in the process list.
"""

from __future__ import annotations

import argparse
import json
import sys

import _arms_path  # noqa: F401
from ansible.module_utils.arms_common import ArmsError
from ansible.module_utils.arms_shard import DEFAULT_COMPRESSION_LEVEL, Options, prepare_random_subset


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--dataset", required=True, help="hub dataset id (owner/name) or local parquet file/folder/glob")
    p.add_argument("--config", default=None, help="dataset config (default: every config)")
    p.add_argument("--split", default="train")
    p.add_argument("--ratio", type=float, default=0.165, help="fraction of rows to keep, in (0, 1]")
    p.add_argument("--seed", type=int, default=42)
    p.add_argument("--data-dir", required=True, help="the folder nanochat reads (…/base_data)")
    p.add_argument("--rows-per-shard", type=int, default=14000)
    p.add_argument("--world-size", type=int, default=8, help="GPUs x nodes of the arm (row groups per shard)")
    p.add_argument("--val-fraction", type=float, default=0.0, help="kept hash range held out as shard_val")
    p.add_argument("--val-dir", default=None, help="where the validation artifact is copied")
    p.add_argument("--text-column", default="text")
    p.add_argument("--id-column", default="id")
    p.add_argument("--extra-columns", default="", help="comma-separated further columns to copy")
    p.add_argument("--workers", type=int, default=0, help="processes (0 = all cores)")
    p.add_argument("--force", action="store_true", help="replace a data dir made with other parameters")
    p.add_argument("--progress-file", default=None, help="JSON progress state file")
    p.add_argument("--work-dir", default=None, help="spill space (default beside the data dir)")
    p.add_argument("--min-free-bytes-factor", type=float, default=1.2)
    p.add_argument("--compression-level", type=int, default=DEFAULT_COMPRESSION_LEVEL)
    p.add_argument("--check", action="store_true", help="say what would happen, write nothing")
    p.add_argument("--json", action="store_true", help="print the result as JSON")
    p.add_argument("--quiet", action="store_true", help="no progress lines")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    a = parse_args(argv)
    opts = Options(
        dataset=a.dataset,
        data_dir=a.data_dir,
        config=a.config,
        split=a.split,
        ratio=a.ratio,
        seed=a.seed,
        rows_per_shard=a.rows_per_shard,
        world_size=a.world_size,
        val_fraction=a.val_fraction,
        val_dir=a.val_dir,
        text_column=a.text_column,
        id_column=a.id_column,
        extra_columns=[c.strip() for c in a.extra_columns.split(",") if c.strip()],
        workers=a.workers,
        force=a.force,
        progress_file=a.progress_file,
        work_dir=a.work_dir,
        min_free_bytes_factor=a.min_free_bytes_factor,
        compression_level=a.compression_level,
    )

    def echo(line: str) -> None:
        print(line, file=sys.stderr, flush=True)

    try:
        result = prepare_random_subset(
            opts, check_mode=a.check, echo=None if a.quiet else echo, force_hint="pass --force"
        )
    except ArmsError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    except OSError as exc:
        print(
            f"error: stopped on a file system error ({exc}); fix it and re-run the same command to resume.",
            file=sys.stderr,
        )
        return 1
    print(json.dumps(result, indent=2, sort_keys=True) if a.json else result["msg"], flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
