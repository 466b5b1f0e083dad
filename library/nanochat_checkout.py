#!/usr/bin/python
"""Ansible module: a nanochat checkout at a pinned commit (logic in module_utils/arms_git.py)."""

from __future__ import annotations

DOCUMENTATION = r"""
module: nanochat_checkout
short_description: Keep a nanochat git checkout at a pinned commit
description:
  - Clones O(repo) into O(dest) when missing and puts HEAD at O(version), resolved to a full sha.
  - A checkout already at the pin is left alone, including the project's own edits to it (CRLF and
    TF32 repairs), so a second run reports no change.
  - When the pin moves, local edits to tracked files are discarded and HEAD moves to the new commit;
    the CRLF and TF32 roles then repair the new commit. Untracked files (the venv) are kept.
  - Fails with a sentence for an unreachable repo or a version that is not a commit, tag or branch;
    a fresh clone that cannot reach the pin is removed again.
options:
  repo:
    description: Git URL or local path of the nanochat repository.
    type: str
    required: true
  dest:
    description: Where the checkout lives (the runbook's C(~/nanochat)).
    type: path
    required: true
  version:
    description: Commit sha (short or full), tag or branch to pin.
    type: str
    required: true
author: nanochat-arms
"""

EXAMPLES = r"""
- name: Nanochat is checked out at the experiment's commit
  nanochat_checkout:
    repo: https://github.com/karpathy/nanochat.git
    dest: ~/nanochat
    version: b07604e
"""

RETURN = r"""
before:
  description: HEAD before the task (null for a fresh clone).
  type: str
  returned: always
after:
  description: Full sha HEAD is at after the task.
  type: str
  returned: success
commit_date:
  description: Committer date of the pinned commit, YYYY-MM-DD (decides nanochat's flag style).
  type: str
  returned: success
cloned:
  description: Whether the repository was cloned by this run.
  type: bool
  returned: always
moved:
  description: Whether HEAD moved.
  type: bool
  returned: always
"""

from typing import Any

from ansible.module_utils.arms_common import run_module
from ansible.module_utils.arms_git import ensure_checkout
from ansible.module_utils.basic import AnsibleModule

ARGUMENT_SPEC: dict[str, Any] = {
    "repo": {"type": "str", "required": True},
    "dest": {"type": "path", "required": True},
    "version": {"type": "str", "required": True},
}


def checkout(p: dict[str, Any], check_mode: bool) -> dict[str, Any]:
    r = ensure_checkout(p["repo"], p["dest"], p["version"], check_mode=check_mode)
    return {
        "changed": r.changed,
        "before": r.before,
        "after": r.after,
        "commit_date": r.commit_date,
        "cloned": r.cloned,
        "moved": r.moved,
        "msg": r.msg,
        "diff": (
            {
                "before": f"HEAD {r.before or '(no checkout)'}\n",
                "after": f"HEAD {r.after or p['version'] + ' (once cloned)'}\n",
            }
            if r.changed
            else {}
        ),
    }


def main() -> None:
    run_module(AnsibleModule, ARGUMENT_SPEC, checkout)


if __name__ == "__main__":
    main()
