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
    assert line.startswith("    " + TF32_FIXED)
    # applying the plan to its own output is a no-op (idempotent)
    again = tf32_plan(plan.after)
    assert not again.changed and again.state == "already_fixed"


def test_rewrite_keeps_the_lines_comment_and_touches_no_other_line() -> None:
    plan = tf32_plan(COMMON_CUDA)
    assert plan.after == COMMON_CUDA.replace('torch.backends.cuda.matmul.fp32_precision = "tf32"', TF32_FIXED)
    assert plan.lines == [4]


def test_both_new_api_lines_in_a_row_become_one_call() -> None:
    text = 'torch.backends.fp32_precision = "tf32"\ntorch.backends.cuda.matmul.fp32_precision = "tf32"\nx = 1\n'
    plan = tf32_plan(text)
    assert plan.after == f"{TF32_FIXED}\nx = 1\n"


def test_new_api_lines_of_different_blocks_each_keep_their_call() -> None:
    # the second line runs whatever the condition: dropping it would change when TF32 is set
    text = 'if cuda:\n    torch.backends.fp32_precision = "tf32"\ntorch.backends.fp32_precision = "tf32"\n'
    plan = tf32_plan(text)
    assert plan.after == f"if cuda:\n    {TF32_FIXED}\n{TF32_FIXED}\n"


def test_api_name_in_a_trailing_comment_is_not_code() -> None:
    # nanochat from 2026-02-18 on: the fixed call, with the API's doc URL in its comment
    url = "https://docs.pytorch.org/docs/stable/generated/torch.set_float32_matmul_precision.html"
    text = f"import torch\n\ndef f():\n    {TF32_FIXED} # uses tf32 instead of fp32 for matmuls, see {url}\n"
    assert tf32_plan(text).state == "already_fixed"
    text = 'import torch\ntorch.backends.fp32_precision = "tf32"  # not torch.backends.cuda.matmul.allow_tf32\n'
    plan = tf32_plan(text)
    assert plan.state == "patched" and plan.after.count("allow_tf32") == 1  # the comment stays as it was


def test_api_names_in_strings_count_only_as_attribute_names() -> None:
    doc = 'def f():\n    """Sets torch.backends.fp32_precision = "tf32" for speed."""\n    return 1\n'
    assert tf32_plan(doc).state == "no_tf32"
    hash_in_string = 'x = "#"; torch.backends.cuda.matmul.allow_tf32 = True\n'
    with pytest.raises(ArmsError, match="line 1"):
        tf32_plan(hash_in_string)
    with pytest.raises(ArmsError, match="line 2"):
        tf32_plan('import torch\nsetattr(torch.backends, "fp32_precision", "tf32")\n')


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
        'torch.set_float32_matmul_precision("highest")',
        'torch.set_float32_matmul_precision("high"); torch.backends.cuda.matmul.allow_tf32 = True',
        "torch.backends.fp32_precision = (",
    ],
)
def test_unknown_tf32_setting_fails_naming_the_line(line: str) -> None:
    tail = '    "tf32"\n)\n' if line.endswith("(") else ""
    with pytest.raises(ArmsError) as err:
        tf32_plan(f"import torch\n{line}  # a comment\n{tail}")
    msg = str(err.value)
    assert "line 2" in msg and line in msg
    assert "a comment" not in msg  # the line's code is quoted, not its comment
    assert "expects" in msg and "by hand" in msg and "2026-02-18" in msg  # what was expected, what to do


def test_text_that_is_not_python_fails_with_a_sentence() -> None:
    expected = r"not valid Python \(eof in multi-line string from line 1\).*repair.yml -i inventory/ --tags checkout"
    with pytest.raises(ArmsError, match=expected):
        tf32_plan('x = """never closed\ntorch.backends.fp32_precision = "tf32"\n')


