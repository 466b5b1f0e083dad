"""A tiny GPT: the stand-in trains it whatever --depth says, so a step takes milliseconds on CPU.

Stand-in written by nanochat-arms; not nanochat's code.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn


@dataclass
class GPTConfig:
    sequence_len: int = 64
    vocab_size: int = 512
    n_layer: int = 2
    n_head: int = 2
    n_embd: int = 32


class Block(nn.Module):
    def __init__(self, config: GPTConfig) -> None:
        super().__init__()
        self.n_head = config.n_head
        self.qkv = nn.Linear(config.n_embd, 3 * config.n_embd, bias=False)
        self.proj = nn.Linear(config.n_embd, config.n_embd, bias=False)
        self.fc = nn.Linear(config.n_embd, 4 * config.n_embd, bias=False)
        self.fc_proj = nn.Linear(4 * config.n_embd, config.n_embd, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        B, T, C = x.shape
        q, k, v = self.qkv(F.rms_norm(x, (C,))).split(C, dim=2)
        q, k, v = (t.view(B, T, self.n_head, C // self.n_head).transpose(1, 2) for t in (q, k, v))
        y = F.scaled_dot_product_attention(q, k, v, is_causal=True)
        x = x + self.proj(y.transpose(1, 2).contiguous().view(B, T, C))
        return x + self.fc_proj(F.relu(self.fc(F.rms_norm(x, (C,)))).square())


class GPT(nn.Module):
    def __init__(self, config: GPTConfig) -> None:
        super().__init__()
        self.config = config
        self.wte = nn.Embedding(config.vocab_size, config.n_embd)
        self.wpe = nn.Embedding(config.sequence_len, config.n_embd)
        self.blocks = nn.ModuleList(Block(config) for _ in range(config.n_layer))
        self.lm_head = nn.Linear(config.n_embd, config.vocab_size, bias=False)
        for module in self.modules():
            if isinstance(module, (nn.Linear, nn.Embedding)):
                nn.init.normal_(module.weight, mean=0.0, std=0.02)

    def num_params(self) -> int:
        return sum(p.numel() for p in self.parameters())

    def param_counts(self) -> dict[str, int]:
        """Parameters by kind, as nanochat's "Parameter counts:" lines list them."""
        return {
            "wte": self.wte.weight.numel(),
            "wpe": self.wpe.weight.numel(),
            "lm_head": self.lm_head.weight.numel(),
            "transformer_matrices": sum(p.numel() for p in self.blocks.parameters()),
            "total": self.num_params(),
        }

    def flops_per_token(self) -> int:
        # 6 flops per parameter per token (forward + backward), attention ignored: the model is tiny
        return 6 * self.num_params()

    def forward(
        self, idx: torch.Tensor, targets: torch.Tensor | None = None, loss_reduction: str = "mean"
    ) -> torch.Tensor:
        T = idx.size(1)
        x = self.wte(idx) + self.wpe(torch.arange(T, device=idx.device))
        for block in self.blocks:
            x = block(x)
        logits = self.lm_head(F.rms_norm(x, (x.size(-1),))).float()
        if targets is None:
            return logits
        return F.cross_entropy(logits.view(-1, logits.size(-1)), targets.view(-1), reduction=loss_reduction)

    @torch.no_grad()
    def generate(self, ids: list[int], max_tokens: int) -> list[int]:
        """Greedy continuation of ``ids`` (deterministic)."""
        out = list(ids)
        for _ in range(max_tokens):
            window = torch.tensor([out[-self.config.sequence_len :]], dtype=torch.long)
            out.append(int(self(window)[0, -1].argmax()))
        return out[len(ids) :]
