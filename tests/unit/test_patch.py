"""The CRLF and TF32 repairs: the rules that are easy to get wrong, on the smallest inputs."""

from __future__ import annotations

import os
import stat

import pytest
from ansible.module_utils.arms_common import ArmsError
from ansible.module_utils.arms_patch import TF32_FIXED, crlf_apply, tf32_apply, tf32_plan
from modtest import run_module

COMMON_CUDA = (
    'import torch\n\ndef init():\n    torch.backends.cuda.matmul.fp32_precision = "tf32"  # use tf32\n    return 1\n'
)
COMMON_BACKENDS = 'import torch\nif True:\n    torch.backends.fp32_precision = "tf32"\n'
COMMON_FIXED = 'import torch\ntorch.set_float32_matmul_precision("high")\n'


@pytest.mark.parametrize("text", [COMMON_CUDA, COMMON_BACKENDS])
def test_new_api_line_is_rewritten_once_keeping_indent(text: str) -> None:
    plan = tf32_plan(text)
    assert plan.changed and plan.state == "patched"
    assert plan.after.count(TF32_FIXED) == 1
    assert "fp32_precision" not in plan.after
    line = next(line for line in plan.after.splitlines() if TF32_FIXED in line)
    assert line == "    " + TF32_FIXED
    # applying the plan to its own output is a no-op (idempotent)
    again = tf32_plan(plan.after)
    assert not again.changed and again.state == "already_fixed"


def test_both_new_api_lines_in_a_row_become_one_call() -> None:
    text = 'torch.backends.fp32_precision = "tf32"\ntorch.backends.cuda.matmul.fp32_precision = "tf32"\nx = 1\n'
    plan = tf32_plan(text)
    assert plan.after == f"{TF32_FIXED}\nx = 1\n"


def test_fixed_commit_and_no_tf32_are_left_alone() -> None:
    assert tf32_plan(COMMON_FIXED).state == "already_fixed"
    assert tf32_plan("import os\n").state == "no_tf32"
    commented = '# torch.backends.fp32_precision = "tf32"\nimport os\n'
    assert tf32_plan(commented).state == "no_tf32"


@pytest.mark.parametrize(
    "line",
    [
        "torch.backends.cuda.matmul.allow_tf32 = True",
        'torch.backends.fp32_precision = "ieee"',
        'torch.backends.cudnn.conv.fp32_precision = "tf32"',
    ],
)
def test_unknown_tf32_setting_fails_naming_the_line(line: str) -> None:
    with pytest.raises(ArmsError) as err:
        tf32_plan(f"import torch\n{line}\n")
    assert "line 2" in str(err.value) and line in str(err.value)


def test_tf32_apply_keeps_crlf_and_mode(tmp_path) -> None:
    (tmp_path / "nanochat").mkdir()
    path = tmp_path / "nanochat" / "common.py"
    path.write_bytes(COMMON_CUDA.replace("\n", "\r\n").encode())
    os.chmod(path, 0o640)
    assert tf32_apply(str(tmp_path), check_mode=True).changed
    assert path.read_bytes().count(b"fp32_precision") == 1  # check mode wrote nothing
    assert tf32_apply(str(tmp_path)).changed
    data = path.read_bytes()
    assert f"    {TF32_FIXED}\r\n".encode() in data
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o640
    assert not tf32_apply(str(tmp_path)).changed


def test_tf32_apply_without_checkout_says_what_to_run(tmp_path) -> None:
    with pytest.raises(ArmsError, match="checkout role"):
        tf32_apply(str(tmp_path))


def test_crlf_converts_and_sets_run_bits_only_where_needed(tmp_path) -> None:
    (tmp_path / "runs").mkdir()
    crlf = tmp_path / "runs" / "speedrun.sh"
    crlf.write_bytes(b"#!/bin/bash\r\necho hi\r\n")
    os.chmod(crlf, 0o644)
    lf_noexec = tmp_path / "dev.sh"
    lf_noexec.write_bytes(b"#!/bin/bash\necho ok\n")
    os.chmod(lf_noexec, 0o644)
    fine = tmp_path / "runs" / "fine.sh"
    fine.write_bytes(b"#!/bin/bash\n")
    os.chmod(fine, 0o755)
    other = tmp_path / "notes.txt"
    other.write_bytes(b"a\r\nb\r\n")

    plan = crlf_apply(str(tmp_path), ["*.sh", "runs/*.sh"], check_mode=True)
    assert plan.converted == ["runs/speedrun.sh"] and crlf.read_bytes().count(b"\r") == 2

    result = crlf_apply(str(tmp_path), ["*.sh", "runs/*.sh"])
    assert result.changed
    assert result.converted == ["runs/speedrun.sh"]
    assert result.made_executable == ["dev.sh"]
    assert crlf.read_bytes() == b"#!/bin/bash\necho hi\n"
    assert os.stat(crlf).st_mode & 0o111 == 0o111
    assert os.stat(lf_noexec).st_mode & 0o111 == 0o111
    assert other.read_bytes() == b"a\r\nb\r\n"  # not a shell script: untouched
    assert not crlf_apply(str(tmp_path), ["*.sh", "runs/*.sh"]).changed


def test_modules_report_changes_and_failures(tmp_path, capsys) -> None:
    (tmp_path / "nanochat").mkdir()
    (tmp_path / "nanochat" / "common.py").write_text("torch.backends.cuda.matmul.allow_tf32 = True\n")
    res = run_module("nanochat_tf32", {"path": str(tmp_path)}, capsys)
    assert res["failed"] and "does not know" in res["msg"] and "Traceback" not in res["msg"]
    (tmp_path / "nanochat" / "common.py").write_text(COMMON_BACKENDS)
    res = run_module("nanochat_tf32", {"path": str(tmp_path)}, capsys)
    assert res["changed"] and res["state"] == "patched" and res["lines"] == [3]
    (tmp_path / "a.sh").write_bytes(b"x\r\n")
    res = run_module("nanochat_crlf", {"path": str(tmp_path)}, capsys)
    assert res["changed"] and res["converted"] == ["a.sh"]
    res = run_module("nanochat_crlf", {"path": str(tmp_path)}, capsys)
    assert not res["changed"]
