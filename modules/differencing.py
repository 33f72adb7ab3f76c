"""First differencing around a forecasting network (lag 1, or the dataset's season): the
network reads the window's target channel differenced and forecasts differences, which are
integrated back onto the window's own values, so the forecast comes out in the units it came in."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from modules.tasks import naive_forecast


def integrate(diffs: torch.Tensor, base: torch.Tensor, lag: int) -> torch.Tensor:
    """(B, H) forecasts from forecast differences at ``lag``: step h is the value one lag
    earlier (``base``: the window's own for h <= lag, else the forecast's) plus its difference,
    i.e. ``base`` plus the running sum of the differences h, h - lag, h - 2 lag, ..."""
    batch, horizon = diffs.shape
    rounds = -(-horizon // lag)
    padded = F.pad(diffs, (0, rounds * lag - horizon)).view(batch, rounds, lag)
    return base + padded.cumsum(dim=1).reshape(batch, rounds * lag)[:, :horizon]


class Difference(nn.Module):
    """Wraps ``net`` (a forecasting network reading (x, lengths, y), possibly a ``WindowNorm``)
    so it sees channel ``target`` as x[t] - x[t - lag] over the window's last length - lag
    steps (the first ``lag`` steps have nothing to subtract and are dropped from every channel,
    so calendar channels stay aligned, untouched). Its forecast of differences is integrated
    back: cumulative from the window's last value (lag 1), or chained one season at a time
    from the window's last season (lag = season), through the whole horizon."""

    def __init__(self, net: nn.Module, lag: int, target: int = 0):
        super().__init__()
        self.net = net
        self.lag, self.target = int(lag), int(target)

    def forward(self, x: torch.Tensor, lengths: torch.Tensor,
                y: torch.Tensor | None = None) -> torch.Tensor:
        lag, ch = self.lag, self.target
        if not self.training and bool((lengths <= lag).any()):  # training windows are full
            raise ValueError(f"this model differences at lag {lag}: every window needs more than "
                             f"{lag} steps, got one of {int(lengths.min())}")
        inner = lengths - lag
        steps = torch.arange(x.size(1) - lag, device=x.device)
        valid = (steps[None, :] < inner.to(x.device)[:, None]).to(x.dtype)
        diffs = (x[:, lag:, ch] - x[:, :-lag, ch]) * valid  # padding stays zero
        z = torch.cat([x[:, lag:, :ch], diffs[..., None], x[:, lag:, ch + 1:]], dim=-1)
        if y is not None:  # a network that reads the targets reads their differences
            previous = naive_forecast(x, lengths, ch, y.size(1), lag)
            if y.size(1) > lag:
                previous = torch.cat([previous[:, :lag], y[:, :-lag]], dim=1)
            y = y - previous
        out = self.net(z, inner, y)
        return integrate(out, naive_forecast(x, lengths, ch, out.size(1), lag), lag)
