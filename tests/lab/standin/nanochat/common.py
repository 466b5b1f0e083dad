"""Common helpers: logging, base dir, device and distributed set-up, rank-0 printing.

Stand-in written by nanochat-arms from nanochat's documented interface; not nanochat's code. Unlike
nanochat (whose process group is created for CUDA only), it joins a gloo process group under
torchrun on CPU: that is what the stand-in is for.
"""

from __future__ import annotations

import logging
import os
from typing import Any

import torch
import torch.distributed as dist

logging.basicConfig(level=logging.INFO, format="%(asctime)s - %(name)s - %(levelname)s - %(message)s")
logger = logging.getLogger(__name__)


def get_base_dir() -> str:
    """Where data, tokenizer and checkpoints live: $NANOCHAT_BASE_DIR, else ~/.cache/nanochat."""
    base_dir = os.environ.get("NANOCHAT_BASE_DIR") or os.path.join(os.path.expanduser("~"), ".cache", "nanochat")
    os.makedirs(base_dir, exist_ok=True)
    return base_dir


def get_dist_info() -> tuple[bool, int, int, int]:
    """(is_ddp, rank, local_rank, world_size) from torchrun's environment."""
    if all(k in os.environ for k in ("RANK", "LOCAL_RANK", "WORLD_SIZE")):
        return True, int(os.environ["RANK"]), int(os.environ["LOCAL_RANK"]), int(os.environ["WORLD_SIZE"])
    return False, 0, 0, 1


def print0(s: str = "", **kwargs: Any) -> None:
    """Print on rank 0 only, flushed per line (logs are read while training runs)."""
    if int(os.environ.get("RANK", 0)) == 0:
        print(s, **kwargs, flush=True)


def autodetect_device_type() -> str:
    # The stand-in trains on CPU only: autodetect always answers cpu.
    print0("Autodetected device type: cpu")
    return "cpu"


def compute_init(device_type: str = "cpu") -> tuple[bool, int, int, int, torch.device]:
    """Seed, set the TF32 policy, join the process group; returns (ddp, rank, local_rank, world, device)."""
    if device_type != "cpu":
        raise RuntimeError(f"device type {device_type!r} is not available: the stand-in nanochat trains on cpu only")
    torch.manual_seed(42)
    # matmul precision: the line of nanochat from 2026-02-18 on (nothing for the TF32 repair to do)
    torch.set_float32_matmul_precision("high")
    ddp, rank, local_rank, world_size = get_dist_info()
    if ddp:
        dist.init_process_group(backend="gloo")
        dist.barrier()
    if rank == 0:
        logger.info(f"Distributed world size: {world_size}")
    return ddp, rank, local_rank, world_size, torch.device("cpu")


def compute_cleanup() -> None:
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


class DummyWandb:
    """Stands in for a W&B run when --run=dummy (wandb is then never imported)."""

    def log(self, *args: Any, **kwargs: Any) -> None:
        pass

    def finish(self) -> None:
        pass
