"""The two source repairs the runbook does by hand: CRLF in shell scripts, and the TF32 line.

CRLF: scripts copied through Windows fail with ``bash\\r: No such file or directory``; every
``*.sh`` at the checkout root and in ``runs/`` gets LF endings and its run bit.

TF32: from 2025-12-27 to 2026-02-18 nanochat set TF32 through the new ``fp32_precision`` API, which
torch.compile/Inductor mixes with the legacy one and crashes at the first step. The repair rewrites
that line to ``torch.set_float32_matmul_precision("high")``; a commit that already uses that call
needs nothing; a TF32 setting of any other form is refused rather than guessed at.
"""

from __future__ import annotations

import glob
import os
import re
import stat
from dataclasses import dataclass, field

from ansible.module_utils.arms_common import ArmsError, atomic_write_bytes

TF32_FIXED = 'torch.set_float32_matmul_precision("high")'
# the two new-API forms nanochat used (2025-12-27 .. 2026-01-30, 2026-01-30 .. 2026-02-18)
_NEW_API = re.compile(
    r"""^(?P<indent>[ \t]*)torch\.backends(?:\.cuda\.matmul)?\.fp32_precision\s*=\s*["']tf32["']"""
    r"""[ \t]*(?P<comment>\#.*)?$""",
    re.MULTILINE,
)
_FIXED = re.compile(r"""^[ \t]*torch\.set_float32_matmul_precision\(\s*["']high["']\s*\)""", re.MULTILINE)
# anything else that touches TF32 (legacy flags, other precisions, conv settings set the new way...)
_OTHER_TF32 = re.compile(r"allow_tf32|fp32_precision|set_float32_matmul_precision", re.MULTILINE)


@dataclass
class Tf32Result:
    changed: bool
    state: str  # "patched" (this run), "already_fixed", "no_tf32"
    before: str
    after: str
    lines: list[int] = field(default_factory=list)
    msg: str = ""


def _code_lines(text: str) -> str:
    """The text with comments blanked out, so a commented-out line does not count."""
    return "\n".join("" if line.lstrip().startswith("#") else line for line in text.splitlines())


def tf32_plan(text: str, path: str = "nanochat/common.py") -> Tf32Result:
    """Decide what the TF32 repair does to ``text`` (the content of nanochat/common.py)."""
    code = _code_lines(text)
    new_hits = list(_NEW_API.finditer(code))
    leftovers = _NEW_API.sub("", code)
    leftovers = _FIXED.sub("", leftovers)
    odd = [m.group(0) for m in _OTHER_TF32.finditer(leftovers)]
    if odd:
        line_no = next(
            i + 1
            for i, line in enumerate(code.splitlines())
            if _OTHER_TF32.search(line) and not _NEW_API.match(line) and not _FIXED.match(line)
        )
        raise ArmsError(
            f"{path} line {line_no} sets TF32 in a way the TF32 role does not know "
            f"({code.splitlines()[line_no - 1].strip()!r}); patch it by hand to "
            f"{TF32_FIXED} or pin a nanochat commit from 2026-02-18 or later."
        )
    if new_hits:
        lines = [code[: m.start()].count("\n") + 1 for m in new_hits]

        def repl(m: re.Match[str]) -> str:
            return f"{m.group('indent')}{TF32_FIXED}"

        # patch the original text (comments included) line by line at the matched lines
        out_lines = text.splitlines(keepends=True)
        for ln in lines:
            raw = out_lines[ln - 1]
            ending = raw[len(raw.rstrip("\r\n")) :]
            out_lines[ln - 1] = _NEW_API.sub(repl, raw.rstrip("\r\n")) + ending
        after = "".join(out_lines)
        # two new-API lines in a row would become the same call twice: keep the first only
        after = re.sub(
            rf"^([ \t]*{re.escape(TF32_FIXED)}\r?\n)(?:[ \t]*{re.escape(TF32_FIXED)}\r?\n)+",
            r"\1",
            after,
            flags=re.MULTILINE,
        )
        return Tf32Result(
            True,
            "patched",
            text,
            after,
            lines,
            f"{path}: TF32 set through the new API on line(s) {', '.join(map(str, lines))}; rewritten to {TF32_FIXED}",
        )
    if _FIXED.search(code):
        return Tf32Result(False, "already_fixed", text, text, [], f"{path} already uses {TF32_FIXED}: nothing to patch")
    return Tf32Result(False, "no_tf32", text, text, [], f"{path} does not set TF32: nothing to patch")


def tf32_apply(checkout: str, check_mode: bool = False) -> Tf32Result:
    path = os.path.join(checkout, "nanochat", "common.py")
    try:
        with open(path, encoding="utf-8", newline="") as fh:
            text = fh.read()
    except FileNotFoundError as exc:
        raise ArmsError(
            f"{path} does not exist: is {checkout} a nanochat checkout? Run the checkout role first."
        ) from exc
    result = tf32_plan(text, "nanochat/common.py")
    if result.changed and not check_mode:
        mode = stat.S_IMODE(os.stat(path).st_mode)
        atomic_write_bytes(path, result.after.encode("utf-8"), mode)
    return result


@dataclass
class CrlfResult:
    changed: bool
    converted: list[str]
    made_executable: list[str]
    scripts: list[str]


def shell_scripts(checkout: str, patterns: list[str]) -> list[str]:
    found: set[str] = set()
    for pattern in patterns:
        for path in glob.glob(os.path.join(checkout, pattern)):
            if os.path.isfile(path):
                found.add(os.path.relpath(path, checkout))
    return sorted(found)


def crlf_apply(checkout: str, patterns: list[str], check_mode: bool = False) -> CrlfResult:
    if not os.path.isdir(checkout):
        raise ArmsError(f"{checkout} does not exist: run the checkout role first.")
    converted: list[str] = []
    made_exec: list[str] = []
    scripts = shell_scripts(checkout, patterns)
    for rel in scripts:
        path = os.path.join(checkout, rel)
        with open(path, "rb") as fh:
            data = fh.read()
        st_mode = stat.S_IMODE(os.stat(path).st_mode)
        want_mode = st_mode | ((st_mode & 0o444) >> 2)  # +x wherever +r
        if b"\r\n" in data or data.endswith(b"\r"):
            converted.append(rel)
            if not check_mode:
                atomic_write_bytes(path, data.replace(b"\r\n", b"\n").rstrip(b"\r"), want_mode)
                continue
        if want_mode != st_mode:
            made_exec.append(rel)
            if not check_mode:
                os.chmod(path, want_mode)
    return CrlfResult(bool(converted or made_exec), converted, made_exec, scripts)
