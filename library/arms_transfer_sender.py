#!/usr/bin/python
"""Ansible module: the sending end of a host-to-host transfer (logic in module_utils/arms_transfer.py)."""

from __future__ import annotations

DOCUMENTATION = r"""
module: arms_transfer_sender
short_description: The sending end of the arms_transfer role, one round trip per step
description:
  - C(state=offer) compares each folder to send with the receiver's listing (size and whole-second time). For
    the folders that differ it makes a fresh key each (what a killed run left is removed first), trusts only the
    receiver's host keys, and writes the job script that sends them one after the other and removes the keys and
    itself when it ends. Nothing is made when every folder is in sync.
  - C(state=probe) logs in to the receiver with the probe key (its host key checked) and returns what it printed,
    the address it saw the sender at; fails with a sentence saying why it could not log in.
  - C(state=start) runs the job script the offer wrote, detached from the connection, and returns its job id
    (its status file in O(async_dir), as Ansible's async jobs keep theirs, for M(nanochat_job) to wait on).
  - C(state=cleanup) removes every key file, the known_hosts and the job script of the transfer.
options:
  state:
    description: The step.
    type: str
    required: true
    choices: [offer, probe, start, cleanup]
  srcs:
    description: The folders on this host to send, in order (C(state=offer)).
    type: list
    elements: path
    default: []
  dests:
    description: The receiver's folder of each (its C(state=list) C(dests)), in order; returned with each folder.
    type: list
    elements: str
    default: []
  receiver_files:
    description: The receiver's listing of each folder (its C(state=list) C(files)), in the same order.
    type: list
    elements: dict
    default: []
  comments:
    description: The comment of each folder's key (C(arms-transfer-...)), in the same order.
    type: list
    elements: str
    default: []
  count:
    description: How many folders the transfer has (C(state=probe) and C(state=cleanup); offer counts O(srcs)).
    type: int
    default: 0
  keydir:
    description: Folder on this host for the key files and the job script.
    type: path
    required: true
  keyname:
    description: Name the key files, the known_hosts and the script start with.
    type: str
    required: true
  log:
    description: rsync's progress log on this host.
    type: path
    required: true
  probe_key:
    description: The key the probe logs in with (C(state=probe); the offer returns it).
    type: path
  script:
    description: The job script to run (C(state=start); the offer returns it).
    type: path
  async_dir:
    description: Where the job's status file goes (C(state=start)).
    type: path
    default: ~/.ansible_async
  host_keys:
    description: The receiver's public ssh host keys (read through Ansible's checked connection, or pinned).
    type: list
    elements: str
    default: []
  user:
    description: The user the sender logs in as on the receiver.
    type: str
  addr:
    description: The address the sender reaches the receiver at.
    type: str
  port:
    description: The receiver's ssh port.
    type: int
    default: 22
  remove_stale:
    description: Report files the receiver holds that the sender no longer has, for the receiver to remove.
    type: bool
    default: true
  label:
    description: What is sent, for messages.
    type: str
    default: files
  sender:
    description: This host's inventory name, for messages.
    type: str
    default: the sender
  receiver:
    description: The receiver's inventory name, for messages.
    type: str
    default: the receiver
  authorized_keys:
    description: The receiver's authorized_keys file, for messages.
    type: str
    default: ~/.ssh/authorized_keys
author: nanochat-arms
"""

EXAMPLES = r"""
- name: What differs is worked out, and keys made for it
  arms_transfer_sender:
    state: offer
    srcs: [/home/prep/.local/share/nanochat-arms/prepared/random16.5/base_data]
    receiver_files: "{{ here.files }}"
    comments: [arms-transfer-random-0]
    keydir: /home/prep/.local/share/nanochat-arms
    keyname: transfer-random
    log: /home/prep/.local/share/nanochat-arms/progress/transfer-random.log
    host_keys: "{{ here.host_keys }}"
    user: "{{ here.user }}"
    addr: 10.0.0.4
    port: 22
  delegate_to: cpu
"""

