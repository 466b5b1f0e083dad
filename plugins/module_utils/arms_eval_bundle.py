"""The CORE eval bundle placed on a host before launch, where and as real nanochat leaves it.

Real nanochat (``evaluate_core`` in ``scripts/base_eval.py``, b07604e and every later commit): at every
``--core-metric-every`` steps base_train evaluates CORE; if ``$NANOCHAT_BASE_DIR/eval_bundle`` does not
exist it calls ``download_file_with_lock(EVAL_BUNDLE_URL, "eval_bundle.zip", place_eval_bundle)``, which
writes ``$NANOCHAT_BASE_DIR/eval_bundle.zip`` (under a file lock, while every GPU waits) and unzips it into
a temporary folder whose ``eval_bundle/`` sub-folder is moved to ``$NANOCHAT_BASE_DIR/eval_bundle``. It then
reads ``eval_bundle/core.yaml``, ``eval_bundle/eval_meta_data.csv`` and ``eval_bundle/eval_data/...``. The
only test for "already there" is that the folder exists, so a half-unzipped folder is trusted.

:func:`place_bundle` leaves the same two things (``eval_bundle.zip`` and ``eval_bundle/``) from a URL or a
local zip, atomically (unzipped beside, then renamed into place), and records the zip's sha256 in
``eval_bundle/.nanochat-arms-bundle.json`` with every file's size; :func:`check_bundle` reads that
record back. The URL nanochat itself uses is read from the checkout (:func:`bundle_url`), never re-typed.

Whether a run needs the bundle at all is :func:`core_metric_on` (base_train's ``--core-metric-every``), and
:func:`bundle_problems` is the preflight's rule: every arm host holds the CPU node's bundle, whole.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import re
import shutil
import tempfile
import urllib.request
import zipfile
from typing import Any

from ansible.module_utils.arms_common import ArmsError, atomic_write_json, fsync_dir
from ansible.module_utils.arms_flags import normalize_flags

BUNDLE_DIR = "eval_bundle"
BUNDLE_ZIP = "eval_bundle.zip"
RECORD = ".nanochat-arms-bundle.json"
REQUIRED = ("core.yaml", "eval_meta_data.csv", "eval_data")
_URL_LINE = re.compile(r"""^EVAL_BUNDLE_URL\s*=\s*["']([^"']+)["']""", re.M)


def bundle_url(checkout: str) -> str:
    """The URL real nanochat downloads the bundle from (``EVAL_BUNDLE_URL`` in its scripts/base_eval.py)."""
    path = os.path.join(checkout, "scripts", "base_eval.py")
    try:
        with open(path, encoding="utf-8") as fh:
            found = _URL_LINE.search(fh.read())
    except OSError as exc:
        raise ArmsError(f"cannot read {path} ({exc.strerror or exc}): is {checkout} a nanochat checkout?") from None
    if not found:
        raise ArmsError(f"{path} sets no EVAL_BUNDLE_URL: give the bundle's URL or a local zip explicitly.")
    return found.group(1)


def core_metric_on(extra_flags: Any) -> bool:
    """Whether base_train evaluates CORE (and so reads the bundle) with these extra flags: ``--core-metric-every``
    unset (nanochat's default, 2000 in every era) or above 0. CORE also runs at the last step then, so a
    value above the run's step count still needs the bundle."""
    value = normalize_flags(extra_flags).get("core_metric_every")
    if value is None:
        return True
    try:
        return int(str(value)) > 0
    except ValueError:
        raise ArmsError(f"extra flag --core-metric-every must be a whole number, got {value!r}.") from None


def _sha256(path: str) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        while chunk := fh.read(4 * 1024 * 1024):
            digest.update(chunk)
    return digest.hexdigest()


def _is_url(src: str) -> bool:
    return re.match(r"^[a-z][a-z0-9+.-]*://", src) is not None


def _tree(folder: str) -> dict[str, int]:
    """Relative path -> size of every file under ``folder`` but the record."""
    out = {}
    for root, _dirs, files in os.walk(folder):
        for name in files:
            path = os.path.join(root, name)
            rel = os.path.relpath(path, folder)
            if rel != RECORD:
                out[rel] = os.path.getsize(path)
    return dict(sorted(out.items()))


def check_bundle(base_dir: str, expected_sha256: str | None = None) -> dict[str, Any]:
    """Whether ``<base_dir>/eval_bundle`` is a whole bundle (as recorded when placed) and, when
    ``expected_sha256`` is given, the bundle of that zip.

    Returns {"path", "present", "sha256" (recorded, or of eval_bundle.zip when nanochat fetched it itself),
    "source" (recorded), "matches", "problems": [sentence, ...]}.
    """
    folder = os.path.join(base_dir, BUNDLE_DIR)
    out: dict[str, Any] = {
        "path": folder,
        "present": os.path.isdir(folder),
        "sha256": None,
        "source": None,
        "problems": [],
    }
    problems: list[str] = out["problems"]
    if not out["present"]:
        problems.append(f"{folder} is missing: base_train would download the eval bundle at its first CORE step")
    else:
        record: dict[str, Any] = {}
        with contextlib.suppress(OSError, ValueError), open(os.path.join(folder, RECORD), encoding="utf-8") as fh:
            record = json.load(fh)
        if record:
            out["sha256"] = record.get("sha256")
            out["source"] = record.get("source")
            files = record.get("files") or {}
            wrong = sorted(n for n, size in files.items() if not _size_is(os.path.join(folder, n), size))
            if wrong:
                problems.append(
                    f"{folder} differs from the bundle placed there ({len(wrong)} file(s) missing or changed, e.g. "
                    f"{wrong[0]})"
                )
        else:
            zip_path = os.path.join(base_dir, BUNDLE_ZIP)
            out["sha256"] = _sha256(zip_path) if os.path.isfile(zip_path) else None
        missing = [n for n in REQUIRED if not os.path.exists(os.path.join(folder, n))]
        if missing:
            problems.append(f"{folder} lacks {', '.join(missing)}, which nanochat's CORE evaluation reads")
    if expected_sha256 and out["present"] and out["sha256"] != expected_sha256:
        problems.append(
            f"{folder} holds the bundle of a zip with sha256 {str(out['sha256'])[:12]}, not the expected "
            f"{expected_sha256[:12]}"
        )
    out["matches"] = not problems
    return out


def _size_is(path: str, size: Any) -> bool:
    try:
        return os.path.getsize(path) == size
    except OSError:
        return False


def _fetch(src: str, dest: str, timeout: float) -> None:
    """``src`` (a URL, file:// included) into ``dest``."""
    try:
        with urllib.request.urlopen(src, timeout=timeout) as response, open(dest, "wb") as out:
            shutil.copyfileobj(response, out, 1024 * 1024)
            out.flush()
            os.fsync(out.fileno())
    except OSError as exc:  # URLError and HTTPError are OSErrors
        raise ArmsError(
            f"could not download the eval bundle from {src} ({getattr(exc, 'reason', None) or exc}); check the "
            "host's network (the CPU node fetches it once), or give a local zip."
        ) from None


def _unzip(zip_path: str, into: str) -> str:
    """Unzip as nanochat does and return the ``eval_bundle`` folder it would move into place."""
    try:
        with zipfile.ZipFile(zip_path) as zf:
            zf.extractall(into)
    except (zipfile.BadZipFile, OSError) as exc:
        raise ArmsError(f"the eval bundle {zip_path} is not a readable zip ({exc}); fetch it again.") from None
    folder = os.path.join(into, BUNDLE_DIR)
    missing = [n for n in REQUIRED if not os.path.exists(os.path.join(folder, n))]
    if not os.path.isdir(folder) or missing:
        raise ArmsError(
            f"the zip {zip_path} does not hold an {BUNDLE_DIR}/ folder with {', '.join(REQUIRED)} (missing: "
            f"{', '.join(missing) if os.path.isdir(folder) else BUNDLE_DIR + '/'}); nanochat's CORE evaluation "
            "could not use it: give nanochat's eval_bundle.zip."
        )
    return folder


def place_bundle(
    base_dir: str,
    src: str,
    *,
    expected_sha256: str | None = None,
    check_mode: bool = False,
    timeout: float = 600.0,
) -> dict[str, Any]:
    """Put the eval bundle from ``src`` (URL or local zip) at ``<base_dir>/eval_bundle`` (+ ``eval_bundle.zip``).

    Idempotent by content: nothing changes when the recorded sha256 is the zip's (with ``expected_sha256``
    the source is not even fetched when the host already holds that bundle; without it, a URL is not
    fetched again when the whole bundle there was placed from that same URL: the CPU node fetches once).
    A zip whose sha256 is not ``expected_sha256`` is refused. Check mode predicts a change for a local zip
    that is not there yet (it arrives from the CPU node first). Returns {"changed", "sha256", "path",
    "files", "source"}.
    """
    if expected_sha256 and check_bundle(base_dir, expected_sha256)["matches"]:
        return _result(False, base_dir, expected_sha256, src)
    if not expected_sha256 and _is_url(src):
        held = check_bundle(base_dir)
        if held["matches"] and held["source"] == src and held["sha256"]:
            return _result(False, base_dir, held["sha256"], src)
    if not _is_url(src) and not os.path.isfile(src):
        if check_mode:
            return _result(True, base_dir, expected_sha256, src)
        raise ArmsError(f"the eval bundle {src} does not exist: fetch it on the CPU node first.")
    if check_mode and not _is_url(src):
        sha = _sha256(src)
        _refuse_other(sha, expected_sha256, src)
        return _result(not check_bundle(base_dir, sha)["matches"], base_dir, sha, src)
    if check_mode:  # a URL: what it holds is unknown without fetching it
        return _result(True, base_dir, expected_sha256, src)
    os.makedirs(base_dir, exist_ok=True)
    work = tempfile.mkdtemp(prefix=".eval_bundle-", suffix=".part", dir=base_dir)
    try:
        zip_path = src
        if _is_url(src):
            zip_path = os.path.join(work, BUNDLE_ZIP)
            _fetch(src, zip_path, timeout)
        sha = _sha256(zip_path)
        _refuse_other(sha, expected_sha256, src)
        if check_bundle(base_dir, sha)["matches"]:
            return _result(False, base_dir, sha, src)
        staged = _unzip(zip_path, os.path.join(work, "unzipped"))
        atomic_write_json(os.path.join(staged, RECORD), {"sha256": sha, "source": src, "files": _tree(staged)})
        final_zip = os.path.join(base_dir, BUNDLE_ZIP)
        if zip_path != os.path.join(work, BUNDLE_ZIP):
            shutil.copyfile(zip_path, os.path.join(work, BUNDLE_ZIP))
        os.replace(os.path.join(work, BUNDLE_ZIP), final_zip)
        target = os.path.join(base_dir, BUNDLE_DIR)
        if os.path.lexists(target):
            os.replace(target, os.path.join(work, "previous"))
        os.replace(staged, target)
        fsync_dir(base_dir)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return _result(True, base_dir, sha, src)


def _refuse_other(sha: str, expected: str | None, src: str) -> None:
    if expected and sha != expected:
        raise ArmsError(
            f"the eval bundle from {src} has sha256 {sha[:12]}, not the expected {expected[:12]} (the CPU node's); "
            "every arm host must evaluate CORE on the same bundle: fetch it again on the CPU node and copy that zip."
        )


def _result(changed: bool, base_dir: str, sha: str | None, src: str) -> dict[str, Any]:
    folder = os.path.join(base_dir, BUNDLE_DIR)
    files = len(_tree(folder)) if os.path.isdir(folder) else 0
    return {"changed": changed, "sha256": sha, "path": folder, "files": files, "source": src}


def bundle_problems(
    reference: dict[str, Any], held: list[tuple[str, str, dict[str, Any]]], repair_command: str
) -> list[str]:
    """The preflight's sentences: the CPU node holds a whole bundle and every arm host the same, whole.

    ``reference`` is the CPU node's :func:`check_bundle` result plus its ``host``; ``held`` is (host, arm,
    :func:`check_bundle` result) of every arm host; ``repair_command`` places the CPU node's bundle again.
    """
    cpu = reference.get("host", "the CPU node")
    if not reference.get("present") or reference.get("problems") or not reference.get("sha256"):
        why = "; ".join(reference.get("problems") or []) or f"{reference.get('path')} records no checksum"
        return [
            f"{cpu} (the CPU node): {why}. The CORE metric is on (--core-metric-every), so every arm host needs "
            f"the CPU node's eval bundle before launch: fetch it once and place it with: {repair_command}"
        ]
    expected = str(reference["sha256"])
    problems = []
    for host, arm, found in held:
        if not found.get("present") or found.get("problems"):
            why = "; ".join(found.get("problems") or []) or f"{found.get('path')} is missing"
            problems.append(f"{host} ({arm}): {why}; place the CPU node's eval bundle with: {repair_command}")
        elif found.get("sha256") != expected:
            problems.append(
                f"{host} ({arm}): {found.get('path')} holds the eval bundle {str(found.get('sha256'))[:12]}, not "
                f"the CPU node's {expected[:12]}: every arm must evaluate CORE on the same bundle; place the CPU "
                f"node's with: {repair_command}"
            )
    return problems
