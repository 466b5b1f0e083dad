"""The Azure sync's rules that are easy to get wrong, with the smallest input (no Azurite needed)."""

from __future__ import annotations

import hashlib
import os
import random

import ansible.module_utils.arms_azure as arms_azure
import pytest
from ansible.module_utils.arms_azure import (
    ENV_ACCOUNT_KEY,
    ENV_ACCOUNT_URL,
    ENV_CONNECTION_STRING,
    ENV_SAS_TOKEN,
    BlobInfo,
    HashingWriter,
    Scrubber,
    check_container_name,
    classify,
    footer_metadata,
    normalize_prefix,
    resolve_auth,
    shard_problem,
)
from ansible.module_utils.arms_common import ArmsError
from azurite import ACCOUNT_KEY, other_parquet_bytes, shard_bytes

AZURITE_CS = (
    "DefaultEndpointsProtocol=http;AccountName=devstoreaccount1;"
    f"AccountKey={ACCOUNT_KEY};BlobEndpoint=http://127.0.0.1:10000/devstoreaccount1;"
)
SAS = "sv=2024-08-04&ss=b&srt=co&sp=rl&se=2030-01-01T00%3A00%3A00Z&sig=c2VjcmV0c2lnbmF0dXJlMTIzNDU2Nzg5MA%3D%3D"


def blob(rel: str, prefix: str = "top/") -> BlobInfo:
    return BlobInfo(
        name=prefix + rel, rel=rel, size=10, etag='"0x1"', last_modified="2026-01-01T00:00:00+00:00", md5=None
    )


def test_prefix_names_a_folder() -> None:
    assert normalize_prefix("") == ""
    assert normalize_prefix(None) == ""
    assert normalize_prefix("top16") == "top16/"
    assert normalize_prefix("/top16/") == "top16/"
    assert normalize_prefix("a/b") == "a/b/"


def test_container_names_follow_azure_rules() -> None:
    assert check_container_name("quratingfiltered") == "quratingfiltered"
    for bad in ("", "ab", "Upper", "a--b", "-ab", "ab-", "a_b"):
        with pytest.raises(ArmsError, match="container"):
            check_container_name(bad)


def test_only_flat_parquet_blobs_are_candidates_and_others_say_why() -> None:
    blobs = [
        blob("shard_00000.parquet"),
        blob("README.md"),
        blob("_SUCCESS"),
        blob("sub/shard_00001.parquet"),
        blob(".hidden.parquet"),
        blob("shard_val.parquet"),
    ]
    accepted, rejected = classify(blobs, protected={"shard_val.parquet": "val"})
    assert [b.rel for b in accepted] == ["shard_00000.parquet"]
    reasons = {r["name"]: r["reason"] for r in rejected}
    assert reasons["top/README.md"] == "not a .parquet file"
    assert reasons["top/_SUCCESS"] == "not a .parquet file"
    assert "sub-folder" in reasons["top/sub/shard_00001.parquet"]
    assert "hidden" in reasons["top/.hidden.parquet"]
    assert "did not come from Azure" in reasons["top/shard_val.parquet"]


def test_footer_from_the_tail_alone_tells_a_shard_from_other_parquet() -> None:
    good, other = shard_bytes(rows=50), other_parquet_bytes()
    meta, need = footer_metadata(good[-65536:], len(good))
    assert need == 0 and meta.num_rows == 50
    assert shard_problem(meta.schema.to_arrow_schema()) is None
    meta, _ = footer_metadata(other, len(other))
    assert "no 'text' column (columns: id, body)" in shard_problem(meta.schema.to_arrow_schema())
    # a tail too short for the footer asks for exactly the bytes it needs
    meta, need = footer_metadata(good[-16:], len(good))
    assert meta is None and 16 < need < len(good)
    assert footer_metadata(good[-need:], len(good))[0].num_rows == 50
    with pytest.raises(ValueError, match="PAR1"):
        footer_metadata(b"not a parquet file at all", 25)


