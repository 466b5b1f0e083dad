"""scripts/azure_sync.py, the runbook-style CLI, run as a person would (a real process, env credentials)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator

import pytest
from azurite import ROOT, AzuriteServer, azurite_or_skip, running_azurite, shard_bytes, upload

SCRIPT = os.path.join(ROOT, "scripts", "azure_sync.py")
BLOBS = {f"shard_{i:05d}.parquet": shard_bytes(seed=i) for i in range(3)}


@pytest.fixture(scope="module")
def azurite(tmp_path_factory: pytest.TempPathFactory) -> Iterator[AzuriteServer]:
    binary = azurite_or_skip()
    with running_azurite(str(tmp_path_factory.mktemp("azurite")), binary=binary) as server:
        upload(server, "quratingfiltered", BLOBS)
        yield server


def cli(args: list[str], env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    clean = {k: v for k, v in os.environ.items() if not k.startswith("AZURE_STORAGE_")}
    return subprocess.run(
        [sys.executable, SCRIPT, *args], env={**clean, **env}, capture_output=True, text=True, timeout=120
    )


def test_cli_syncs_with_env_credentials_and_prints_progress(azurite: AzuriteServer, tmp_path: str) -> None:
    data_dir = os.path.join(tmp_path, "base_data")
    env = {"AZURE_STORAGE_ACCOUNT_URL": azurite.account_url, "AZURE_STORAGE_ACCOUNT_KEY": azurite.account_key}
    proc = cli(["--container", "quratingfiltered", "--prefix", "", "--data-dir", data_dir], env)
    assert proc.returncode == 0, proc.stderr
    assert "downloaded 3" in proc.stdout
    assert "azure sync: done: 3/3 blobs" in proc.stderr and "MB/s" in proc.stderr and "eta" in proc.stderr
    assert azurite.account_key not in proc.stdout + proc.stderr
    assert sorted(e for e in os.listdir(data_dir) if e.endswith(".parquet")) == sorted(BLOBS)
    proc = cli(["--container", "quratingfiltered", "--data-dir", data_dir, "--json", "--quiet"], env)
    result = json.loads(proc.stdout)
    assert proc.returncode == 0 and result["downloaded"] == [] and result["already_present"] == 3 and proc.stderr == ""


def test_cli_skip_download_verifies_without_credentials(azurite: AzuriteServer, tmp_path: str) -> None:
    data_dir = os.path.join(tmp_path, "base_data")
    proc = cli(
        ["--container", "quratingfiltered", "--data-dir", data_dir, "--quiet"],
        {"AZURE_STORAGE_CONNECTION_STRING": azurite.connection_string},
    )
    assert proc.returncode == 0, proc.stderr
    proc = cli(["--container", "quratingfiltered", "--data-dir", data_dir, "--skip-download"], {})
    assert proc.returncode == 0 and "3 shards" in proc.stdout and "nothing downloaded" in proc.stdout
    os.unlink(os.path.join(data_dir, "shard_00000.parquet"))
    proc = cli(["--container", "quratingfiltered", "--data-dir", data_dir, "--skip-download"], {})
    assert proc.returncode == 1
    assert "\nerror: --skip-download is set but 1 of 3 shards" in proc.stderr
    assert "run without --skip-download to fetch them again" in proc.stderr
    assert "missing: shard_00000.parquet" in proc.stderr and "Traceback" not in proc.stderr


def test_cli_without_credentials_says_which_variables_to_set(tmp_path: str) -> None:
    proc = cli(["--container", "quratingfiltered", "--data-dir", os.path.join(tmp_path, "d")], {})
    assert proc.returncode == 1
    assert "no Azure credentials" in proc.stderr and "AZURE_STORAGE_CONNECTION_STRING" in proc.stderr
    assert "Traceback" not in proc.stderr
    proc = cli(["--data-dir", os.path.join(tmp_path, "d")], {})
    assert proc.returncode == 2 and "--container" in proc.stderr
