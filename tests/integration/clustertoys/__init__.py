"""A user's own variant, in a package that is not rnnbench's and is installed nowhere: the
cluster tests need Ray to ship it to the worker nodes like rnnbench's own code."""

from __future__ import annotations

import torch
from torch import nn


class NaNAtWidth8(nn.Module):
    """A GRU whose output turns NaN in its second epoch when its width is 8 (so some trials of
    a sweep fail and the others must go on)."""

    def __init__(self, input_dim, vocab_size, hidden_size, num_layers, dropout):
        super().__init__()
        self.rnn = nn.GRU(input_dim, hidden_size, batch_first=True)
        self.output_dim = hidden_size
        self.poison = hidden_size == 8
        self.register_buffer("calls", torch.zeros((), dtype=torch.long))

    def forward(self, x, lengths):
        out, h = self.rnn(x)
        if self.training:
            self.calls += 1
        if self.poison and self.calls > 7:  # past the first epoch (7 batches of 32)
            out = out * float("nan")
        return out, out[torch.arange(x.size(0)), (lengths - 1).clamp(min=0)]