def test_text_column_must_hold_strings() -> None:
    import pyarrow as pa

    assert "not strings" in shard_problem(pa.schema([("text", pa.int64())]))
    assert shard_problem(pa.schema([("text", pa.large_string()), ("id", pa.string())])) is None


def test_hashing_writer_hashes_in_order_whatever_order_ranges_arrive(tmp_path: str) -> None:
    data = random.Random(1).randbytes(1_000_003)
    chunks = [(off, data[off : off + 65536]) for off in range(0, len(data), 65536)]
    random.Random(2).shuffle(chunks)
    path = os.path.join(tmp_path, "out")
    fd = os.open(path, os.O_RDWR | os.O_CREAT)
    seen: list[int] = []
    writer = HashingWriter(fd, want_md5=True, on_bytes=seen.append)
    for off, chunk in chunks:
        writer.seek(off)
        writer.write(chunk)
    sha, md5, hashed = writer.digests()
    os.close(fd)
    assert (sha, md5, hashed) == (hashlib.sha256(data).hexdigest(), hashlib.md5(data).hexdigest(), len(data))
    assert sum(seen) == len(data)
    with open(path, "rb") as fh:
        assert fh.read() == data


def test_hashing_writer_keeps_bounded_memory_and_reads_the_rest_back(tmp_path: str, monkeypatch) -> None:
    # past HASH_QUEUE_BYTES waiting, ranges are hashed from the file, not kept: same digests
    monkeypatch.setattr(arms_azure, "HASH_QUEUE_BYTES", 100_000)
    data = random.Random(3).randbytes(1_000_000)
    chunks = [(off, data[off : off + 50_000]) for off in range(0, len(data), 50_000)]
    chunks = chunks[1:] + chunks[:1]  # the first range last: nothing can be hashed until the end
    fd = os.open(os.path.join(tmp_path, "out"), os.O_RDWR | os.O_CREAT)
    writer = HashingWriter(fd, want_md5=True)
    for off, chunk in chunks:
        writer.seek(off)
        writer.write(chunk)
    assert writer._queued <= 100_000
    sha, md5, hashed = writer.digests()
    os.close(fd)
    assert (sha, md5, hashed) == (hashlib.sha256(data).hexdigest(), hashlib.md5(data).hexdigest(), len(data))


def test_hashing_writer_refuses_a_range_written_twice_and_close_ends_its_thread(tmp_path: str) -> None:
    fd = os.open(os.path.join(tmp_path, "out"), os.O_RDWR | os.O_CREAT)
    writer = HashingWriter(fd, want_md5=False)
    writer.write(b"x" * 10)
    writer.seek(0)
    with pytest.raises(OSError, match="rewrote"):
        writer.write(b"y" * 10)
    writer.seek(100)
    writer.write(b"z" * 10)  # a download that broke off: close() drops what is left
    writer.close()
    assert not writer._thread.is_alive()
    os.close(fd)


def test_hashing_writer_reports_a_gap(tmp_path: str) -> None:
    fd = os.open(os.path.join(tmp_path, "out"), os.O_RDWR | os.O_CREAT)
    writer = HashingWriter(fd, want_md5=False)
    writer.seek(100)
    writer.write(b"x" * 10)
    with pytest.raises(OSError, match="gap"):
        writer.digests()
    os.close(fd)


def test_scrubber_removes_secrets_in_every_form() -> None:
    scrub = Scrubber([ACCOUNT_KEY, SAS])
    text = (
        f"key {ACCOUNT_KEY} url https://a.blob.core.windows.net/c?{SAS} "
        "other ?sv=1&sig=abcdef1234 AccountKey=zzzz; SharedAccessSignature=sv=1&sig=qq"
    )
    out = scrub(text)
    for secret in (ACCOUNT_KEY, "c2VjcmV0c2lnbmF0dXJl", "abcdef1234", "zzzz"):
        assert secret not in out
    assert "AccountKey=***" in out


