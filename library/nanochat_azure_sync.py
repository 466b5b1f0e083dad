#!/usr/bin/python
"""Ansible module: the top arm's Azure Blob download (logic in module_utils/arms_azure.py)."""

from __future__ import annotations

DOCUMENTATION = r"""
module: nanochat_azure_sync
short_description: Download an arm's parquet shards from an Azure Blob container into its data dir, verified
description:
  - Mirrors the C(*.parquet) shards directly under O(prefix) of O(container) into O(data_dir) (the folder
    nanochat reads), many blobs at once and large blobs in parallel ranges. Each file is written under a
    hidden temporary name, hashed once while it is written (sha256, off the network threads), fsync'd and
    renamed; nothing half-written is left behind. The download is pinned to the listed etag and its size
    checked; over https TLS authenticates every byte, so the blob's Content-MD5 is compared only with
    O(verify_content_md5).
  - Only C(*.parquet) blobs with a string column C(text) are accepted. Other blobs (README, C(_SUCCESS),
    sub-folders below the prefix, hidden names) are reported in RV(rejected) and left alone; a C(*.parquet)
    blob without a C(text) column fails the task with a sentence naming it.
  - Writes C(manifest.json) (kind C(azure_blob), one entry per shard with its sha256 and the blob's etag,
    last_modified and MD5) once every shard is present. Entries that did not come from Azure (e.g. a
    C(shard_val.parquet) placed by another step, role val) are carried over and their files never touched.
    Files an earlier sync downloaded whose blob left the prefix are removed.
  - A re-run skips a blob whose etag, size and last_modified match the manifest and whose local file is
    unchanged since it was last verified (size and mtime; O(deep_verify) re-hashes), and fetches a blob
    that changed. A sync that failed midway keeps the files it finished (recorded in C(.azure-sync.json)).
  - Credentials, in this order, exactly one way; all secrets are no_log and never appear in results,
    messages or the progress file. O(connection_string); O(account_url) with O(sas_token) (or a SAS URL);
    O(account_url) with O(account_key); O(account_url) alone with DefaultAzureCredential when
    azure-identity is installed. When none is given, the environment variables
    E(AZURE_STORAGE_CONNECTION_STRING), or E(AZURE_STORAGE_ACCOUNT_URL) with E(AZURE_STORAGE_SAS_TOKEN)
    or E(AZURE_STORAGE_ACCOUNT_KEY), are used.
  - Check mode lists the container and reads the footers of the blobs it would fetch, and reports what
    would be downloaded and removed; it writes nothing (the verification cache of existing files aside).
options:
  container:
    description: Blob container holding the shards (the runbook's is C(quratingfiltered)).
    type: str
    required: true
  prefix:
    description:
      - Folder inside the container; empty means the whole container. A trailing C(/) is implied, so
        C(top16) means blobs named C(top16/...). The blob C(<prefix>/shard_00000.parquet) becomes
        C(<data_dir>/shard_00000.parquet).
    type: str
    default: ""
  data_dir:
    description: The arm's data dir (C($NANOCHAT_BASE_DIR/base_data)); created when missing.
    type: path
    required: true
  connection_string:
    description: Storage account connection string.
    type: str
  account_url:
    description:
      - Blob endpoint, e.g. C(https://<account>.blob.core.windows.net). A query string is taken as the SAS token,
        which is why this option is no_log too (the account name is reported in RV(msg) and the manifest).
    type: str
  sas_token:
    description: SAS token with read and list permission, used with O(account_url).
    type: str
  account_key:
    description: Storage account key, used with O(account_url).
    type: str
  skip_download:
    description:
      - The runbook's C(--skip-download). Download nothing and contact no storage account; verify the local
        files against C(manifest.json) (which must be from this container and prefix) and fail with the list
        of missing, wrong-size and wrong-sha256 files, and of parquet files the manifest does not name.
    type: bool
    default: false
  download_mode:
    description: C(bulk) downloads every shard before training starts (the runbook's mode).
    type: str
    choices: [bulk]
    default: bulk
  concurrency:
    description:
      - Blobs streaming at once (finishing a blob, its hash wait, fsync and rename, does not hold a slot).
        16 keeps a 10 Gbit/s link to a storage account ~30 ms away full.
    type: int
    default: 16
  chunk_concurrency:
    description:
      - Parallel 8 MiB ranges per large blob (the SDK's max_concurrency; blobs up to 8 MiB are one request).
        Default 4.
    type: int
  max_retries:
    description:
      - Retries of each request with exponential backoff (1 s, 2 s, 4 s, ... jittered), and restarts of a
        blob whose download broke off or arrived with the wrong size (or MD5, with O(verify_content_md5)).
    type: int
    default: 5
  progress_file:
    description: JSON progress state (blobs and bytes done, MB/s, ETA), rewritten every 2 s while downloading.
    type: path
  env_file:
    description:
      - A secrets env file on the host (the credentials role writes it, mode 0600) whose
        C(AZURE_STORAGE_*) lines are used like the environment variables, so no secret travels in
        a task's arguments.
    type: path
  deep_verify:
    description: Re-hash every local file instead of trusting the verification cache (size + mtime).
    type: bool
    default: false
  verify_content_md5:
    description:
      - Also hash each download with MD5 and compare it with the blob's Content-MD5 (when it has one);
        a mismatch fetches the blob again. Off by default because https already authenticates every
        byte in transit and MD5 costs ~4x the CPU of sha256; turn it on for a plain-http endpoint.
    type: bool
    default: false
notes:
  - Runs where the data dir is, with the data venv (azure-storage-blob, pyarrow).
author: nanochat-arms
"""

