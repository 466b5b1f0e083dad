"""Small pieces every nanochat-arms module shares: atomic files, progress state, formatting, and
``run_module``, the one prologue and epilogue of the modules in library/.

Only the standard library is imported here, so any module can use it on any host.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import tempfile
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any

TOOL_VERSION = "0.1.0"


class ArmsError(Exception):
    """An error whose message is a sentence a user can act on (what, expected, what to run)."""


class ModuleFailure(ArmsError):
    """An ArmsError that fails a module with more than its sentence: ``result`` goes to fail_json beside ``msg``."""

    def __init__(self, msg: str, **result: Any) -> None:
        super().__init__(msg)
        self.result = result


# a result key that run_module takes out of the result and shows as the module's warnings
WARNINGS = "_arms_warnings"

# what a module does with its parameters and check mode: its result (``changed`` and the RETURN keys)
ModuleAction = Callable[[dict[str, Any], bool], dict[str, Any]]


def run_module(
    module_class: Callable[..., Any],
    argument_spec: dict[str, Any],
    action: ModuleAction,
    *,
    errors: tuple[type[BaseException], ...] = (ArmsError,),
    fail_prefix: str = "",
    **module_options: Any,
) -> None:
    """The one prologue and epilogue of every module in library/: build the module, run ``action``, exit.

    ``module_class`` is ansible's ``AnsibleModule``, passed in by the module (this file imports no Ansible,
    so scripts and filters load it too). ``action(params, check_mode)`` returns the result for
    ``exit_json``; a list under :data:`WARNINGS` in it is shown as warnings instead. An exception of
    ``errors`` fails the module with its sentence (after ``fail_prefix``) and, for a
    :class:`ModuleFailure` or an exception with a ``result`` dict, those fields too.
    ``module_options`` go to the module as they are (``required_if`` ...); check mode is always supported.
    """
    module = module_class(argument_spec=argument_spec, supports_check_mode=True, **module_options)
    try:
        result = action(module.params, module.check_mode)
    except errors as exc:
        failure = {"msg": f"{fail_prefix}{exc}", **getattr(exc, "result", {})}
        for warning in failure.pop(WARNINGS, []):
            module.warn(warning)
        module.fail_json(**failure)
    for warning in result.pop(WARNINGS, []):
        module.warn(warning)
    module.exit_json(**result)


# the ``-i ...`` part of the commands a message names when the caller did not say which inventory it ran with
DEFAULT_INVENTORY_ARG = "-i inventory/"


def playbook_command(
    playbook: str,
    inventory: str | None = None,
    *,
    tags: str | None = None,
    limit: str | None = None,
    extra_vars: dict[str, Any] | None = None,
) -> str:
    """``ansible-playbook playbooks/<playbook>.yml <inventory> [--tags T] [-l L] [-e '<json>']``: the one
    shape of every command a message tells a user to run.

    ``playbook`` is a name in ``playbooks/`` (``repair``) or a path ending in ``.yml``; ``inventory`` is
    the ``-i ...`` part the caller was run with (the playbooks' ``arms_inventory_arg``), ``-i inventory/``
    when not given.
    """
    path = playbook if playbook.endswith(".yml") else f"playbooks/{playbook}.yml"
    parts = ["ansible-playbook", path, inventory or DEFAULT_INVENTORY_ARG]
    if tags:
        parts += ["--tags", tags]
    if limit:
        parts += ["-l", limit]
    if extra_vars:
        parts += ["-e", shlex.quote(json.dumps(extra_vars))]
    return " ".join(parts)


def atomic_write_bytes(path: str, data: bytes, mode: int = 0o644) -> None:
    """Write ``data`` to ``path`` through a temporary file in the same folder, fsync, rename."""
    folder = os.path.dirname(os.path.abspath(path))
    fd, tmp = tempfile.mkstemp(prefix=".tmp-", suffix=".part", dir=folder)
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.chmod(tmp, mode)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
    fsync_dir(folder)


def atomic_write_json(path: str, obj: Any, mode: int = 0o644) -> None:
    atomic_write_bytes(path, (json.dumps(obj, indent=2, sort_keys=True) + "\n").encode(), mode)


def fsync_dir(folder: str) -> None:
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def free_bytes(path: str) -> int:
    """Free bytes on the file system holding ``path`` (or its nearest existing parent)."""
    probe = os.path.abspath(path)
    while not os.path.exists(probe):
        parent = os.path.dirname(probe)
        if parent == probe:
            break
        probe = parent
    return shutil.disk_usage(probe).free


def check_folder_for_writing(path: str, what: str) -> None:
    """ArmsError unless ``path`` is, or can be made, a folder this user writes on a file system that holds files.

    Checked before any disk-space sum: ``/proc/x`` is on a file system of 0 bytes, which is not "not
    enough free disk". Nothing is created.
    """
    if os.path.exists(path) and not os.path.isdir(path):
        raise ArmsError(f"{what} {path} exists and is not a folder; move it away or choose another {what}.")
    probe = os.path.abspath(path)
    while not os.path.exists(probe):
        probe = os.path.dirname(probe)
    if not os.path.isdir(probe):
        raise ArmsError(f"{what} {path} cannot be created: {probe} is a file, not a folder; choose another {what}.")
    if shutil.disk_usage(probe).total == 0:
        raise ArmsError(
            f"{what} {path} is on a file system that holds no files ({probe}: 0 bytes in all, like /proc or "
            f"/sys); choose a folder on a disk for {what}."
        )
    if not os.access(probe, os.W_OK | os.X_OK):
        raise ArmsError(f"{what} {path} is not writable by this user ({probe} denies it); choose a writable folder.")


def human_bytes(n: float) -> str:
    for unit in ("B", "KB", "MB", "GB", "TB"):
        if abs(n) < 1000 or unit == "TB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1000
    return f"{n:.1f} TB"


def human_seconds(s: float | None) -> str:
    if s is None or s != s or s < 0:  # None, NaN, negative
        return "?"
    s = int(s)
    if s < 60:
        return f"{s}s"
    if s < 3600:
        return f"{s // 60}m{s % 60:02d}s"
    return f"{s // 3600}h{(s % 3600) // 60:02d}m"


@dataclass
class Progress:
    """One progress snapshot. ``done``/``total`` are in ``unit``; ``bytes_done`` drives MB/s."""

    phase: str = "starting"
    unit: str = "items"
    done: int = 0
    total: int | None = None
    bytes_done: int = 0
    started: float = field(default_factory=time.time)
    updated: float = field(default_factory=time.time)
    extra: dict[str, Any] = field(default_factory=dict)
    finished: bool = False

    @property
    def elapsed(self) -> float:
        return max(self.updated - self.started, 1e-9)

    @property
    def mb_per_s(self) -> float:
        return self.bytes_done / 1e6 / self.elapsed

    @property
    def eta_s(self) -> float | None:
        if not self.total or self.done <= 0:
            return None
        return self.elapsed * (self.total - self.done) / self.done

    def line(self) -> str:
        total = f"/{self.total}" if self.total is not None else ""
        pct = f" ({100.0 * self.done / self.total:.1f}%)" if self.total else ""
        extras = "".join(f", {k} {v}" for k, v in self.extra.items())
        return (
            f"{self.phase}: {self.done}{total} {self.unit}{pct}{extras}, "
            f"{self.mb_per_s:.1f} MB/s, elapsed {human_seconds(self.elapsed)}, "
            f"eta {human_seconds(self.eta_s) if not self.finished else '0s'}"
        )

    def to_json(self) -> dict[str, Any]:
        data = asdict(self)
        data["line"] = self.line()
        data["mb_per_s"] = round(self.mb_per_s, 3)
        data["eta_s"] = self.eta_s
        return data


class ProgressWriter:
    """Keeps a :class:`Progress` and writes it as JSON to ``path`` at most every ``interval`` s.

    The state file is what the playbooks' wait loop and ``status.yml`` read. ``path`` may be None
    (nothing written); ``echo`` is called with each line (the CLI scripts print it).
    """

    def __init__(
        self,
        path: str | None,
        *,
        phase: str = "starting",
        unit: str = "items",
        total: int | None = None,
        interval: float = 2.0,
        echo: Callable[[str], None] | None = None,
    ) -> None:
        self.path = path
        self.interval = interval
        self.echo = echo
        self.state = Progress(phase=phase, unit=unit, total=total)
        self._last = 0.0
        if path:
            os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)

    def update(self, *, force: bool = False, **changes: Any) -> None:
        extra = changes.pop("extra", None)
        for key, value in changes.items():
            setattr(self.state, key, value)
        if extra:
            self.state.extra.update(extra)
        now = time.time()
        self.state.updated = now
        if force or now - self._last >= self.interval:
            self._last = now
            self.flush()

    def advance(self, n: int = 1, nbytes: int = 0, **changes: Any) -> None:
        self.update(done=self.state.done + n, bytes_done=self.state.bytes_done + nbytes, **changes)

    def finish(self, **changes: Any) -> None:
        self.update(finished=True, force=True, **changes)

    def flush(self) -> None:
        if self.path:
            atomic_write_json(self.path, self.state.to_json())
        if self.echo:
            self.echo(self.state.line())


# one word as ``shlex.quote`` writes it: 'single-quoted' runs, "'" for a quote, bare safe characters.
# Bash and shlex read every such word alike (no expansion, no escapes); anything else is refused.
_SHELL_WORD = re.compile(r"""(?:'[^']*'|"'"|[A-Za-z0-9_@%+=:,./-])*""")


