#!/usr/bin/env python3
"""Build a local stand-in for the torch index nanochat's pyproject names for its ``gpu`` extra.

    python tests/lab/fake_torch_index.py DEST [--version 2.9.1+cu128] [--tag cp311-cp311-manylinux_2_28_x86_64]

DEST becomes a PEP 503 "simple" index, usable as ``file://DEST/simple``:

    DEST/simple/index.html          the project list (only torch)
    DEST/simple/torch/index.html    one link, with its sha256, to the wheel
    DEST/files/torch-2.9.1+cu128-cp311-cp311-manylinux_2_28_x86_64.whl

The wheel is named like the real CUDA 12.8 build of torch 2.9.1 (the version nanochat's uv.lock
pins at b07604e) but holds only ``torch/__init__.py`` (``__version__`` and ``STAND_IN = True``)
and a valid ``.dist-info`` (METADATA, WHEEL, RECORD), a few hundred bytes instead of ~900 MB. It
declares no dependencies: the lock's export already lists torch's own (nvidia-*, triton) as
requirements of their own. A stand-in is needed because the real wheel and its CUDA packages are
several GB; the real index is what a GPU node uses.

Deterministic: fixed zip timestamps and file order, so the same arguments give the same bytes (and
the same sha256) on every run; an existing DEST is rebuilt in place.
"""

from __future__ import annotations

import argparse
import base64
import hashlib
import html
import os
import shutil
import sys
import urllib.parse
import zipfile

DEFAULT_VERSION = "2.9.1+cu128"
DEFAULT_TAG = "cp311-cp311-manylinux_2_28_x86_64"
ZIP_DATE = (2026, 3, 3, 0, 0, 0)


def _record_hash(data: bytes) -> str:
    digest = base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()
    return f"sha256={digest}"


def wheel_files(version: str, tag: str) -> list[tuple[str, bytes]]:
    """(path in the wheel, content) of the stand-in torch wheel, RECORD last."""
    dist_info = f"torch-{version}.dist-info"
    files = [
        (
            "torch/__init__.py",
            (
                '"""Stand-in torch built by nanochat-arms tests/lab/fake_torch_index.py (not PyTorch)."""\n'
                f'__version__ = "{version}"\n'
                "STAND_IN = True\n"
            ).encode(),
        ),
        (
            f"{dist_info}/METADATA",
            (
                "Metadata-Version: 2.1\n"
                "Name: torch\n"
                f"Version: {version}\n"
                "Summary: nanochat-arms stand-in for the torch build nanochat's pyproject names\n"
                "Requires-Python: >=3.10\n"
            ).encode(),
        ),
        (
            f"{dist_info}/WHEEL",
            (
                f"Wheel-Version: 1.0\nGenerator: nanochat-arms fake_torch_index\nRoot-Is-Purelib: false\nTag: {tag}\n"
            ).encode(),
        ),
    ]
    record = "".join(f"{path},{_record_hash(data)},{len(data)}\n" for path, data in files)
    record += f"{dist_info}/RECORD,,\n"
    return [*files, (f"{dist_info}/RECORD", record.encode())]


def build_wheel(path: str, version: str, tag: str) -> None:
    with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_DEFLATED) as zf:
        for name, data in wheel_files(version, tag):
            info = zipfile.ZipInfo(name, date_time=ZIP_DATE)
            info.external_attr = 0o644 << 16
            info.compress_type = zipfile.ZIP_DEFLATED
            zf.writestr(info, data)


def _page(title: str, links: list[tuple[str, str]]) -> str:
    body = "".join(f'    <a href="{html.escape(href)}">{html.escape(text)}</a><br/>\n' for href, text in links)
    return (
        "<!DOCTYPE html>\n<html>\n  <head>\n"
        f"    <title>{html.escape(title)}</title>\n  </head>\n  <body>\n{body}  </body>\n</html>\n"
    )


def build_index(dest: str, version: str = DEFAULT_VERSION, tag: str = DEFAULT_TAG) -> str:
    """Write the index under ``dest``; returns the wheel's file name."""
    filename = f"torch-{version}-{tag}.whl"
    for sub in ("simple", "files"):
        shutil.rmtree(os.path.join(dest, sub), ignore_errors=True)
    os.makedirs(os.path.join(dest, "simple", "torch"))
    os.makedirs(os.path.join(dest, "files"))
    wheel = os.path.join(dest, "files", filename)
    build_wheel(wheel, version, tag)
    with open(wheel, "rb") as fh:
        sha256 = hashlib.sha256(fh.read()).hexdigest()
    href = f"../../files/{urllib.parse.quote(filename)}#sha256={sha256}"
    with open(os.path.join(dest, "simple", "torch", "index.html"), "w") as fh:
        fh.write(_page("Links for torch", [(href, filename)]))
    with open(os.path.join(dest, "simple", "index.html"), "w") as fh:
        fh.write(_page("Simple index", [("torch/", "torch")]))
    return filename


def index_url(dest: str) -> str:
    """The ``file://`` URL uv takes for the index built in ``dest``."""
    return "file://" + urllib.parse.quote(os.path.join(os.path.abspath(dest), "simple"))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("dest", help="folder to hold the index (made if missing)")
    parser.add_argument("--version", default=DEFAULT_VERSION, help=f"torch version (default {DEFAULT_VERSION})")
    parser.add_argument("--tag", default=DEFAULT_TAG, help=f"wheel tag (default {DEFAULT_TAG})")
    args = parser.parse_args(argv)
    filename = build_index(args.dest, args.version, args.tag)
    print(f"{index_url(args.dest)}  ({filename})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