def test_credentials_exactly_one_way() -> None:
    auth = resolve_auth(connection_string=AZURITE_CS, env={})
    assert (auth.method, auth.account_name) == ("connection_string", "devstoreaccount1")
    assert ACCOUNT_KEY not in repr(auth) and ACCOUNT_KEY not in auth.describe()
    auth = resolve_auth(account_url="https://acct.blob.core.windows.net/", sas_token="?" + SAS, env={})
    assert (auth.method, auth.account_name, auth.account_url) == (
        "sas_token",
        "acct",
        "https://acct.blob.core.windows.net",
    )
    # a SAS URL: the query is the token, and never part of what is reported
    auth = resolve_auth(account_url=f"https://acct.blob.core.windows.net/?{SAS}", env={})
    assert auth.method == "sas_token" and "sig=" not in auth.account_url
    auth = resolve_auth(account_url="http://127.0.0.1:10000/devstoreaccount1", account_key=ACCOUNT_KEY, env={})
    assert (auth.method, auth.account_name) == ("account_key", "devstoreaccount1")
    with pytest.raises(ArmsError, match="exactly one way"):
        resolve_auth(connection_string=AZURITE_CS, account_key=ACCOUNT_KEY, env={})
    with pytest.raises(ArmsError, match="exactly one of them"):
        resolve_auth(account_url="https://acct.blob.core.windows.net", sas_token=SAS, account_key=ACCOUNT_KEY, env={})
    with pytest.raises(ArmsError, match="without account_url"):
        resolve_auth(sas_token=SAS, env={})
    with pytest.raises(ArmsError, match="no Azure credentials"):
        resolve_auth(env={})
    with pytest.raises(ArmsError, match="azure-identity"):  # not installed in this venv
        resolve_auth(account_url="https://acct.blob.core.windows.net", env={})


def test_credentials_from_the_environment_when_no_argument_is_given() -> None:
    auth = resolve_auth(env={ENV_CONNECTION_STRING: AZURITE_CS})
    assert auth.method == "connection_string"
    env = {ENV_ACCOUNT_URL: "https://acct.blob.core.windows.net", ENV_SAS_TOKEN: SAS}
    assert resolve_auth(env=env).method == "sas_token"
    env = {ENV_ACCOUNT_URL: "https://acct.blob.core.windows.net", ENV_ACCOUNT_KEY: ACCOUNT_KEY}
    assert resolve_auth(env=env).method == "account_key"
    # arguments win; the environment is not mixed in
    auth = resolve_auth(connection_string=AZURITE_CS, env={ENV_ACCOUNT_KEY: "x" * 20})
    assert auth.method == "connection_string"


def test_a_garbled_connection_string_is_a_sentence_without_the_secret() -> None:
    with pytest.raises(ArmsError, match="cannot be parsed") as err:
        resolve_auth(connection_string=f"AccountKey={ACCOUNT_KEY};nonsense", env={})
    assert ACCOUNT_KEY not in str(err.value)


def test_errors_become_sentences_without_secrets() -> None:
    from ansible.module_utils.arms_azure import explain
    from azure.core.exceptions import ServiceRequestError

    auth = resolve_auth(account_url="https://acct.blob.core.windows.net", sas_token=SAS, env={})
    leak = ServiceRequestError(f"Max retries exceeded with url: /c?restype=container&comp=list&{SAS}")
    msg = str(explain(leak, auth, "quratingfiltered", "listing blobs"))
    assert msg.startswith("could not reach account acct at https://acct.blob.core.windows.net (sas token)")
    assert "c2VjcmV0c2lnbmF0dXJl" not in msg and "comp=list&***" in msg
    msg = str(explain(TypeError("boom"), auth, "quratingfiltered", "downloading x"))
    assert "failed unexpectedly" in msg and "TypeError: boom" in msg and "could not reach" not in msg
