"""The nanochat_venv role against the REAL nanochat at the pin: torch for the gpu extra from the index its
pyproject names, and the lab's CPU path unchanged.

The GPU proof runs the role in check mode on a venv that exists but is empty: the role's own install
command then runs with ``--dry-run``, so uv resolves all of the export (torch's nvidia-* and triton
pins included, by their metadata only) exactly as on a GPU node, without downloading the several GB
those wheels weigh. The index named ``pytorch-cu128`` is pointed (``nanochat_venv_index_urls``) at a
stand-in index built by tests/lab/fake_torch_index.py that holds one wheel,
torch-2.9.1+cu128-cp311-cp311-manylinux_2_28_x86_64.whl. That build of torch exists nowhere else the
command can see (the package registry has no ``+cu128`` versions), and a control run whose stand-in
index holds another torch build fails: the torch the role would install comes from the named index.
"""

from __future__ import annotations

import os
import re
import tomllib
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from arms_runner import Summary
from modtest import run_module
from venvtest import VenvHost

GPU_TORCH = "torch==2.9.1+cu128"
INSTALL_TASK = "Nanochat's dependencies and the runbook's extras are installed in the venv"
INDEX_TASK = "Package indexes nanochat's pyproject names for the extra are known"
# the venv a check-mode test makes is empty: the import check (which the lab's tests cover on real
# venvs) is given a module every Python has, so the play reaches its end
NO_IMPORT_CHECK = {"nanochat_venv_check_imports": ["json"], "nanochat_venv_check_present": []}
# the lab's CPU settings (inventory/lab/group_vars/all/lab.yml)
LAB_CPU = {
    "nanochat_venv_torch_spec": "torch==2.13.0+cpu",
    "nanochat_venv_extra": "",
    "nanochat_venv_find_links": ["/opt/wheels"],
}
CPU_WHEEL = "/opt/wheels/torch-2.13.0+cpu-cp311-cp311-manylinux_2_28_x86_64.whl"


def task_status(summary: Summary, name: str) -> list[str]:
    return [t["status"] for t in summary.tasks if t["task"] == name]


def would_install(stderr: str) -> dict[str, str]:
    """name -> version of uv's ``+ name==version`` lines."""
    return dict(re.findall(r"^\s*\+ ([A-Za-z0-9_.-]+)==(\S+)$", stderr, flags=re.MULTILINE))


def test_module_reads_the_gpu_index_from_the_pins_pyproject(nanochat_pin: Path, capsys: pytest.CaptureFixture[str]):
    with open(nanochat_pin / "pyproject.toml", "rb") as fh:
        declared = {i["name"]: i["url"] for i in tomllib.load(fh)["tool"]["uv"]["index"]}
    gpu = run_module("nanochat_venv_index", {"checkout": str(nanochat_pin), "extra": "gpu"}, capsys)
    assert not gpu.get("failed") and not gpu["changed"]
    assert gpu["indexes"] == [
        {"name": "pytorch-cu128", "url": declared["pytorch-cu128"], "packages": ["torch"], "overridden": False}
    ]
    assert gpu["uv_args"] == [
        "--index",
        f"pytorch-cu128={declared['pytorch-cu128']}",
        "--index-strategy",
        "unsafe-best-match",
    ]
    cpu = run_module("nanochat_venv_index", {"checkout": str(nanochat_pin), "extra": "cpu"}, capsys)
    assert [i["name"] for i in cpu["indexes"]] == ["pytorch-cpu"]
    none = run_module("nanochat_venv_index", {"checkout": str(nanochat_pin), "extra": ""}, capsys)
    assert none["indexes"] == [] and none["uv_args"] == []


def gpu_check_run(venv_host: VenvHost, url: str) -> tuple[Summary, dict[str, Any]]:
    """The role in check mode on an empty venv, for the gpu extra, its index pytorch-cu128 at ``url``."""
    venv_host.make_empty_venv()
    return venv_host.run(
        check=True, nanochat_venv_extra="gpu", nanochat_venv_index_urls={"pytorch-cu128": url}, **NO_IMPORT_CHECK
    )


