"""Common helpers: base dir, device and distributed set-up, rank-0 printing.

Stand-in written by nanochat-arms from nanochat's documented interface; not nanochat's code.
"""

from __future__ import annotations

import os
from typing import Any

import torch
import torch.distributed as dist


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


def print0(*args: Any, **kwargs: Any) -> None:
    """Print on rank 0 only, flushed per line (logs are read while training runs)."""
    if get_dist_info()[1] == 0:
        print(*args, **kwargs, flush=True)


def autodetect_device_type() -> str:
    # The stand-in trains on CPU only: autodetect always answers cpu.
    print0("Autodetected device type: cpu")
    return "cpu"


def compute_init(device_type: str = "cpu") -> tuple[bool, int, int, int, torch.device]:
    """Seed, set the TF32 policy, join the process group; returns (ddp, rank, local_rank, world, device)."""
    if device_type != "cpu":
        raise RuntimeError(f"device type {device_type!r} is not available: the stand-in nanochat trains on cpu only")
    torch.manual_seed(42)
    # TF32 policy for matmuls (the stand-in sets it on every device so a CPU lab sees the same line)
    # standin-only: era-underscore era-cuda-matmul
    torch.backends.cuda.matmul.fp32_precision = "tf32"
    # standin-end
    # standin-only: era-fp32
    torch.backends.fp32_precision = "tf32"
    # standin-end
    # standin-only: era-fixed era-climbmix
    torch.set_float32_matmul_precision("high")
    # standin-end
    ddp, rank, local_rank, world_size = get_dist_info()
    if ddp:
        dist.init_process_group(backend="gloo")
        dist.barrier()
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
