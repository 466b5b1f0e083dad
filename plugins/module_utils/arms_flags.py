"""How a nanochat checkout's scripts take their flags, read from the scripts themselves.

nanochat changed how its scripts parse the command line three times, and the commit date does not
tell which one a checkout has (six commits dated 2026-01-13 before 7312ec9 still take underscores):

- ``configurator``: ``scripts/base_train.py`` up to eb7bbc1~1 (2026-01-04) has module-level
  globals and ``exec(open(os.path.join('nanochat', 'configurator.py')).read())``, which takes only
  ``--key=value`` with the globals' underscored names (``--device_batch_size=32``).
- ``underscore``: argparse with underscored options (``add_argument("--device_batch_size", ...)``),
  base_train from eb7bbc1 (2026-01-04) to 3b50b77 (2026-01-13).
- ``dash``: argparse with dashed options (``add_argument("--device-batch-size", ...)``) from 7312ec9
  (2026-01-13) on; underscored flags are rejected there.

``scripts/tok_train.py`` never used the configurator: it has argparse with ``--max_chars``,
``--doc_cap``, ``--vocab_size`` from the first commit to 7312ec9, and dashes from 7312ec9 on. So on
a configurator-era checkout base_train is ``configurator`` while tok_train is ``underscore``:
ask about the script you are about to run.

The style is read from the options the script declares (``add_argument`` calls), through Python's
``ast`` so that comments and strings do not count; a script whose style cannot be told is refused
with an :class:`ArmsError` sentence rather than guessed from a date.
"""

from __future__ import annotations

import ast
import datetime as _dt
import os
import re
from collections.abc import Mapping, Sequence
from typing import Any

from ansible.module_utils.arms_common import ArmsError

BASE_TRAIN = "scripts/base_train.py"
TOK_TRAIN = "scripts/tok_train.py"
STYLES = ("configurator", "underscore", "dash")

# fallback for a file this Python cannot parse (nanochat may use syntax newer than the host's Python)
_ADD_ARGUMENT = re.compile(r"""\.add_argument\(\s*(?:["'](-[^"']*)["']\s*,\s*)*["'](--[^"']+)["']""")
_CONFIGURATOR_EXEC = re.compile(r"""^[^#\n]*\bexec\(.*configurator\.py""", re.MULTILINE)


def _options_from_ast(tree: ast.AST) -> tuple[list[str], bool]:
    """The ``--long`` option strings of every ``add_argument`` call, and whether the configurator is exec'd."""
    options: list[str] = []
    configurator = False
    for node in ast.walk(tree):
        if not isinstance(node, ast.Call):
            continue
        if isinstance(node.func, ast.Attribute) and node.func.attr == "add_argument":
            options += [
                arg.value
                for arg in node.args
                if isinstance(arg, ast.Constant) and isinstance(arg.value, str) and arg.value.startswith("--")
            ]
        elif isinstance(node.func, ast.Name) and node.func.id == "exec":
            configurator = configurator or any(
                isinstance(sub, ast.Constant) and isinstance(sub.value, str) and "configurator" in sub.value
                for sub in ast.walk(node)
            )
    return options, configurator


def _options_from_text(text: str) -> tuple[list[str], bool]:
    """The same read with regular expressions, for a file ``ast`` cannot parse here."""
    code = "\n".join(line for line in text.splitlines() if not line.lstrip().startswith("#"))
    options = [m.group(2) for m in _ADD_ARGUMENT.finditer(code)]
    return options, bool(_CONFIGURATOR_EXEC.search(code))


def flag_style_from_source(base_train_py_text: str, script: str = BASE_TRAIN) -> str:
    """``configurator``, ``underscore`` or ``dash``: how the script whose text is given takes its flags.

    Works for ``scripts/base_train.py`` and ``scripts/tok_train.py`` alike (``script`` only names the
    file in messages). Only options of two words or more tell a style (``--run`` reads the same in
    every style); raises :class:`ArmsError` when there is none, when both styles appear, or when the
    script both execs the configurator and declares argparse options.
    """
    try:
        options, configurator = _options_from_ast(ast.parse(base_train_py_text))
    except (SyntaxError, ValueError):
        options, configurator = _options_from_text(base_train_py_text)
    names = [opt[2:] for opt in options]
    dashed = sorted({f"--{n}" for n in names if "-" in n})
    underscored = sorted({f"--{n}" for n in names if "_" in n})
    fix = (
        "pin a nanochat commit whose script nanochat-arms knows (its argparse options all with dashes, "
        "all with underscores, or the old configurator) or set the flag style explicitly"
    )
    if configurator and options:
        raise ArmsError(
            f"{script} both execs nanochat's configurator and declares argparse options "
            f"({', '.join(options[:3])}), so its flag style cannot be told: {fix}."
        )
    if configurator:
        return "configurator"
    if dashed and underscored:
        raise ArmsError(
            f"{script} declares options with dashes ({', '.join(dashed[:3])}) and with underscores "
            f"({', '.join(underscored[:3])}), so its flag style cannot be told: {fix}."
        )
    if dashed:
        return "dash"
    if underscored:
        return "underscore"
    found = f"only {', '.join(options)}" if options else "no add_argument option and no configurator exec"
    raise ArmsError(
        f"{script} shows no flag style (it has {found}; expected options such as --device-batch-size or "
        f"--device_batch_size, or an exec of nanochat/configurator.py): {fix}."
    )


