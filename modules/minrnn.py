"""minGRU and minLSTM (Feng, Tung, Ahmed, Bengio & Hajimirsadeghi 2024, "Were RNNs All We
Needed?"): recurrences whose gates read the input only, never the previous state, so a whole
sequence is computed at once by a parallel scan in log space (training), or one step at a time
(the same numbers; kept to check the scan against).

Both are h_t = a_t * h_{t-1} + b_t from h_0 = 0, with every h_t positive:
  minGRU:  z = sigmoid(k_z), a = 1 - z, b = z * g(k_h)
  minLSTM: f, i = sigmoid(k_f), sigmoid(k_i); a = f / (f + i), b = i / (f + i) * g(k_h)
where g(x) = x + 0.5 for x >= 0, sigmoid(x) otherwise (positive and continuous). The scan
(Heinsen 2023, the paper's appendix): log h_t = A_t + logcumsumexp_{s<=t}(log b_s - A_s),
A_t = sum_{r<=t} log a_r.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from modules.encoders import InputEmbedding
from modules.forms import valid_steps

CELLS = ("mingru", "minlstm")


def g(x: torch.Tensor) -> torch.Tensor:
    return torch.where(x >= 0, x + 0.5, torch.sigmoid(x))


def log_g(x: torch.Tensor) -> torch.Tensor:
    # relu keeps the untaken branch finite, so its gradient is too
    return torch.where(x >= 0, torch.log(F.relu(x) + 0.5), -F.softplus(-x))


def parallel_scan_log(log_a: torch.Tensor, log_b: torch.Tensor) -> torch.Tensor:
    """Every h_t of h_t = a_t * h_{t-1} + b_t, h_0 = 0, over dim 1, from log a and log b."""
    a_star = torch.cumsum(log_a, dim=1)
    return torch.exp(a_star + torch.logcumsumexp(log_b - a_star, dim=1))


class MinRNNLayer(nn.Module):
    """One minGRU or minLSTM layer: (B, T, input_size) -> (B, T, hidden_size)."""

    def __init__(self, cell: str, input_size: int, hidden_size: int):
        super().__init__()
        if cell not in CELLS:
            raise ValueError(f"cell must be one of {', '.join(CELLS)}, got {cell!r}")
        self.cell = cell
        self.linear = nn.Linear(input_size, (2 if cell == "mingru" else 3) * hidden_size)

    def log_coefficients(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """log a_t and log b_t for every step, computed without leaving log space."""
        if self.cell == "mingru":
            k_z, k_h = self.linear(x).chunk(2, dim=-1)
            return -F.softplus(k_z), -F.softplus(-k_z) + log_g(k_h)  # log(1 - z), log z + log g
        k_f, k_i, k_h = self.linear(x).chunk(3, dim=-1)
        diff = F.softplus(-k_f) - F.softplus(-k_i)  # log(i / f)
        return -F.softplus(diff), -F.softplus(-diff) + log_g(k_h)  # log f', log i' + log g

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return parallel_scan_log(*self.log_coefficients(x))

    def step(self, x_t: torch.Tensor, h: torch.Tensor) -> torch.Tensor:
        """One step in the ordinary (not log) space, as the paper's sequential form."""
        if self.cell == "mingru":
            k_z, k_h = self.linear(x_t).chunk(2, dim=-1)
            z = torch.sigmoid(k_z)
            return (1 - z) * h + z * g(k_h)
        k_f, k_i, k_h = self.linear(x_t).chunk(3, dim=-1)
        f, i = torch.sigmoid(k_f), torch.sigmoid(k_i)
        return f / (f + i) * h + i / (f + i) * g(k_h)

    def sequential(self, x: torch.Tensor) -> torch.Tensor:
        h = x.new_zeros(x.size(0), self.linear.out_features // (2 if self.cell == "mingru" else 3))
        states = []
        for t in range(x.size(1)):
            h = self.step(x[:, t], h)
            states.append(h)
        return torch.stack(states, dim=1)


class MinRNNEncoder(nn.Module):
    """``num_layers`` stacked minGRU or minLSTM layers (``cell``), dropout between them, like
    torch's stacked GRU. Causal by construction: step t reads steps up to t only, so padding
    after a sequence changes none of its outputs; the pooled feature is the last layer's state
    at each sequence's last valid step. ``scan="sequential"`` runs the step form instead of the
    parallel one (to check it; the parallel form is what trains). ``embed_size``: the token
    embedding's width (hidden_size when unset), as in RNNEncoder."""

    def __init__(self, cell: str, input_dim: int = 0, vocab_size: int = 0, hidden_size: int = 64,
                 num_layers: int = 1, dropout: float = 0.0, scan: str = "parallel",
                 embed_size: int | None = None):
        super().__init__()
        self.embed = InputEmbedding(input_dim, vocab_size, embed_size or hidden_size, project_floats=False)
        self.input_dropout = nn.Dropout(dropout) if vocab_size else nn.Identity()
        self.layers = nn.ModuleList(
            MinRNNLayer(cell, self.embed.output_dim if i == 0 else hidden_size, hidden_size)
            for i in range(max(1, int(num_layers))))
        self.between = nn.Dropout(dropout)
        self.scan = scan
        self.output_dim = hidden_size

    def forward(self, x: torch.Tensor, lengths: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        h = self.input_dropout(self.embed(x))
        for i, layer in enumerate(self.layers):
            if i:
                h = self.between(h)
            h = layer.sequential(h) if self.scan == "sequential" else layer(h)
        last = (lengths.to(h.device) - 1).clamp(min=0)
        pooled = h[torch.arange(h.size(0), device=h.device), last]
        return h.masked_fill(~valid_steps(lengths, h.size(1), h.device)[..., None], 0.0), pooled
