"""Host setup in the lab (issue: foundation): converge, repeat with no change, refuse bad inputs."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
import yaml
from conftest import LAB, ROOT, failure_text, lab_overrides, on_host, play

pytestmark = pytest.mark.lab
ARM_HOSTS = ["cpu", "top", "random"]


def pin_sha() -> str:
    """The experiment's own pin (experiment.yml: the lab overrides the repo, never the commit), in the
    lab's clone of the real nanochat."""
    with open(os.path.join(ROOT, "inventory", "group_vars", "all", "experiment.yml")) as fh:
        commit = yaml.safe_load(fh)["experiment"]["nanochat"]["commit"]
    return subprocess.run(
        [
            "git",
            "-C",
            os.path.join(LAB, "nanochat.git"),
            "rev-parse",
            "--verify",
            "--end-of-options",
            f"{commit}^{{commit}}",
        ],
        check=True,
        capture_output=True,
        text=True,
    ).stdout.strip()


@pytest.fixture(scope="module")
def converged(lab):
    first = play("playbooks/setup.yml", lab)
    assert first.ok, failure_text(first)
    second = play("playbooks/setup.yml", lab)
    return lab, first, second


def test_second_run_changes_nothing(converged) -> None:
    _, _, second = converged
    assert second.ok, failure_text(second)
    assert set(second.hosts) == set(ARM_HOSTS)
    changed = {h: s.changed for h, s in second.hosts.items()}
    assert changed == dict.fromkeys(ARM_HOSTS, 0), [t for t in second.tasks if t["status"] == "changed"]


@pytest.mark.parametrize("host", ARM_HOSTS)
def test_checkout_is_at_the_pin_with_lf_scripts_and_the_tf32_patch(converged, host: str) -> None:
    head = on_host(host, "git -C ~/nanochat rev-parse HEAD").stdout.strip()
    assert head == pin_sha()
    scripts = on_host(host, "cd ~/nanochat && ls runs/*.sh").stdout.split()
    assert scripts
    for script in scripts:
        assert on_host(host, f"cd ~/nanochat && grep -c $'\\r' {script} || true").stdout.strip() == "0"
        assert on_host(host, f"cd ~/nanochat && test -x {script}", check=False).returncode == 0
    common = on_host(host, "cat ~/nanochat/nanochat/common.py").stdout
    assert common.count('torch.set_float32_matmul_precision("high")') == 1
    assert "fp32_precision" not in common


@pytest.mark.parametrize("host", ARM_HOSTS)
def test_venv_imports_rustbpe_psutil_and_new_wandb(converged, host: str) -> None:
    out = on_host(host, "~/nanochat/.venv/bin/python -c 'import rustbpe, psutil, wandb; print(wandb.__version__)'")
    major, minor, patch = (int(x) for x in out.stdout.strip().split(".")[:3])
    assert (major, minor, patch) >= (0, 22, 3)


def test_a_converged_venv_skips_its_install_but_a_package_removed_by_hand_is_installed_again(converged) -> None:
    secrets, _, second = converged
    # the converged run stamped each venv's inputs and skipped the install (uv is not even asked)
    installs = [t for t in second.tasks if "dependencies and the runbook's extras are installed" in t["task"]]
    assert installs and all(t["status"] == "skipped" for t in installs), installs
    # the failure table's "No module named psutil": removed by hand, with the stamp still saying "installed"
    on_host("top", "~/.local/bin/uv pip uninstall --quiet --python ~/nanochat/.venv/bin/python psutil")
    assert on_host("top", "~/nanochat/.venv/bin/python -c 'import psutil'", check=False).returncode != 0
    repaired = play("playbooks/repair.yml", secrets, tags="deps", limit="top")
    assert repaired.ok, failure_text(repaired)
    assert on_host("top", "~/nanochat/.venv/bin/python -c 'import psutil'", check=False).returncode == 0
    again = play("playbooks/repair.yml", secrets, tags="deps", limit="top")
    assert again.ok and again.hosts["top"].changed == 0, failure_text(again)


@pytest.mark.parametrize("host", ARM_HOSTS)
def test_credential_files_are_private_and_written_once(converged, host: str) -> None:
    secrets, _, _ = converged
    modes = on_host(host, "stat -c '%a %n' ~/.netrc ~/.config/nanochat-arms/secrets.env ~/.cache/huggingface/token")
    for line in modes.stdout.splitlines():
        assert line.split()[0] == "600", line
    netrc = on_host(host, "cat ~/.netrc").stdout
    assert netrc.count(secrets["WANDB_API_KEY"]) == 1
    # read the way wandb reads it
    login = on_host(host, "python3 -c \"import netrc; print(netrc.netrc().authenticators('api.wandb.ai')[2])\"")
    assert login.stdout.strip() == secrets["WANDB_API_KEY"]
    assert on_host(host, "cat ~/.cache/huggingface/token").stdout == secrets["HF_TOKEN"]
    env_file = on_host(host, "cat ~/.config/nanochat-arms/secrets.env").stdout
    # the launcher sources it with bash: that is the value that counts
    sourced = on_host(host, 'set -a; . ~/.config/nanochat-arms/secrets.env; printf %s "$WANDB_API_KEY"').stdout
    assert sourced == secrets["WANDB_API_KEY"]
    has_azure = "AZURE_STORAGE_CONNECTION_STRING" in env_file
    assert has_azure == (host == "top"), "only the Azure arm's host gets Azure credentials"


