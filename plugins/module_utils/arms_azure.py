"""Azure Blob -> an arm's data dir: the top arm's bulk download, verified and resumable.

One container + prefix (a "folder": blob ``<prefix>/shard_00000.parquet`` becomes
``<data_dir>/shard_00000.parquet``) is mirrored into the data dir nanochat reads:

* Only ``*.parquet`` blobs directly under the prefix are candidates. Everything else (README,
  ``_SUCCESS``, sub-folders, hidden names) is reported in ``rejected`` and left alone. A
  ``*.parquet`` blob that has no string column ``text`` is a bad input: the sync fails naming it.
  Blobs larger than one GET have their footer read first (a ranged read of the tail, while other
  blobs stream); smaller ones are checked after download, before the rename (same cost as the
  download itself).
* Many blobs at once (``concurrency``), blobs over 8 MiB in parallel 8 MiB ranges (``chunk_concurrency``,
  the SDK's ``max_concurrency``), written under hidden ``.<name>.arms-XXXX.tmp`` names (arms_datadir; nanochat
  skips them), hashed once while they stream to disk (sha256, the manifest's checksum, on a
  thread of its own beside the network threads), fsync'd and renamed. The download is pinned to the
  listed etag.
* One checksum per byte. The blob's Content-MD5 is not recomputed by default: what it would catch is
  already caught. Over https, TLS authenticates every byte that arrives (an altered byte breaks the
  connection, which is retried); the etag pin makes every range come from one version of the blob;
  the writer refuses a range written twice or a gap, and the size must equal the blob's; the parquet
  footer is parsed before the rename; Azure checks its own stored CRCs when it serves a read. MD5 is
  also the slow hash here (~4x the CPU of sha256 with SHA extensions), which on a small node competes
  with the download itself. ``verify_content_md5=True`` adds the MD5 comparison (e.g. for a plain-http
  endpoint, where nothing authenticates the bytes in transit); a file found on disk without a record is
  still adopted only when its MD5 equals the Content-MD5.
* Retries: the SDK retries each request ``max_retries`` times with exponential backoff
  (``retry_backoff`` x 2^n, jittered); a download that broke off midway, or arrived with the wrong
  size or MD5, is started again up to ``max_retries`` times.
* A journal (``.azure-sync.json``: name -> manifest entry with the blob's etag, last_modified,
  size and MD5) is written as blobs land, so a sync that fails midway keeps what it finished. The
  next run skips a blob whose etag/size/last_modified match its record and whose local file matches
  the verification cache (size + mtime, ``deep_verify`` re-hashes), fetches changed ones again,
  and adopts an unrecorded local file when its MD5 equals the blob's Content-MD5.
* ``manifest.json`` (arms_manifest, kind ``azure_blob``) is written only when the data dir holds
  every accepted blob; entries that did not come from Azure (e.g. a ``shard_val.parquet`` placed
  by another step, role val) are carried over and their files never touched. Files this sync
  downloaded earlier whose blob is gone from the prefix are removed (the data dir mirrors it).
* Secrets (connection string, account key, SAS) never appear in results, messages, exceptions
  raised from here or progress files: every message built from an SDK error is scrubbed.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import json
import os
import random
import re
import threading
import time
from collections.abc import Callable, Mapping
from concurrent.futures import FIRST_COMPLETED, CancelledError, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any
from urllib.parse import SplitResult, quote, unquote, urlsplit, urlunsplit

from ansible.module_utils.arms_common import (
    ArmsError,
    Progress,
    ProgressWriter,
    atomic_write_json,
    check_folder_for_writing,
    free_bytes,
    fsync_dir,
    human_bytes,
    human_seconds,
)
from ansible.module_utils.arms_datadir import claimed_folder, sweep_leftovers, tmp_path
from ansible.module_utils.arms_manifest import (
    VERIFY_CACHE_NAME,
    _load_cache,
    build_manifest,
    manifest_path,
    read_manifest,
    verify_data_dir,
    write_manifest,
)
from ansible.module_utils.arms_names import file_name_problem

KIND = "azure_blob"
DOWNLOAD_MODES = ("bulk",)
JOURNAL_NAME = ".azure-sync.json"
JOURNAL_FORMAT = "nanochat-arms-azure-journal/1"
TEXT_COLUMN = "text"
TAIL_READ = 64 * 1024
HASH_READ = 4 * 1024 * 1024
# blobs streaming at once. A far account (~30 ms away) leaves each connection idle for a round trip
# per GET, and one TCP window (~6 MB) carries ~200 MB/s at that distance: 10 Gbit/s needs ~16 blobs
# streaming. Since a slot is held only while bytes stream (hash wait, fsync and rename happen outside
# it, and so does a large blob's footer read), 16 slots are 16 streams. 32 measured not clearly
# better on 2 shared cores (benchmarks/bench_azure.py, with and without --window-kb) and doubles the memory of
# in-flight GETs (up to chunk_concurrency x 8 MiB each).
DEFAULT_CONCURRENCY = 16
# a blob's first GET, and each further range of a larger one. The SDK fetches the first GET alone
# before the parallel ranges start, and far away one connection carries only window / round trip
# (~50-100 MB/s at 30 ms): with the SDK's 32 MiB first GET a large shard spent its first 32 MiB on
# one connection. 8 MiB first, then 8 MiB ranges (``chunk_concurrency`` at once; a round trip is a
# small part of each range's time, and half the requests of the SDK's 4 MiB): 8 blobs x 64 MB through
# delay_proxy with a window (benchmarks/bench_azure.py --mb 64 --blobs 8 --window-kb 1024) took
# ~1.5x less time, without the window too, and on loopback ~1.3x (Azurite's CPU halved).
SINGLE_GET_BYTES = 8 * 1024 * 1024
CHUNK_GET_BYTES = 8 * 1024 * 1024
HASH_QUEUE_BYTES = 16 * 1024 * 1024  # per download: bytes kept in memory for its hasher thread
JOURNAL_INTERVAL = 2.0

ENV_CONNECTION_STRING = "AZURE_STORAGE_CONNECTION_STRING"
ENV_ACCOUNT_URL = "AZURE_STORAGE_ACCOUNT_URL"
ENV_SAS_TOKEN = "AZURE_STORAGE_SAS_TOKEN"
ENV_ACCOUNT_KEY = "AZURE_STORAGE_ACCOUNT_KEY"

_CONTAINER_RE = re.compile(r"^(?=.{3,63}$)[a-z0-9](?:[a-z0-9]|-(?=[a-z0-9]))*$")
_SECRET_PATTERNS = (
    re.compile(r"(?i)(sig=)[^&\s'\";]+"),
    re.compile(r"(?i)(AccountKey=)[^;\s'\"]+"),
    re.compile(r"(?i)(SharedAccessSignature=)[^;\s'\"]+"),
)


# --------------------------------------------------------------------------------------------
# Secrets and credentials


class Scrubber:
    """Removes known secret values (and any SAS signature or account key pattern) from text."""

    def __init__(self, values: list[str] | None = None) -> None:
        self.values: list[str] = []
        for value in values or []:
            self.add(value)

    def add(self, value: str | None) -> None:
        if not value or len(value) < 4:
            return
        forms = {value, quote(value, safe=""), quote(value, safe="=&"), unquote(value)}
        forms |= {f.lstrip("?") for f in list(forms)}
        self.values.extend(sorted((f for f in forms if len(f) >= 4 and f not in self.values), key=len, reverse=True))
        self.values.sort(key=len, reverse=True)

    def __call__(self, text: str) -> str:
        for value in self.values:
            text = text.replace(value, "***")
        for pattern in _SECRET_PATTERNS:
            text = pattern.sub(r"\1***", text)
        return text


@dataclass
class AzureAuth:
    """How to reach the storage account. ``account_url`` never carries a query (no SAS)."""

    method: str  # connection_string | sas_token | account_key | default_credential
    account_url: str
    account_name: str
    connection_string: str | None = field(default=None, repr=False)
    credential: Any = field(default=None, repr=False)
    scrub: Scrubber = field(default_factory=Scrubber, repr=False)

    def describe(self) -> str:
        return f"account {self.account_name} at {self.account_url} ({self.method.replace('_', ' ')})"


def _parse_connection_string(conn: str) -> dict[str, str]:
    parts: dict[str, str] = {}
    for item in conn.split(";"):
        if "=" in item:
            key, _, value = item.partition("=")
            parts[key.strip().lower()] = value.strip()
    return parts


def _strip_query(url: str) -> tuple[str, str]:
    parts = _split_url(url, "account_url")
    return urlunsplit((parts.scheme, parts.netloc, parts.path, "", "")), parts.query


def _split_url(url: str, what: str) -> SplitResult:
    """``url`` split, when it is an http(s) URL with a host; ArmsError naming ``what`` otherwise.

    Only the part before any ``?`` is shown: the query of an account URL can be a SAS token.
    """
    shown = url.split("?", 1)[0]
    expected = "expected https://<account>.blob.core.windows.net (or http://host:port/<account> for Azurite)"
    try:
        parts = urlsplit(url)
        host, _ = parts.hostname, parts.port  # both raise ValueError on a broken host or port
    except ValueError as exc:
        raise ArmsError(f"{what} {shown!r} is not a URL ({exc}); {expected}.") from None
    if parts.scheme.lower() not in ("http", "https") or not host:
        raise ArmsError(f"{what} {shown!r} is not an http(s) URL with a host; {expected}.")
    return parts


# The credential options of every module that reaches Azure: all no_log (a SAS URL given as
# account_url carries the token, and Ansible logs module_args).
AUTH_OPTIONS: dict[str, dict[str, Any]] = {
    "connection_string": {"type": "str", "no_log": True},
    "account_url": {"type": "str", "no_log": True},
    "sas_token": {"type": "str", "no_log": True},
    "account_key": {"type": "str", "no_log": True},
}


def resolve_auth(
    connection_string: str | None = None,
    account_url: str | None = None,
    sas_token: str | None = None,
    account_key: str | None = None,
    env: Mapping[str, str] | None = None,
) -> AzureAuth:
    """Exactly one way to authenticate, from the arguments or else from the environment.

    Ways: a connection string; an account URL with a SAS token (or a SAS URL); an account URL with
    an account key; an account URL alone with DefaultAzureCredential when azure-identity is
    installed. Arguments win over ``AZURE_STORAGE_*`` environment variables (never mixed).
    """
    given = [v for v in (connection_string, account_url, sas_token, account_key) if v]
    source = "the task arguments"
    if not given:
        env = os.environ if env is None else env
        connection_string = env.get(ENV_CONNECTION_STRING) or None
        account_url = env.get(ENV_ACCOUNT_URL) or None
        sas_token = env.get(ENV_SAS_TOKEN) or None
        account_key = env.get(ENV_ACCOUNT_KEY) or None
        source = "the environment"
    scrub = Scrubber([connection_string or "", sas_token or "", account_key or ""])
    if account_url:
        account_url, query = _strip_query(account_url.strip())
        if query:
            scrub.add(query)
            if sas_token:
                raise ArmsError(
                    "account_url carries a SAS token in its query and sas_token is also given; "
                    "give the SAS token once (account_url without '?...' plus sas_token)."
                )
            sas_token = query
    if connection_string:
        if account_url or sas_token or account_key:
            raise ArmsError(
                f"{source} give both a connection string and account_url/sas_token/account_key; "
                "give exactly one way to authenticate (a connection string alone, or account_url with "
                "sas_token or account_key)."
            )
        return _auth_from_connection_string(connection_string, source, scrub)
    if not account_url:
        what = "sas_token" if sas_token else "account_key" if account_key else None
        if what:
            raise ArmsError(
                f"{what} is given without account_url; give account_url too (https://<account>.blob.core.windows.net)."
            )
        raise ArmsError(
            "no Azure credentials: give connection_string, or account_url with sas_token or account_key "
            f"(or set {ENV_CONNECTION_STRING}, or {ENV_ACCOUNT_URL} with {ENV_SAS_TOKEN} or {ENV_ACCOUNT_KEY})."
        )
    _split_url(account_url, "account_url")
    account_url = account_url.rstrip("/")
    account_name = _account_name_from_url(account_url)
    if sas_token and account_key:
        raise ArmsError("both sas_token and account_key are given; give exactly one of them.")
    if sas_token:
        return AzureAuth("sas_token", account_url, account_name, None, sas_token.lstrip("?"), scrub)
    if account_key:
        cred = {"account_name": account_name, "account_key": account_key}
        return AzureAuth("account_key", account_url, account_name, None, cred, scrub)
    try:
        from azure.identity import DefaultAzureCredential  # type: ignore[import-not-found]
    except ImportError:
        raise ArmsError(
            f"account_url {account_url} is given without sas_token or account_key, and azure-identity "
            "is not installed for DefaultAzureCredential; give a SAS token or account key, or install "
            "azure-identity in the data venv."
        ) from None
    return AzureAuth("default_credential", account_url, account_name, None, DefaultAzureCredential(), scrub)


def _auth_from_connection_string(connection_string: str, source: str, scrub: Scrubber) -> AzureAuth:
    """The account a connection string names (its key or SAS added to ``scrub``); ArmsError when it is malformed."""
    parts = _parse_connection_string(connection_string)
    for key in ("accountkey", "sharedaccesssignature"):
        scrub.add(parts.get(key))
    protocol = parts.get("defaultendpointsprotocol")
    if protocol is not None and protocol.lower() not in ("http", "https"):
        raise ArmsError(
            f"the Azure connection string from {source} names DefaultEndpointsProtocol={protocol!r}; "
            "Azure Blob storage is reached over https (or http for Azurite): set DefaultEndpointsProtocol=https."
        )
    if parts.get("blobendpoint"):
        _split_url(parts["blobendpoint"], f"the connection string's BlobEndpoint (from {source})")
    try:
        from azure.storage.blob import BlobServiceClient

        probe = BlobServiceClient.from_connection_string(connection_string)
    except (ValueError, KeyError) as exc:
        raise ArmsError(
            f"the Azure connection string from {source} cannot be parsed ({scrub(str(exc))}); "
            "expected 'DefaultEndpointsProtocol=...;AccountName=...;AccountKey=...' or "
            "'BlobEndpoint=...;SharedAccessSignature=...'."
        ) from None
    url, _ = _strip_query(probe.url)
    _split_url(url, f"the blob endpoint the Azure connection string from {source} gives")
    return AzureAuth("connection_string", url.rstrip("/"), probe.account_name or "?", connection_string, None, scrub)


def _account_name_from_url(url: str) -> str:
    parts = urlsplit(url)
    host = parts.hostname or ""
    if re.match(r"^[\d.]+$", host) or host in ("localhost",) or ":" in host:
        segment = parts.path.strip("/").split("/")[0]
        return segment or host  # Azurite / IP style: http://127.0.0.1:10000/<account>
    return host.split(".")[0]


class _Backoff:
    """Exponential backoff with jitter: base x 2^(n-1), capped, +-25%."""

    def __init__(self, base: float, cap: float = 60.0) -> None:
        self.base = base
        self.cap = cap

    def __call__(self, attempt: int) -> float:
        delay = min(self.cap, self.base * (2 ** max(0, attempt - 1)))
        return delay * random.uniform(0.75, 1.25)


def _retry_policy(max_retries: int, backoff: float) -> Any:
    from azure.storage.blob import ExponentialRetry

    class _Retry(ExponentialRetry):  # type: ignore[misc]
        def get_backoff_time(self, settings: dict[str, Any]) -> float:
            return _Backoff(backoff)(int(settings.get("count", 0)) + 1)

    return _Retry(retry_total=max_retries, initial_backoff=backoff, increment_base=2, random_jitter_range=0)


def container_client(
    auth: AzureAuth,
    container: str,
    *,
    pool_size: int = 32,
    max_retries: int = 5,
    retry_backoff: float = 1.0,
    block_size: int = 1024 * 1024,
    max_single_get_size: int | None = None,
    max_chunk_get_size: int | None = None,
) -> Any:
    """A ContainerClient with a connection pool big enough for the parallel downloads."""
    import requests
    from azure.storage.blob import ContainerClient

    try:
        from azure.core.pipeline.transport._bigger_block_size_http_adapters import (
            BiggerBlockSizeHTTPAdapter as Adapter,
        )
    except ImportError:  # pragma: no cover - older/newer azure-core
        from requests.adapters import HTTPAdapter as Adapter
    from urllib3.util.retry import Retry

    session = requests.Session()
    adapter = Adapter(
        pool_connections=4,
        pool_maxsize=pool_size,
        max_retries=Retry(total=False, redirect=False, raise_on_status=False),
    )
    session.mount("https://", adapter)
    session.mount("http://", adapter)
    kwargs: dict[str, Any] = {
        # the SDK builds its transport around this session (and keeps its own read block size)
        "session": session,
        "retry_policy": _retry_policy(max_retries, retry_backoff),
        "connection_data_block_size": block_size,
    }
    if max_single_get_size:
        kwargs["max_single_get_size"] = max_single_get_size
    if max_chunk_get_size:
        kwargs["max_chunk_get_size"] = max_chunk_get_size
    if auth.connection_string:
        return ContainerClient.from_connection_string(auth.connection_string, container, **kwargs)
    return ContainerClient(auth.account_url, container, credential=auth.credential, **kwargs)


# --------------------------------------------------------------------------------------------
# Blobs: listing, classification, footers


@dataclass(frozen=True)
class BlobInfo:
    name: str  # full blob name
    rel: str  # name under the prefix = file name in data_dir
    size: int
    etag: str
    last_modified: str
    md5: str | None  # hex of the blob's Content-MD5, when it has one

    def facts(self) -> dict[str, Any]:
        return {"blob": self.name, "etag": self.etag, "last_modified": self.last_modified, "md5": self.md5}


def normalize_prefix(prefix: str | None) -> str:
    """A prefix names a folder: '' (whole container) or 'a/b/' (leading '/' dropped, '/' added)."""
    prefix = (prefix or "").strip().lstrip("/")
    return prefix if not prefix or prefix.endswith("/") else prefix + "/"


def check_container_name(container: str | None) -> str:
    if not container:
        raise ArmsError("container is empty; give the blob container that holds the shards (e.g. quratingfiltered).")
    if not _CONTAINER_RE.match(container):
        raise ArmsError(
            f"container {container!r} is not a valid Azure container name (3-63 lowercase letters, digits "
            "and single hyphens); check the container name."
        )
    return container


def blob_info(props: Any, prefix: str) -> BlobInfo:
    md5 = None
    settings = getattr(props, "content_settings", None)
    if settings is not None and settings.content_md5:
        md5 = bytes(settings.content_md5).hex()
    modified = props.last_modified
    return BlobInfo(
        name=props.name,
        rel=props.name[len(prefix) :],
        size=int(props.size or 0),
        etag=str(props.etag),
        last_modified=modified.isoformat() if isinstance(modified, datetime) else str(modified),
        md5=md5,
    )


def classify(blobs: list[BlobInfo], protected: Mapping[str, str]) -> tuple[list[BlobInfo], list[dict[str, str]]]:
    """Split listed blobs into shard candidates and ``rejected`` ({name, reason}) ones.

    ``protected`` maps local names that did not come from Azure to their manifest role: a blob of the
    same name is rejected rather than overwriting them.
    """
    accepted: list[BlobInfo] = []
    rejected: list[dict[str, str]] = []
    for blob in blobs:
        reason = None
        if "/" in blob.rel:
            reason = "in a sub-folder below the prefix; nanochat reads one flat folder"
        elif not blob.rel.endswith(".parquet"):
            reason = "not a .parquet file"
        elif blob.rel.startswith("."):
            reason = "hidden name; hidden names in the data dir are reserved for temporary files"
        elif blob.rel in protected:
            reason = (
                f"the data dir holds a {blob.rel} (role {protected[blob.rel]}) that did not come from Azure; left alone"
            )
        if reason:
            rejected.append({"name": blob.name, "reason": reason})
        else:
            accepted.append(blob)
    return accepted, rejected


def shard_problem(schema: Any) -> str | None:
    """Why a parquet schema (pyarrow.Schema) is not a nanochat shard, or None when it is one."""
    import pyarrow as pa

    names = list(schema.names)
    if TEXT_COLUMN not in names:
        shown = ", ".join(names[:8]) + (", ..." if len(names) > 8 else "")
        return f"it has no '{TEXT_COLUMN}' column (columns: {shown or 'none'})"
    typ = schema.field(TEXT_COLUMN).type
    if not (pa.types.is_string(typ) or pa.types.is_large_string(typ) or str(typ) == "string_view"):
        return f"its '{TEXT_COLUMN}' column holds {typ}, not strings"
    return None


def footer_metadata(tail: bytes, size: int) -> tuple[Any | None, int]:
    """Parse a parquet footer from the last bytes of a file of ``size`` bytes.

    Returns (FileMetaData, 0), or (None, n) when the footer needs the last ``n`` bytes instead.
    Raises ValueError when the bytes are not a parquet footer.
    """
    import pyarrow as pa
    import pyarrow.parquet as pq

    if size < 12 or len(tail) < 8 or tail[-4:] != b"PAR1":
        raise ValueError("no PAR1 footer")
    footer_len = int.from_bytes(tail[-8:-4], "little")
    if footer_len + 12 > size:
        raise ValueError("footer length beyond the file")
    if footer_len + 8 > len(tail):
        return None, footer_len + 8
    fake = b"PAR1" + tail[-(footer_len + 8) :]  # the footer is all read_metadata needs
    try:
        return pq.read_metadata(pa.BufferReader(fake)), 0
    except (pa.ArrowException, OSError) as exc:
        raise ValueError(str(exc).splitlines()[0]) from None


# --------------------------------------------------------------------------------------------
# Writing: a seekable sink that hashes in order while the SDK writes ranges in any order


class HashingWriter:
    """File-like sink for ``StorageStreamDownloader.readinto``: pwrite now, hash in order on a thread of its own.

    The SDK writes parallel ranges as ``seek(pos); write(data)`` (under its lock). ``write`` only
    writes the bytes to the file and notes the range, so the network threads go straight back to the
    socket; a hasher thread takes the ranges in file order and hashes them (hashlib releases the GIL
    on large buffers, so it runs beside the downloads on another core). A range is hashed from the
    bytes the SDK handed over while at most ``HASH_QUEUE_BYTES`` wait, otherwise read back from the
    file (the page cache), so memory stays bounded whatever the order and however slow the hashing.
    """

    def __init__(self, fd: int, want_md5: bool, on_bytes: Callable[[int], None] | None = None) -> None:
        self.fd = fd  # opened O_RDWR: ranges not kept in memory are read back to be hashed
        self.sha256 = hashlib.sha256()
        self.md5 = hashlib.md5() if want_md5 else None
        self.on_bytes = on_bytes
        self.written = 0
        self._pos = 0
        self._hashed = 0  # bytes [0, _hashed) are hashed, or being hashed by the thread
        self._ranges: dict[int, tuple[int, bytes | None]] = {}  # offset -> (length, bytes kept or None)
        self._queued = 0
        self._closed = False
        self._error: BaseException | None = None
        self._cond = threading.Condition()
        self._thread = threading.Thread(target=self._hash_loop, name="azsync-hash", daemon=True)
        self._thread.start()

    def seekable(self) -> bool:
        return True

    def writable(self) -> bool:
        return True

    def tell(self) -> int:
        return self._pos

    def seek(self, pos: int, whence: int = 0) -> int:
        if whence != 0:
            raise OSError(errno.EINVAL, "HashingWriter only seeks to absolute positions")
        self._pos = pos
        return pos

    def _hash(self, data: memoryview | bytes) -> None:
        self.sha256.update(data)
        if self.md5 is not None:
            self.md5.update(data)

    def write(self, data: bytes | bytearray | memoryview) -> int:
        view = memoryview(data).cast("B")
        n = len(view)
        offset = self._pos
        self._pos = offset + n
        done = 0
        while done < n:
            done += os.pwrite(self.fd, view[done:], offset + done)
        with self._cond:
            if offset < self._hashed or offset in self._ranges:
                raise OSError(errno.EIO, "download rewrote a range already written")
            keep: bytes | None = None
            if self._queued + n <= HASH_QUEUE_BYTES:  # the SDK hands over bytes it never reuses
                keep = data if isinstance(data, bytes) else bytes(view)
                self._queued += n
            self._ranges[offset] = (n, keep)
            self.written += n
            self._cond.notify()
        if self.on_bytes:
            self.on_bytes(n)
        return n

    def _hash_loop(self) -> None:
        try:
            while True:
                with self._cond:
                    while self._hashed not in self._ranges and not self._closed:
                        self._cond.wait()
                    if self._hashed not in self._ranges:
                        return
                    start = self._hashed
                    length, data = self._ranges.pop(start)
                    self._hashed = start + length
                if data is not None:
                    self._hash(data)
                    with self._cond:
                        self._queued -= length
                    continue
                pos, end = start, start + length
                while pos < end:
                    chunk = os.pread(self.fd, min(HASH_READ, end - pos), pos)
                    if not chunk:
                        raise OSError(errno.EIO, "short read while hashing the download")
                    self._hash(chunk)
                    pos += len(chunk)
        except BaseException as exc:  # handed to digests(): the download fails and is retried
            self._error = exc

    def _stop(self, discard: bool) -> None:
        with self._cond:
            self._closed = True
            if discard:
                self._ranges.clear()
                self._queued = 0
            self._cond.notify()
        self._thread.join()

    def close(self) -> None:
        """Stop the hasher thread now, dropping what it has not hashed (a download that broke off)."""
        self._stop(discard=True)

    def digests(self) -> tuple[str, str | None, int]:
        """(sha256 hex, md5 hex or None, contiguous bytes hashed), once every range written is hashed."""
        self._stop(discard=False)
        if self._error is not None:
            raise self._error
        if self._ranges:
            raise OSError(errno.EIO, "download left a gap in the file")
        return self.sha256.hexdigest(), (self.md5.hexdigest() if self.md5 else None), self._hashed

    def flush(self) -> None:
        pass


def hash_file(path: str, want_md5: bool) -> tuple[str, str | None]:
    sha = hashlib.sha256()
    md5 = hashlib.md5() if want_md5 else None
    with open(path, "rb") as fh:
        while chunk := fh.read(HASH_READ):
            sha.update(chunk)
            if md5 is not None:
                md5.update(chunk)
    return sha.hexdigest(), (md5.hexdigest() if md5 else None)


# --------------------------------------------------------------------------------------------
# Local state: journal, verification cache (the lock, temp names and sweeping: arms_datadir)


def _read_journal(data_dir: str) -> dict[str, dict[str, Any]]:
    try:
        with open(os.path.join(data_dir, JOURNAL_NAME), encoding="utf-8") as fh:
            data = json.load(fh)
    except (OSError, ValueError):
        return {}
    if not isinstance(data, dict) or data.get("format") != JOURNAL_FORMAT or not isinstance(data.get("shards"), dict):
        return {}
    return {
        k: v
        for k, v in data["shards"].items()
        if isinstance(v, dict) and isinstance(v.get("azure"), dict) and file_name_problem(k) is None
    }


def _write_journal(data_dir: str, source: dict[str, Any], records: dict[str, dict[str, Any]]) -> None:
    """Write the journal, unless it already says exactly this (a no-op re-run touches nothing)."""
    path = os.path.join(data_dir, JOURNAL_NAME)
    data = {"format": JOURNAL_FORMAT, "source": source, "shards": dict(sorted(records.items()))}
    try:
        with open(path, encoding="utf-8") as fh:
            if json.load(fh) == data:
                return
    except (OSError, ValueError):
        pass
    atomic_write_json(path, data)


def _remember_many(data_dir: str, items: list[tuple[str, str]]) -> None:
    """arms_manifest.remember_verified for many files with one cache write (not one per file)."""
    if not items:
        return
    cache = _load_cache(data_dir)
    for name, digest in items:
        try:
            st = os.stat(os.path.join(data_dir, name))
        except FileNotFoundError:
            continue
        cache[name] = [st.st_size, st.st_mtime_ns, digest]
    atomic_write_json(os.path.join(data_dir, VERIFY_CACHE_NAME), cache)


# --------------------------------------------------------------------------------------------
# Errors


def _transient(exc: BaseException) -> bool:
    """Errors worth starting a blob again for (the SDK already retried single requests)."""
    from azure.core.exceptions import (
        DecodeError,
        HttpResponseError,
        IncompleteReadError,
        ServiceRequestError,
        ServiceResponseError,
    )

    if isinstance(exc, _RetryableMismatch | IncompleteReadError | DecodeError | ServiceResponseError):
        return True
    if isinstance(exc, ServiceRequestError):
        return True
    if isinstance(exc, HttpResponseError):
        status = getattr(exc, "status_code", None)
        return status is None or status in (408, 429, 500, 502, 503, 504)
    return isinstance(exc, ConnectionError | TimeoutError)


class _RetryableMismatch(Exception):
    """The bytes that arrived are not the blob's (size or Content-MD5 differ): fetch again."""


