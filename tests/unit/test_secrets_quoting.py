"""secrets.env: bash `source` and the modules' loader read the same secrets, and a quote is never code (issue 15)."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import jinja2
import pytest
from ansible.module_utils.arms_common import ArmsError, load_env_file
from ansible.plugins.filter.core import quote, to_bool
from modtest import run_module

ROOT = Path(__file__).resolve().parents[2]
TEMPLATE = ROOT / "roles" / "credentials" / "templates" / "secrets.env.j2"
ANSIBLE_PLAYBOOK = str(ROOT / ".venv" / "bin" / "ansible-playbook")
NAMES = [
    "WANDB_API_KEY",
    "HF_TOKEN",
    "HUGGINGFACE_HUB_TOKEN",
    "AZURE_STORAGE_CONNECTION_STRING",
    "AZURE_STORAGE_ACCOUNT_URL",
    "AZURE_STORAGE_SAS_TOKEN",
    "AZURE_STORAGE_ACCOUNT_KEY",
]


def render(tmp_path: Path, **secrets: str) -> Path:
    """secrets.env.j2 as the role renders it (Ansible's template lookup: trim_blocks, its quote filter)."""
    env = jinja2.Environment(trim_blocks=True, undefined=jinja2.StrictUndefined)
    env.filters.update(quote=quote, bool=to_bool)
    values = {
        "credentials_wandb_api_key": "",
        "credentials_hf_token": "",
        "credentials_azure_connection_string": "",
        "credentials_azure_account_url": "",
        "credentials_azure_sas_token": "",
        "credentials_azure_account_key": "",
        "credentials_azure_required": True,
        **secrets,
    }
    path = tmp_path / "secrets.env"
    path.write_text(env.from_string(TEMPLATE.read_text()).render(**values))
    return path


def bash_reads(path: Path, cwd: Path) -> dict[str, str]:
    """What the launcher's wrapper gets: `set -a; . FILE; set +a` in bash, then the variables."""
    script = 'set -a; . "$1" || exit 97; set +a; shift; for n in "$@"; do printf "%s=%s\\0" "$n" "${!n-}"; done'
    proc = subprocess.run(
        ["/bin/bash", "-c", script, "bash", str(path), *NAMES],
        cwd=cwd,
        capture_output=True,
        env={"PATH": os.environ["PATH"]},
        timeout=30,
    )
    assert proc.returncode == 0, proc.stderr
    pairs = [p.decode().split("=", 1) for p in proc.stdout.split(b"\0") if p]
    return {k: v for k, v in pairs if v}


HOSTILE = [
    "hf_x'; touch PWNED; '",  # the review's break-out, with a file instead of `id`
    "hf_a'b",  # read differently by bash and the old loader
    "'",
    "''",
    'a"b',
    "$(touch PWNED)",
    "`touch PWNED`",
    "a\\b",
    "a b  c",
    "x;touch PWNED",
    "#not a comment",
    "sv=2024-01-01&ss=b&sig=a%2Bb/c+d==",
    "DefaultEndpointsProtocol=https;AccountName=acct;AccountKey=k+/==;EndpointSuffix=core.windows.net",
    "tóken",
]


@pytest.mark.parametrize("secret", HOSTILE)
def test_bash_and_the_loader_read_the_same_secret_and_run_nothing(tmp_path: Path, secret: str) -> None:
    path = render(
        tmp_path,
        credentials_hf_token=secret,
        credentials_azure_sas_token=secret,
        credentials_azure_account_url="https://acct.blob.core.windows.net",
    )
    by_bash = bash_reads(path, tmp_path)
    assert not (tmp_path / "PWNED").exists(), path.read_text()
    assert by_bash["HF_TOKEN"] == secret and by_bash["AZURE_STORAGE_SAS_TOKEN"] == secret
    assert load_env_file(str(path)) == by_bash


def test_every_secret_of_the_file_round_trips(tmp_path: Path) -> None:
    secrets = {
        "credentials_wandb_api_key": "wandb_v1_" + "k" * 77,
        "credentials_hf_token": "hf_q'uote",
        "credentials_azure_connection_string": "AccountName=a;AccountKey=x'y",
        "credentials_azure_account_url": "https://a.blob.core.windows.net",
        "credentials_azure_sas_token": "?sv=1&sig=a'b",
        "credentials_azure_account_key": "k+/=",
    }
    path = render(tmp_path, **secrets)
    assert load_env_file(str(path)) == bash_reads(path, tmp_path)
    assert len(bash_reads(path, tmp_path)) == 7


@pytest.mark.parametrize(
    "line", ['TOKEN="$(id)"', "TOKEN=a b", "TOKEN='unterminated", "TOKEN=$HOME", 'TOKEN="a"', "TO KEN=x"]
)
def test_a_line_bash_would_read_otherwise_is_refused_not_guessed(tmp_path: Path, line: str) -> None:
    path = tmp_path / "secrets.env"
    path.write_text(f"# header\nOK='fine'\n{line}\n")
    with pytest.raises(ArmsError, match=r"line 3 of .* is not KEY='value' as the shell reads it"):
        load_env_file(str(path))


def test_the_files_the_old_template_wrote_still_read(tmp_path: Path) -> None:
    path = tmp_path / "secrets.env"
    path.write_text("# comment\nWANDB_API_KEY='abc123'\nHF_TOKEN=''\nX=plain\n")
    assert load_env_file(str(path)) == {"WANDB_API_KEY": "abc123", "HF_TOKEN": "", "X": "plain"}


def test_a_secret_file_that_is_a_symlink_is_refused_and_left_alone(tmp_path: Path, capsys) -> None:
    target = tmp_path / "elsewhere" / "token"
    target.parent.mkdir()
    target.write_text("someone else's file\n")
    link = tmp_path / "hf" / "token"
    link.parent.mkdir()
    link.symlink_to(target)
    res = run_module("arms_secret_files", {"files": [{"path": str(link), "content": "hf_secret"}]}, capsys)
    assert res["failed"] and "is a symbolic link" in res["msg"] and "hf_secret" not in json.dumps(res)
    assert link.is_symlink() and target.read_text() == "someone else's file\n"


def validate(tmp_path: Path, secret: str) -> subprocess.CompletedProcess[str]:
    """credentials/tasks/validate.yml on the controller with ``secret`` as the HF token."""
    play = tmp_path / "p.yml"
    play.write_text(
        "- hosts: localhost\n"
        "  gather_facts: false\n"
        "  tasks:\n"
        "    - ansible.builtin.include_role: {name: credentials, tasks_from: validate.yml}\n"
    )
    extra = {
        "credentials_wandb_required": False,
        "credentials_hf_required": True,
        "credentials_azure_required": False,
        "credentials_wandb_api_key": "",
        "credentials_hf_token": secret,
        "credentials_azure_connection_string": "",
        "credentials_azure_account_url": "",
        "credentials_azure_sas_token": "",
        "credentials_azure_account_key": "",
    }
    (tmp_path / "vars.json").write_text(json.dumps(extra))
    os.chmod(tmp_path / "vars.json", 0o600)
    return subprocess.run(
        [ANSIBLE_PLAYBOOK, "-i", "localhost,", "-c", "local", "-e", f"@{tmp_path / 'vars.json'}", str(play)],
        cwd=tmp_path,
        env={**os.environ, "ANSIBLE_CONFIG": str(ROOT / "ansible.cfg")},
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_a_secret_with_a_line_break_is_refused_before_anything_is_written(tmp_path: Path) -> None:
    """credentials/tasks/validate.yml: the sentence names the secret, never shows it."""
    proc = validate(tmp_path, "hf_line1\nline2")
    out = proc.stdout + proc.stderr
    assert proc.returncode != 0 and "The HF token given to localhost holds a line break" in " ".join(out.split())
    assert "hf_line1" not in out and "line2" not in out


@pytest.mark.parametrize("secret", ["hf_" + "x" * 34, "hf_a'b $(id) \\x00 tóken"])
def test_a_one_line_secret_passes_the_check(tmp_path: Path, secret: str) -> None:
    """Letters, quotes, backslashes, 'x', '0': only control characters are refused."""
    proc = validate(tmp_path, secret)
    assert proc.returncode == 0, proc.stdout[-2000:]
