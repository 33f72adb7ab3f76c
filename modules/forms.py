"""Encoders for the other forms a sequence model takes: a feed-forward network with no
recurrence at all (the one-to-one baseline ``mlp``), and a 1-D convolutional front end before
torch's fused LSTM/GRU (``cnn-lstm``, ``cnn-gru``). Same contract as ``modules.encoders``:
(x, lengths) -> (per-step outputs (B, T, D), pooled summary (B, D)), and ``output_dim``.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from modules.encoders import InputEmbedding, recur


def valid_steps(lengths: torch.Tensor, steps: int, device: torch.device) -> torch.Tensor:
    """(B, steps) bool: True where a step is inside its sequence."""
    return torch.arange(steps, device=device)[None, :] < lengths.to(device)[:, None]


def _layers(in_dim: int, hidden_size: int, num_layers: int, dropout: float) -> nn.Sequential:
    blocks: list[nn.Module] = []
    for i in range(max(1, int(num_layers))):
        blocks += [nn.Linear(in_dim if i == 0 else hidden_size, hidden_size), nn.ReLU(), nn.Dropout(dropout)]
    return nn.Sequential(*blocks)


class MLPEncoder(nn.Module):
    """The one-to-one baseline: ``num_layers`` fully connected ReLU layers of ``hidden_size`` over
    the whole input, with no recurrence and no attention. It tells whether a dataset's order
    and recurrence matter at all. It sees every step at once, so it is not causal.

    Two input forms, chosen by the dataset:

    - every sequence has the same length (``fixed_length``, the prepared data's, or a forecasting
      ``window``): the steps (token embeddings, or the frames as they are) are laid side by side
      into one vector of ``steps x width``, so each value keeps its position, as in the classic
      MLP over a flattened image or window. A shorter input (a served one) is zero-filled after
      its last step; a longer one is refused. On a per-step task the last layer also maps to a
      ``steps x hidden_size`` output, read step by step by the head.
    - lengths vary: each step goes through a learned projection and ReLU, and the masked mean and
      max of those over the valid steps (a bag of steps: order is lost) feed the layers. On a
      per-step task each step's output is its own projection joined with that summary.

    Dropout follows every hidden layer and the token embedding, never raw numeric inputs
    (what dropout means in every variant: ``modules.encoders``).
    ``embed_size``: the token embedding's width (hidden_size when unset), as in RNNEncoder."""

    def __init__(self, input_dim: int = 0, vocab_size: int = 0, hidden_size: int = 64,
                 num_layers: int = 1, dropout: float = 0.0, fixed_length: int | None = None,
                 window: int | None = None, per_step: bool = False, embed_size: int | None = None):
        super().__init__()
        self.embed = InputEmbedding(input_dim, vocab_size, embed_size or hidden_size, project_floats=False)
        self.input_dropout = nn.Dropout(dropout) if vocab_size else nn.Identity()
        self.steps = int(fixed_length or window or 0) or None
        self.per_step = per_step
        self.hidden_size = hidden_size
        width = self.embed.output_dim
        if self.steps:
            self.body = _layers(self.steps * width, hidden_size, num_layers, dropout)
            self.step_out = nn.Linear(hidden_size, self.steps * hidden_size) if per_step else None
        else:
            self.step_proj = nn.Sequential(nn.Linear(width, hidden_size), nn.ReLU())
            self.body = _layers(2 * hidden_size, hidden_size, num_layers, dropout)
            self.step_out = nn.Sequential(nn.Linear(2 * hidden_size, hidden_size), nn.ReLU()) if per_step else None
        self.output_dim = hidden_size

    def forward(self, x: torch.Tensor, lengths: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        steps = x.size(1)
        valid = valid_steps(lengths, steps, x.device)[..., None]
        h = self.input_dropout(self.embed(x)).masked_fill(~valid, 0.0)  # padding carries nothing
        if self.steps:
            if steps > self.steps:
                raise ValueError(f"this mlp was trained on sequences of {self.steps} steps; "
                                 f"got one of {steps}")
            h = F.pad(h, (0, 0, 0, self.steps - steps))
            pooled = self.body(h.flatten(1))
            if self.step_out is None:  # no per-step reader: the summary at every step keeps the contract
                return pooled[:, None].expand(-1, steps, -1), pooled
            outputs = self.step_out(pooled).view(x.size(0), self.steps, self.hidden_size)[:, :steps]
        else:
            s = self.step_proj(h)
            n = lengths.to(s.device, s.dtype).clamp(min=1)[:, None]
            mean = s.masked_fill(~valid, 0.0).sum(dim=1) / n
            top = s.masked_fill(~valid, float("-inf")).amax(dim=1)
            pooled = self.body(torch.cat([mean, top], dim=-1))
            if self.step_out is None:
                return s, pooled
            outputs = self.step_out(torch.cat([s, pooled[:, None].expand_as(s)], dim=-1))
        return outputs.masked_fill(~valid, 0.0), pooled


class ConvRNNEncoder(nn.Module):
    """A 1-D convolution (``channels`` filters of ``kernel`` steps, moved ``stride`` steps at a
    time, then ReLU) in front of torch's fused ``cell`` ("lstm" or "gru"), the usual choice for
    audio and long series: the recurrence reads ceil(T / stride) steps instead of T.

    The input is padded by kernel - 1 steps: split around it (reading later steps) by default,
    all before it when ``causal`` (a language model's outputs must not read ahead). Steps past a
    sequence's length are zeroed before the convolution, and the recurrence runs over the
    shortened lengths, so padding in a batch never changes a sequence's outputs. The per-step
    outputs have ceil(T / stride) steps: only stride 1 suits per-step tasks (the variant table
    says so, and the plan refuses a search space that could break it). ``embed_size``: the
    token embedding's width (hidden_size when unset), as in RNNEncoder."""

    def __init__(self, cell: str, input_dim: int = 0, vocab_size: int = 0, hidden_size: int = 64,
                 num_layers: int = 1, dropout: float = 0.0, kernel: int = 3, stride: int = 1,
                 channels: int | None = None, causal: bool = False, embed_size: int | None = None):
        super().__init__()
        kernel, stride, channels = int(kernel), int(stride), int(channels or hidden_size)
        if min(kernel, stride, channels) < 1 or stride > kernel:
            raise ValueError(f"kernel={kernel}, stride={stride}, channels={channels}: each must be "
                             "positive, and stride at most kernel")
        self.embed = InputEmbedding(input_dim, vocab_size, embed_size or hidden_size, project_floats=False)
        self.input_dropout = nn.Dropout(dropout) if vocab_size else nn.Identity()
        self.padding = (kernel - 1, 0) if causal else ((kernel - 1) // 2, kernel - 1 - (kernel - 1) // 2)
        self.stride = stride
        self.conv = nn.Conv1d(self.embed.output_dim, channels, kernel, stride=stride)
        self.conv_dropout = nn.Dropout(dropout)  # after a learned map, like every variant's
        self.rnn = getattr(nn, cell.upper())(channels, hidden_size, num_layers=num_layers, batch_first=True,
                                             dropout=dropout if num_layers > 1 else 0.0)
        self.output_dim = hidden_size

    def output_lengths(self, lengths: torch.Tensor) -> torch.Tensor:
        """Steps the recurrence reads: with kernel - 1 padding steps, ceil(length / stride)."""
        return torch.div(lengths + self.stride - 1, self.stride, rounding_mode="floor")

    def forward(self, x: torch.Tensor, lengths: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        h = self.input_dropout(self.embed(x)).masked_fill(~valid_steps(lengths, x.size(1), x.device)[..., None], 0.0)
        h = F.relu(self.conv(F.pad(h.transpose(1, 2), self.padding))).transpose(1, 2)
        out, h_n = recur(self.rnn, self.conv_dropout(h), self.output_lengths(lengths.cpu()))
        return out, h_n[-1]