class _Cancelled(Exception):
    """The sync is stopping (another blob failed): do not start or retry."""


class _BadShard(Exception):
    def __init__(self, blob: str, why: str) -> None:
        super().__init__(why)
        self.blob = blob
        self.why = why


def _short(exc: BaseException, scrub: Scrubber) -> str:
    status = getattr(exc, "status_code", None)
    code = getattr(exc, "error_code", None)
    if status:
        reason = getattr(getattr(exc, "response", None), "reason", None)
        return " ".join(str(x) for x in ("HTTP", status, code or reason or "") if x).strip()
    text = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    return scrub(f"{type(exc).__name__}: {text}")[:300]


def disk_error(exc: OSError, data_dir: str | None, what: str) -> ArmsError:
    """A file system error on this host as a sentence: a full disk is the user's to fix, not a bug."""
    where = data_dir or (os.path.dirname(exc.filename) if isinstance(exc.filename, str) else "the data dir")
    why = exc.strerror or str(exc)
    if exc.errno in (errno.ENOSPC, errno.EDQUOT, errno.EFBIG):
        return ArmsError(
            f"the disk holding {where} filled up while {what} ({why}); free space there or choose a data_dir on a "
            "larger disk, then run again: finished files are kept, nothing half-written is left."
        )
    return ArmsError(
        f"could not write to {where} while {what} ({why}); fix that folder (permissions, a read-only or missing "
        "disk) or choose another data_dir, then run again: finished files are kept."
    )


