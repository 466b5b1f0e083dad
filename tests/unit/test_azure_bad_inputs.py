"""Bad inputs to the Azure sync get a sentence, never a traceback or a wrong diagnosis (issue 15)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from ansible.module_utils.arms_azure import resolve_auth, sync
from ansible.module_utils.arms_common import ArmsError
from azurite import AzuriteServer, azurite_or_skip, running_azurite, shard_bytes, upload
from modtest import run_module

ROOT = Path(__file__).resolve().parents[2]
KEY = "a2V5a2V5a2V5"  # base64 of "keykeykey": a well-formed, made-up account key


@pytest.fixture(scope="module")
def azurite(tmp_path_factory: pytest.TempPathFactory) -> Iterator[AzuriteServer]:
    binary = azurite_or_skip()
    with running_azurite(str(tmp_path_factory.mktemp("azurite")), binary=binary) as server:
        yield server


@pytest.mark.parametrize(
    ("url", "said"),
    [
        ("https://[::1", "is not a URL (Invalid IPv6 URL)"),
        ("https://[::1?sv=2024&sig=SECRETSIG", "is not a URL (Invalid IPv6 URL)"),
        ("https://acct.blob.core.windows.net:99999", "is not a URL (Port out of range"),
        ("ftp://acct.blob.core.windows.net", "is not an http(s) URL with a host"),
        ("https://", "is not an http(s) URL with a host"),
    ],
)
def test_a_broken_account_url_is_a_sentence(url: str, said: str, tmp_path: Path, capsys) -> None:
    with pytest.raises(ArmsError, match=r"expected https://<account>\.blob\.core\.windows\.net") as exc:
        resolve_auth(account_url=url, sas_token=None if "?" in url else "sv=1&sig=x")
    assert said in str(exc.value) and "SECRETSIG" not in str(exc.value)
    res = run_module(
        "nanochat_azure_sync",
        {"container": "shards", "data_dir": str(tmp_path / "d"), "account_url": url, "sas_token": "sv=1&sig=x"}
        if "?" not in url
        else {"container": "shards", "data_dir": str(tmp_path / "d"), "account_url": url},
        capsys,
    )
    assert res["failed"] and said in res["msg"] and "SECRETSIG" not in json.dumps(res)


@pytest.mark.parametrize(
    ("conn", "said"),
    [
        (f"DefaultEndpointsProtocol=ftp;AccountName=acct;AccountKey={KEY};EndpointSuffix=core.windows.net", "ftp"),
        ("BlobEndpoint=ftp://acct.example;SharedAccessSignature=sv=1&sig=SECRETSIG", "BlobEndpoint"),
        ("BlobEndpoint=https://[::1;SharedAccessSignature=sv=1&sig=SECRETSIG", "BlobEndpoint"),
    ],
)
def test_a_connection_string_with_another_protocol_is_refused_not_turned_into_https_ftp(conn: str, said: str) -> None:
    with pytest.raises(ArmsError) as exc:
        resolve_auth(connection_string=conn)
    assert said in str(exc.value) and "https://ftp://" not in str(exc.value)
    assert KEY not in str(exc.value) and "SECRETSIG" not in str(exc.value)


def test_a_data_dir_on_proc_is_named_for_what_it_is_not_a_lack_of_disk(azurite: AzuriteServer) -> None:
    upload(azurite, "procdir", {"top/shard_00000.parquet": shard_bytes(seed=1)})
    with pytest.raises(ArmsError) as exc:
        sync("procdir", "/proc/x", prefix="top", connection_string=azurite.connection_string)
    assert "holds no files" in str(exc.value) and "not enough disk" not in str(exc.value)


def test_a_data_dir_that_is_a_file_is_named(tmp_path: Path) -> None:
    (tmp_path / "f").write_text("x")
    conn = f"DefaultEndpointsProtocol=http;AccountName=acct;AccountKey={KEY};BlobEndpoint=http://127.0.0.1:1/acct"
    with pytest.raises(ArmsError, match="is a file, not a folder"):
        sync("shards", str(tmp_path / "f" / "d"), connection_string=conn, max_retries=0)
    with pytest.raises(ArmsError, match="exists and is not a folder"):
        sync("shards", str(tmp_path / "f"), connection_string=conn, max_retries=0)


SYNC_ON_A_FULL_DISK = """
import os, resource, signal, sys
sys.path[:0] = [{scripts!r}]
import _arms_path  # noqa: F401
from ansible.module_utils.arms_azure import sync
from ansible.module_utils.arms_common import ArmsError
signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # a write past the limit fails (EFBIG), as on a full disk
resource.setrlimit(resource.RLIMIT_FSIZE, (1_000_000, 1_000_000))
try:
    sync("fulldisk", {data!r}, prefix="top", connection_string=os.environ["CONN"], max_retries=0, concurrency=2)