def test_tf32_apply_keeps_crlf_and_mode(tmp_path) -> None:
    (tmp_path / "nanochat").mkdir()
    path = tmp_path / "nanochat" / "common.py"
    path.write_bytes(COMMON_CUDA.replace("\n", "\r\n").encode())
    os.chmod(path, 0o640)
    assert tf32_apply(str(tmp_path), check_mode=True).changed
    assert path.read_bytes().count(b"fp32_precision") == 1  # check mode wrote nothing
    assert tf32_apply(str(tmp_path)).changed
    data = path.read_bytes()
    assert f"    {TF32_FIXED}  # use tf32\r\n".encode() in data
    assert data.count(b"\r\n") == COMMON_CUDA.count("\n")  # every line kept its CRLF ending
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o640
    assert not tf32_apply(str(tmp_path)).changed


def test_tf32_apply_without_checkout_says_what_to_run(tmp_path) -> None:
    with pytest.raises(ArmsError, match="checkout role"):
        tf32_apply(str(tmp_path))
    (tmp_path / "nanochat").mkdir()
    (tmp_path / "nanochat" / "common.py").write_bytes(b"x = '\xff'\n")
    with pytest.raises(ArmsError, match=r"not UTF-8.*--tags checkout"):
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


def test_crlf_check_mode_predicts_exactly_what_the_run_reports(tmp_path) -> None:
    script = tmp_path / "speedrun.sh"
    script.write_bytes(b"#!/bin/bash\r\necho hi\r\n")
    os.chmod(script, 0o644)  # CRLF and no run bit: one repair, listed once
    predicted = crlf_apply(str(tmp_path), ["*.sh"], check_mode=True)
    assert script.read_bytes() == b"#!/bin/bash\r\necho hi\r\n" and not os.access(script, os.X_OK)
    done = crlf_apply(str(tmp_path), ["*.sh"])
    assert (predicted.converted, predicted.made_executable) == (done.converted, done.made_executable)
    assert done.converted == ["speedrun.sh"] and done.made_executable == []
    assert script.read_bytes() == b"#!/bin/bash\necho hi\n" and stat.S_IMODE(os.stat(script).st_mode) == 0o755


def test_modules_report_changes_and_failures(tmp_path, capsys) -> None:
    (tmp_path / "nanochat").mkdir()
    (tmp_path / "nanochat" / "common.py").write_text("torch.backends.cuda.matmul.allow_tf32 = True\n")
    res = run_module("nanochat_tf32", {"path": str(tmp_path)}, capsys)
    assert res["failed"] and "does not know" in res["msg"] and "Traceback" not in res["msg"]
    (tmp_path / "nanochat" / "common.py").write_text(COMMON_BACKENDS)
    res = run_module("nanochat_tf32", {"path": str(tmp_path)}, capsys, check_mode=True)
    assert res["changed"] and res["state"] == "patched" and res["lines"] == [3]
    assert res["diff"]["before"] == COMMON_BACKENDS and TF32_FIXED in res["diff"]["after"]
    assert (tmp_path / "nanochat" / "common.py").read_text() == COMMON_BACKENDS  # check mode wrote nothing
    res = run_module("nanochat_tf32", {"path": str(tmp_path)}, capsys)
    assert res["changed"] and res["state"] == "patched" and res["lines"] == [3]
    res = run_module("nanochat_tf32", {"path": str(tmp_path)}, capsys)
    assert not res["changed"] and res["state"] == "already_fixed" and not res["diff"]
    (tmp_path / "nanochat" / "common.py").write_text('x = """never closed\n')
    res = run_module("nanochat_tf32", {"path": str(tmp_path)}, capsys)
    assert res["failed"] and "not valid Python" in res["msg"] and "Traceback" not in res["msg"]
    (tmp_path / "a.sh").write_bytes(b"x\r\n")
    res = run_module("nanochat_crlf", {"path": str(tmp_path)}, capsys)
    assert res["changed"] and res["converted"] == ["a.sh"]
    res = run_module("nanochat_crlf", {"path": str(tmp_path)}, capsys)
    assert not res["changed"]
