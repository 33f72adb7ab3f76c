"""Task heads: a dropout + linear map from the encoder's pooled summary (many-to-one: class
logits, ``horizon`` forecasts at once, regression outputs) or from every step's output
(many-to-many: next-token logits). Which one a task uses is the task table's decision."""

from __future__ import annotations

import torch
from torch import nn


class LinearHead(nn.Module):
    def __init__(self, in_dim: int, out_dim: int, dropout: float = 0.0):
        super().__init__()
        self.net = nn.Sequential(nn.Dropout(dropout), nn.Linear(in_dim, out_dim))

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        return self.net(features)