def explain(exc: BaseException, auth: AzureAuth, container: str, what: str, data_dir: str | None = None) -> ArmsError:
    """Turn an SDK or file system error into a sentence (scrubbed of secrets)."""
    from azure.core.exceptions import AzureError, ClientAuthenticationError, HttpResponseError, ResourceNotFoundError

    if isinstance(exc, ArmsError):
        return ArmsError(auth.scrub(str(exc)))
    if isinstance(exc, _RetryableMismatch):
        return ArmsError(
            f"{what} from container {container!r} failed verification on every attempt ({auth.scrub(str(exc))}); "
            "the blob may be corrupt in the container or rewritten while it is read: check it, then run again."
        )
    status = getattr(exc, "status_code", None)
    code = getattr(exc, "error_code", None) or ""
    brief = _short(exc, auth.scrub)
    where = f"container {container!r} of {auth.describe()}"
    if isinstance(exc, ClientAuthenticationError) or status in (401, 403):
        return ArmsError(
            f"Azure refused the credentials while {what} in {where} ({brief}): the account key, SAS token "
            "or connection string is wrong, expired, or lacks read and list permission; check the credentials."
        )
    if isinstance(exc, ResourceNotFoundError) or status == 404:
        if code == "ContainerNotFound" or what.startswith("listing"):
            return ArmsError(
                f"container {container!r} does not exist in {auth.describe()} ({brief}); check the container "
                "name (the runbook's is quratingfiltered) and the account."
            )
        return ArmsError(f"a blob disappeared while {what} in {where} ({brief}); run the sync again.")
    if status == 412:
        return ArmsError(f"a blob changed while {what} in {where} ({brief}); run the sync again.")
    if isinstance(exc, HttpResponseError) and status:
        return ArmsError(f"Azure answered {brief} while {what} in {where}; check the account and container.")
    if isinstance(exc, OSError) and not isinstance(exc, ConnectionError | TimeoutError):
        return disk_error(exc, data_dir, what)
    if not (isinstance(exc, AzureError | ConnectionError | TimeoutError) or _transient(exc)):
        return ArmsError(
            f"the Azure sync failed unexpectedly while {what} in {where} ({brief}); this is a bug in "
            "nanochat-arms: report it with this message. Finished files are kept."
        )
    return ArmsError(
        f"could not reach {auth.describe()} while {what} ({brief}), even after retries; check account_url "
        "(or the connection string's endpoint), the network, and run again: finished files are kept."
    )