def flag_style_of_checkout(nanochat_dir: str, script: str = BASE_TRAIN) -> str:
    """The flag style of ``script`` (relative to the checkout) in the nanochat checkout ``nanochat_dir``."""
    path = os.path.join(nanochat_dir, script)
    try:
        with open(path, encoding="utf-8") as fh:
            text = fh.read()
    except FileNotFoundError as exc:
        raise ArmsError(
            f"{path} does not exist, so the flag style of {script} cannot be read: is {nanochat_dir} a "
            "nanochat checkout? Run the checkout role first."
        ) from exc
    except (OSError, UnicodeDecodeError) as exc:
        raise ArmsError(
            f"could not read {path} ({exc}) to tell its flag style: the checkout must be readable by the "
            "user the play connects as; fix it or run the checkout role again."
        ) from exc
    return flag_style_from_source(text, script)


def tok_train_flag_style_of_checkout(nanochat_dir: str) -> str:
    """``underscore`` or ``dash`` for ``scripts/tok_train.py`` (it never used the configurator)."""
    return flag_style_of_checkout(nanochat_dir, TOK_TRAIN)


# ---------------------------------------------------------------------------------------------
# flags as written on a command line
# ---------------------------------------------------------------------------------------------

# flags the launcher sets from its own arguments; extra flags may not repeat them
CORE_FLAGS = ("depth", "run", "device_batch_size", "total_batch_size", "model_tag", "resume_from_step")

DEFAULT_MAX_SEQ_LEN = 2048


def commit_day(commit_date: str) -> str:
    """``YYYY-MM-DD`` from a date or an ISO timestamp; ArmsError with a sentence otherwise."""
    text = str(commit_date).strip()
    try:
        return _dt.date.fromisoformat(text[:10]).isoformat()
    except ValueError:
        raise ArmsError(
            f"commit date {commit_date!r} is not a date; expected YYYY-MM-DD (e.g. the output of "
            "`git show -s --format=%cs HEAD` in the nanochat checkout)."
        ) from None


def canonical_flag(name: str) -> str:
    """A flag name without leading dashes, with underscores (``--max-seq-len`` -> ``max_seq_len``)."""
    return str(name).strip().lstrip("-").replace("-", "_")


def normalize_flags(flags: Mapping[str, Any] | Sequence[str] | None) -> dict[str, Any]:
    """Extra flags as {canonical name: value}, from a dict or a list of ``--name=value``/``--name`` items.

    A list item without ``=`` is a switch (value True). Names are compared with underscores, so
    ``--max-seq-len=64`` and ``max_seq_len: 64`` are the same flag; giving one twice is an error.
    """
    if flags is None:
        return {}
    out: dict[str, Any] = {}
    if isinstance(flags, Mapping):
        items = [(canonical_flag(k), v) for k, v in flags.items()]
    elif isinstance(flags, (list, tuple)):
        items = []
        for item in flags:
            text = str(item).strip()
            if not text.startswith("-"):
                text = "--" + text
            name, sep, value = text.partition("=")
            items.append((canonical_flag(name), value if sep else True))
    else:
        raise ArmsError(
            f"extra flags must be a mapping (max_seq_len: 2048) or a list (--max-seq-len=2048), not {flags!r}."
        )
    for name, value in items:
        if not re.fullmatch(r"[a-z][a-z0-9_]*", name):
            raise ArmsError(f"extra flag {name!r} is not a nanochat flag name (expected e.g. max_seq_len).")
        if name in out:
            raise ArmsError(f"extra flag --{name} is given twice; give each nanochat flag once.")
        out[name] = value
    return out


def _render_value(value: Any) -> str:
    if isinstance(value, bool):
        return "True" if value else "False"
    return str(value)


def render_flags(flags: Mapping[str, Any], style: str) -> list[str]:
    """``--name=value`` items in ``style`` (underscores for configurator/underscore, dashes for dash).

    None values are left out. A boolean is a switch for argparse (True -> ``--fp8``, False -> left
    out) and ``--fp8=True``/``--fp8=False`` for the configurator.
    """
    if style not in STYLES:
        raise ArmsError(f"flag style {style!r} is not one of {', '.join(STYLES)}.")
    out = []
    for raw_name, value in flags.items():
        name = canonical_flag(raw_name)
        if style == "dash":
            name = name.replace("_", "-")
        if value is None:
            continue
        if isinstance(value, bool) and style != "configurator":
            if value:
                out.append(f"--{name}")
            continue
        out.append(f"--{name}={_render_value(value)}")
    return out


def flag_value(flags: Mapping[str, Any] | Sequence[str] | None, name: str, default: Any = None) -> Any:
    """The value of one extra flag (any spelling), or ``default``."""
    return normalize_flags(flags).get(canonical_flag(name), default)


def int_flag(flags: Mapping[str, Any], name: str, default: int) -> int:
    """A whole-number extra flag (e.g. max_seq_len), or ``default``; ArmsError when it is not one."""
    value = flags.get(name, default)
    try:
        return int(str(value))
    except ValueError:
        raise ArmsError(f"extra flag --{name} must be a whole number, got {value!r}.") from None
