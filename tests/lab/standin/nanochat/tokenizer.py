"""BPE tokenizer: trained with rustbpe, encoded with tiktoken, saved as tokenizer/tokenizer.pkl.

Stand-in written by nanochat-arms; not nanochat's code.
"""

from __future__ import annotations

import os
import pickle
from collections.abc import Iterable, Iterator

import tiktoken
import torch

from nanochat.common import get_base_dir

SPECIAL_TOKENS = ["<|bos|>", "<|user_start|>", "<|user_end|>", "<|assistant_start|>", "<|assistant_end|>"]
BOS = "<|bos|>"


class Tokenizer:
    def __init__(self, enc: tiktoken.Encoding) -> None:
        self.enc = enc
        self.bos_token_id = enc.encode_single_token(BOS)

    @classmethod
    def train_from_iterator(cls, text_iterator: Iterator[str], vocab_size: int) -> Tokenizer:
        import rustbpe

        n_merged = vocab_size - len(SPECIAL_TOKENS)
        if n_merged < 256:
            raise ValueError(f"vocab size must be at least {256 + len(SPECIAL_TOKENS)}, got {vocab_size}")
        trainer = rustbpe.Tokenizer()
        trainer.train_from_iterator(text_iterator, n_merged)
        ranks = {bytes(tok): rank for tok, rank in sorted(trainer.get_mergeable_ranks(), key=lambda kv: kv[1])}
        specials = {name: len(ranks) + i for i, name in enumerate(SPECIAL_TOKENS)}
        enc = tiktoken.Encoding(
            name="rustbpe", pat_str=trainer.get_pattern(), mergeable_ranks=ranks, special_tokens=specials
        )
        return cls(enc)

    @classmethod
    def from_directory(cls, tokenizer_dir: str) -> Tokenizer:
        path = os.path.join(tokenizer_dir, "tokenizer.pkl")
        if not os.path.exists(path):
            raise FileNotFoundError(f"Tokenizer not found at {path}: train it first with `python -m scripts.tok_train`")
        with open(path, "rb") as fh:
            return cls(pickle.load(fh))

    def save(self, tokenizer_dir: str) -> str:
        os.makedirs(tokenizer_dir, exist_ok=True)
        path = os.path.join(tokenizer_dir, "tokenizer.pkl")
        with open(path + ".tmp", "wb") as fh:
            pickle.dump(self.enc, fh)
        os.replace(path + ".tmp", path)
        return path

    def get_vocab_size(self) -> int:
        return self.enc.n_vocab

    def get_bos_token_id(self) -> int:
        return self.bos_token_id

    def is_special(self, token_id: int) -> bool:
        return token_id >= self.enc.n_vocab - len(SPECIAL_TOKENS)

    def token_byte_lengths(self) -> list[int]:
        """Bytes each token id stands for (0 for special tokens): the denominator of bits per byte."""
        return [
            0 if self.is_special(i) else len(self.enc.decode_single_token_bytes(i)) for i in range(self.enc.n_vocab)
        ]

    def encode(self, texts: Iterable[str], prepend: int | None = None) -> list[list[int]]:
        head = [] if prepend is None else [prepend]
        return [head + self.enc.encode_ordinary(text) for text in texts]

    def decode(self, ids: list[int]) -> str:
        return self.enc.decode(ids)


def get_tokenizer() -> Tokenizer:
    return Tokenizer.from_directory(os.path.join(get_base_dir(), "tokenizer"))


def get_token_bytes(device: torch.device | str = "cpu") -> torch.Tensor:
    path = os.path.join(get_base_dir(), "tokenizer", "token_bytes.pt")
    if not os.path.exists(path):
        raise FileNotFoundError(
            f"token_bytes not found at {path}: train the tokenizer first with `python -m scripts.tok_train`"
        )
    with open(path, "rb") as fh:
        return torch.load(fh, map_location=device)
