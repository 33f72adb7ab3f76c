"""Task heads by input/output shape (the "types of RNN"): a dropout + linear map from either
the encoder's pooled summary (many-to-one: class logits, or ``horizon`` forecasts at once)
or from every step's output (many-to-many: e.g. next-token logits for a language model)."""

from __future__ import annotations

import torch
from torch import nn


class LinearHead(nn.Module):
    def __init__(self, in_dim: int, out_dim: int, dropout: float = 0.0, per_step: bool = False):
        super().__init__()
        self.per_step = per_step  # read by apply_head: feed per-step outputs, not the summary
        self.net = nn.Sequential(nn.Dropout(dropout), nn.Linear(in_dim, out_dim))

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        return self.net(features)
