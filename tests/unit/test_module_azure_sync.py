"""library/nanochat_azure_sync.py run in-process as Ansible would, against a real Azurite."""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
import yaml
from azurite import AzuriteServer, azurite_or_skip, other_parquet_bytes, running_azurite, shard_bytes, upload
from modtest import documented_options, load_module, run_module

MODULE = "nanochat_azure_sync"
BLOBS = {f"top/shard_{i:05d}.parquet": shard_bytes(seed=i) for i in range(3)} | {"top/README.md": b"hi"}


@pytest.fixture(scope="module")
def azurite(tmp_path_factory: pytest.TempPathFactory) -> Iterator[AzuriteServer]:
    binary = azurite_or_skip()
    with running_azurite(str(tmp_path_factory.mktemp("azurite")), binary=binary) as server:
        upload(server, "quratingfiltered", BLOBS)
        upload(server, "badshards", {**BLOBS, "top/shard_00009.parquet": other_parquet_bytes()})
        yield server


def sas_token(server: AzuriteServer, container: str = "quratingfiltered") -> str:
    from azure.storage.blob import ContainerSasPermissions, generate_container_sas

    return generate_container_sas(
        server.account_name,
        container,
        account_key=server.account_key,
        permission=ContainerSasPermissions(read=True, list=True),
        expiry=datetime.now(UTC) + timedelta(hours=1),
    )


def call(
    capsys: pytest.CaptureFixture[str], args: dict[str, Any], check_mode: bool = False
) -> tuple[dict[str, Any], str]:
    result = run_module(MODULE, {"max_retries": 1, **args}, capsys, check_mode=check_mode)
    return result, json.dumps(result)


def test_documentation_matches_the_argument_spec() -> None:
    mod = load_module(MODULE)
    _, spec = documented_options(MODULE)
    assert {n for n, d in spec.items() if d.get("no_log")} == {
        "connection_string",
        "sas_token",
        "account_key",
        "account_url",  # a SAS URL carries the token
    }
    returned = yaml.safe_load(mod.RETURN)
    for key in (
        "data_dir",
        "manifest",
        "blobs",
        "downloaded",
        "already_present",
        "bytes_downloaded",
        "rejected",
        "verified",
        "msg",
    ):
        assert key in returned, key
    assert yaml.safe_load(mod.EXAMPLES)


def test_sync_then_rerun_is_unchanged(
    azurite: AzuriteServer, tmp_path: str, capsys: pytest.CaptureFixture[str]
) -> None:
    data_dir = os.path.join(tmp_path, "base_data")
    args = {
        "container": "quratingfiltered",
        "prefix": "top",
        "data_dir": data_dir,
        "connection_string": azurite.connection_string,
    }
    r, out = call(capsys, args)
    assert not r.get("failed"), r
    assert r["changed"] and r["blobs"] == 3 and len(r["downloaded"]) == 3 and r["verified"] == 3
    assert r["rejected"] == [{"name": "top/README.md", "reason": "not a .parquet file"}]
    assert r["manifest"] == os.path.join(data_dir, "manifest.json") and os.path.exists(r["manifest"])
    assert azurite.account_key not in out
    r, _ = call(capsys, args)
    assert not r["changed"] and r["downloaded"] == [] and r["already_present"] == 3 and r["bytes_downloaded"] == 0


