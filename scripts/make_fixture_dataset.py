#!/usr/bin/env python3
"""Write a synthetic dataset shaped like airtrain-ai/fineweb-edu-fortified as local parquet files.

    python scripts/make_fixture_dataset.py --out /tmp/fortified --rows 20000 --dumps 3 --files-per-dump 2

Layout: <out>/README.md (one config per dump) and <out>/data/<dump>/train-0000i-of-000NN.parquet,
ordered by dump. Same arguments -> byte-identical files (whatever --workers is).
"""

from __future__ import annotations

import argparse
import os
import sys
import time

import _arms_path  # noqa: F401
from ansible.module_utils.arms_common import human_bytes
from arms_fixture import DEFAULT_ROW_GROUP_ROWS, DEFAULT_TEXT_BYTES_MEAN, make_fixture


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", required=True, help="folder to write (README.md and data/<dump>/...)")
    parser.add_argument("--rows", type=int, required=True, help="total rows, spread evenly over all files")
    parser.add_argument("--files-per-dump", type=int, default=2)
    parser.add_argument("--dumps", type=int, default=3, help="number of crawl dumps (configs)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--text-bytes-mean", type=int, default=DEFAULT_TEXT_BYTES_MEAN)
    parser.add_argument("--row-group-rows", type=int, default=DEFAULT_ROW_GROUP_ROWS)
    parser.add_argument("--workers", type=int, default=0, help="processes (0 = all cores); output is the same")
    # every option is make_fixture's argument of the same name; 0 workers means every core
    options = vars(parser.parse_args(argv))
    options["workers"] = options["workers"] or os.cpu_count() or 1
    started = time.time()
    try:
        files = make_fixture(**options)
    except (ValueError, OSError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    total = sum(f["bytes"] for f in files)
    print(
        f"wrote {len(files)} files, {sum(f['rows'] for f in files)} rows, {human_bytes(total)} "
        f"under {options['out']} in {time.time() - started:.1f}s"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