# --------------------------------------------------------------------------------------------
# The sync


@dataclass
class SyncResult:
    changed: bool
    data_dir: str
    manifest: str
    blobs: int = 0
    downloaded: list[str] = field(default_factory=list)
    already_present: int = 0  # not "skipped": Ansible reads a truthy "skipped" as a skipped task
    bytes_downloaded: int = 0
    rejected: list[dict[str, str]] = field(default_factory=list)
    verified: int = 0
    removed: list[str] = field(default_factory=list)
    adopted: list[str] = field(default_factory=list)
    unmanaged: list[str] = field(default_factory=list)
    seconds: float = 0.0
    msg: str = ""

    def to_json(self) -> dict[str, Any]:
        return {
            "changed": self.changed,
            "data_dir": self.data_dir,
            "manifest": self.manifest,
            "blobs": self.blobs,
            "downloaded": self.downloaded,
            "already_present": self.already_present,
            "bytes_downloaded": self.bytes_downloaded,
            "rejected": self.rejected,
            "verified": self.verified,
            "removed": self.removed,
            "adopted": self.adopted,
            "unmanaged": self.unmanaged,
            "seconds": round(self.seconds, 3),
            "msg": self.msg,
        }


class _ByteProgress(Progress):
    """Progress in blobs, with the ETA taken from bytes (blob sizes vary)."""

    bytes_total: int = 0

    @property
    def eta_s(self) -> float | None:
        if self.bytes_total <= 0 or self.bytes_done <= 0:
            return super().eta_s
        return self.elapsed * max(0, self.bytes_total - self.bytes_done) / self.bytes_done