def test_gpu_extra_resolves_torch_cu128_from_the_named_index(
    venv_host: VenvHost, fake_torch_index: Callable[[str], str]
) -> None:
    url = fake_torch_index("2.9.1+cu128")
    summary, result = gpu_check_run(venv_host, url)
    assert summary.ok, summary.failures

    # the problem: the lock's export names the CUDA build of torch but no index for it
    exported = (venv_host.state / "nanochat-requirements.txt").read_text()
    assert re.search(rf"^{re.escape(GPU_TORCH)}\s*$", exported, flags=re.MULTILINE)
    assert not re.search(r"^\s*(--index|--extra-index-url|-i )", exported, flags=re.MULTILINE)
    assert "nvidia-cudnn-cu12==" in exported and "triton==" in exported

    # the role read the index from the checkout's pyproject, with the URL replaced by name
    assert result["indexes"]["indexes"] == [
        {"name": "pytorch-cu128", "url": url, "packages": ["torch"], "overridden": True}
    ]
    assert task_status(summary, INDEX_TASK) == ["ok"]

    # the role's own install command, dry-run in check mode, resolves that torch from that index
    install = result["install"]
    argv = install["cmd"]
    assert install["rc"] == 0, install["stderr"]
    assert ["--index", f"pytorch-cu128={url}"] == argv[argv.index("--index") : argv.index("--index") + 2]
    assert argv[argv.index("--index-strategy") + 1] == "unsafe-best-match"
    assert "--dry-run" in argv and argv[argv.index("--override") + 1] == "/dev/stdin"
    assert not (venv_host.state / "nanochat-overrides.txt").exists()  # check mode records nothing
    planned = would_install(install["stderr"])
    assert planned["torch"] == "2.9.1+cu128", install["stderr"]
    assert planned["nvidia-cudnn-cu12"] and planned["triton"]  # torch's CUDA pins resolved, by metadata
    assert tuple(int(x) for x in planned["wandb"].split(".")[:2]) >= (0, 22)
    assert task_status(summary, INSTALL_TASK) == ["changed"]
    # nothing was installed: the several GB of the CUDA packages were not fetched
    assert "torch" not in venv_host.installed()


def test_gpu_extra_fails_when_the_named_index_lacks_that_torch(
    venv_host: VenvHost, fake_torch_index: Callable[[str], str]
) -> None:
    """The control: same command, the index named pytorch-cu128 now holds another build of torch."""
    url = fake_torch_index("2.9.1+cu126")
    summary, result = gpu_check_run(venv_host, url)
    assert not summary.ok
    assert task_status(summary, INSTALL_TASK) == ["failed"]
    install = result["install"]
    assert f"pytorch-cu128={url}" in install["cmd"]
    assert install["rc"] != 0 and GPU_TORCH in install["stderr"], install["stderr"]


def test_an_index_name_the_extra_does_not_use_is_a_warning_not_a_url(
    venv_host: VenvHost, fake_torch_index: Callable[[str], str]
) -> None:
    venv_host.make_empty_venv()
    summary, result = venv_host.run(
        check=True,
        nanochat_venv_extra="gpu",
        nanochat_venv_index_urls={"pytorch-cu128": fake_torch_index("2.9.1+cu128"), "pytorch-cu130": "file:///nowhere"},
        **NO_IMPORT_CHECK,
    )
    assert summary.ok, summary.failures
    assert result["indexes"]["unused_overrides"] == ["pytorch-cu130"]
    assert "pytorch-cu130" in " ".join(result["indexes"].get("warnings", []))
    assert not any("nowhere" in a for a in result["install"]["cmd"])


def _need_cpu_wheel() -> None:
    if not os.path.isfile(CPU_WHEEL):
        pytest.fail(f"the lab's CPU torch wheel is missing: {CPU_WHEEL}")


def test_lab_cpu_path_resolves_torch_2_13_cpu_without_any_index(venv_host: VenvHost) -> None:
    """The lab's settings: no extra, torch forced to the local CPU wheel; nanochat's pyproject adds no index."""
    _need_cpu_wheel()
    venv_host.make_empty_venv()
    summary, result = venv_host.run(check=True, **LAB_CPU, **NO_IMPORT_CHECK)
    assert summary.ok, summary.failures
    assert result["indexes"]["indexes"] == [] and result["indexes"]["uv_args"] == []
    install = result["install"]
    assert install["rc"] == 0, install["stderr"]
    assert not any(a.startswith("--index") for a in install["cmd"])
    planned = would_install(install["stderr"])
    assert planned["torch"] == "2.13.0+cpu"  # the override, given on stdin (no overrides file was written)
    assert not any(name.startswith("nvidia-") for name in planned)
    assert tuple(int(x) for x in planned["wandb"].split(".")[:2]) >= (0, 22)


@pytest.mark.slow
@pytest.mark.skipif(
    os.environ.get("ARMS_VENV_FULL") != "1",
    reason="installs nanochat's ~130 packages (minutes on a cold cache); ARMS_VENV_FULL=1 runs it (the lab does too)",
)
def test_lab_cpu_path_installs_then_reruns_green(venv_host: VenvHost) -> None:
    """A real install with the lab's settings, then a second run and a check-mode run that change nothing."""
    _need_cpu_wheel()
    first, _ = venv_host.run(**LAB_CPU)
    assert first.ok, first.failures
    assert task_status(first, INSTALL_TASK) == ["changed"]
    assert {"torch", "wandb", "rustbpe", "psutil", "pyarrow", "tiktoken"} <= venv_host.installed()
    second, result = venv_host.run(**LAB_CPU)
    assert second.ok, second.failures
    assert second.changed_total() == {"localhost": 0}, [t for t in second.tasks if t["status"] == "changed"]
    assert "Installed" not in result["install"]["stderr"]
    overrides = (venv_host.state / "nanochat-overrides.txt").read_text().splitlines()
    assert overrides[1:] == ["wandb>=0.22.3", "torch==2.13.0+cpu"]
    checked, _ = venv_host.run(check=True, **LAB_CPU)
    assert checked.ok, checked.failures
    assert checked.changed_total() == {"localhost": 0}, [t for t in checked.tasks if t["status"] == "changed"]
