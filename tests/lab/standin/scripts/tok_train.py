"""Train the BPE tokenizer on the training split; writes $NANOCHAT_BASE_DIR/tokenizer/.

    python -m scripts.tok_train --max-chars=2000000000

Stand-in written by nanochat-arms; not nanochat's code.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from collections.abc import Iterator

import psutil
import torch
from nanochat.common import get_base_dir
from nanochat.dataset import DATA_DIR, parquets_iter_batched, split_files
from nanochat.tokenizer import Tokenizer

parser = argparse.ArgumentParser(description="Train a BPE tokenizer on the pretraining data")
parser.add_argument("--max-chars", type=int, default=2_000_000_000, help="maximum characters to train on")
parser.add_argument("--doc-cap", type=int, default=10_000, help="maximum characters per document")
parser.add_argument("--vocab-size", type=int, default=32768, help="vocabulary size (special tokens included)")
args = parser.parse_args()
print(f"max_chars: {args.max_chars:,}")
print(f"doc_cap: {args.doc_cap:,}")
print(f"vocab_size: {args.vocab_size:,}")
print(f"CPU count: {psutil.cpu_count()}")

if not split_files("train"):
    sys.exit(f"No training text: {DATA_DIR} needs at least two parquet files (the last one is validation)")


def text_iterator() -> Iterator[str]:
    nchars = 0
    for texts in parquets_iter_batched(split="train"):
        for text in texts:
            doc = text[: args.doc_cap]
            nchars += len(doc)
            yield doc
            if nchars >= args.max_chars:
                return


t0 = time.time()
tokenizer = Tokenizer.train_from_iterator(text_iterator(), args.vocab_size)
print(f"Training time: {time.time() - t0:.2f}s")

tokenizer_dir = os.path.join(get_base_dir(), "tokenizer")
path = tokenizer.save(tokenizer_dir)
print(f"Saved tokenizer encoding to {path}")

token_bytes = torch.tensor(tokenizer.token_byte_lengths(), dtype=torch.int32)
token_bytes_path = os.path.join(tokenizer_dir, "token_bytes.pt")
with open(token_bytes_path + ".tmp", "wb") as fh:
    torch.save(token_bytes, fh)
os.replace(token_bytes_path + ".tmp", token_bytes_path)
print(f"Saved token_bytes to {token_bytes_path}")
print(f"Vocab size: {tokenizer.get_vocab_size():,} (asked for {args.vocab_size:,})")
