"""Task heads, one per input/output shape ("types of RNN")."""

from __future__ import annotations

import torch
from torch import nn


class ClassificationHead(nn.Module):
    """Many-to-one: the encoder's pooled summary to class logits."""

    per_step = False

    def __init__(self, in_dim: int, num_classes: int, dropout: float = 0.0):
        super().__init__()
        self.net = nn.Sequential(nn.Dropout(dropout), nn.Linear(in_dim, num_classes))

    def forward(self, pooled: torch.Tensor) -> torch.Tensor:
        return self.net(pooled)


class ForecastHead(nn.Module):
    """Many-to-one multi-step: the pooled summary to ``horizon`` future values at once."""

    per_step = False

    def __init__(self, in_dim: int, horizon: int, dropout: float = 0.0):
        super().__init__()
        self.net = nn.Sequential(nn.Dropout(dropout), nn.Linear(in_dim, horizon))

    def forward(self, pooled: torch.Tensor) -> torch.Tensor:
        return self.net(pooled)


class PerStepHead(nn.Module):
    """Many-to-many: one output vector per time step (next-token logits for a language model)."""

    per_step = True

    def __init__(self, in_dim: int, out_dim: int, dropout: float = 0.0):
        super().__init__()
        self.net = nn.Sequential(nn.Dropout(dropout), nn.Linear(in_dim, out_dim))

    def forward(self, outputs: torch.Tensor) -> torch.Tensor:
        return self.net(outputs)