class _Reporter:
    def __init__(self, progress_file: str | None, echo: Callable[[str], None] | None, interval: float) -> None:
        self.writer = ProgressWriter(
            progress_file, phase="azure sync: listing", unit="blobs", interval=interval, echo=echo
        )
        self.writer.state = _ByteProgress(phase="azure sync: listing", unit="blobs")
        self.lock = threading.Lock()
        self.bytes_total = 0

    def start(self, total_blobs: int, total_bytes: int, phase: str) -> None:
        with self.lock:
            state = self.writer.state
            state.started = time.time()
            state.bytes_total = total_bytes  # type: ignore[attr-defined]
            self.bytes_total = total_bytes
            self.writer.update(
                force=True,
                phase=phase,
                total=total_blobs,
                done=0,
                bytes_done=0,
                extra={"bytes": f"0 B of {human_bytes(total_bytes)}"},
            )

    def add_bytes(self, n: int) -> None:
        with self.lock:
            done = self.writer.state.bytes_done + n
            self.writer.update(
                bytes_done=done, extra={"bytes": f"{human_bytes(done)} of {human_bytes(self.bytes_total)}"}
            )

    def blob_done(self) -> None:
        with self.lock:
            self.writer.advance(1)

    def phase(self, phase: str) -> None:
        with self.lock:
            self.writer.update(force=True, phase=phase)

    def finish(self, phase: str) -> None:
        with self.lock:
            self.writer.finish(phase=phase)


# --------------------------------------------------------------------------------------------
# Deciding: what the data dir holds, and what a sync does about it


@dataclass
class _Local:
    """What the data dir says before a sync: the records of earlier syncs, the entries carried over, its names."""

    records: dict[str, dict[str, Any]]  # name -> manifest entry of a file an earlier sync downloaded
    carried: list[dict[str, Any]]  # manifest entries that did not come from Azure (e.g. a placed val shard)
    present: list[str]  # names in the data dir

    @property
    def protected(self) -> dict[str, str]:
        """Local names that did not come from Azure -> their role: a blob of the same name never overwrites them."""
        return {s["name"]: str(s.get("role", "train")) for s in self.carried}


def read_local(data_dir: str) -> _Local:
    """The manifest's and the journal's records of ``data_dir`` (an unreadable manifest counts as none)."""
    if not os.path.isdir(data_dir):
        return _Local({}, [], [])
    try:
        manifest = read_manifest(data_dir)
    except ArmsError:
        manifest = None  # unreadable: rewritten from the container at the end of this sync
    shards = (manifest or {}).get("shards", [])
    records = {s["name"]: s for s in shards if isinstance(s.get("azure"), dict)}
    records.update(_read_journal(data_dir))
    carried = [s for s in shards if not isinstance(s.get("azure"), dict)]
    return _Local(records, carried, sorted(os.listdir(data_dir)))


def record_matches(record: dict[str, Any] | None, blob: BlobInfo) -> bool:
    """Whether ``record`` describes this version of the blob (etag, last_modified, size, MD5 when both have one)."""
    az = (record or {}).get("azure", {})
    return bool(
        record
        and az.get("etag") == blob.etag
        and az.get("last_modified") == blob.last_modified
        and record.get("bytes") == blob.size
        and (blob.md5 is None or az.get("md5") in (None, blob.md5))
    )


@dataclass
class _Plan:
    accepted: list[BlobInfo]
    rejected: list[dict[str, str]]
    fetch: list[BlobInfo]
    skip: list[str]
    adopt: dict[str, dict[str, Any]]
    remove: list[str]
    carried: list[dict[str, Any]]
    unmanaged: list[str]
    records: dict[str, dict[str, Any]]


def plan_sync(
    accepted: list[BlobInfo],
    rejected: list[dict[str, str]],
    local: _Local,
    verified: set[str],
    adopted: dict[str, dict[str, Any]],
) -> _Plan:
    """What the sync does, from plain data: ``verified`` are the recorded files whose bytes match their
    record, ``adopted`` the unrecorded files whose MD5 equals their blob's. Everything else accepted is
    fetched, largest first (shortest makespan); files an earlier sync downloaded whose blob is gone are removed.
    """
    want = {b.rel for b in accepted}
    protected = local.protected
    fetch = sorted(
        (b for b in accepted if b.rel not in verified and b.rel not in adopted), key=lambda b: (-b.size, b.rel)
    )
    present = set(local.present)
    remove = sorted(n for n in local.records if n not in want and n not in protected and n in present)
    known = want | set(protected) | set(local.records)
    unmanaged = sorted(e for e in local.present if e.endswith(".parquet") and e not in known)
    skip = sorted(verified & want)
    return _Plan(accepted, rejected, fetch, skip, adopted, remove, local.carried, unmanaged, local.records)


