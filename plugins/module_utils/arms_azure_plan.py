"""What an Azure arm will download, found before any GPU node is rented: shard count, bytes, disk need.

The CPU phase (playbooks/cpu_phase.yml) asks this from the controller, so a wrong container or
prefix, or an empty one, stops the experiment while only the CPU node costs money. It lists blob
names and sizes only (no data is read), with the same rules the download applies (arms_azure's
``classify``): what it counts is what the GPU node will fetch.
"""

from __future__ import annotations

from typing import Any

from ansible.module_utils.arms_azure import (
    AzureAuth,
    blob_info,
    check_container_name,
    classify,
    container_client,
    explain,
    normalize_prefix,
)
from ansible.module_utils.arms_common import ArmsError, human_bytes

# room kept free beyond the shards on the GPU node's data disk: the val shard, temporary names during
# the download, and a margin (checkpoints come on top and are the preflight's to check)
DISK_MARGIN = 0.10


def disk_need(total_bytes: int) -> int:
    """Bytes the GPU node's data disk needs for the arm: its shards plus ``DISK_MARGIN``."""
    return int(total_bytes * (1 + DISK_MARGIN))


def summarize(
    arm: str, container: str, prefix: str, sizes: list[int], rejected: list[dict[str, str]]
) -> dict[str, Any]:
    """The plan of one arm from its listed shard sizes (a decision on plain data, tested alone)."""
    where = f"{container}/{prefix}" if prefix else container
    if not sizes:
        skipped = ""
        if rejected:
            first = rejected[0]
            skipped = f" ({len(rejected)} blobs there are not shards, e.g. {first['name']}: {first['reason']})"
        raise ArmsError(
            f"arm {arm}: Azure container {where} holds no .parquet shards{skipped}; check the container and "
            "prefix in the experiment file before renting the GPU nodes."
        )
    total = sum(sizes)
    need = disk_need(total)
    return {
        "arm": arm,
        "where": where,
        "shards": len(sizes),
        "bytes": total,
        "disk_need_bytes": need,
        "rejected": rejected,
        "msg": (
            f"{arm}: {len(sizes)} shards in {where}, {human_bytes(total)}; its GPU node needs "
            f"{human_bytes(need)} free for them"
        ),
    }


def plan(auth: AzureAuth, arm: str, container: str, prefix: str | None) -> dict[str, Any]:
    """List the arm's blobs (names and sizes) and summarise what its GPU node will download."""
    check_container_name(container)
    norm = normalize_prefix(prefix)
    try:
        client = container_client(auth, container, pool_size=2)
        if not client.exists():
            raise ArmsError(
                f"arm {arm}: container {container!r} does not exist in {auth.describe()}; check the container "
                "name (the runbook's is quratingfiltered) and the account before renting the GPU nodes."
            )
        blobs = [blob_info(props, norm) for props in client.list_blobs(name_starts_with=norm or None)]
    except ArmsError:
        raise
    except Exception as exc:
        raise explain(exc, auth, container, "listing the arm's shards") from None
    accepted, rejected = classify(blobs, {})
    return summarize(arm, container, norm, [b.size for b in accepted], rejected)
