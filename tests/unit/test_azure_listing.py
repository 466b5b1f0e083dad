"""The CPU phase's look at an Azure arm: shard count, size and disk need, or a sentence, against real Azurite."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from ansible.module_utils.arms_azure_plan import disk_need, summarize
from ansible.module_utils.arms_common import ArmsError
from azurite import AzuriteServer, azurite_or_skip, running_azurite, shard_bytes, upload
from modtest import run_module

SHARDS = {f"top16.5/shard_{i:05d}.parquet": shard_bytes(seed=i) for i in range(3)}
BLOBS = SHARDS | {"top16.5/README.md": b"not a shard", "top16.5/sub/shard_00009.parquet": shard_bytes(seed=9)}


@pytest.fixture(scope="module")
def azurite(tmp_path_factory: pytest.TempPathFactory) -> Iterator[AzuriteServer]:
    binary = azurite_or_skip()
    with running_azurite(str(tmp_path_factory.mktemp("azurite")), binary=binary) as server:
        upload(server, "quratingfiltered", BLOBS)
        upload(server, "empty", {"other/readme.txt": b"x"})
        yield server


def plan(capsys: pytest.CaptureFixture[str], server: AzuriteServer, **args: Any) -> dict[str, Any]:
    return run_module(
        "nanochat_azure_plan",
        {"arm": "top16.5", "connection_string": server.connection_string, **args},
        capsys,
        check_mode=True,  # it only lists: the same answer in check mode
    )


def test_the_arm_is_counted_as_the_download_would_fetch_it(azurite, capsys) -> None:
    result = plan(capsys, azurite, container="quratingfiltered", prefix="top16.5")
    total = sum(len(b) for b in SHARDS.values())
    assert result["shards"] == 3 and result["bytes"] == total
    assert result["disk_need_bytes"] == disk_need(total) > total
    assert {r["name"] for r in result["rejected"]} == {"top16.5/README.md", "top16.5/sub/shard_00009.parquet"}
    assert result["msg"].startswith("top16.5: 3 shards in quratingfiltered/top16.5/,")
    assert "its GPU node needs" in result["msg"] and result["changed"] is False
    assert azurite.connection_string not in str(result) and azurite.account_key not in str(result)


def test_a_wrong_container_or_an_empty_prefix_stops_with_a_sentence(azurite, capsys) -> None:
    missing = plan(capsys, azurite, container="quratingfiltred", prefix="top16.5")
    assert missing["failed"] and "container 'quratingfiltred' does not exist" in missing["msg"]
    assert "before renting the GPU nodes" in missing["msg"]
    empty = plan(capsys, azurite, container="quratingfiltered", prefix="top17")
    assert empty["failed"] and "holds no .parquet shards" in empty["msg"]
    assert "check the container and prefix" in empty["msg"]
    wrong_key = azurite.connection_string.replace(azurite.account_key, "A" * len(azurite.account_key))
    refused = plan(capsys, azurite, container="quratingfiltered", connection_string=wrong_key)
    assert refused["failed"] and "refused the credentials" in refused["msg"]
    assert "A" * 20 not in refused["msg"]


def test_the_summary_names_what_was_skipped_when_nothing_is_a_shard() -> None:
    with pytest.raises(ArmsError, match=r"3 blobs there are not shards, e\.g\. a/x\.txt: not a \.parquet file"):
        summarize("top", "c", "a/", [], [{"name": "a/x.txt", "reason": "not a .parquet file"}] * 3)
    assert summarize("top", "c", "", [10, 20], [])["bytes"] == 30
