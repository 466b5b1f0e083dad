"""The two source repairs the runbook does by hand: CRLF in shell scripts, and the TF32 line.

CRLF: scripts copied through Windows fail with ``bash\\r: No such file or directory``; every
``*.sh`` at the checkout root, in ``runs/`` and in ``dev/`` gets LF endings and its run bit
(:data:`SCRIPT_PATTERNS`).

TF32: from 2025-12-27 to 2026-02-18 nanochat set TF32 through the new ``fp32_precision`` API, which
torch.compile/Inductor mixes with the legacy one and crashes at the first step. The repair rewrites
that line to ``torch.set_float32_matmul_precision("high")``; a commit that already uses that call
needs nothing; a TF32 setting of any other form is refused rather than guessed at.
"""

from __future__ import annotations

import ast
import glob
import io
import os
import re
import stat
import tokenize
from dataclasses import dataclass, field

from ansible.module_utils.arms_common import ArmsError, atomic_write_bytes, playbook_command

# where nanochat keeps its shell scripts: the root (speedrun.sh, run1000.sh... until 2026-01-18),
# dev/ (dev/runcpu.sh until 2026-01-18) and runs/ (all of them from 2026-01-18 on)
SCRIPT_PATTERNS = ("*.sh", "runs/*.sh", "dev/*.sh")

TF32_FIXED = 'torch.set_float32_matmul_precision("high")'
# the two new-API forms nanochat used (2025-12-27 .. 2026-01-30, 2026-01-30 .. 2026-02-18); matched
# against a line's code with its comment removed, so the whole statement must be the assignment
_NEW_API = re.compile(r"""^(?P<indent>[ \t]*)torch\.backends(?:\.cuda\.matmul)?\.fp32_precision\s*=\s*["']tf32["']$""")
_FIXED = re.compile(r"""^[ \t]*torch\.set_float32_matmul_precision\(\s*["']high["']\s*\)$""")
# the names through which code reaches a TF32 setting; a line using any of them (as a name, or as a
# string such as setattr(torch.backends, "fp32_precision", ...)) must be one of the two forms above
_TF32_NAMES = frozenset({"allow_tf32", "fp32_precision", "set_float32_matmul_precision"})


@dataclass
class Tf32Result:
    changed: bool
    state: str  # "patched" (this run), "already_fixed", "no_tf32"
    before: str
    after: str
    lines: list[int] = field(default_factory=list)
    msg: str = ""


@dataclass
class _SourceLine:
    number: int  # 1-based
    raw: str  # the physical line, its ending included
    code: str  # the line without its comment, trailing blanks and ending
    comment: str  # the comment with the blanks before it ("" when none)
    tf32: bool  # code on this line names a TF32 API (comments and prose strings do not count)


def _string_value(token: str) -> object:
    try:
        return ast.literal_eval(token)
    except (ValueError, SyntaxError):
        return None


def _damaged(path: str, what: str, inventory: str | None = None) -> str:
    return (
        f"{path} is not valid Python ({what}), so the TF32 repair cannot tell its code from its comments; "
        f"the checkout looks damaged: check it out again with "
        f"{playbook_command('repair', inventory, tags='checkout,tf32')}."
    )


def _source_lines(text: str, path: str, inventory: str | None = None) -> list[_SourceLine]:
    """Each physical line split into code and comment, and whether its code names a TF32 API.

    Python's tokenizer does the reading, so a ``#`` inside a string does not start a comment, a TF32
    name in a comment (a commented-out line, or a URL such as ``.../set_float32_matmul_precision.html``
    after the call) never counts, and neither does one in a docstring.
    """
    comment_at: dict[int, int] = {}
    tf32_rows: set[int] = set()
    try:
        for tok in tokenize.generate_tokens(io.StringIO(text).readline):
            if tok.type == tokenize.COMMENT:
                comment_at[tok.start[0]] = tok.start[1]
            elif (tok.type == tokenize.NAME and tok.string in _TF32_NAMES) or (
                tok.type == tokenize.STRING and _string_value(tok.string) in _TF32_NAMES
            ):
                tf32_rows.add(tok.start[0])
    except tokenize.TokenError as exc:
        what, (row, _col) = exc.args
        raise ArmsError(_damaged(path, f"{what.lower()} from line {row}", inventory)) from exc
    except SyntaxError as exc:
        raise ArmsError(_damaged(path, f"{exc.msg} on line {exc.lineno}", inventory)) from exc
    out: list[_SourceLine] = []
    # lines as the tokenizer counts them (only \n ends a line; str.splitlines would also split at \f...)
    for number, raw in enumerate(io.StringIO(text).readlines(), start=1):
        body = raw.rstrip("\r\n")
        code = body[: comment_at.get(number, len(body))].rstrip()
        comment = body[len(code) :] if number in comment_at else ""
        out.append(_SourceLine(number, raw, code, comment, number in tf32_rows))
    return out