def test_real_nanochat_scripts_copied_through_windows_are_repaired(converged) -> None:
    secrets, _, _ = converged
    # as if copied through Windows: CRLF endings and no run bit on nanochat's own runs/*.sh
    on_host("top", "cd ~/nanochat && for f in runs/*.sh; do sed -i 's/$/\\r/' $f; chmod -x $f; done")
    assert int(on_host("top", "cd ~/nanochat && cat runs/*.sh | grep -c $'\\r'").stdout) > 0
    repaired = play("playbooks/repair.yml", secrets, tags="crlf", limit="top")
    assert repaired.ok and repaired.hosts["top"].changed == 1, failure_text(repaired)
    for script in on_host("top", "cd ~/nanochat && ls runs/*.sh").stdout.split():
        assert on_host("top", f"cd ~/nanochat && grep -c $'\\r' {script} || true").stdout.strip() == "0"
        assert on_host("top", f"cd ~/nanochat && test -x {script}", check=False).returncode == 0
    # byte for byte nanochat's own files again (modes aside, git sees no change)
    assert on_host("top", "git -C ~/nanochat -c core.fileMode=false diff --stat -- runs").stdout == ""
    again = play("playbooks/repair.yml", secrets, tags="crlf", limit="top")
    assert again.ok and again.hosts["top"].changed == 0


def gpu_venv(secrets: dict[str, str], index_dir: str) -> object:
    """The venv role with nanochat's gpu extra in check mode (its install is a dry run: no GB of CUDA
    wheels), the index name its pyproject gives torch pointed at a local stand-in index."""
    extravars = {
        "role": "nanochat_venv",
        "nanochat_venv_extra": "gpu",
        "nanochat_venv_torch_spec": "",
        "nanochat_venv_index_urls": {"pytorch-cu128": f"file://{index_dir}/simple"},
    }
    return play("playbooks/run_role.yml", secrets, limit="cpu", extravars=extravars, check=True, verbosity=1)


def test_the_gpu_venv_resolves_nanochats_own_torch_from_the_index_its_pyproject_names(converged) -> None:
    secrets, _, _ = converged
    # lab.sh built .lab/torch-index: one wheel named like the real torch-2.9.1+cu128
    summary = gpu_venv(secrets, os.path.join(LAB, "torch-index"))
    assert summary.ok, failure_text(summary)
    out = summary.stdout
    # uv's own command, as the role ran it (argv items): the index by the name nanochat's pyproject uses
    assert '"--index"' in out and '"pytorch-cu128=file://' in out and "unsafe-best-match" in out
    assert "+ torch==2.9.1+cu128" in out and "- torch==2.13.0+cpu" in out
    # a dry run: the lab host still trains with its CPU torch, and no CUDA package was installed
    version = on_host("cpu", "~/nanochat/.venv/bin/python -c 'import torch; print(torch.__version__)'").stdout
    assert version.strip() == "2.13.0+cpu"
    assert "nvidia" not in on_host("cpu", "ls ~/nanochat/.venv/lib/python3.11/site-packages").stdout
    # control: an index without that exact build fails at the install, naming the torch it needs
    other = os.path.join(LAB, "torch-index-cu126")  # where the lab's users can read it
    builder = os.path.join(ROOT, "tests", "lab", "fake_torch_index.py")
    subprocess.run([sys.executable, builder, other, "--version", "2.9.1+cu126"], check=True, capture_output=True)
    subprocess.run(["chmod", "-R", "a+rX", other], check=True)
    failed = gpu_venv(secrets, other)
    assert not failed.ok and "torch==2.9.1+cu128" in failed.stdout


def test_no_secret_in_runner_output_or_artifacts(converged, tmp_path) -> None:
    secrets, first, second = converged
    pdd = tmp_path / "runner"
    summary = play("playbooks/setup.yml", secrets, private_data_dir=str(pdd), verbosity=1)
    assert summary.ok, failure_text(summary)
    values = [v for k, v in secrets.items() if k != "AZURE_STORAGE_CONNECTION_STRING"]
    values.append("AccountKey=Eby8")  # the Azure secret part
    for run in (first, second, summary):
        for value in values:
            assert value not in run.stdout
    for dirpath, _, files in os.walk(pdd):
        for name in files:
            data = open(os.path.join(dirpath, name), "rb").read()
            for value in values:
                assert value.encode() not in data, f"secret found in {os.path.join(dirpath, name)}"


def test_unknown_commit_fails_at_the_start_with_a_sentence(lab) -> None:
    ov = lab_overrides()
    ov["nanochat"]["commit"] = "deadbeefcafe"
    summary = play("playbooks/setup.yml", lab, extravars={"experiment_overrides": ov})
    assert not summary.ok
    assert "is not a commit, tag or branch" in failure_text(summary)
    assert not any(t["task"].startswith("System packages") for t in summary.tasks)


def test_unreachable_repo_fails_at_the_start(lab) -> None:
    ov = lab_overrides()
    ov["nanochat"]["repo"] = "/nonexistent/nanochat.git"
    summary = play("playbooks/setup.yml", lab, extravars={"experiment_overrides": ov})
    assert not summary.ok and "cannot be reached" in failure_text(summary)


def test_missing_wandb_key_is_named(lab) -> None:
    secrets = {k: v for k, v in lab.items() if k != "WANDB_API_KEY"}
    summary = play("playbooks/setup.yml", secrets, env_extra={"WANDB_API_KEY": ""})
    assert not summary.ok
    text = failure_text(summary)
    assert "needs a W&B key" in text and "run name other than dummy" in text


def test_malformed_wandb_key_is_reported_without_showing_it(lab) -> None:
    bad = "wandb_v1_" + "x" * 30
    summary = play("playbooks/setup.yml", {**lab, "WANDB_API_KEY": bad})
    assert not summary.ok
    text = failure_text(summary)
    assert "malformed" in text and "39 characters long" in text
    assert bad not in summary.stdout and bad not in text