EXAMPLES = r"""
- name: Top arm shards are in the data dir, verified
  nanochat_azure_sync:
    container: quratingfiltered
    prefix: "{{ top_prefix }}"
    data_dir: ~/.cache/nanochat/base_data
    connection_string: "{{ azure_connection_string }}"
    progress_file: /tmp/azure_sync.progress.json

- name: Retry habit (skip-download) still proves the local shards match the manifest
  nanochat_azure_sync:
    container: quratingfiltered
    prefix: ""
    data_dir: ~/.cache/nanochat/base_data
    skip_download: true
"""

RETURN = r"""
data_dir:
  description: The data dir (absolute).
  type: str
  returned: always
manifest:
  description: Path of manifest.json.
  type: str
  returned: always
blobs:
  description: Shards accepted from the container (with skip_download, the Azure shards in the manifest).
  type: int
  returned: always
downloaded:
  description: File names fetched by this run (would be fetched, in check mode).
  type: list
  elements: str
  returned: always
already_present:
  description:
    - Shards already present and verified, not fetched. Not called C(skipped) because Ansible reserves that
      key, a truthy C(skipped) in a result marks the task as skipped.
  type: int
  returned: always
bytes_downloaded:
  description: Bytes fetched by this run (would be fetched, in check mode).
  type: int
  returned: always
rejected:
  description: Blobs under the prefix that are not shards, left alone, as {name, reason}.
  type: list
  elements: dict
  returned: always
verified:
  description: Shards that match the manifest after this run.
  type: int
  returned: always
removed:
  description: Files an earlier sync downloaded whose blob is no longer under the prefix, deleted by this run.
  type: list
  elements: str
  returned: always
adopted:
  description: Unrecorded local files taken as they are because their MD5 equals the blob's Content-MD5.
  type: list
  elements: str
  returned: always
unmanaged:
  description: Parquet files in the data dir that neither the manifest nor the container names (nanochat reads them).
  type: list
  elements: str
  returned: always
seconds:
  description: Wall time of the run.
  type: float
  returned: always
msg:
  description: One-line summary.
  type: str
  returned: always
"""

import os

from ansible.module_utils.arms_azure import AUTH_OPTIONS, Switch, sync
from ansible.module_utils.arms_common import ArmsError, load_env_file
from ansible.module_utils.basic import AnsibleModule

# skip_download as a playbook user sets it (roles/arms_data/tasks/download_start.yml passes arms_skip_download)
SKIP_DOWNLOAD = Switch("skip_download", "with -e arms_skip_download=false")

ARGUMENT_SPEC = {
    "container": {"type": "str", "required": True},
    "prefix": {"type": "str", "default": ""},
    "data_dir": {"type": "path", "required": True},
    **AUTH_OPTIONS,
    "skip_download": {"type": "bool", "default": False},
    "download_mode": {"type": "str", "choices": ["bulk"], "default": "bulk"},
    "concurrency": {"type": "int", "default": 16},
    "chunk_concurrency": {"type": "int"},
    "max_retries": {"type": "int", "default": 5},
    "progress_file": {"type": "path"},
    "deep_verify": {"type": "bool", "default": False},
    "verify_content_md5": {"type": "bool", "default": False},
    "env_file": {"type": "path"},
}


def main() -> None:
    module = AnsibleModule(argument_spec=ARGUMENT_SPEC, supports_check_mode=True)
    p = module.params
    try:
        result = sync(
            p["container"],
            p["data_dir"],
            prefix=p["prefix"] or "",
            connection_string=p["connection_string"],
            account_url=p["account_url"],
            sas_token=p["sas_token"],
            account_key=p["account_key"],
            skip_download=p["skip_download"],
            check_mode=module.check_mode,
            download_mode=p["download_mode"],
            concurrency=p["concurrency"],
            chunk_concurrency=p["chunk_concurrency"],
            max_retries=p["max_retries"],
            deep_verify=p["deep_verify"],
            verify_content_md5=p["verify_content_md5"],
            progress_file=p["progress_file"],
            env={**os.environ, **load_env_file(p["env_file"])},
            switch=SKIP_DOWNLOAD,
        )
    except ArmsError as exc:
        module.fail_json(msg=str(exc))
    except ImportError as exc:
        module.fail_json(
            msg=f"the data venv lacks a package the Azure sync needs ({exc.name or exc}); install "
            "azure-storage-blob and pyarrow in the interpreter that runs this module."
        )
    module.exit_json(**result.to_json())


if __name__ == "__main__":
    main()
