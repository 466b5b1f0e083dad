"""Put the lab's top-arm shards into Azurite: the top 16.5% of the fixture dataset by `score`.

This plays the part of the prebuilt QuRating subset the real experiment keeps in the Azure
container `quratingfiltered`: nanochat-format shards (`text` column, zstd, row groups a multiple of
the lab's largest world size) plus one non-shard blob (a README) that the sync must report and
leave alone. Idempotent: blobs already there with the same content are not uploaded again.
"""

from __future__ import annotations

import argparse
import glob
import hashlib
import io
import os

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
from azure.core.exceptions import ResourceExistsError
from azure.storage.blob import BlobServiceClient, ContentSettings

AZURITE_KEY = "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw=="


def connection_string(port: int) -> str:
    return (
        "DefaultEndpointsProtocol=http;AccountName=devstoreaccount1;"
        f"AccountKey={AZURITE_KEY};BlobEndpoint=http://127.0.0.1:{port}/devstoreaccount1;"
    )


def top_subset(dataset: str, fraction: float, seed: int) -> list[str]:
    files = sorted(glob.glob(os.path.join(dataset, "**", "*.parquet"), recursive=True))
    table = pa.concat_tables(pq.read_table(f, columns=["text", "score"]) for f in files)
    scores = table.column("score").to_numpy()
    keep = int(round(len(scores) * fraction))
    order = np.argsort(-scores, kind="stable")[:keep]
    np.random.default_rng(seed).shuffle(order)
    texts = table.column("text").to_pylist()
    return [texts[i] for i in order]


def shard_bytes(texts: list[str], row_groups: int) -> bytes:
    buf = io.BytesIO()
    table = pa.table({"text": pa.array(texts, pa.string())})
    per_group = -(-len(texts) // row_groups)
    pq.write_table(table, buf, row_group_size=per_group, compression="zstd")
    return buf.getvalue()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--dataset", required=True)
    ap.add_argument("--port", type=int, default=10000)
    ap.add_argument("--container", default="quratingfiltered")
    ap.add_argument("--prefix", default="top16.5/")
    ap.add_argument("--fraction", type=float, default=0.165)
    ap.add_argument("--rows-per-shard", type=int, default=800)
    ap.add_argument("--row-groups", type=int, default=8, help="a multiple of every lab world size (2, 4)")
    ap.add_argument("--seed", type=int, default=42)
    args = ap.parse_args()

    service = BlobServiceClient.from_connection_string(connection_string(args.port))
    container = service.get_container_client(args.container)
    try:
        container.create_container()
    except ResourceExistsError:
        pass
    existing = {b.name: b for b in container.list_blobs(name_starts_with=args.prefix)}

    texts = top_subset(args.dataset, args.fraction, args.seed)
    blobs: dict[str, bytes] = {}
    for n, start in enumerate(range(0, len(texts), args.rows_per_shard)):
        chunk = texts[start : start + args.rows_per_shard]
        if len(chunk) < args.row_groups:
            break
        blobs[f"{args.prefix}shard_{n:05d}.parquet"] = shard_bytes(chunk, args.row_groups)
    blobs[f"{args.prefix}README.md"] = b"Top 16.5% of the lab fixture by score (stand-in for QuRating).\n"

    uploaded = 0
    for name, data in blobs.items():
        md5 = hashlib.md5(data).digest()
        have = existing.get(name)
        if have is not None and have.size == len(data) and bytes(have.content_settings.content_md5 or b"") == md5:
            continue
        container.upload_blob(name, data, overwrite=True, content_settings=ContentSettings(content_md5=md5))
        uploaded += 1
    print(f"[lab] Azurite {args.container}/{args.prefix}: {len(blobs)} blobs ({uploaded} uploaded), {len(texts)} rows")


if __name__ == "__main__":
    main()
