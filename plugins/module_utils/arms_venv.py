"""Which package indexes nanochat's venv needs, read from the checkout's own pyproject.toml.

nanochat pins torch through an optional-dependency group (``cpu`` / ``gpu``) whose torch comes from
a named index (``[tool.uv.sources] torch = [{ index = "pytorch-cu128", extra = "gpu" }, ...]``,
``[[tool.uv.index]] name = "pytorch-cu128" url = ... explicit = true``). ``uv export`` of its lock
writes ``torch==2.9.1+cu128`` without any index line, and uv's pip interface cannot bind one
requirement to one index: the venv role must pass the index itself (``--index NAME=URL``).

The index strategy has to be ``unsafe-best-match``: under uv's default ``first-index`` a package
found on the torch index is taken from there only, and that index also carries old copies of
torch's own dependencies (filelock, jinja2, markupsafe, ...) at versions other than the lock's,
so the install fails. Every requirement of the export is pinned to the lock's version, so letting
each come from whichever index has that version still installs the lock's set.

Only the standard library (and tomllib, Python 3.11+, or the tomli package) is used: this runs on
the host, against the checkout that is there.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field
from typing import Any

from ansible.module_utils.arms_common import ArmsError

INDEX_STRATEGY = "unsafe-best-match"
# uv's rule for an index name (letters, digits, '-', '_', '.')
_INDEX_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*$")


@dataclass
class PackageIndex:
    name: str
    url: str
    packages: list[str] = field(default_factory=list)
    overridden: bool = False


@dataclass
class IndexPlan:
    extra: str
    indexes: list[PackageIndex] = field(default_factory=list)
    unused_overrides: list[str] = field(default_factory=list)

    @property
    def uv_args(self) -> list[str]:
        """What ``uv pip install`` is given so the extra's packages come from their named indexes."""
        if not self.indexes:
            return []
        args: list[str] = []
        for index in self.indexes:
            args += ["--index", f"{index.name}={index.url}"]
        return [*args, "--index-strategy", INDEX_STRATEGY]

    def to_result(self) -> dict[str, Any]:
        return {
            "extra": self.extra,
            "indexes": [
                {"name": i.name, "url": i.url, "packages": i.packages, "overridden": i.overridden} for i in self.indexes
            ],
            "uv_args": self.uv_args,
            "index_strategy": INDEX_STRATEGY if self.indexes else "",
            "unused_overrides": self.unused_overrides,
        }


def load_pyproject(path: str) -> dict[str, Any]:
    """The parsed ``pyproject.toml`` at ``path``."""
    try:
        import tomllib as toml  # Python 3.11+
    except ImportError:
        try:
            import tomli as toml  # type: ignore[no-redef]
        except ImportError:
            raise ArmsError(
                f"Reading {path} needs Python 3.11 or newer (tomllib) or the tomli package, and this host's "
                "Python has neither: install python3-tomli (apt) or run Ansible modules with a Python >= 3.11 "
                "(ansible_python_interpreter)."
            ) from None
    try:
        with open(path, "rb") as fh:
            return toml.load(fh)
    except FileNotFoundError:
        raise ArmsError(
            f"{path} does not exist: the nanochat checkout is missing or incomplete; run the nanochat_checkout "
            "role (playbooks/setup.yml) first."
        ) from None
    except (OSError, ValueError) as exc:
        raise ArmsError(f"{path} cannot be read as TOML ({exc}); is the nanochat checkout damaged?") from None


def _source_entries(value: Any) -> list[dict[str, Any]]:
    if isinstance(value, dict):
        return [value]
    if isinstance(value, list):
        return [v for v in value if isinstance(v, dict)]
    return []


def index_names_for_extra(pyproject: dict[str, Any], extra: str) -> dict[str, list[str]]:
    """Index name -> packages whose ``[tool.uv.sources]`` entry sends them there for ``extra``.

    An entry counts when it names no extra (it applies always) or names ``extra``; an entry for
    another extra does not (nanochat's ``pytorch-cpu`` is not needed for ``gpu``). Order follows
    the pyproject.
    """
    sources = ((pyproject.get("tool") or {}).get("uv") or {}).get("sources") or {}
    out: dict[str, list[str]] = {}
    for package, value in sources.items():
        for entry in _source_entries(value):
            name = entry.get("index")
            if not isinstance(name, str) or entry.get("extra", extra) != extra:
                continue
            packages = out.setdefault(name, [])
            if package not in packages:
                packages.append(package)
    return out


def declared_indexes(pyproject: dict[str, Any]) -> dict[str, str]:
    """``[[tool.uv.index]]`` name -> url."""
    entries = ((pyproject.get("tool") or {}).get("uv") or {}).get("index") or []
    return {
        e["name"]: e["url"]
        for e in entries
        if isinstance(e, dict) and isinstance(e.get("name"), str) and isinstance(e.get("url"), str)
    }


def check_overrides(overrides: dict[str, str]) -> None:
    for name, url in overrides.items():
        if not isinstance(name, str) or not _INDEX_NAME.match(name):
            raise ArmsError(
                f"nanochat_venv_index_urls has the key {name!r}, which is not an index name (letters, digits, "
                "'-', '_' and '.', as in nanochat's [[tool.uv.index]] name = ...)."
            )
        if not isinstance(url, str) or not url.strip() or any(c.isspace() for c in url):
            raise ArmsError(
                f"nanochat_venv_index_urls[{name!r}] is {url!r}: expected the URL of a package index "
                "(https://... or file:///...), without spaces."
            )


def plan_indexes(pyproject: dict[str, Any], extra: str, overrides: dict[str, str] | None = None) -> IndexPlan:
    """The indexes the venv install needs for ``extra``: the pyproject's, with ``overrides`` (by name) applied."""
    overrides = dict(overrides or {})
    check_overrides(overrides)
    declared = declared_indexes(pyproject)
    wanted = index_names_for_extra(pyproject, extra)
    plan = IndexPlan(extra=extra)
    for name, packages in wanted.items():
        url = overrides.get(name) or declared.get(name)
        if not url:
            raise ArmsError(
                f"nanochat's pyproject.toml takes {', '.join(packages)} for the extra {extra!r} from the index "
                f"{name!r} but declares no [[tool.uv.index]] with that name: give its URL in "
                f"nanochat_venv_index_urls ({{{name!r}: URL}}) or pick another nanochat_venv_extra."
            )
        plan.indexes.append(PackageIndex(name=name, url=url, packages=packages, overridden=name in overrides))
    plan.unused_overrides = sorted(set(overrides) - set(wanted))
    return plan


def plan_for_checkout(checkout: str, extra: str, overrides: dict[str, str] | None = None) -> IndexPlan:
    return plan_indexes(load_pyproject(os.path.join(checkout, "pyproject.toml")), extra, overrides)


def unused_override_warning(plan: IndexPlan) -> str:
    names = ", ".join(plan.unused_overrides)
    used = ", ".join(i.name for i in plan.indexes) or "none"
    return (
        f"nanochat_venv_index_urls names {names}, which nanochat's pyproject.toml does not use for the extra "
        f"{plan.extra!r} (it uses: {used}); those URLs are ignored. Check the index names against the pinned "
        "commit's pyproject.toml."
    )