@pytest.mark.parametrize("way", ["sas_token", "sas_url", "account_key", "env_connection_string", "env_sas"])
def test_every_way_to_authenticate_works_and_no_secret_is_output(
    way: str, azurite: AzuriteServer, tmp_path: str, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    sas = sas_token(azurite)
    args: dict[str, Any] = {
        "container": "quratingfiltered",
        "prefix": "top",
        "data_dir": os.path.join(tmp_path, "d"),
        "progress_file": os.path.join(tmp_path, "progress.json"),
    }
    if way == "sas_token":
        args |= {"account_url": azurite.account_url, "sas_token": sas}
    elif way == "sas_url":
        args |= {"account_url": f"{azurite.account_url}?{sas}"}
    elif way == "account_key":
        args |= {"account_url": azurite.account_url, "account_key": azurite.account_key}
    elif way == "env_connection_string":
        monkeypatch.setenv("AZURE_STORAGE_CONNECTION_STRING", azurite.connection_string)
    else:
        monkeypatch.setenv("AZURE_STORAGE_ACCOUNT_URL", azurite.account_url)
        monkeypatch.setenv("AZURE_STORAGE_SAS_TOKEN", sas)
    r, out = call(capsys, args)
    assert not r.get("failed"), r
    assert len(r["downloaded"]) == 3
    with open(args["progress_file"]) as fh:
        progress = fh.read()
    with open(os.path.join(args["data_dir"], "manifest.json")) as fh:
        manifest = fh.read()
    signature = sas.split("sig=")[1].split("&")[0]
    for text in (out, progress, manifest):
        assert azurite.account_key not in text and signature not in text and "sig=" not in text


def test_wrong_credentials_fail_with_a_sentence_and_no_secret(
    azurite: AzuriteServer, tmp_path: str, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    wrong = "bm90IHRoZSByaWdodCBrZXkgYXQgYWxsIDEyMzQ1Njc4OTBhYmNkZWZnaGlq"
    # from the environment, so Ansible's own no_log masking cannot be what hides it
    monkeypatch.setenv("AZURE_STORAGE_CONNECTION_STRING", azurite.connection_string.replace(azurite.account_key, wrong))
    r, out = call(capsys, {"container": "quratingfiltered", "data_dir": os.path.join(tmp_path, "d"), "max_retries": 0})
    assert r["failed"] and "refused the credentials" in r["msg"] and "check the credentials" in r["msg"]
    assert wrong not in out and "Traceback" not in out


def test_check_mode_predicts_without_writing(
    azurite: AzuriteServer, tmp_path: str, capsys: pytest.CaptureFixture[str]
) -> None:
    data_dir = os.path.join(tmp_path, "d")
    r, _ = call(
        capsys,
        {
            "container": "quratingfiltered",
            "prefix": "top",
            "data_dir": data_dir,
            "connection_string": azurite.connection_string,
        },
        check_mode=True,
    )
    assert r["changed"] and len(r["downloaded"]) == 3 and "would download 3" in r["msg"]
    assert not os.path.exists(data_dir)


def test_bad_shard_and_skip_download_failures_are_sentences(
    azurite: AzuriteServer, tmp_path: str, capsys: pytest.CaptureFixture[str]
) -> None:
    data_dir = os.path.join(tmp_path, "d")
    base = {"prefix": "top", "data_dir": data_dir, "connection_string": azurite.connection_string}
    r, _ = call(capsys, {"container": "badshards", **base})
    assert r["failed"] and "blob 'top/shard_00009.parquet'" in r["msg"] and "not a nanochat shard" in r["msg"]
    r, _ = call(capsys, {"container": "quratingfiltered", **base})
    assert not r.get("failed"), r
    with open(os.path.join(data_dir, "shard_00001.parquet"), "r+b") as fh:
        fh.seek(40)
        fh.write(b"bitrot")
    r, _ = call(capsys, {"container": "quratingfiltered", "prefix": "top", "data_dir": data_dir, "skip_download": True})
    assert (
        r["failed"]
        and "wrong sha256: shard_00001.parquet" in r["msg"]
        and "run with -e arms_skip_download=false to fetch them again" in r["msg"]
    )
    r, _ = call(capsys, {"container": "quratingfiltered", **base})
    assert r["downloaded"] == ["shard_00001.parquet"]
    r, _ = call(
        capsys,
        {
            "container": "quratingfiltered",
            "prefix": "top",
            "data_dir": data_dir,
            "skip_download": True,
            "deep_verify": True,
        },
    )
    assert not r["changed"] and r["verified"] == 3


def test_real_playbook_run_is_ok_then_unchanged_and_never_shows_the_key(azurite: AzuriteServer, tmp_path: str) -> None:
    """Through ansible-playbook itself: module_utils shipped by AnsiballZ, no_log, and a no-op re-run
    reported as ok/unchanged (a result key named "skipped" would make Ansible call it skipped)."""
    import subprocess
    import sys

    from modtest import ROOT

    cfg = os.path.join(tmp_path, "ansible.cfg")
    with open(cfg, "w") as fh:
        fh.write(f"[defaults]\nlibrary = {ROOT}/library\nmodule_utils = {ROOT}/plugins/module_utils\n")
    playbook = os.path.join(tmp_path, "pb.yml")
    task = {"container": "quratingfiltered", "prefix": "top", "data_dir": os.path.join(tmp_path, "d"),
            "account_url": azurite.account_url, "account_key": azurite.account_key}  # fmt: skip
    checks = [
        "first is changed",
        "first.downloaded | length == 3",
        "second is not changed",
        "second is not skipped",
        "second.already_present == 3",
    ]
    tasks = [
        {"name": "first sync", "nanochat_azure_sync": task, "register": "first"},
        {"name": "second sync", "nanochat_azure_sync": task, "register": "second"},
        {"name": "results as expected", "ansible.builtin.assert": {"that": checks}},
    ]
    with open(playbook, "w") as fh:
        yaml.safe_dump([{"hosts": "localhost", "gather_facts": False, "tasks": tasks}], fh)
    env = {**os.environ, "ANSIBLE_CONFIG": cfg}
    proc = subprocess.run(
        [os.path.join(os.path.dirname(sys.executable), "ansible-playbook"), "-i", "localhost,", "-c", "local",
         "-e", f"ansible_python_interpreter={sys.executable}", "-v", playbook],
        env=env, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, out[-3000:]
    assert "ok=3    changed=1" in out and "skipped=0" in out and "failed=0" in out
    assert azurite.account_key not in out
