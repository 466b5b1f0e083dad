"""Checkpoints in base_checkpoints/<model_tag>/: model_<step>.pt and meta_<step>.json (rank 0),
optim_<step>_rank<r>.pt (every rank). Stand-in written by nanochat-arms; not nanochat's code.
"""

from __future__ import annotations

import json
import logging
import os
from typing import Any

import torch

logger = logging.getLogger(__name__)


def _atomic_save(obj: Any, path: str) -> None:
    torch.save(obj, path + ".tmp")
    os.replace(path + ".tmp", path)


def save_checkpoint(
    checkpoint_dir: str,
    step: int,
    model_data: dict[str, Any],
    optimizer_data: dict[str, Any] | None,
    meta_data: dict[str, Any],
    rank: int = 0,
) -> None:
    os.makedirs(checkpoint_dir, exist_ok=True)
    if rank == 0:
        model_path = os.path.join(checkpoint_dir, f"model_{step:06d}.pt")
        _atomic_save(model_data, model_path)
        logger.info(f"Saved model parameters to: {model_path}")
        meta_path = os.path.join(checkpoint_dir, f"meta_{step:06d}.json")
        with open(meta_path + ".tmp", "w", encoding="utf-8") as fh:
            json.dump(meta_data, fh, indent=2)
        os.replace(meta_path + ".tmp", meta_path)
        logger.info(f"Saved metadata to: {meta_path}")
    if optimizer_data is not None:
        optimizer_path = os.path.join(checkpoint_dir, f"optim_{step:06d}_rank{rank}.pt")
        _atomic_save(optimizer_data, optimizer_path)
        logger.info(f"Saved optimizer state to: {optimizer_path}")


def load_checkpoint(
    checkpoint_dir: str, step: int, device: torch.device | str, load_optimizer: bool = False, rank: int = 0
) -> tuple[dict[str, Any], dict[str, Any] | None, dict[str, Any]]:
    """(model state, optimizer state of this rank or None, meta) of the checkpoint at ``step``."""
    model_path = os.path.join(checkpoint_dir, f"model_{step:06d}.pt")
    meta_path = os.path.join(checkpoint_dir, f"meta_{step:06d}.json")
    for path in (model_path, meta_path):
        if not os.path.exists(path):
            raise FileNotFoundError(f"Checkpoint file {path} not found: is step {step} saved in {checkpoint_dir}?")
    model_data = torch.load(model_path, map_location=device)
    with open(meta_path, encoding="utf-8") as fh:
        meta_data = json.load(fh)
    optimizer_data = None
    if load_optimizer:
        optim_path = os.path.join(checkpoint_dir, f"optim_{step:06d}_rank{rank}.pt")
        if not os.path.exists(optim_path):
            raise FileNotFoundError(
                f"Optimizer shard {optim_path} not found: resuming needs the world size the checkpoint was "
                f"saved with ({meta_data.get('world_size', '?')} processes)"
            )
        optimizer_data = torch.load(optim_path, map_location=device)
    return model_data, optimizer_data, meta_data
