"""Trivial baselines as fixed networks: they take a batch like any model and are scored by the
task's own metric code, so a baseline row and a model row always mean the same thing."""

from __future__ import annotations

import torch
from torch import nn


class Constant(nn.Module):
    """The same output for every sequence (majority-class logits, the mean target)."""

    def __init__(self, value: torch.Tensor):
        super().__init__()
        self.register_buffer("value", value)

    def forward(self, x: torch.Tensor, lengths: torch.Tensor, y=None) -> torch.Tensor:
        return self.value.expand(x.size(0), *self.value.shape)


class PerStepConstant(nn.Module):
    """Log-probabilities per step that ignore the input: one row for every step (C,), or one
    per position (T, C)."""

    def __init__(self, log_probs: torch.Tensor):
        super().__init__()
        self.register_buffer("log_probs", log_probs)

    def forward(self, x: torch.Tensor, lengths: torch.Tensor, y=None) -> torch.Tensor:
        steps = x.size(1)
        if self.log_probs.dim() == 1:
            return self.log_probs.expand(x.size(0), steps, -1)
        table = self.log_probs[:steps]
        if table.size(0) < steps:  # longer than anything seen in training: repeat the last row
            table = torch.cat([table, table[-1:].expand(steps - table.size(0), -1)])
        return table.expand(x.size(0), -1, -1)


class NaiveForecast(nn.Module):
    """The (seasonal) naive forecast: each target step's value one season earlier."""

    def __init__(self, channel: int, horizon: int, season: int):
        super().__init__()
        self.channel, self.horizon, self.season = channel, horizon, season

    def forward(self, x: torch.Tensor, lengths: torch.Tensor, y=None) -> torch.Tensor:
        from modules.tasks import naive_forecast

        return naive_forecast(x, lengths, self.channel, self.horizon, self.season)
