"""Secret files on a host: whole files or a marked block in a shared file, always 0600 in 0700 folders.

One call writes every secret file a host needs (the launcher's env file, the W&B block of
~/.netrc, the Hugging Face token), each atomically, and reports which paths changed, never what
they hold.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Any

from ansible.module_utils.arms_common import ArmsError, atomic_write_bytes

FILE_MODE = 0o600
DIR_MODE = 0o700


@dataclass
class SecretsResult:
    changed: list[str] = field(default_factory=list)
    unchanged: list[str] = field(default_factory=list)


def _with_block(current: str, block: str, marker: str) -> str:
    """``current`` with the lines between ``# BEGIN <marker>`` and ``# END <marker>`` set to ``block``."""
    begin, end = f"# BEGIN {marker}", f"# END {marker}"
    body = [begin, *block.rstrip("\n").split("\n"), end]
    lines = current.split("\n")
    if lines and lines[-1] == "":
        lines.pop()
    if begin in lines and end in lines[lines.index(begin) :]:
        start = lines.index(begin)
        stop = lines.index(end, start)
        lines[start : stop + 1] = body
    else:
        lines.extend(body)
    return "\n".join(lines) + "\n"


def _wanted(path: str, spec: dict[str, Any]) -> str:
    if not spec.get("marker"):
        return spec["content"]
    try:
        with open(path) as fh:
            current = fh.read()
    except FileNotFoundError:
        current = ""
    return _with_block(current, spec["content"], spec["marker"])


def ensure_secret_files(files: list[dict[str, Any]], check_mode: bool = False) -> SecretsResult:
    """Each of ``files`` (path, content, optional marker) holds its content, mode 0600, its folder 0700 if made."""
    result = SecretsResult()
    plan: list[tuple[str, str]] = []
    for spec in files:  # every file is checked before any is written
        path = os.path.expanduser(spec["path"])
        if os.path.islink(path):
            # written through, the link would put the secret wherever it points; replaced, a setup the
            # user made (a dotfiles link) would silently stop working: neither, a sentence instead
            raise ArmsError(
                f"{path} is a symbolic link (to {os.readlink(path)}); a secret is written only to a plain file. "
                "Replace the link with the file it points to (or remove it) and run again."
            )
        if os.path.isdir(path):
            raise ArmsError(f"{path} is a folder; expected a file for a secret. Move it away and run again.")
        wanted = _wanted(path, spec)
        try:
            with open(path) as fh:
                same = fh.read() == wanted
            same = same and (os.stat(path).st_mode & 0o777) == FILE_MODE
        except FileNotFoundError:
            same = False
        if same:
            result.unchanged.append(path)
        else:
            result.changed.append(path)
            plan.append((path, wanted))
    if check_mode:
        return result
    for path, wanted in plan:
        folder = os.path.dirname(os.path.abspath(path))
        if not os.path.isdir(folder):
            os.makedirs(folder, mode=DIR_MODE)
        atomic_write_bytes(path, wanted.encode(), FILE_MODE)
    return result
