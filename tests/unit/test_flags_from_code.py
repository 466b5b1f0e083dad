"""The flag style is read from the checkout's own scripts, on the REAL nanochat at every era.

The date is not the rule: the six commits dated 2026-01-13 before 7312ec9 still take underscores.
The bundle is cloned once per session by test_nanochat_eras.clone_nanochat.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from ansible.module_utils.arms_common import ArmsError
from ansible.module_utils.arms_flags import (
    BASE_TRAIN,
    TOK_TRAIN,
    flag_style_from_source,
    flag_style_of_checkout,
    tok_train_flag_style_of_checkout,
)
from test_nanochat_eras import clone_nanochat, git, show, worktree

# (commit, base_train style, tok_train style); tok_train never exec'd the configurator
ERAS = [
    ("3a5e0bc", "configurator", "underscore"),  # 2025-10-13, the first commit
    ("eb7bbc1~1", "configurator", "underscore"),  # 2026-01-04, the last configurator commit
    ("eb7bbc1", "underscore", "underscore"),  # 2026-01-04, argparse with underscores
    ("3b50b77", "underscore", "underscore"),  # 2026-01-13, yet still underscores
    ("7312ec9", "dash", "dash"),  # 2026-01-13, dashes
    ("b07604e", "dash", "dash"),
    ("92d63d4", "dash", "dash"),  # HEAD
]
# dated 2026-01-13 like 7312ec9, older than it: a date rule gets all six wrong
SAME_DAY_UNDERSCORE = ["238353c", "64b48d0", "2398541", "43c29dd", "f92efce", "3b50b77"]


@pytest.fixture(scope="session")
def nanochat(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return clone_nanochat(tmp_path_factory)


def _flag_in(text: str, style: str, name: str) -> bool:
    """Whether ``--name`` written in ``style`` is something the script accepts (declares or reads)."""
    if style == "configurator":  # --key=value sets the module-level global of that name
        return re.search(rf"^{name} = ", text, re.MULTILINE) is not None
    spelled = name if style == "underscore" else name.replace("_", "-")
    return f"'--{spelled}'" in text or f'"--{spelled}"' in text


@pytest.mark.parametrize(("commit", "base_style", "tok_style"), ERAS)
def test_style_of_each_era_read_from_its_scripts(nanochat: Path, commit: str, base_style: str, tok_style: str) -> None:
    base = show(nanochat, commit, BASE_TRAIN)
    tok = show(nanochat, commit, TOK_TRAIN)
    assert flag_style_from_source(base) == base_style
    assert flag_style_from_source(tok, TOK_TRAIN) == tok_style
    # the style found is the one the script takes: the flags the launchers write exist in that spelling
    assert _flag_in(base, base_style, "device_batch_size") and _flag_in(base, base_style, "max_seq_len")
    assert _flag_in(tok, tok_style, "max_chars") and _flag_in(tok, tok_style, "vocab_size")
    other = {"underscore": "dash", "dash": "underscore"}
    if base_style in other:
        assert not _flag_in(base, other[base_style], "device_batch_size")
    assert not _flag_in(tok, other[tok_style], "max_chars")


@pytest.mark.parametrize("commit", SAME_DAY_UNDERSCORE)
def test_commits_of_the_dash_day_before_7312ec9_still_take_underscores(nanochat: Path, commit: str) -> None:
    assert git(nanochat, "log", "-1", "--format=%cs", commit).strip() == "2026-01-13"
    assert git(nanochat, "merge-base", "--is-ancestor", commit, "7312ec9") == ""  # older than the switch
    assert flag_style_from_source(show(nanochat, commit, BASE_TRAIN)) == "underscore"
    assert flag_style_from_source(show(nanochat, commit, TOK_TRAIN), TOK_TRAIN) == "underscore"


@pytest.mark.parametrize(("commit", "base_style", "tok_style"), [ERAS[1], ERAS[3], ERAS[4], ERAS[6]])
def test_style_of_a_checkout(nanochat: Path, tmp_path: Path, commit: str, base_style: str, tok_style: str) -> None:
    wt = worktree(nanochat, commit, tmp_path / "nanochat")
    assert flag_style_of_checkout(str(wt)) == base_style
    assert flag_style_of_checkout(str(wt), TOK_TRAIN) == tok_style
    assert tok_train_flag_style_of_checkout(str(wt)) == tok_style


def test_comments_do_not_change_the_style(nanochat: Path) -> None:
    text = show(nanochat, "3b50b77", BASE_TRAIN)
    text += '\n# parser.add_argument("--device-batch-size", type=int)  # after 7312ec9\n'
    assert flag_style_from_source(text) == "underscore"
    text = show(nanochat, "eb7bbc1~1", BASE_TRAIN).replace("exec(open(", "# exec(open(")
    with pytest.raises(ArmsError, match="shows no flag style"):
        flag_style_from_source(text)


@pytest.mark.parametrize(
    ("commit", "style"), [("eb7bbc1~1", "configurator"), ("3b50b77", "underscore"), ("92d63d4", "dash")]
)
def test_a_script_this_python_cannot_parse_is_still_read(nanochat: Path, commit: str, style: str) -> None:
    # nanochat may use syntax newer than a host's Python: the text is then read line by line
    text = show(nanochat, commit, BASE_TRAIN) + "\ntype Future[T] = list[T] if T else (\n"
    assert flag_style_from_source(text) == style


def test_scripts_that_show_no_single_style_are_refused_with_a_sentence(nanochat: Path) -> None:
    with pytest.raises(ArmsError) as err:
        flag_style_from_source('import argparse\np = argparse.ArgumentParser()\np.add_argument("--run")\n')
    msg = str(err.value)
    assert msg.startswith(f"{BASE_TRAIN} shows no flag style") and "--run" in msg and "pin a nanochat commit" in msg

    mixed = show(nanochat, "7312ec9", BASE_TRAIN).replace('"--max-seq-len"', '"--max_seq_len"')
    with pytest.raises(ArmsError, match=r"with dashes \(.*\) and with underscores \(--max_seq_len\)"):
        flag_style_from_source(mixed)

    both = show(nanochat, "eb7bbc1~1", BASE_TRAIN) + '\nparser.add_argument("--device_batch_size")\n'
    with pytest.raises(ArmsError, match="both execs nanochat's configurator and declares argparse options"):
        flag_style_from_source(both)


def test_a_checkout_without_the_script_says_what_to_run(tmp_path: Path) -> None:
    with pytest.raises(ArmsError, match=r"scripts/tok_train\.py does not exist.*Run the checkout role first"):
        tok_train_flag_style_of_checkout(str(tmp_path))