RETURN = r"""
folders:
  description: Per folder C({in_sync, stale, src, dest, pubkey?, comment?, sender_names?}) (C(state=offer)).
  type: list
  returned: state=offer
send:
  description: Whether anything is to be sent (C(state=offer)).
  type: bool
  returned: state=offer
keyed:
  description: Whether keys were made (C(state=offer)); the cleanup must then run.
  type: bool
  returned: state=offer
script:
  description: The job script to run (C(state=offer), when something is to be sent).
  type: str
  returned: when something is to be sent
probe_key:
  description: The key the probe logs in with (C(state=offer), when something is to be sent).
  type: str
  returned: when something is to be sent
ansible_job_id:
  description: The job's id (C(state=start)).
  type: str
  returned: state=start
ssh_client:
  description: What the receiver printed to the probe (C(state=probe)).
  type: str
  returned: state=probe
"""

from typing import Any

from ansible.module_utils.arms_common import run_module
from ansible.module_utils.arms_transfer import (
    SenderPaths,
    TransferError,
    sender_cleanup,
    sender_offer,
    sender_probe,
    start_job,
)
from ansible.module_utils.basic import AnsibleModule

FAIL_PREFIX = "the transfer cannot go ahead: "

ARGUMENT_SPEC: dict[str, Any] = {
    "state": {"type": "str", "required": True, "choices": ["offer", "probe", "start", "cleanup"]},
    "srcs": {"type": "list", "elements": "path", "default": []},
    "dests": {"type": "list", "elements": "str", "default": []},
    "receiver_files": {"type": "list", "elements": "dict", "default": []},
    "comments": {"type": "list", "elements": "str", "default": []},
    "count": {"type": "int", "default": 0},
    "keydir": {"type": "path", "required": True},
    "keyname": {"type": "str", "required": True},
    "log": {"type": "path", "required": True},
    "probe_key": {"type": "path"},
    "script": {"type": "path"},
    "async_dir": {"type": "path", "default": "~/.ansible_async"},
    "host_keys": {"type": "list", "elements": "str", "default": []},
    "user": {"type": "str"},
    "addr": {"type": "str"},
    "port": {"type": "int", "default": 22},
    "remove_stale": {"type": "bool", "default": True},
    "label": {"type": "str", "default": "files"},
    "sender": {"type": "str", "default": "the sender"},
    "receiver": {"type": "str", "default": "the receiver"},
    "authorized_keys": {"type": "str", "default": "~/.ssh/authorized_keys"},
}


def step(p: dict[str, Any], check_mode: bool) -> dict[str, Any]:
    count = len(p["srcs"]) if p["state"] == "offer" else p["count"]
    paths = SenderPaths(p["keydir"], p["keyname"], count, p["log"])
    if p["state"] == "start":
        return {"changed": False} if check_mode else start_job(p["script"], p["async_dir"])
    if p["state"] == "cleanup":
        return {"changed": False} if check_mode else sender_cleanup(paths)
    if p["state"] == "probe":
        if check_mode:
            return {"changed": False, "ssh_client": ""}
        return sender_probe(
            key=p["probe_key"], known_hosts=paths.known_hosts, user=p["user"], addr=p["addr"], port=p["port"],
            auth_file=p["authorized_keys"], sender=p["sender"], receiver=p["receiver"], label=p["label"],
        )  # fmt: skip
    return sender_offer(
        srcs=p["srcs"], dests=p["dests"], receiver_files=p["receiver_files"], paths=paths, comments=p["comments"],
        host_keys=p["host_keys"], user=p["user"], addr=p["addr"], port=p["port"], remove_stale=p["remove_stale"],
        label=p["label"], check_mode=check_mode,
    )  # fmt: skip


def main() -> None:
    run_module(AnsibleModule, ARGUMENT_SPEC, step, errors=(TransferError,), fail_prefix=FAIL_PREFIX)


if __name__ == "__main__":
    main()