def local_facts(path: str) -> tuple[str | None, dict[str, Any]]:
    """(why the file is no nanochat shard or None, its rows and row groups) from its parquet footer."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    try:
        meta = pq.ParquetFile(path).metadata
    except (pa.ArrowException, OSError) as exc:
        return f"it is not a readable parquet file ({str(exc).splitlines()[0]})", {}
    problem = shard_problem(meta.schema.to_arrow_schema())
    return problem, {"rows": meta.num_rows, "row_groups": meta.num_row_groups}


def blob_record(blob: BlobInfo, facts: dict[str, Any], sha256: str) -> dict[str, Any]:
    """A landed blob's manifest entry: the keys of arms_manifest.shard_entry, plus the blob's facts under "azure"."""
    return {
        "name": blob.rel,
        "rows": facts["rows"],
        "row_groups": facts["row_groups"],
        "bytes": blob.size,
        "sha256": sha256,
        "role": "train",
        "azure": blob.facts(),
    }


# --------------------------------------------------------------------------------------------
# Fetching: blobs to files, in parallel, verified, retried


class _Fetcher:
    """Downloads blobs into ``data_dir``: the client, footers, one blob with retries, many at once."""

    def __init__(
        self,
        container: str,
        data_dir: str,
        auth: AzureAuth,
        report: _Reporter,
        *,
        concurrency: int,
        chunk_concurrency: int,
        max_retries: int,
        retry_backoff: float,
        verify_content_md5: bool,
        on_blob_done: Callable[[str], None] | None,
        max_single_get_size: int | None,
        max_chunk_get_size: int | None,
    ) -> None:
        self.container = container
        self.data_dir = data_dir
        self.auth = auth
        self.report = report
        self.concurrency = concurrency
        self.chunk_concurrency = chunk_concurrency
        self.max_retries = max_retries
        self.retry_backoff = retry_backoff
        self.backoff = _Backoff(retry_backoff)
        self.verify_content_md5 = verify_content_md5
        self.on_blob_done = on_blob_done
        self._stop = threading.Event()
        # ``concurrency`` downloads hold the network at once; waiting for the hash, fsync, the footer
        # check and the rename happen outside it, on the extra threads of the pool (see download_all)
        self._network = threading.BoundedSemaphore(concurrency)
        self._client: Any = None
        self._single_get = max_single_get_size or SINGLE_GET_BYTES
        self._chunk_get = max_chunk_get_size or CHUNK_GET_BYTES

    @property
    def client(self) -> Any:
        if self._client is None:
            pool = self.concurrency * (self.chunk_concurrency + 1) + 4  # streams' ranges, footer reads
            self._client = container_client(
                self.auth,
                self.container,
                pool_size=pool,
                max_retries=self.max_retries,
                retry_backoff=self.retry_backoff,
                max_single_get_size=self._single_get,
                max_chunk_get_size=self._chunk_get,
            )
        return self._client

    def sdk(self, what: str, fn: Callable[[], Any]) -> Any:
        try:
            return fn()
        except ArmsError:
            raise
        except Exception as exc:  # SDK errors become sentences, scrubbed
            raise explain(exc, self.auth, self.container, what, self.data_dir) from None

    def bad_shard(self, exc: _BadShard) -> ArmsError:
        return ArmsError(
            f"blob {exc.blob!r} in container {self.container!r} is not a nanochat shard: {exc.why}; nanochat "
            "reads the string column 'text' of every *.parquet file in the data dir, so remove or fix that blob "
            "(or sync a prefix without it). Finished files are kept; nothing half-written is left."
        )

    def check_footer(self, blob: BlobInfo) -> None:
        """Read the blob's parquet footer with ranged reads; raise _BadShard when it is no shard."""
        bc = self.client.get_blob_client(blob.name)
        from azure.core import MatchConditions

        def tail(n: int) -> bytes:
            n = min(n, blob.size)
            return bc.download_blob(
                offset=blob.size - n, length=n, etag=blob.etag, match_condition=MatchConditions.IfNotModified
            ).readall()

        if blob.size < 12:
            raise _BadShard(blob.name, f"it is {blob.size} bytes, too small for a parquet file")
        try:
            meta, need = footer_metadata(tail(TAIL_READ), blob.size)
            if meta is None:
                meta, _ = footer_metadata(tail(need), blob.size)
        except ValueError as exc:
            raise _BadShard(blob.name, f"it is not a parquet file ({exc})") from None
        problem = shard_problem(meta.schema.to_arrow_schema())
        if problem:
            raise _BadShard(blob.name, problem)

    def check_footers(self, fetch: list[BlobInfo]) -> None:
        if not fetch:
            return
        with ThreadPoolExecutor(max_workers=min(self.concurrency, len(fetch))) as pool:
            futures = {pool.submit(self.check_footer, b): b for b in fetch}
            for fut in futures:
                try:
                    fut.result()
                except _BadShard as exc:
                    raise self.bad_shard(exc) from None
                except Exception as exc:
                    raise explain(
                        exc, self.auth, self.container, f"reading the footer of {futures[fut].name}"
                    ) from None

    def _stream(self, blob: BlobInfo, fd: int, writer: HashingWriter) -> str:
        """Stream the blob into ``writer``, check what arrived, fsync; returns its sha256."""
        from azure.core import MatchConditions

        bc = self.client.get_blob_client(blob.name)
        with self._network:  # only the requests hold a download slot
            if self._stop.is_set():
                raise _Cancelled()
            stream = bc.download_blob(
                max_concurrency=self.chunk_concurrency, etag=blob.etag, match_condition=MatchConditions.IfNotModified
            )
            stream.readinto(writer)
        sha, md5, hashed = writer.digests()
        if hashed != blob.size:
            raise _RetryableMismatch(f"{hashed} bytes arrived, the blob has {blob.size}")
        if writer.md5 is not None and md5 != blob.md5:
            raise _RetryableMismatch("the bytes that arrived do not match the blob's Content-MD5")
        os.fsync(fd)
        return sha

    def fetch_once(self, blob: BlobInfo) -> dict[str, Any]:
        """One attempt: a temporary file (arms_datadir.tmp_name), hashed as it streams, checked, renamed."""
        if blob.size > self._single_get:
            # before committing to a large download; outside a download slot, so its round trip
            # overlaps the blobs streaming (the client's pool has a connection for it)
            self.check_footer(blob)
        tmp = tmp_path(os.path.join(self.data_dir, blob.rel))
        fd = os.open(tmp, os.O_RDWR | os.O_CREAT | os.O_EXCL, 0o644)  # read back to hash out-of-order ranges
        check_md5 = self.verify_content_md5 and blob.md5 is not None
        writer = HashingWriter(fd, want_md5=check_md5, on_bytes=self.report.add_bytes)
        try:
            try:
                sha = self._stream(blob, fd, writer)
            finally:
                writer.close()  # also when the download broke off: the hasher thread ends
                os.close(fd)
            problem, facts = local_facts(tmp)
            if problem:
                raise _BadShard(blob.name, problem)
            os.replace(tmp, os.path.join(self.data_dir, blob.rel))
        except BaseException:
            self.report.add_bytes(-writer.written)
            with contextlib.suppress(FileNotFoundError):
                os.unlink(tmp)
            raise
        return blob_record(blob, facts, sha)

    def fetch(self, blob: BlobInfo) -> dict[str, Any]:
        """The blob, started again after a transient failure up to ``max_retries`` times."""
        attempt = 0
        while True:
            if self._stop.is_set():
                raise _Cancelled()
            try:
                return self.fetch_once(blob)
            except (_BadShard, _Cancelled):
                raise
            except Exception as exc:
                if self._stop.is_set() or attempt >= self.max_retries or not _transient(exc):
                    raise
                attempt += 1
                if self._stop.wait(self.backoff(attempt)):
                    raise _Cancelled() from None

    def _landed(self, fut: Future[dict[str, Any]], blob: BlobInfo) -> tuple[dict[str, Any] | None, ArmsError | None]:
        """(the blob's record, None) when it landed, (None, the sentence) when it failed, (None, None) if cancelled."""
        try:
            return fut.result(), None
        except (_Cancelled, CancelledError):
            return None, None
        except _BadShard as exc:
            return None, self.bad_shard(exc)
        except Exception as exc:
            return None, explain(exc, self.auth, self.container, f"downloading {blob.name}", self.data_dir)

    def download_all(
        self,
        fetch: list[BlobInfo],
        records: dict[str, dict[str, Any]],
        fetched: dict[str, dict[str, Any]],
        save_journal: Callable[[], None],
    ) -> ArmsError | None:
        """Fetch ``fetch`` in parallel; each landed blob goes into ``fetched`` and ``records`` at once.

        Returns the first error as a sentence (the others stop: nothing new starts, no retry waits).
        ``save_journal`` is called every JOURNAL_INTERVAL seconds while blobs land.
        """
        if not fetch:
            return None
        self.report.start(len(fetch), sum(b.size for b in fetch), "azure sync: downloading")
        error: ArmsError | None = None
        last_journal = time.monotonic()
        # twice the download slots: while one thread finishes a blob (hash, fsync, footer, rename),
        # another already holds its slot and streams the next one
        pool = ThreadPoolExecutor(max_workers=min(2 * self.concurrency, len(fetch)), thread_name_prefix="azsync")
        try:
            pending: dict[Future[dict[str, Any]], BlobInfo] = {pool.submit(self.fetch, b): b for b in fetch}
            while pending:
                done, _ = wait(pending, return_when=FIRST_COMPLETED)
                for fut in done:
                    blob = pending.pop(fut)
                    entry, failure = self._landed(fut, blob)
                    error = error or failure
                    if entry is not None:
                        fetched[blob.rel] = records[blob.rel] = entry
                        self.report.blob_done()
                        if self.on_blob_done:
                            self.on_blob_done(blob.rel)
                    if error is not None and not self._stop.is_set():
                        self._stop.set()
                        for other in pending:
                            other.cancel()
                if time.monotonic() - last_journal >= JOURNAL_INTERVAL:
                    save_journal()
                    last_journal = time.monotonic()
        except BaseException:
            self._stop.set()
            raise
        finally:
            pool.shutdown(wait=True, cancel_futures=True)
            sweep_leftovers(self.data_dir)
        return error


