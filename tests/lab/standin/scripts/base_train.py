"""Pretrain the base model on the data dir's shards, on several processes and nodes (gloo on CPU).

    torchrun --standalone --nproc_per_node=2 -m scripts.base_train -- --depth=26 --run=NAME
    torchrun --nnodes=2 --node_rank=R --master_addr=HOST --master_port=PORT --nproc_per_node=2 \
        -m scripts.base_train -- --depth=26 --run=NAME

Stand-in written by nanochat-arms from nanochat's interface as of b07604e (flags, data dir, log
lines, checkpoints); not nanochat's code. It trains a tiny model on CPU whatever --depth says.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import time
from dataclasses import asdict
from typing import Any

import torch
import torch.distributed as dist
from nanochat.adamw import AdamW
from nanochat.checkpoint_manager import load_checkpoint, save_checkpoint
from nanochat.common import (
    DummyWandb,
    autodetect_device_type,
    compute_cleanup,
    compute_init,
    get_base_dir,
    print0,
)
from nanochat.dataloader import tokenizing_distributed_data_loader
from nanochat.gpt import GPT, GPTConfig
from nanochat.tokenizer import get_token_bytes, get_tokenizer

parser = argparse.ArgumentParser(description="Pretrain base model")
# logging
parser.add_argument("--run", type=str, default="dummy", help="wandb run name ('dummy' disables wandb logging)")
# runtime
parser.add_argument("--device-type", type=str, default="", help="cuda|cpu|mps (empty = autodetect)")
parser.add_argument("--fp8", action="store_true", help="train the linear layers in fp8 (H100 and later)")
# model
parser.add_argument("--depth", type=int, default=20, help="depth of the Transformer model")
parser.add_argument("--max-seq-len", type=int, default=2048, help="max context length")
# training horizon: the first of these that is positive wins
parser.add_argument("--num-iterations", type=int, default=-1, help="explicit number of steps (-1 = disable)")
parser.add_argument("--target-param-data-ratio", type=float, default=10.5, help="data:param ratio (-1 = disable)")
# optimization
parser.add_argument("--device-batch-size", type=int, default=32, help="per-device batch size")
parser.add_argument("--total-batch-size", type=int, default=-1, help="total batch size in tokens (-1 = auto)")
parser.add_argument("--resume-from-step", type=int, default=-1, help="resume training from this step (-1 = disable)")
# evaluation (the stand-in's default --eval-tokens is scaled down to its tiny model)
parser.add_argument("--eval-every", type=int, default=250, help="evaluate val bpb every N steps (-1 = disable)")
parser.add_argument("--eval-tokens", type=int, default=40960, help="number of tokens to evaluate val bpb on")
parser.add_argument("--core-metric-every", type=int, default=2000, help="evaluate CORE every N steps (-1 = disable)")
parser.add_argument("--sample-every", type=int, default=2000, help="sample from the model every N steps (-1 = disable)")
parser.add_argument("--save-every", type=int, default=-1, help="save checkpoints every N steps (-1 = only at the end)")
# output
parser.add_argument("--model-tag", type=str, default=None, help="checkpoint folder name (default: d<depth>)")
args = parser.parse_args()
user_config = vars(args).copy()

VOCAB_ROWS = 32768  # nanochat's optimizer splits the 32768 vocab rows evenly over the processes

# -----------------------------------------------------------------------------
# compute, logging
device_type = autodetect_device_type() if args.device_type == "" else args.device_type
ddp, ddp_rank, ddp_local_rank, ddp_world_size, device = compute_init(device_type)
master_process = ddp_rank == 0
if VOCAB_ROWS % ddp_world_size != 0:
    raise ValueError(
        f"The total process count {ddp_world_size} must divide {VOCAB_ROWS} (the optimizer splits the "
        "vocab rows evenly over processes): use a power of two such as 1, 2, 4, 8 or 16"
    )
if args.fp8:
    print0("Warning: FP8 training requires CUDA, ignoring --fp8 flag")
gpu_peak_flops = float("inf")  # MFU is not meaningful on CPU: nanochat prints 0.00 there

if args.run == "dummy" or not master_process:
    wandb_run: Any = DummyWandb()
else:
    import wandb

    wandb_run = wandb.init(project="nanochat", name=args.run, config=user_config)

# -----------------------------------------------------------------------------
# tokenizer, model
tokenizer = get_tokenizer()
token_bytes = get_token_bytes(device=device)
vocab_size = tokenizer.get_vocab_size()
print0(f"Vocab size: {vocab_size:,}")

model_config = GPTConfig(sequence_len=args.max_seq_len, vocab_size=vocab_size)
model = GPT(model_config).to(device)
model_config_kwargs = asdict(model_config)
print0(f"Model config:\n{json.dumps(model_config_kwargs, indent=2)}")
param_counts = model.param_counts()
print0("Parameter counts:")
for key, value in param_counts.items():
    print0(f"{key:24s}: {value:,}")
num_params = param_counts["total"]
num_flops_per_token = model.flops_per_token()
print0(f"Estimated FLOPs per token: {num_flops_per_token:e}")

output_dirname = args.model_tag if args.model_tag else f"d{args.depth}"
checkpoint_dir = os.path.join(get_base_dir(), "base_checkpoints", output_dirname)
resuming = args.resume_from_step != -1
meta_data: dict[str, Any] = {}
optimizer_data: dict[str, Any] | None = None
if resuming:
    print0(f"Resuming optimization from step {args.resume_from_step}")
    model_data, optimizer_data, meta_data = load_checkpoint(
        checkpoint_dir, args.resume_from_step, device, load_optimizer=True, rank=ddp_rank
    )
    if meta_data.get("world_size") != ddp_world_size:
        raise ValueError(
            f"Checkpoint step {args.resume_from_step} was saved by {meta_data.get('world_size')} processes "
            f"but this run has {ddp_world_size}: resuming needs the same world size"
        )
    model.load_state_dict(model_data)
    del model_data

# -----------------------------------------------------------------------------
# batch size, optimizer, horizon
tokens_per_fwdbwd = args.device_batch_size * args.max_seq_len
world_tokens_per_fwdbwd = tokens_per_fwdbwd * ddp_world_size
total_batch_size = args.total_batch_size
if total_batch_size == -1:
    total_batch_size = world_tokens_per_fwdbwd  # the stand-in's "auto": one micro-batch per process
    print0(f"Auto-computed optimal batch size: {total_batch_size:,} tokens")

optimizer = AdamW(model.parameters(), lr=3e-3, betas=(0.9, 0.95), weight_decay=0.0)
if resuming:
    assert optimizer_data is not None
    optimizer.load_state_dict(optimizer_data)
    del optimizer_data

train_loader = tokenizing_distributed_data_loader(
    tokenizer,
    args.device_batch_size,
    args.max_seq_len,
    split="train",
    device=device,
    resume_state_dict=meta_data.get("dataloader_state_dict") if resuming else None,
)
x, y, dataloader_state_dict = next(train_loader)  # first batch (fails here if a rank gets no data)

if args.num_iterations > 0:
    num_iterations = args.num_iterations
    print0(f"Using user-provided number of iterations: {num_iterations:,}")
elif args.target_param_data_ratio > 0:
    num_iterations = max(1, int(args.target_param_data_ratio * num_params) // total_batch_size)
    print0(f"Calculated number of iterations from target data:param ratio: {num_iterations:,}")
else:
    raise ValueError("No training horizon specified")
if resuming and args.resume_from_step > num_iterations:
    raise ValueError(f"Cannot resume from step {args.resume_from_step}: the run ends at step {num_iterations}")
total_tokens = total_batch_size * num_iterations
print0(f"Total number of training tokens: {total_tokens:,}")
print0(f"Tokens : Scaling params ratio: {total_tokens / num_params:.2f}")
print0(f"Total training FLOPs estimate: {num_flops_per_token * total_tokens:e}")


def build_val_loader() -> Any:
    return tokenizing_distributed_data_loader(tokenizer, args.device_batch_size, args.max_seq_len, "val", device)


def get_lr_multiplier(it: int) -> float:
    """Constant, then a linear warmdown to zero over the second half of the steps (nanochat's default)."""
    warmdown_iters = round(0.5 * num_iterations)
    if warmdown_iters == 0 or it <= num_iterations - warmdown_iters:
        return 1.0
    return (num_iterations - it) / warmdown_iters


def all_reduce_sum(t: torch.Tensor) -> torch.Tensor:
    if ddp:
        dist.all_reduce(t, op=dist.ReduceOp.SUM)
    return t


@torch.no_grad()
def evaluate_bpb(steps: int) -> float:
    """Bits per byte over ``steps`` validation batches per process (special tokens excluded)."""
    loader = build_val_loader()
    nats = torch.zeros((), dtype=torch.float64)
    nbytes = torch.zeros((), dtype=torch.float64)
    for _ in range(steps):
        vx, vy, _ = next(loader)
        loss = model(vx, vy, loss_reduction="none").view(-1)
        tb = token_bytes[vy.view(-1)]
        nats += (loss * (tb > 0)).sum().double()
        nbytes += tb.sum().double()
    all_reduce_sum(nats)
    all_reduce_sum(nbytes)
    return float(nats / (math.log(2) * nbytes)) if nbytes > 0 else float("inf")


@torch.no_grad()
def core_metric() -> float:
    # nanochat's CORE metric needs its downloaded eval bundle; the stand-in reports top-1 next-token
    # accuracy on one validation batch instead, in the same log line.
    vx, vy, _ = next(build_val_loader())
    hits = torch.tensor([(model(vx).argmax(-1) == vy).float().mean().item()], dtype=torch.float64)
    return float(all_reduce_sum(hits) / ddp_world_size)


# -----------------------------------------------------------------------------
# training loop
if not resuming:
    step = 0
    val_bpb: float | None = None
    min_val_bpb = float("inf")
    smooth_train_loss = 0.0
    total_training_time = 0.0
else:
    step = int(meta_data["step"])
    loop_state = meta_data["loop_state"]
    val_bpb = meta_data["val_bpb"]
    min_val_bpb = loop_state["min_val_bpb"] if loop_state["min_val_bpb"] is not None else float("inf")
    smooth_train_loss = float(loop_state["smooth_train_loss"])
    total_training_time = float(loop_state["total_training_time"])

assert total_batch_size % world_tokens_per_fwdbwd == 0, (
    f"total batch size {total_batch_size:,} is not a multiple of "
    "device batch size x max seq len x world size "
    f"= {args.device_batch_size} x {args.max_seq_len} x {ddp_world_size} = {world_tokens_per_fwdbwd:,}"
)
grad_accum_steps = total_batch_size // world_tokens_per_fwdbwd
print0(f"Tokens / micro-batch / rank: {args.device_batch_size} x {args.max_seq_len} = {tokens_per_fwdbwd:,}")
print0(f"Tokens / micro-batch: {world_tokens_per_fwdbwd:,}")
print0(f"Total batch size {total_batch_size:,} => gradient accumulation steps: {grad_accum_steps}")

while True:
    last_step = step == num_iterations
    flops_so_far = num_flops_per_token * total_batch_size * step

    if args.eval_every > 0 and (last_step or step % args.eval_every == 0):
        model.eval()
        val_bpb = evaluate_bpb(max(1, args.eval_tokens // world_tokens_per_fwdbwd))
        print0(f"Step {step:05d} | Validation bpb: {val_bpb:.6f}")
        min_val_bpb = min(min_val_bpb, val_bpb)
        wandb_run.log(
            {
                "step": step,
                "total_training_flops": flops_so_far,
                "total_training_time": total_training_time,
                "val/bpb": val_bpb,
            }
        )
        model.train()

    if args.core_metric_every > 0 and (last_step or (step > 0 and step % args.core_metric_every == 0)):
        model.eval()
        core = core_metric()
        print0(f"Step {step:05d} | CORE metric: {core:.4f}")
        wandb_run.log({"step": step, "total_training_flops": flops_so_far, "core_metric": core})
        model.train()

    if master_process and args.sample_every > 0 and (last_step or (step > 0 and step % args.sample_every == 0)):
        model.eval()
        for prompt in ("The capital of France is", "If yesterday was Friday, then tomorrow will be"):
            ids = tokenizer.encode([prompt], prepend=tokenizer.get_bos_token_id())[0]
            print0(tokenizer.decode(ids + model.generate(ids, max_tokens=16)))
        model.train()

    if last_step or (
        step > 0 and step != args.resume_from_step and args.save_every > 0 and step % args.save_every == 0
    ):
        save_checkpoint(
            checkpoint_dir,
            step,
            model.state_dict(),
            optimizer.state_dict(),
            {
                "step": step,
                "val_bpb": val_bpb,
                "model_config": model_config_kwargs,
                "user_config": user_config,
                "device_batch_size": args.device_batch_size,
                "max_seq_len": args.max_seq_len,
                "total_batch_size": total_batch_size,
                "world_size": ddp_world_size,  # the stand-in's own: resuming checks it
                "dataloader_state_dict": dataloader_state_dict,
                "loop_state": {
                    "min_val_bpb": None if math.isinf(min_val_bpb) else min_val_bpb,
                    "smooth_train_loss": smooth_train_loss,
                    "total_training_time": total_training_time,
                },
            },
            rank=ddp_rank,
        )

    if last_step:
        break

    # one optimization step: grad accumulation over micro-batches, then averaged over processes
    t0 = time.time()
    for _micro_step in range(grad_accum_steps):
        loss = model(x, y)
        train_loss = loss.detach()
        (loss / grad_accum_steps).backward()
        x, y, dataloader_state_dict = next(train_loader)
    if ddp:
        params = [p for p in model.parameters() if p.grad is not None]
        flat = torch.cat([p.grad.view(-1) for p in params])
        dist.all_reduce(flat, op=dist.ReduceOp.SUM)
        flat /= ddp_world_size
        offset = 0
        for p in params:
            n = p.numel()
            p.grad.copy_(flat[offset : offset + n].view_as(p.grad))
            offset += n
    lrm = get_lr_multiplier(step)
    for group in optimizer.param_groups:
        group["lr"] = group["initial_lr"] * lrm
    optimizer.step()
    optimizer.zero_grad()
    train_loss_f = train_loss.item()
    dt = time.time() - t0

    # logging: nanochat's step line, character for character
    ema_beta = 0.9
    smooth_train_loss = ema_beta * smooth_train_loss + (1 - ema_beta) * train_loss_f
    debiased_smooth_loss = smooth_train_loss / (1 - ema_beta ** (step + 1))
    pct_done = 100 * step / num_iterations
    tok_per_sec = int(total_batch_size / dt)
    mfu = 100 * num_flops_per_token * total_batch_size / dt / (gpu_peak_flops * ddp_world_size)
    if step > 10:
        total_training_time += dt  # only the time after the first 10 steps counts
    steps_done = step - 10
    if steps_done > 0:
        eta_str = f" | eta: {(num_iterations - step) * total_training_time / steps_done / 60:.1f}m"
    else:
        eta_str = ""
    epoch = dataloader_state_dict["epoch"]
    print0(
        f"step {step:05d}/{num_iterations:05d} ({pct_done:.2f}%) | loss: {debiased_smooth_loss:.6f} | "
        f"lrm: {lrm:.2f} | dt: {dt * 1000:.2f}ms | tok/sec: {tok_per_sec:,} | bf16_mfu: {mfu:.2f} | "
        f"epoch: {epoch} | total time: {total_training_time / 60:.2f}m{eta_str}"
    )
    if step % 100 == 0:
        wandb_run.log(
            {
                "step": step,
                "total_training_flops": flops_so_far,
                "total_training_time": total_training_time,
                "train/loss": debiased_smooth_loss,
                "train/lrm": lrm,
                "train/dt": dt,
                "train/tok_per_sec": tok_per_sec,
                "train/mfu": mfu,
                "train/epoch": epoch,
            }
        )
    step += 1

print0("Peak memory usage: 0.00MiB")  # nanochat measures CUDA memory only: 0 on CPU
print0(f"Total training time: {total_training_time / 60:.2f}m")
if val_bpb is not None:
    print0(f"Minimum validation bpb: {min_val_bpb:.6f}")
wandb_run.finish()
compute_cleanup()