except ArmsError as exc:
    print("ArmsError:", exc)
"""


def test_a_full_disk_during_the_download_is_a_sentence_not_a_bug(azurite: AzuriteServer, tmp_path: Path) -> None:
    """A real process whose writes stop at 1 MB: what a full disk does to the download, short of root."""
    upload(azurite, "fulldisk", {f"top/shard_{i:05d}.parquet": shard_bytes(rows=4000, seed=i) for i in range(2)})
    data = tmp_path / "d"
    code = SYNC_ON_A_FULL_DISK.format(scripts=str(ROOT / "scripts"), data=str(data))
    proc = subprocess.run(
        [sys.executable, "-c", code],
        env={**os.environ, "CONN": azurite.connection_string},
        capture_output=True,
        text=True,
        timeout=120,
    )
    out = proc.stdout + proc.stderr
    assert "ArmsError: the disk holding" in out and "filled up" in out, out
    assert "this is a bug" not in out and "Traceback" not in out
    left = [e for e in os.listdir(data) if e.endswith((".tmp", ".parquet")) or ".azsync-" in e]
    assert left == [], left


def test_a_journal_naming_a_path_outside_the_data_dir_is_ignored(azurite: AzuriteServer, tmp_path: Path) -> None:
    """The journal's names are used to remove files gone from the container: only plain names count."""
    upload(azurite, "journal", {"top/shard_00000.parquet": shard_bytes(seed=3)})
    data = tmp_path / "d"
    victim = tmp_path / "victim.txt"
    victim.write_text("keep me")
    sync("journal", str(data), prefix="top", connection_string=azurite.connection_string)
    journal = json.loads((data / ".azure-sync.json").read_text())
    journal["shards"]["../victim.txt"] = {**journal["shards"]["shard_00000.parquet"], "name": "../victim.txt"}
    (data / ".azure-sync.json").write_text(json.dumps(journal))
    sync("journal", str(data), prefix="top", connection_string=azurite.connection_string)
    assert victim.read_text() == "keep me"


def test_the_random_subset_cli_names_a_data_dir_on_proc_too(tmp_path: Path) -> None:
    """scripts/prepare_hf_random_subset.py --data-dir /proc/x: the folder is wrong, not the free space."""
    from arms_fixture import make_fixture

    source = str(tmp_path / "fortified")
    make_fixture(source, 300, files_per_dump=1, dumps=1, seed=2, text_bytes_mean=200, row_group_rows=100)
    for data_dir in ("/proc/x", "/sys/x/base_data"):
        args = ["--dataset", source, "--data-dir", data_dir, "--work-dir", str(tmp_path / "work")]
        proc = subprocess.run(
            [sys.executable, str(ROOT / "scripts" / "prepare_hf_random_subset.py"), *args, "--rows-per-shard", "50"],
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert proc.returncode != 0 and "holds no files" in proc.stderr, proc.stderr
        assert "not enough free disk" not in proc.stderr and "Traceback" not in proc.stderr