# --------------------------------------------------------------------------------------------
# The sync: list, plan, then check (check mode) or apply


class AzureSync:
    """One sync of ``container``/``prefix`` into ``data_dir``. See the module docstring."""

    def __init__(
        self,
        container: str,
        data_dir: str,
        auth: AzureAuth,
        *,
        prefix: str = "",
        download_mode: str = "bulk",
        concurrency: int = DEFAULT_CONCURRENCY,
        chunk_concurrency: int | None = None,
        max_retries: int = 5,
        retry_backoff: float = 1.0,
        deep_verify: bool = False,
        progress_file: str | None = None,
        echo: Callable[[str], None] | None = None,
        progress_interval: float = 2.0,
        on_blob_done: Callable[[str], None] | None = None,
        verify_content_md5: bool = False,
        max_single_get_size: int | None = None,
        max_chunk_get_size: int | None = None,
    ) -> None:
        self.container = check_container_name(container)
        self.prefix = normalize_prefix(prefix)
        self.data_dir = os.path.abspath(os.path.expanduser(data_dir))
        self.auth = auth
        if download_mode not in DOWNLOAD_MODES:
            raise ArmsError(
                f"download_mode {download_mode!r} is not supported; expected one of {', '.join(DOWNLOAD_MODES)}."
            )
        for label, value, low in (("concurrency", concurrency, 1), ("max_retries", max_retries, 0)):
            if value < low:
                raise ArmsError(f"{label} is {value}; expected an integer >= {low}.")
        if chunk_concurrency is not None and chunk_concurrency < 1:
            raise ArmsError(f"chunk_concurrency is {chunk_concurrency}; expected an integer >= 1.")
        self.download_mode = download_mode
        self.deep_verify = deep_verify
        self.report = _Reporter(progress_file, echo, progress_interval)
        self.fetcher = _Fetcher(
            self.container,
            self.data_dir,
            auth,
            self.report,
            concurrency=concurrency,
            chunk_concurrency=chunk_concurrency or 4,
            max_retries=max_retries,
            retry_backoff=retry_backoff,
            verify_content_md5=verify_content_md5,
            on_blob_done=on_blob_done,
            max_single_get_size=max_single_get_size,
            max_chunk_get_size=max_chunk_get_size,
        )

    @property
    def source(self) -> dict[str, Any]:
        return {"account": self.auth.account_name, "container": self.container, "prefix": self.prefix}

    def _where(self) -> str:
        return f"prefix {self.prefix!r} of container {self.container!r} ({self.auth.account_name})"

    # -- listing and planning ------------------------------------------------------------
    def list_blobs(self) -> list[BlobInfo]:
        """Every blob under the prefix (the SDK retries transient errors with backoff)."""

        def run() -> list[BlobInfo]:
            pages = self.fetcher.client.list_blobs(name_starts_with=self.prefix or None, results_per_page=5000)
            return [blob_info(p, self.prefix) for p in pages]

        return self.fetcher.sdk("listing blobs", run)

    def plan(self, blobs: list[BlobInfo]) -> _Plan:
        """Read what the data dir holds (verifying recorded files, hashing adoptable ones), then :func:`plan_sync`."""
        if not blobs:
            raise ArmsError(
                f"there are no blobs under {self._where()}; check the prefix (empty means the whole "
                "container; a prefix names a folder)."
            )
        local = read_local(self.data_dir)
        accepted, rejected = classify(blobs, local.protected)
        if not accepted:
            shown = "; ".join(f"{r['name']}: {r['reason']}" for r in rejected[:3])
            raise ArmsError(
                f"none of the {len(blobs)} blobs under {self._where()} is a .parquet shard directly under "
                f"the prefix ({shown}); check the prefix."
            )
        candidates = [local.records[b.rel] for b in accepted if record_matches(local.records.get(b.rel), b)]
        verified: set[str] = set()
        if candidates:
            verified = set(verify_data_dir(self.data_dir, {"shards": candidates}, use_cache=not self.deep_verify).ok)
        # unrecorded local files that already hold the blob's bytes (journal lost, manifest removed)
        adopted: dict[str, dict[str, Any]] = {}
        for blob in accepted:
            path = os.path.join(self.data_dir, blob.rel)
            if blob.md5 and blob.rel not in local.records and os.path.isfile(path):
                entry = self._adopt(blob, path) if os.path.getsize(path) == blob.size else None
                if entry:
                    adopted[blob.rel] = entry
        return plan_sync(accepted, rejected, local, verified, adopted)

    def _adopt(self, blob: BlobInfo, path: str) -> dict[str, Any] | None:
        sha, md5 = hash_file(path, want_md5=True)
        if md5 != blob.md5:
            return None
        problem, facts = local_facts(path)
        if problem:
            raise _BadShard(blob.name, problem)
        return blob_record(blob, facts, sha)

    # -- the whole run -------------------------------------------------------------------
    def run(self, check_mode: bool = False) -> SyncResult:
        started = time.monotonic()
        check_folder_for_writing(self.data_dir, "data_dir")  # before any disk sums
        blobs = self.list_blobs()
        self.report.phase("azure sync: planning")
        try:
            plan = self.plan(blobs)
        except _BadShard as exc:
            raise self.fetcher.bad_shard(exc) from None
        if plan.fetch:
            self._check_disk(plan.fetch)
        if check_mode:
            self.fetcher.check_footers(plan.fetch)
            unchanged = self._manifest_unchanged(plan, {**{n: plan.records[n] for n in plan.skip}, **plan.adopt})
            changed = bool(plan.fetch or plan.remove or not unchanged)
            fetched = {b.rel: b.size for b in plan.fetch}
            return self._result(plan, fetched, changed, started, check_mode=True)
        landed, changed = self._apply(plan)
        self.report.finish("azure sync: done")
        return self._result(plan, {n: r["bytes"] for n, r in landed.items()}, changed, started)

    def _apply(self, plan: _Plan) -> tuple[dict[str, dict[str, Any]], bool]:
        """Carry the plan out under the folder's lock; (the records of the blobs fetched, whether anything changed)."""
        try:
            os.makedirs(self.data_dir, exist_ok=True)
        except OSError as exc:
            raise disk_error(exc, self.data_dir, "creating the data dir") from None
        with claimed_folder(self.data_dir):
            # the journal only ever names files whose bytes match their record
            journal = {n: plan.records[n] for n in plan.skip}
            journal.update(plan.adopt)
            for name in plan.remove:  # downloaded by an earlier sync, gone from the container
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(os.path.join(self.data_dir, name))
            _write_journal(self.data_dir, self.source, journal)
            fetched: dict[str, dict[str, Any]] = {}
            try:
                error = self.fetcher.download_all(
                    plan.fetch, journal, fetched, lambda: _write_journal(self.data_dir, self.source, journal)
                )
            finally:  # also on Ctrl-C: what finished is recorded, so the next run does not fetch it again
                _remember_many(self.data_dir, [(n, r["sha256"]) for n, r in {**plan.adopt, **fetched}.items()])
                _write_journal(self.data_dir, self.source, journal)
                fsync_dir(self.data_dir)
            if error is not None:
                self.report.finish("azure sync: failed")
                raise error
            manifest = self._manifest(plan, journal)
            try:
                old = read_manifest(self.data_dir)
            except ArmsError:
                old = None  # unreadable: replaced
            if old != manifest:
                write_manifest(self.data_dir, manifest)
        return fetched, bool(fetched or plan.remove or old != manifest)

    def _check_disk(self, fetch: list[BlobInfo]) -> None:
        need = sum(b.size for b in fetch)
        free = free_bytes(self.data_dir)
        if need > free:
            raise ArmsError(
                f"not enough disk space in {self.data_dir}: {len(fetch)} blobs to fetch need {human_bytes(need)}, "
                f"only {human_bytes(free)} free; free some space or choose a data_dir on a larger disk."
            )

    def _manifest(self, plan: _Plan, records: Mapping[str, dict[str, Any]]) -> dict[str, Any]:
        shards = [records[b.rel] for b in plan.accepted] + plan.carried
        return build_manifest(
            kind=KIND,
            source=self.source,
            params={"download_mode": self.download_mode},
            shards=shards,
            stats={"blobs_listed": len(plan.accepted) + len(plan.rejected), "blobs_rejected": len(plan.rejected)},
        )

    def _manifest_unchanged(self, plan: _Plan, records: Mapping[str, dict[str, Any]]) -> bool:
        if plan.fetch or not os.path.isdir(self.data_dir):
            return False
        try:
            return read_manifest(self.data_dir) == self._manifest(plan, records)
        except (ArmsError, KeyError):
            return False

    def _result(
        self, plan: _Plan, fetched: dict[str, int], changed: bool, started: float, check_mode: bool = False
    ) -> SyncResult:
        """The result of a run (or, in check mode, of the run the plan would make): the same plan, the same words."""
        present = len(plan.skip) + len(plan.adopt)
        result = SyncResult(
            changed=changed,
            data_dir=self.data_dir,
            manifest=manifest_path(self.data_dir),
            blobs=len(plan.accepted),
            downloaded=sorted(fetched),
            already_present=present,
            bytes_downloaded=sum(fetched.values()),
            rejected=plan.rejected,
            verified=present if check_mode else present + len(fetched),
            removed=plan.remove,
            adopted=sorted(plan.adopt),
            unmanaged=plan.unmanaged,
            seconds=time.monotonic() - started,
        )
        result.msg = self._message(result, check_mode=check_mode)
        return result

    def _message(self, r: SyncResult, check_mode: bool = False) -> str:
        verb = "would download" if check_mode else "downloaded"
        parts = [
            f"{r.blobs} shards from {self._where()}: {verb} {len(r.downloaded)} ({human_bytes(r.bytes_downloaded)})",
            f"{r.already_present} already present and verified",
        ]
        if r.seconds > 0 and r.bytes_downloaded and not check_mode:
            parts.append(f"{r.bytes_downloaded / 1e6 / r.seconds:.1f} MB/s over {human_seconds(r.seconds)}")
        if r.adopted:
            parts.append(f"{len(r.adopted)} adopted by Content-MD5")
        if r.removed:
            parts.append(f"{'would remove' if check_mode else 'removed'} {len(r.removed)} no longer in the container")
        if r.rejected:
            parts.append(f"{len(r.rejected)} other blobs left alone")
        if r.unmanaged:
            parts.append(
                f"WARNING: {len(r.unmanaged)} parquet files in the data dir are not in the manifest "
                f"({', '.join(r.unmanaged[:3])}) and would be read by nanochat"
            )
        return "; ".join(parts) + "."


