"""arms_secret_files: secret files are 0600, written whole or as a marked block, and never shown."""

from __future__ import annotations

import netrc
import os
import stat
from pathlib import Path

from modtest import run_module

KEY = "wandb_v1_" + "k" * 77


def netrc_block(key: str = KEY) -> str:
    return f"machine api.wandb.ai\n  login user\n  password {key}\n"


def files(tmp_path: Path, key: str = KEY) -> list[dict[str, str]]:
    return [
        {"path": str(tmp_path / "cfg" / "secrets.env"), "content": f"WANDB_API_KEY='{key}'\n"},
        {"path": str(tmp_path / ".netrc"), "content": netrc_block(key), "marker": "nanochat-arms W&B"},
        {"path": str(tmp_path / "hf" / "token"), "content": "hf_secret"},
    ]


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_files_are_written_0600_in_0700_folders_and_a_second_run_changes_nothing(tmp_path, capsys) -> None:
    first = run_module("arms_secret_files", {"files": files(tmp_path)}, capsys)
    assert first["changed"] and len(first["changed_paths"]) == 3
    for path in (tmp_path / "cfg" / "secrets.env", tmp_path / ".netrc", tmp_path / "hf" / "token"):
        assert mode(path) == 0o600
    assert mode(tmp_path / "cfg") == 0o700 and mode(tmp_path / "hf") == 0o700
    assert (tmp_path / "hf" / "token").read_text() == "hf_secret"
    assert netrc.netrc(str(tmp_path / ".netrc")).authenticators("api.wandb.ai") == ("user", "", KEY)
    again = run_module("arms_secret_files", {"files": files(tmp_path)}, capsys)
    assert not again["changed"] and len(again["unchanged_paths"]) == 3
    # no temporary file left next to a secret
    assert sorted(os.listdir(tmp_path / "cfg")) == ["secrets.env"]


def test_the_netrc_block_is_replaced_in_place_and_other_machines_are_kept(tmp_path, capsys) -> None:
    rc = tmp_path / ".netrc"
    rc.write_text("machine example.org\n  login me\n  password other\n")
    run_module("arms_secret_files", {"files": files(tmp_path)}, capsys)
    run_module("arms_secret_files", {"files": files(tmp_path, key="b" * 40)}, capsys)
    text = rc.read_text()
    assert text.count("# BEGIN nanochat-arms W&B") == 1 and KEY not in text
    parsed = netrc.netrc(str(rc))
    assert parsed.authenticators("api.wandb.ai") == ("user", "", "b" * 40)
    assert parsed.authenticators("example.org") == ("me", "", "other")


def test_a_readable_secret_file_is_made_private_again(tmp_path, capsys) -> None:
    run_module("arms_secret_files", {"files": files(tmp_path)}, capsys)
    (tmp_path / "hf" / "token").chmod(0o644)
    fixed = run_module("arms_secret_files", {"files": files(tmp_path)}, capsys)
    assert fixed["changed_paths"] == [str(tmp_path / "hf" / "token")]
    assert mode(tmp_path / "hf" / "token") == 0o600


def test_check_mode_writes_nothing_and_nothing_shows_a_secret(tmp_path, capsys) -> None:
    predicted = run_module("arms_secret_files", {"files": files(tmp_path)}, capsys, check_mode=True)
    assert predicted["changed"] and len(predicted["changed_paths"]) == 3
    assert os.listdir(tmp_path) == []
    result = run_module("arms_secret_files", {"files": files(tmp_path)}, capsys)
    shown = repr(predicted) + repr(result)
    assert KEY not in shown and "hf_secret" not in shown


def test_a_folder_where_a_secret_goes_fails_with_a_sentence_before_anything_is_written(tmp_path, capsys) -> None:
    (tmp_path / "hf" / "token").mkdir(parents=True)
    failed = run_module("arms_secret_files", {"files": files(tmp_path)}, capsys)
    assert failed["failed"] and "is a folder; expected a file for a secret" in failed["msg"]
    assert sorted(os.listdir(tmp_path)) == ["hf"]
