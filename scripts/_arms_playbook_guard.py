#!/usr/bin/env python3
"""ansible-playbook under a guard that ends its whole process group with the CI entry (see arms_runner.guard_main).

ansible-runner starts this instead of ansible-playbook (``binary=``); not meant to be run by hand.
"""

from __future__ import annotations

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import _arms_path  # noqa: F401
from arms_runner import guard_main

if __name__ == "__main__":
    sys.exit(guard_main(sys.argv[1:]))
