"""Names that reach paths, shells and other programs: arm names, run names, prefixes, manifest entries.

One rule per kind of name, each returning a sentence (what is wrong, what is expected) or None, so
the experiment check (``playbooks/validate.yml`` through the ``arms_experiment_problems`` filter),
the manifest reader and the tests all apply the same rule. Only the standard library is imported.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

NAME_CHARS = "letters, digits, '.', '_' and '-'"
_NAME = re.compile(r"[A-Za-z0-9._-]+")


def name_problem(value: Any, what: str) -> str | None:
    """A name that becomes one path component or one argument: ``[A-Za-z0-9][A-Za-z0-9._-]*``.

    The first character is a letter or digit: ``.``, ``..`` and ``-x`` (an option to the program it
    reaches) are never names. The launcher's run-name rule is the same.
    """
    if not isinstance(value, str) or not value:
        return f"{what} is empty or not a string; give a name of {NAME_CHARS}"
    if not _NAME.fullmatch(value):
        return f"{what} {value!r} holds characters other than {NAME_CHARS}"
    if not value[0].isalnum():
        return f"{what} {value!r} begins with {value[0]!r}; a name begins with a letter or a digit"
    return None


def prefix_problem(value: Any, what: str) -> str | None:
    """A blob prefix: empty (the whole container) or ``/``-separated names, e.g. ``top16.5/`` or ``a/b``."""
    if value is None or value == "":
        return None
    if not isinstance(value, str):
        return f"{what} is not a string; give '' (the whole container) or folder names joined by '/'"
    segments = value.strip("/").split("/")
    for segment in segments:
        if segment in ("", ".", ".."):
            return (
                f"{what} {value!r} has an empty, '.' or '..' step; give '' (the whole container) or folder names "
                f"of {NAME_CHARS} joined by '/'"
            )
        problem = name_problem(segment, f"a step of {what}")
        if problem:
            return problem
    return None


def file_name_problem(value: Any) -> str | None:
    """A manifest entry: one plain file name inside the data dir (no folder, no path step, not empty)."""
    if not isinstance(value, str) or not value:
        return f"{value!r} is not a file name"
    if value in (".", "..") or "/" in value or "\\" in value or "\0" in value:
        return f"{value!r} is not a plain file name inside the data dir"
    return None


def experiment_problems(experiment: Mapping[str, Any] | None, tokenizer_from_arm: Any = None) -> list[str]:
    """Every unsafe name of the experiment file, as sentences (empty when all are fine)."""
    if not isinstance(experiment, Mapping):
        return ["experiment is not a mapping"]
    problems = []
    if problem := name_problem(experiment.get("name"), "experiment.name"):
        problems.append(problem)
    arms = experiment.get("arms")
    for arm, spec in arms.items() if isinstance(arms, Mapping) else []:
        if problem := name_problem(arm, "the arm name"):
            problems.append(problem)
            arm = repr(arm)
        spec = spec if isinstance(spec, Mapping) else {}
        if "run_name" in spec and (problem := name_problem(spec["run_name"], f"arms.{arm}.run_name")):
            problems.append(problem)
        data = spec.get("data") if isinstance(spec.get("data"), Mapping) else {}
        if problem := prefix_problem(data.get("prefix"), f"arms.{arm}.data.prefix"):
            problems.append(problem)
    if tokenizer_from_arm not in (None, "") and (
        problem := name_problem(tokenizer_from_arm, "arms_tokenizer_from_arm")
    ):
        problems.append(problem)
    return problems
