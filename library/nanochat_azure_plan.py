#!/usr/bin/python
"""Ansible module: what an Azure arm will download, listed before any GPU node exists (logic in arms_azure_plan)."""

from __future__ import annotations

DOCUMENTATION = r"""
module: nanochat_azure_plan
short_description: List an Azure arm's shards (names and sizes only) and work out its GPU node's disk need
description:
  - Lists the blobs under the container and prefix with the same rules the download applies (flat
    C(.parquet) names only), without reading any data, and returns their count, total size and the
    free space the arm's GPU node will need for them.
  - Fails with a sentence when the container does not exist, the credentials are refused, or the
    prefix holds no shards, so a wrong experiment file stops before the GPU nodes are rented.
  - Credentials are no_log options, or else the C(AZURE_STORAGE_*) environment variables.
options:
  arm:
    description: The arm's name (for messages).
    type: str
    required: true
  container:
    description: The blob container holding the shards.
    type: str
    required: true
  prefix:
    description: The folder in the container ('' for the whole container).
    type: str
    default: ''
  connection_string:
    description: An Azure Storage connection string.
    type: str
  account_url:
    description: The blob account URL (with O(sas_token) or O(account_key)).
    type: str
  sas_token:
    description: A SAS token with list permission.
    type: str
  account_key:
    description: The storage account key.
    type: str
author: nanochat-arms
"""

EXAMPLES = r"""
- name: The top arm's shards are in Azure (checked from the controller)
  nanochat_azure_plan:
    arm: top16.5
    container: quratingfiltered
    prefix: top16.5
  delegate_to: localhost
"""

RETURN = r"""
shards:
  description: Number of shards the download would fetch.
  type: int
  returned: success
bytes:
  description: Their total size in bytes.
  type: int
  returned: success
disk_need_bytes:
  description: Free bytes the arm's GPU node needs for them (shards plus a 10% margin).
  type: int
  returned: success
rejected:
  description: Blobs under the prefix that are not shards ({name, reason}).
  type: list
  elements: dict
  returned: success
msg:
  description: One line saying the above.
  type: str
  returned: always
"""

from typing import Any

from ansible.module_utils.arms_azure import AUTH_OPTIONS, resolve_auth
from ansible.module_utils.arms_azure_plan import plan
from ansible.module_utils.arms_common import run_module
from ansible.module_utils.basic import AnsibleModule

ARGUMENT_SPEC: dict[str, Any] = {
    "arm": {"type": "str", "required": True},
    "container": {"type": "str", "required": True},
    "prefix": {"type": "str", "default": ""},
    **AUTH_OPTIONS,
}


def plan_arm(p: dict[str, Any], check_mode: bool) -> dict[str, Any]:
    auth = resolve_auth(p["connection_string"], p["account_url"], p["sas_token"], p["account_key"])
    return {"changed": False, **plan(auth, p["arm"], p["container"], p["prefix"])}


def main() -> None:
    run_module(AnsibleModule, ARGUMENT_SPEC, plan_arm)


if __name__ == "__main__":
    main()
