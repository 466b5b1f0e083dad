"""Real nanochat for unit tests: the bundle checked out at the pin, importable in this process.

The checkout comes from the bundle (test_nanochat_eras.clone_nanochat), at the lab's pin b07604e, in a
worktree of its own. nanochat's tokenizer module imports HuggingFace ``tokenizers`` at its top (for a
second tokenizer class this project never uses); nanochat's venv on a host has it, the controller's
venv does not. When it is missing, a stand-in package providing only the imported names is put in
``sys.modules``: ``RustBPETokenizer`` (rustbpe + tiktoken, what nanochat trains and loads) never
touches them, so the code under test is nanochat's own.
"""

from __future__ import annotations

import sys
import types
from pathlib import Path

import pytest

PIN = "b07604e"


def hf_tokenizers_importable() -> None:
    try:
        import tokenizers  # noqa: F401
    except ImportError:
        root = types.ModuleType("tokenizers")
        for name in ("Tokenizer", "Regex"):
            setattr(root, name, type(name, (), {}))
        root.pre_tokenizers = types.ModuleType("tokenizers.pre_tokenizers")  # type: ignore[attr-defined]
        root.decoders = types.ModuleType("tokenizers.decoders")  # type: ignore[attr-defined]
        models = types.ModuleType("tokenizers.models")
        models.BPE = type("BPE", (), {})  # type: ignore[attr-defined]
        trainers = types.ModuleType("tokenizers.trainers")
        trainers.BpeTrainer = type("BpeTrainer", (), {})  # type: ignore[attr-defined]
        sys.modules.update({"tokenizers": root, "tokenizers.models": models, "tokenizers.trainers": trainers})


def nanochat_at_pin(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from test_nanochat_eras import clone_nanochat, worktree  # here: a bare subprocess imports this file too

    repo = clone_nanochat(tmp_path_factory)
    hf_tokenizers_importable()
    return worktree(repo, PIN, tmp_path_factory.mktemp("nanochat-pin") / "nanochat")
