#!/bin/bash
# A small run on a CPU machine (no GPU): tokenizer, then a few pretraining steps on 2 processes.
# (stand-in nanochat written by nanochat-arms for its lab)

export OMP_NUM_THREADS=1
export NANOCHAT_BASE_DIR="${NANOCHAT_BASE_DIR:-$HOME/.cache/nanochat}"
mkdir -p "$NANOCHAT_BASE_DIR"

[ -d ".venv" ] || uv venv
uv sync --extra cpu
source .venv/bin/activate

python -m scripts.tok_train --max-chars=1000000000 --vocab-size=4096
torchrun --standalone --nproc_per_node=2 -m scripts.base_train -- --depth=4 --max-seq-len=64 --device-batch-size=4 --total-batch-size=1024 --num-iterations=20 --eval-every=10 --eval-tokens=4096 --core-metric-every=-1 --sample-every=-1 --device-type=cpu --run=dummy
