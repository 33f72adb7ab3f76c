"""Sequence encoders: torch's fused RNN/LSTM/GRU over packed sequences, and a pre-LN Transformer.

Every encoder maps (x, lengths) to (per-step outputs (B, T, D), pooled summary (B, D)) and
exposes ``output_dim``; heads and the LightningModule rely on nothing else.
"""

from __future__ import annotations

import math

import torch
from torch import nn
from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence

class InputEmbedding(nn.Module):
    """Token ids through an embedding table, or float frames through a linear projection."""

    def __init__(self, input_dim: int, vocab_size: int, dim: int, project_floats: bool):
        super().__init__()
        if vocab_size:
            self.proj: nn.Module = nn.Embedding(vocab_size, dim, padding_idx=0)
            self.output_dim = dim
        elif project_floats:
            self.proj = nn.Linear(input_dim, dim)
            self.output_dim = dim
        else:
            self.proj = nn.Identity()
            self.output_dim = input_dim

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.proj(x)


class RNNEncoder(nn.Module):
    """torch's fused ``cell`` ("rnn", "lstm" or "gru"), one or both directions."""

    def __init__(self, cell: str, input_dim: int = 0, vocab_size: int = 0, hidden_size: int = 64,
                 num_layers: int = 1, dropout: float = 0.0, bidirectional: bool = False):
        super().__init__()
        self.embed = InputEmbedding(input_dim, vocab_size, hidden_size, project_floats=False)
        kwargs = {"nonlinearity": "tanh"} if cell == "rnn" else {}
        self.rnn = getattr(nn, cell.upper())(
            self.embed.output_dim, hidden_size, num_layers=num_layers, batch_first=True,
            dropout=dropout if num_layers > 1 else 0.0, bidirectional=bidirectional, **kwargs,
        )
        # dropout means the same for every variant: after a learned input map (here the token
        # embedding; the Transformer's projection) and between layers, never on raw numeric
        # inputs, where it would delete observations and markers the task depends on
        self.input_dropout = nn.Dropout(dropout) if vocab_size else nn.Identity()
        self.bidirectional = bidirectional
        self.output_dim = hidden_size * (2 if bidirectional else 1)

    def forward(self, x: torch.Tensor, lengths: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        h = self.input_dropout(self.embed(x))
        lengths = lengths.cpu()
        if bool((lengths == x.size(1)).all()):
            # no padding in this batch (fixed windows): packing would change nothing but speed;
            # torch's packed GRU on CPU is about 4x slower than the plain one
            out, state = self.rnn(h)
        else:
            packed = pack_padded_sequence(h, lengths, batch_first=True, enforce_sorted=False)
            out, state = self.rnn(packed)
            out, _ = pad_packed_sequence(out, batch_first=True, total_length=x.size(1))
        h_n = state[0] if isinstance(state, tuple) else state  # LSTM returns (h_n, c_n)
        # h_n is in the caller's batch order: forward final = last valid step; backward final = step 0
        pooled = torch.cat([h_n[-2], h_n[-1]], dim=-1) if self.bidirectional else h_n[-1]
        return out, pooled


def sinusoidal_positions(length: int, dim: int) -> torch.Tensor:
    position = torch.arange(length, dtype=torch.float32)[:, None]
    freq = torch.exp(torch.arange(0, dim, 2, dtype=torch.float32) * (-math.log(10000.0) / dim))
    table = torch.zeros(length, dim)
    table[:, 0::2] = torch.sin(position * freq)
    table[:, 1::2] = torch.cos(position * freq[: dim // 2])
    return table


class TransformerEncoder(nn.Module):
    """Encoder-only baseline: sinusoidal positions, key-padding mask, pre-LN, masked-mean pooling."""

    def __init__(self, input_dim: int = 0, vocab_size: int = 0, hidden_size: int = 64,
                 num_layers: int = 1, dropout: float = 0.0, nhead: int = 4, ff_mult: int = 2,
                 causal: bool = False):
        super().__init__()
        self.causal = causal  # each step attends only to itself and the past (language models)
        if hidden_size % nhead:
            raise ValueError(f"hidden_size {hidden_size} must be divisible by nhead {nhead}")
        self.embed = InputEmbedding(input_dim, vocab_size, hidden_size, project_floats=True)
        layer = nn.TransformerEncoderLayer(
            hidden_size, nhead, dim_feedforward=ff_mult * hidden_size, dropout=dropout,
            batch_first=True, norm_first=True,
        )
        # nested tensors do not apply to pre-LN layers; saying so up front avoids torch's warning
        self.encoder = nn.TransformerEncoder(layer, num_layers, enable_nested_tensor=False)
        self.norm = nn.LayerNorm(hidden_size)
        self.dropout = nn.Dropout(dropout)
        self.register_buffer("positions", sinusoidal_positions(512, hidden_size), persistent=False)
        self.scale = math.sqrt(hidden_size) if vocab_size else 1.0  # the usual token-embedding scale
        self.output_dim = hidden_size

    def forward(self, x: torch.Tensor, lengths: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        steps = x.size(1)
        if steps > self.positions.size(0):
            self.positions = sinusoidal_positions(steps, self.output_dim).to(self.positions.device)
        h = self.embed(x) * self.scale + self.positions[:steps]
        pad = torch.arange(steps, device=x.device)[None, :] >= lengths.to(x.device)[:, None]
        mask = None
        if self.causal:  # True above the diagonal = may not attend (the same dtype as the pad mask)
            mask = torch.ones(steps, steps, dtype=torch.bool, device=x.device).triu(1)
        h = self.norm(self.encoder(self.dropout(h), mask=mask, src_key_padding_mask=pad,
                                   is_causal=self.causal))
        h = h.masked_fill(pad[..., None], 0.0)
        pooled = h.sum(dim=1) / lengths.to(h.device, h.dtype)[:, None]
        return h, pooled
