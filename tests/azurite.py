"""A real Azurite blob service for tests and benchmarks: free port, own --location, always killed.

``AzuriteServer`` starts ``azurite-blob`` (installed by the lab and CI with
``npm install --prefix .lab/npm azurite``) on 127.0.0.1 at a free port, with its data under a
folder of its own. It can be killed for real (SIGKILL, as a crashed service) and started again on
the same port and folder, which keeps the blobs. ``running_azurite`` is the context manager a test
module wraps in a fixture; ``azurite_or_skip`` turns a missing binary into a skip outside CI and a
failure in CI (env ``CI=true``).

The account is Azurite's documented development account ``devstoreaccount1``; its key is public.
"""

from __future__ import annotations

import atexit
import contextlib
import os
import signal
import socket
import subprocess
import time
from collections.abc import Iterator

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
AZURITE_BIN = os.path.join(ROOT, ".lab", "npm", "node_modules", ".bin", "azurite-blob")

ACCOUNT_NAME = "devstoreaccount1"
# The well-known Azurite development key (documented publicly; not a secret).
ACCOUNT_KEY = "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw=="

_LIVE: set[int] = set()


def _kill_leftovers() -> None:  # last resort if a test run is interrupted
    for pid in list(_LIVE):
        with contextlib.suppress(OSError):
            os.killpg(pid, signal.SIGKILL)


atexit.register(_kill_leftovers)


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def azurite_binary() -> str | None:
    return AZURITE_BIN if os.access(AZURITE_BIN, os.X_OK) else None


def azurite_or_skip() -> str:
    """The azurite-blob path; skip the test when it is missing (fail instead when CI=true)."""
    import pytest

    binary = azurite_binary()
    if binary:
        return binary
    reason = f"Azurite is not installed at {AZURITE_BIN} (run: npm install --prefix .lab/npm azurite)"
    if os.environ.get("CI", "").lower() == "true":
        pytest.fail(reason)
    pytest.skip(reason)
    raise AssertionError("unreachable")


class AzuriteServer:
    """One azurite-blob process. ``start``/``kill``/``stop``/``restart`` keep port and location."""

    def __init__(self, location: str, port: int | None = None, binary: str | None = None) -> None:
        self.location = location
        self.port = port or free_port()
        self.binary = binary or azurite_binary() or AZURITE_BIN
        self.proc: subprocess.Popen[bytes] | None = None
        os.makedirs(location, exist_ok=True)

    @property
    def account_name(self) -> str:
        return ACCOUNT_NAME

    @property
    def account_key(self) -> str:
        return ACCOUNT_KEY

    @property
    def account_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/{ACCOUNT_NAME}"

    @property
    def connection_string(self) -> str:
        return (
            f"DefaultEndpointsProtocol=http;AccountName={ACCOUNT_NAME};AccountKey={ACCOUNT_KEY};"
            f"BlobEndpoint={self.account_url};"
        )

    def start(self, timeout: float = 30.0) -> None:
        if self.proc and self.proc.poll() is None:
            return
        log = open(os.path.join(self.location, "azurite.log"), "ab")
        cmd = [
            self.binary,
            "--blobHost",
            "127.0.0.1",
            "--blobPort",
            str(self.port),
            "--location",
            self.location,
            "--silent",
            "--loose",
            "--skipApiVersionCheck",
            "--disableTelemetry",
        ]
        self.proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        log.close()
        _LIVE.add(self.proc.pid)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"azurite-blob exited with {self.proc.returncode}; see {log.name}")
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.5):
                    return
            except OSError:
                time.sleep(0.1)
        self.kill()
        raise RuntimeError(f"azurite-blob did not listen on 127.0.0.1:{self.port} within {timeout:.0f}s")

    def _signal(self, sig: int) -> None:
        if not self.proc:
            return
        if self.proc.poll() is None:
            with contextlib.suppress(OSError):
                os.killpg(self.proc.pid, sig)
            try:
                self.proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(OSError):
                    os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(timeout=15)
        _LIVE.discard(self.proc.pid)
        self.proc = None

    def kill(self) -> None:
        """SIGKILL, as a crash: in-flight requests break, nothing is flushed."""
        self._signal(signal.SIGKILL)

    def stop(self) -> None:
        """SIGTERM: Azurite saves its metadata and exits."""
        self._signal(signal.SIGTERM)

    def restart(self) -> None:
        self.stop()
        self.start()

    @property
    def running(self) -> bool:
        return bool(self.proc and self.proc.poll() is None)

    def service_client(self, **kwargs: object) -> object:
        from azure.storage.blob import BlobServiceClient

        return BlobServiceClient.from_connection_string(self.connection_string, **kwargs)


@contextlib.contextmanager
def running_azurite(location: str, binary: str | None = None) -> Iterator[AzuriteServer]:
    """An Azurite that is always killed when the block ends (also on errors and interrupts)."""
    server = AzuriteServer(location, binary=binary)
    try:
        server.start()
        yield server
    finally:
        server.kill()


def shard_bytes(rows: int = 64, text_bytes: int = 200, seed: int = 0, row_group_size: int = 16) -> bytes:
    """A small nanochat-style shard (parquet, string column ``text``) as bytes; same args, same bytes.

    The text is random base64 so it does not compress: ``rows x text_bytes`` is about the file size.
    """
    import base64
    import io
    import random

    import pyarrow as pa
    import pyarrow.parquet as pq

    rng = random.Random(seed)
    raw = rng.randbytes(rows * text_bytes * 3 // 4 + 4)
    blob = base64.b64encode(raw).decode()
    texts = [blob[i * text_bytes : (i + 1) * text_bytes] for i in range(rows)]
    buf = io.BytesIO()
    pq.write_table(pa.table({"text": texts}), buf, row_group_size=row_group_size, compression="none")
    return buf.getvalue()


def other_parquet_bytes() -> bytes:
    """A parquet file that is not a nanochat shard (no ``text`` column)."""
    import io

    import pyarrow as pa
    import pyarrow.parquet as pq

    buf = io.BytesIO()
    pq.write_table(pa.table({"id": [1, 2, 3], "body": ["a", "b", "c"]}), buf)
    return buf.getvalue()


def upload(
    server: AzuriteServer, container: str, blobs: dict[str, bytes], *, create: bool = True, persist: bool = False
) -> None:
    """Upload ``blobs`` (name -> bytes; Azurite sets Content-MD5). ``persist`` restarts Azurite
    gracefully after, so its metadata is on disk: a SIGKILL loses what Azurite wrote in its last ~5 s
    (Loki autosave), which a test that kills Azurite must not depend on."""
    from concurrent.futures import ThreadPoolExecutor

    from azure.core.exceptions import ResourceExistsError

    svc = server.service_client()
    cc = svc.get_container_client(container)  # type: ignore[attr-defined]
    if create:
        with contextlib.suppress(ResourceExistsError):
            cc.create_container()
    with ThreadPoolExecutor(8) as pool:
        list(pool.map(lambda kv: cc.upload_blob(kv[0], kv[1], overwrite=True), blobs.items()))
    if persist:
        server.restart()
