"""The lab, as the integration tests see it: playbooks run through ansible-runner, hosts over ssh."""

from __future__ import annotations

import copy
import os
import shlex
import subprocess
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml
from arms_runner import Summary, run_playbook

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
LAB = os.path.join(ROOT, ".lab")
LAB_INVENTORY = "inventory/lab/"
HOSTS = {
    "cpu": ("arms-prep", "127.0.0.2"),
    "top": ("arms-top", "127.0.0.3"),
    "random": ("arms-random", "127.0.0.4"),
    "random2": ("arms-random2", "127.0.0.5"),
}
# never set up by any test: check mode is run against them and must leave them as they are
FRESH_HOSTS = {
    "cpu": ("arms-fresh-prep", "127.0.0.6"),
    "top": ("arms-fresh-top", "127.0.0.7"),
    "random": ("arms-fresh-random", "127.0.0.8"),
}


class Secrets(dict):
    """The lab's secrets; never shown in a test report (pytest prints fixture values in tracebacks)."""

    def __repr__(self) -> str:
        return f"Secrets({', '.join(sorted(self))}: values hidden)"


def lab_secrets() -> dict[str, str]:
    out: dict[str, str] = Secrets()
    with open(os.path.join(LAB, "secrets.env")) as fh:
        for line in fh:
            line = line.strip()
            if line and not line.startswith("#") and "=" in line:
                key, value = line.split("=", 1)
                out[key] = value.strip("'\"")
    return out


@pytest.fixture(scope="session")
def lab() -> dict[str, str]:
    """The running lab's secrets; fails (not skips) when the lab is not up, so CI cannot pass without it."""
    pid_file = os.path.join(LAB, "ssh", "sshd.pid")
    if not os.path.exists(pid_file) or not os.path.exists(os.path.join(LAB, "secrets.env")):
        pytest.fail("the lab is not up: run `make lab-up` (as root) before the integration tests")
    return lab_secrets()


def play(
    playbook: str,
    secrets: dict[str, str] | None,
    *,
    inventory: str = LAB_INVENTORY,
    env_extra: dict[str, str] | None = None,
    **kw: Any,
) -> Summary:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("WANDB_", "HF_", "HUGGINGFACE_", "AZURE_"))}
    env.update(secrets or {})
    env.update(env_extra or {})
    return run_playbook(playbook, inventory, project_dir=ROOT, env=env, **kw)


def on_host(host: str, command: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    """Run ``command`` on a lab host over its real ssh, as that host's user."""
    user, addr = HOSTS[host]
    argv = [
        "ssh",
        "-q",
        "-i",
        os.path.join(LAB, "ssh", "id_ed25519"),
        "-p",
        "2222",
        "-o",
        "BatchMode=yes",
        "-o",
        "StrictHostKeyChecking=no",
        "-o",
        "UserKnownHostsFile=/dev/null",
        f"{user}@{addr}",
        "bash -lc " + shlex.quote(command),
    ]
    proc = subprocess.run(argv, capture_output=True, text=True, timeout=600)
    if check and proc.returncode != 0:
        raise AssertionError(f"on {host}: {command!r} failed ({proc.returncode}): {proc.stderr.strip()}")
    return proc


def converge(secrets: dict[str, str], *playbooks: str, **kw: Any) -> None:
    """Run ``playbooks`` in order; each must succeed."""
    for playbook in playbooks:
        summary = play(playbook, secrets, **kw)
        assert summary.ok, f"{playbook}: {failure_text(summary)}"


def failure_text(summary: Summary) -> str:
    return "\n".join(f"{f['host']} | {f['task']} | {f['msg']}" for f in summary.failures) or summary.stdout[-4000:]


def lab_overrides() -> dict[str, Any]:
    """The lab's experiment_overrides, to change one thing and pass back as an extra var."""
    with open(os.path.join(ROOT, "inventory", "lab", "group_vars", "all", "lab.yml")) as fh:
        return copy.deepcopy(yaml.safe_load(fh)["experiment_overrides"])


def problems_of(summary: Summary) -> str:
    """The preflight's sentences (or any failure text) of a run."""
    return failure_text(summary)


def inventory_variant(folder: Path, edit: Callable[[dict[str, Any]], None]) -> str:
    """A copy of the lab's inventory in ``folder`` whose hosts.yml ``edit`` changed; the lab's settings kept."""
    lab_inv = os.path.join(ROOT, "inventory", "lab")
    group_vars = folder / "group_vars" / "all"
    group_vars.mkdir(parents=True)
    for name in os.listdir(os.path.join(lab_inv, "group_vars", "all")):
        text = Path(lab_inv, "group_vars", "all", name).read_text()
        # the lab's paths are found from inventory_dir: pin them to this checkout instead
        group_vars.joinpath(name).write_text(text.replace("(inventory_dir ~ '/../..') | realpath", repr(ROOT)))
    with open(os.path.join(lab_inv, "hosts.yml")) as fh:
        hosts = yaml.safe_load(fh)
    hosts["all"]["vars"]["ansible_ssh_private_key_file"] = os.path.join(LAB, "ssh", "id_ed25519")
    edit(hosts)
    (folder / "hosts.yml").write_text(yaml.safe_dump(hosts))
    return str(folder)
