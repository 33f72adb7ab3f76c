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


class FutureCovariateHead(LinearHead):
    """A forecasting head that reads, beside the pooled summary, covariates known for the
    forecast steps: the last ``future`` channels of the window's last ``horizon`` valid steps
    (calendar channels prepared to hold the calendar ``horizon`` steps ahead)."""

    reads_window = True  # SequenceNetwork hands it the window too

    def __init__(self, in_dim: int, horizon: int, future: int, dropout: float = 0.0):
        super().__init__(in_dim + horizon * future, horizon, dropout)
        self.horizon, self.future = int(horizon), int(future)

    def forward(self, features: torch.Tensor, x: torch.Tensor | None = None,
                lengths: torch.Tensor | None = None) -> torch.Tensor:
        steps = lengths.to(x.device)[:, None] - self.horizon + torch.arange(self.horizon, device=x.device)
        rows = torch.arange(x.size(0), device=x.device)[:, None]
        known = x[rows, steps.clamp_min(0), x.size(-1) - self.future:]  # (B, horizon, future)
        return self.net(torch.cat([features, known.flatten(1).to(features.dtype)], dim=-1))