def _refuse(path: str, line: _SourceLine) -> ArmsError:
    return ArmsError(
        f"{path} line {line.number} sets TF32 in a way the TF32 role does not know "
        f"({line.code.strip()!r}); the role expects either a new-API line such as "
        f"'torch.backends.fp32_precision = \"tf32\"' (which it rewrites) or {TF32_FIXED} alone on its line: "
        f"patch that line by hand to {TF32_FIXED}, or pin a nanochat commit from 2026-02-18 or later."
    )


def _indent(code: str) -> str:
    return code[: len(code) - len(code.lstrip())]


def tf32_plan(text: str, path: str = "nanochat/common.py", inventory: str | None = None) -> Tf32Result:
    """Decide what the TF32 repair does to ``text`` (the content of nanochat/common.py).

    Comments never count. A line whose code is a new-API assignment is rewritten to
    :data:`TF32_FIXED` (indent and comment kept; a run of such lines becomes one call); a line that
    is the fixed call alone is left; any other code naming a TF32 API raises :class:`ArmsError`.
    ``inventory`` is the ``-i ...`` part of the repair command a refusal names.
    """
    lines = _source_lines(text, path, inventory)
    new_api: list[_SourceLine] = []
    fixed = False
    for line in lines:
        if not line.tf32:
            continue
        if _NEW_API.match(line.code):
            new_api.append(line)
        elif _FIXED.match(line.code):
            fixed = True
        else:
            raise _refuse(path, line)
    if new_api:
        numbers = [line.number for line in new_api]
        indents = {line.number: _indent(line.code) for line in new_api}
        out = [line.raw for line in lines]
        for line in new_api:
            if indents.get(line.number - 1) == indents[line.number]:
                # right after another rewritten line of the same block: the call is already there once
                out[line.number - 1] = ""
                continue
            ending = line.raw[len(line.raw.rstrip("\r\n")) :]
            out[line.number - 1] = f"{indents[line.number]}{TF32_FIXED}{line.comment}{ending}"
        where = ", ".join(map(str, numbers))
        msg = f"{path}: TF32 set through the new API on line(s) {where}; rewritten to {TF32_FIXED}"
        return Tf32Result(True, "patched", text, "".join(out), numbers, msg)
    if fixed:
        return Tf32Result(False, "already_fixed", text, text, [], f"{path} already uses {TF32_FIXED}: nothing to patch")
    return Tf32Result(False, "no_tf32", text, text, [], f"{path} does not set TF32: nothing to patch")


def tf32_apply(checkout: str, check_mode: bool = False, inventory: str | None = None) -> Tf32Result:
    path = os.path.join(checkout, "nanochat", "common.py")
    try:
        with open(path, encoding="utf-8", newline="") as fh:
            text = fh.read()
    except FileNotFoundError as exc:
        raise ArmsError(
            f"{path} does not exist: is {checkout} a nanochat checkout? Run the checkout role first."
        ) from exc
    except UnicodeDecodeError as exc:
        raise ArmsError(_damaged(path, f"not UTF-8 text: {exc.reason} at byte {exc.start}", inventory)) from exc
    except OSError as exc:
        raise ArmsError(_unwritable(path, exc, "read")) from exc
    result = tf32_plan(text, "nanochat/common.py", inventory)
    if result.changed and not check_mode:
        try:
            mode = stat.S_IMODE(os.stat(path).st_mode)
            atomic_write_bytes(path, result.after.encode("utf-8"), mode)
        except OSError as exc:
            raise ArmsError(_unwritable(path, exc, "rewrite")) from exc
    return result


def _unwritable(path: str, exc: OSError, verb: str) -> str:
    return (
        f"could not {verb} {path} ({exc.strerror or exc}): the checkout and its folders must belong to the "
        "user the play connects as; fix the owner (or run the checkout role again) and re-run."
    )


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
        try:
            with open(path, "rb") as fh:
                data = fh.read()
            st_mode = stat.S_IMODE(os.stat(path).st_mode)
            want_mode = st_mode | ((st_mode & 0o444) >> 2)  # +x wherever +r
            if b"\r\n" in data or data.endswith(b"\r"):
                # the rewrite sets the run bit too: the script is listed once, as converted
                converted.append(rel)
                if not check_mode:
                    atomic_write_bytes(path, data.replace(b"\r\n", b"\n").rstrip(b"\r"), want_mode)
            elif want_mode != st_mode:
                made_exec.append(rel)
                if not check_mode:
                    os.chmod(path, want_mode)
        except OSError as exc:
            raise ArmsError(_unwritable(path, exc, "repair")) from exc
    return CrlfResult(bool(converted or made_exec), converted, made_exec, scripts)
