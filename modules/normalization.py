"""Window-local normalization around a forecasting network: each input window is scaled by its
own per-channel statistics (and, for RevIN, a learnable per-channel affine map) and the forecast
is mapped back, so a series that leaves its training range is still forecast at its own level."""

from __future__ import annotations

import torch
from torch import nn


class WindowNorm(nn.Module):
    """Wraps ``net`` (a forecasting network reading (x, lengths, y)) so it sees every window
    z-scored by that window's mean and standard deviation over its valid steps; the forecast of
    channel ``target`` comes back in the units ``x`` came in.

    ``affine`` adds RevIN's per-channel ``gamma``/``beta`` (Kim et al. 2022). ``eps`` is in the
    input's units: a constant window is divided by ``eps`` instead of zero, and so is a tiny
    ``gamma`` on the way back. The last ``keep`` channels (calendar encodings, already in
    [-1, 1] and meaningful as they are) pass through unscaled."""

    def __init__(self, net: nn.Module, channels: int, target: int = 0, affine: bool = False,
                 eps: float = 1e-5, keep: int = 0):
        super().__init__()
        self.net = net
        self.target, self.affine, self.eps, self.keep = int(target), bool(affine), float(eps), int(keep)
        if self.affine:
            self.gamma = nn.Parameter(torch.ones(int(channels)))
            self.beta = nn.Parameter(torch.zeros(int(channels)))

    def forward(self, x: torch.Tensor, lengths: torch.Tensor,
                y: torch.Tensor | None = None) -> torch.Tensor:
        steps = torch.arange(x.size(1), device=x.device)
        valid = (steps[None, :] < lengths.to(x.device)[:, None]).unsqueeze(-1).to(x.dtype)
        count = valid.sum(dim=1).clamp_min(1.0)  # (B, 1)
        # statistics are constants to the optimizer (as in RevIN): the network learns shapes,
        # not how to move the window's level
        mean = ((x * valid).sum(dim=1) / count).detach()  # (B, C)
        var = ((((x - mean[:, None]) * valid) ** 2).sum(dim=1) / count).detach()
        # eps**2 inside the root: exact scale equivariance unless the window is nearly constant
        std = torch.sqrt(var + self.eps ** 2)
        z = (x - mean[:, None]) / std[:, None]
        if self.affine:
            z = z * self.gamma + self.beta
        if self.keep:
            z = torch.cat([z[..., :-self.keep], x[..., -self.keep:]], dim=-1)
        z = z * valid  # padding stays zero, as the encoders expect
        mean_t, std_t = mean[:, self.target:self.target + 1], std[:, self.target:self.target + 1]
        if y is not None:  # a network that reads the targets (teacher forcing) reads them scaled alike
            y = (y - mean_t) / std_t
            if self.affine:
                y = y * self.gamma[self.target] + self.beta[self.target]
        out = self.net(z, lengths, y)
        if self.affine:
            gamma = self.gamma[self.target]
            # keep gamma's sign but never divide by less than eps
            safe = torch.where(gamma >= 0, gamma.clamp_min(self.eps), gamma.clamp_max(-self.eps))
            out = (out - self.beta[self.target]) / safe
        return out * std_t + mean_t
