"""tests/lab/fake_torch_index.py: a valid, deterministic one-wheel index that uv installs torch from."""

from __future__ import annotations

import base64
import hashlib
import subprocess
import sys
import zipfile
from pathlib import Path

from venvtest import load_fake_torch_index

WHEEL = "torch-2.9.1+cu128-cp311-cp311-manylinux_2_28_x86_64.whl"


def test_the_wheel_is_named_like_the_real_one_and_its_record_holds(tmp_path: Path) -> None:
    mod = load_fake_torch_index()
    assert mod.build_index(str(tmp_path)) == WHEEL
    wheel = tmp_path / "files" / WHEEL
    assert wheel.stat().st_size < 4096
    with zipfile.ZipFile(wheel) as zf:
        names = zf.namelist()
        assert names[-1] == "torch-2.9.1+cu128.dist-info/RECORD"
        record = zf.read(names[-1]).decode().splitlines()
        for line in record:
            path, digest, size = line.rsplit(",", 2)
            if path.endswith("RECORD"):
                assert digest == size == ""
                continue
            data = zf.read(path)
            expected = base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()
            assert digest == f"sha256={expected}" and int(size) == len(data)
        assert "Tag: cp311-cp311-manylinux_2_28_x86_64" in zf.read("torch-2.9.1+cu128.dist-info/WHEEL").decode()
    page = (tmp_path / "simple" / "torch" / "index.html").read_text()
    assert "torch-2.9.1%2Bcu128-cp311" in page and "#sha256=" + hashlib.sha256(wheel.read_bytes()).hexdigest() in page


def test_the_same_arguments_give_the_same_bytes(tmp_path: Path) -> None:
    mod = load_fake_torch_index()
    mod.build_index(str(tmp_path / "a"))
    mod.build_index(str(tmp_path / "b"))
    mod.build_index(str(tmp_path / "b"))  # rebuilt in place
    assert (tmp_path / "a" / "files" / WHEEL).read_bytes() == (tmp_path / "b" / "files" / WHEEL).read_bytes()


def test_uv_installs_that_torch_from_the_index_by_name(tmp_path: Path, uv: str) -> None:
    mod = load_fake_torch_index()
    mod.build_index(str(tmp_path / "index"))
    url = mod.index_url(str(tmp_path / "index"))
    venv = tmp_path / "venv"
    subprocess.run([uv, "venv", "--quiet", "--python", sys.executable, str(venv)], check=True)
    subprocess.run(
        [uv, "pip", "install", "--quiet", "--python", str(venv / "bin" / "python"), "--no-deps", "--offline",
         "--index", f"pytorch-cu128={url}", "torch==2.9.1+cu128"],
        check=True,
    )  # fmt: skip
    out = subprocess.run(
        [str(venv / "bin" / "python"), "-c", "import torch; print(torch.__version__, torch.STAND_IN)"],
        capture_output=True,
        text=True,
        check=True,
    )
    assert out.stdout.split() == ["2.9.1+cu128", "True"]
