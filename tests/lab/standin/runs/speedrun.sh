#!/bin/bash
# The whole pipeline on one node: venv, tokenizer, base model pretraining on several processes.
# (stand-in nanochat written by nanochat-arms for its lab; the same steps at toy scale, on CPU)
#   bash runs/speedrun.sh            or, with W&B logging:   WANDB_RUN=speedrun bash runs/speedrun.sh

export OMP_NUM_THREADS=1
export NANOCHAT_BASE_DIR="$HOME/.cache/nanochat"
mkdir -p "$NANOCHAT_BASE_DIR"

# Python venv with uv
command -v uv &> /dev/null || { echo "uv is needed: install it first"; exit 1; }
[ -d ".venv" ] || uv venv
uv sync --extra gpu
source .venv/bin/activate

if [ -z "$WANDB_RUN" ]; then
    WANDB_RUN=dummy
fi

# the shards must already be in $NANOCHAT_BASE_DIR/base_data (the stand-in downloads nothing)
python -m scripts.tok_train --max-chars=2000000000 --vocab-size=32768

NPROC_PER_NODE=${NPROC_PER_NODE:-8}
torchrun --standalone --nproc_per_node=$NPROC_PER_NODE -m scripts.base_train -- --depth=20 --device-batch-size=32 --run=$WANDB_RUN