def load_env_file(path: str | None, inventory: str | None = None) -> dict[str, str]:
    """``KEY=value`` lines of a secrets env file (the credentials role writes it, mode 0600).

    Modules read secrets from this file on the host itself, so a secret never travels in a
    process's arguments or Ansible's environment keyword. A missing file gives {}.

    The role writes each value shell-quoted (``| quote``: ``'hf_a'"'"'b'`` for ``hf_a'b``), and the
    launcher ``source``s the file with bash: a value is read here by the shell's quoting rules, limited
    to the forms ``shlex.quote`` writes, where bash and Python agree on every character. Any other
    line is refused (ArmsError), never guessed at; the refusal names the repair command with
    ``inventory`` (the ``-i ...`` part the caller was run with).
    """
    if not path:
        return {}
    out: dict[str, str] = {}
    try:
        with open(os.path.expanduser(path), encoding="utf-8") as fh:
            lines = fh.read().split("\n")
    except FileNotFoundError:
        return {}
    for number, line in enumerate(lines, 1):
        line = line.strip()
        if not line or line.startswith("#") or "=" not in line:
            continue
        key, value = line.split("=", 1)
        if not _SHELL_WORD.fullmatch(value) or not key.strip().isidentifier():
            raise ArmsError(
                f"line {number} of {path} is not KEY='value' as the shell reads it; write the file again with "
                + playbook_command("repair", inventory, tags="credentials")
            )
        out[key.strip()] = "".join(shlex.split(value)) if value else ""
    return out
