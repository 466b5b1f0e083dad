#!/usr/bin/python
"""Ansible module: the receiving end of a host-to-host transfer (logic in module_utils/arms_transfer.py)."""

from __future__ import annotations

DOCUMENTATION = r"""
module: arms_transfer_receiver
short_description: The receiving end of the arms_transfer role, one round trip per step
description:
  - C(state=list) makes the receiving folders and lists what they hold (size and whole-second time of each
    regular file; C(.tmp-*) and the verification cache are not data), with this host's ssh host keys and user.
  - C(state=authorize) removes the files the sender no longer has (decided from this host's own listing), then
    authorises each transfer key; without O(ssh_client) only to print the address the sender comes from (every
    transfer line a killed run left is dropped first); with it, to write into its own folder only, from that
    address (rrsync write-only, no delete, symlinks munged).
  - C(state=revoke) removes the transfer keys' lines (also after a failure).
options:
  state:
    description: The step.
    type: str
    required: true
    choices: [list, authorize, revoke]
  dests:
    description: The receiving folders (C(state=list)); C(~) is this host's home.
    type: list
    elements: str
    default: []
  folders:
    description:
      - C(state=authorize), per folder C(dest), C(comment), C(pubkey) and C(sender_names); C(pubkey) only for a folder to
        send, C(sender_names) only where this host holds files the sender no longer has.
    type: list
    elements: dict
    default: []
  ssh_client:
    description: What the sender's probe printed (C($SSH_CLIENT) as this host saw it); omitted for the probe itself.
    type: str
  comments:
    description: The transfer keys' comments to revoke (C(state=revoke)).
    type: list
    elements: str
    default: []
  authorized_keys:
    description: This host's authorized_keys file.
    type: str
    default: ~/.ssh/authorized_keys
author: nanochat-arms
"""

EXAMPLES = r"""
- name: What this host holds is listed
  arms_transfer_receiver:
    state: list
    dests: [~/.cache/nanochat/base_data]
  register: here
"""

RETURN = r"""
files:
  description: Per folder, a mapping of each file name to its size and mtime (C(state=list)).
  type: list
  returned: state=list
dests:
  description: The folders, as absolute paths (C(state=list)).
  type: list
  returned: state=list
host_keys:
  description: This host's public ssh host keys (C(state=list)).
  type: list
  returned: state=list
user:
  description: The user this module runs as (C(state=list)).
  type: str
  returned: state=list
removed:
  description: Files removed because the sender no longer has them (C(state=authorize)).
  type: list
  returned: state=authorize
"""

from typing import Any

from ansible.module_utils.arms_common import run_module
from ansible.module_utils.arms_transfer import TransferError, receiver_authorize, receiver_list, receiver_revoke
from ansible.module_utils.basic import AnsibleModule

FAIL_PREFIX = "the transfer cannot go ahead: "

ARGUMENT_SPEC: dict[str, Any] = {
    "state": {"type": "str", "required": True, "choices": ["list", "authorize", "revoke"]},
    "dests": {"type": "list", "elements": "str", "default": []},
    "folders": {"type": "list", "elements": "dict", "default": []},
    "ssh_client": {"type": "str"},
    "comments": {"type": "list", "elements": "str", "default": []},
    "authorized_keys": {"type": "str", "default": "~/.ssh/authorized_keys"},
}


def step(p: dict[str, Any], check_mode: bool) -> dict[str, Any]:
    if p["state"] == "list":
        return receiver_list(p["dests"], check_mode=check_mode)
    if p["state"] == "authorize":
        return receiver_authorize(p["authorized_keys"], p["folders"], ssh_client=p["ssh_client"], check_mode=check_mode)
    return receiver_revoke(p["authorized_keys"], p["comments"], check_mode=check_mode)


def main() -> None:
    run_module(AnsibleModule, ARGUMENT_SPEC, step, errors=(TransferError,), fail_prefix=FAIL_PREFIX)


if __name__ == "__main__":
    main()
