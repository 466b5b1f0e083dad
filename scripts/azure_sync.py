#!/usr/bin/env python3
"""Download the top arm's shards from Azure Blob into a data dir, verified (the runbook's habit, by hand).

Same logic as the nanochat_azure_sync module (plugins/module_utils/arms_azure.py). Credentials come
from the environment only, never from flags (flags end up in shell history and process lists):

  AZURE_STORAGE_CONNECTION_STRING
  or AZURE_STORAGE_ACCOUNT_URL + AZURE_STORAGE_SAS_TOKEN
  or AZURE_STORAGE_ACCOUNT_URL + AZURE_STORAGE_ACCOUNT_KEY
  (or AZURE_STORAGE_ACCOUNT_URL alone with DefaultAzureCredential when azure-identity is installed)

  python scripts/azure_sync.py --container quratingfiltered --prefix "" \\
      --data-dir ~/.cache/nanochat/base_data
  python scripts/azure_sync.py --container quratingfiltered --prefix "" \\
      --data-dir ~/.cache/nanochat/base_data --skip-download     # verify only, no network

Progress lines go to stderr; the summary to stdout (--json: the module's result as JSON).
Exit status: 0 done, 1 a sentence explained what is wrong, 2 bad flags.
"""

from __future__ import annotations

import argparse
import json
import sys

import _arms_path  # noqa: F401
from ansible.module_utils.arms_azure import DOWNLOAD_MODES, Switch, sync
from ansible.module_utils.arms_common import ArmsError


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(
        description=(__doc__ or "").splitlines()[0],
        epilog="Credentials: environment variables only (see the top of this script).",
    )
    ap.add_argument("--container", required=True, help="blob container (the runbook's: quratingfiltered)")
    ap.add_argument("--prefix", default="", help="folder inside the container; empty = whole container")
    ap.add_argument("--data-dir", required=True, help="the arm's data dir, e.g. ~/.cache/nanochat/base_data")
    ap.add_argument(
        "--skip-download",
        action="store_true",
        help="download nothing; verify local files against manifest.json and fail if they differ",
    )
    ap.add_argument("--download-mode", default="bulk", choices=DOWNLOAD_MODES)
    ap.add_argument("--concurrency", type=int, default=16, help="blobs streaming at once (default 16)")
    ap.add_argument("--chunk-concurrency", type=int, default=None, help="parallel ranges per large blob (default 4)")
    ap.add_argument("--max-retries", type=int, default=5, help="retries per request, exponential backoff (default 5)")
    ap.add_argument("--progress-file", default=None, help="also write the JSON progress state here")
    ap.add_argument("--deep-verify", action="store_true", help="re-hash every local file (ignore the cache)")
    ap.add_argument(
        "--verify-content-md5",
        action="store_true",
        help="also compare each download's MD5 with the blob's Content-MD5 (for plain-http endpoints)",
    )
    ap.add_argument("--check", action="store_true", help="say what would be downloaded; write nothing")
    ap.add_argument("--json", action="store_true", help="print the result as JSON")
    ap.add_argument("--quiet", action="store_true", help="no progress lines")
    return ap.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)

    def echo(line: str) -> None:
        print(line, file=sys.stderr, flush=True)

    try:
        result = sync(
            args.container,
            args.data_dir,
            prefix=args.prefix,
            skip_download=args.skip_download,
            check_mode=args.check,
            download_mode=args.download_mode,
            concurrency=args.concurrency,
            chunk_concurrency=args.chunk_concurrency,
            max_retries=args.max_retries,
            deep_verify=args.deep_verify,
            verify_content_md5=args.verify_content_md5,
            progress_file=args.progress_file,
            echo=None if args.quiet else echo,
            switch=Switch("--skip-download", "without --skip-download"),
        )
    except ArmsError as exc:
        print(f"error: {exc}", file=sys.stderr)
        if args.json:
            print(json.dumps({"failed": True, "msg": str(exc)}))
        return 1
    except KeyboardInterrupt:
        print("interrupted: finished files are kept and recorded; run again to continue.", file=sys.stderr)
        return 130
    print(json.dumps(result.to_json(), indent=2) if args.json else result.msg)
    return 0


if __name__ == "__main__":
    sys.exit(main())