# --------------------------------------------------------------------------------------------
# skip_download: verify what is there against the manifest, touch nothing remote


@dataclass(frozen=True)
class Switch:
    """How the caller's user sets and unsets an option, in the words of where the sync was started.

    A refusal caused by the option names these: ``--skip-download`` on the CLI, the playbook's
    ``-e arms_skip_download=false`` for the module the playbooks call.
    """

    name: str  # what is set, e.g. "--skip-download"
    off: str  # how to run without it, e.g. "without --skip-download"


SKIP_DOWNLOAD = Switch("skip_download", "without skip_download")  # the Python API's words


def verify_only(
    container: str,
    data_dir: str,
    *,
    prefix: str = "",
    deep_verify: bool = False,
    progress_file: str | None = None,
    echo: Callable[[str], None] | None = None,
    switch: Switch = SKIP_DOWNLOAD,
) -> SyncResult:
    """The runbook's ``--skip-download``: no download, but every shard must match the manifest.

    ``switch`` names the option in the caller's words in every refusal.
    """
    container = check_container_name(container)
    prefix = normalize_prefix(prefix)
    data_dir = os.path.abspath(os.path.expanduser(data_dir))
    started = time.monotonic()
    writer = ProgressWriter(progress_file, phase="azure sync: verifying (skip_download)", unit="shards", echo=echo)
    manifest = read_manifest(data_dir) if os.path.isdir(data_dir) else None
    if manifest is None:
        raise ArmsError(
            f"{switch.name} is set but {data_dir} has no manifest.json, so its files cannot be checked; run "
            f"the sync once {switch.off}."
        )
    src = manifest.get("source") or {}
    if (
        manifest.get("kind") != KIND
        or src.get("container") != container
        or normalize_prefix(src.get("prefix")) != prefix
    ):
        raise ArmsError(
            f"{switch.name} is set but {data_dir} holds {manifest.get('kind')} data from container "
            f"{src.get('container')!r} prefix {src.get('prefix')!r}, not container {container!r} prefix {prefix!r}; "
            f"run {switch.off} or fix container/prefix."
        )
    writer.update(force=True, total=len(manifest["shards"]))
    check = verify_data_dir(data_dir, manifest, use_cache=not deep_verify)
    writer.finish(done=len(check.ok))
    if check.bad or check.extra:
        extra = (
            f"; {len(check.extra)} parquet files not in the manifest would also be read by nanochat "
            f"({', '.join(check.extra[:5])})"
            if check.extra
            else ""
        )
        bad = "; ".join(
            f"{label}: {', '.join(names[:10])}{' ...' if len(names) > 10 else ''}"
            for label, names in (
                ("missing", check.missing),
                ("wrong size", check.wrong_size),
                ("wrong sha256", check.wrong_hash),
            )
            if names
        )
        raise ArmsError(
            f"{switch.name} is set but {len(check.bad)} of {len(manifest['shards'])} shards in {data_dir} do not "
            f"match manifest.json ({bad or 'none'}){extra}; "
            + (f"run {switch.off} to fetch them again" if check.bad else "")
            + (" and " if check.bad and check.extra else "")
            + ("remove the extra files" if check.extra else "")
            + "."
        )
    azure = [s for s in manifest["shards"] if isinstance(s.get("azure"), dict)]
    result = SyncResult(
        changed=False,
        data_dir=data_dir,
        manifest=manifest_path(data_dir),
        blobs=len(azure),
        already_present=len(azure),
        verified=len(check.ok),
        seconds=time.monotonic() - started,
    )
    result.msg = (
        f"skip_download: {len(check.ok)} shards in {data_dir} match manifest.json "
        f"({check.hashed} re-hashed, the rest unchanged since last verified); nothing downloaded."
    )
    return result


def sync(
    container: str,
    data_dir: str,
    *,
    prefix: str = "",
    connection_string: str | None = None,
    account_url: str | None = None,
    sas_token: str | None = None,
    account_key: str | None = None,
    skip_download: bool = False,
    check_mode: bool = False,
    env: Mapping[str, str] | None = None,
    **options: Any,
) -> SyncResult:
    """The module's and the CLI's entry point: resolve credentials, then sync or verify.

    ``options`` go to :class:`AzureSync` (download_mode, concurrency, chunk_concurrency,
    max_retries, retry_backoff, deep_verify, progress_file, echo, on_blob_done, ...); ``switch``
    (a :class:`Switch`, how the caller's user unsets skip_download) goes to :func:`verify_only` only.
    """
    if skip_download:
        keep = {k: options[k] for k in ("deep_verify", "progress_file", "echo", "switch") if k in options}
        if options.get("download_mode", "bulk") not in DOWNLOAD_MODES:
            raise ArmsError(f"download_mode {options['download_mode']!r} is not supported; expected bulk.")
        return verify_only(container, data_dir, prefix=prefix, **keep)
    check_container_name(container)
    if check_mode:
        options["progress_file"] = None  # check mode writes nothing
    options.pop("switch", None)
    auth = resolve_auth(connection_string, account_url, sas_token, account_key, env=env)
    try:
        return AzureSync(container, data_dir, auth, prefix=prefix, **options).run(check_mode=check_mode)
    except ArmsError as exc:
        raise ArmsError(auth.scrub(str(exc))) from None
    except OSError as exc:  # the journal, manifest or cache could not be written (a full disk)
        if isinstance(exc, ConnectionError | TimeoutError):
            raise
        raise ArmsError(auth.scrub(str(disk_error(exc, data_dir, "writing the sync's records")))) from None
