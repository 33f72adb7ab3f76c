"""Sequence encoders: torch's fused RNN/LSTM/GRU over packed sequences, and a pre-LN Transformer.

Every encoder maps (x, lengths) to (per-step outputs (B, T, D), pooled summary (B, D)) and
exposes ``output_dim``; heads and the LightningModule rely on nothing else.

``dropout`` means the same in every variant (these, ``modules.forms``, ``modules.minrnn``,
``modules.seq2seq`` and the heads): it follows a learned map, never the raw numeric input,
where it would delete observations and markers (adding's second channel). So: after a token
embedding or the Transformer's input projection, between layers (stacked cells, Transformer
blocks, convolution to cell, MLP layers) and before every head's linear map. An encoder whose
numeric input goes straight into its first layer (the RNNs, the convolutional front ends, the
mingru/minlstm, the mlp; a decoder reading the value before each step) drops nothing there.
"""

from __future__ import annotations

import math

import torch
from torch import nn
from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence

from modules.variants import MERGE_MODES, NONLINEARITIES

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
    """torch's fused ``cell`` ("rnn", "lstm" or "gru"), one or both directions.

    ``merge`` (bidirectional only): how the two directions' outputs and final states are joined,
    ``concat`` (width 2 x hidden_size, the usual choice) or ``sum`` (width hidden_size, so the
    head and any layer above see the same width as a unidirectional encoder's).

    ``nonlinearity`` (Elman ``rnn`` only): ``tanh``, or ``relu`` with the recurrent weights set to
    the identity and the biases to zero (Le, Jaitly & Hinton 2015, "IRNN"): the state is carried
    forward unchanged until learning says otherwise, which keeps gradients from vanishing over
    long spans where a randomly initialized relu RNN explodes or dies. Input weights keep
    torch's default initialization.

    ``embed_size`` (token inputs only): the embedding's width, hidden_size when unset; size
    matching (``modules.sizing``) sets it where a large vocabulary makes width alone too coarse."""

    def __init__(self, cell: str, input_dim: int = 0, vocab_size: int = 0, hidden_size: int = 64,
                 num_layers: int = 1, dropout: float = 0.0, bidirectional: bool = False,
                 merge: str = "concat", nonlinearity: str = "tanh", embed_size: int | None = None):
        super().__init__()
        if merge not in MERGE_MODES:
            raise ValueError(f"merge must be one of {', '.join(MERGE_MODES)}, got {merge!r}")
        if nonlinearity not in NONLINEARITIES or (cell != "rnn" and nonlinearity != "tanh"):
            raise ValueError(f"nonlinearity {nonlinearity!r}: the Elman rnn takes "
                             f"{' or '.join(NONLINEARITIES)}; gated cells have their own")
        self.embed = InputEmbedding(input_dim, vocab_size, embed_size or hidden_size, project_floats=False)
        kwargs = {"nonlinearity": nonlinearity} if cell == "rnn" else {}
        self.rnn = getattr(nn, cell.upper())(
            self.embed.output_dim, hidden_size, num_layers=num_layers, batch_first=True,
            dropout=dropout if num_layers > 1 else 0.0, bidirectional=bidirectional, **kwargs,
        )
        if nonlinearity == "relu":
            identity_recurrence(self.rnn)
        # after the token embedding only: never on raw numeric inputs (the module docstring)
        self.input_dropout = nn.Dropout(dropout) if vocab_size else nn.Identity()
        self.bidirectional = bidirectional
        self.merge = merge if bidirectional else "concat"
        self.output_dim = hidden_size * (2 if bidirectional and self.merge == "concat" else 1)

    def forward(self, x: torch.Tensor, lengths: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        out, h_n = recur(self.rnn, self.input_dropout(self.embed(x)), lengths)
        # h_n is in the caller's batch order: forward final = last valid step; backward final = step 0
        if not self.bidirectional:
            return out, h_n[-1]
        if self.merge == "sum":
            forward, backward = out.chunk(2, dim=-1)
            return forward + backward, h_n[-2] + h_n[-1]
        return out, torch.cat([h_n[-2], h_n[-1]], dim=-1)


def recur(rnn: nn.RNNBase, h: torch.Tensor, lengths: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """``rnn`` over the first ``lengths`` steps of each sequence of ``h``: (outputs, zero beyond
    each length; final hidden states (layers x directions, B, H))."""
    lengths = lengths.cpu()
    if bool((lengths == h.size(1)).all()):
        # no padding in this batch (fixed windows): packing would change nothing but speed;
        # torch's packed GRU on CPU is about 4x slower than the plain one
        out, state = rnn(h)
    else:
        packed = pack_padded_sequence(h, lengths, batch_first=True, enforce_sorted=False)
        out, state = rnn(packed)
        out, _ = pad_packed_sequence(out, batch_first=True, total_length=h.size(1))
    return out, state[0] if isinstance(state, tuple) else state  # LSTM returns (h_n, c_n)


def identity_recurrence(rnn: nn.RNNBase) -> None:
    """Recurrent weights = identity, biases = 0, in every layer and direction (Le et al. 2015)."""
    with torch.no_grad():
        for name, param in rnn.named_parameters():
            if name.startswith("weight_hh"):
                param.copy_(torch.eye(*param.shape))
            elif name.startswith("bias"):
                param.zero_()


def sinusoidal_positions(length: int, dim: int) -> torch.Tensor:
    position = torch.arange(length, dtype=torch.float32)[:, None]
    freq = torch.exp(torch.arange(0, dim, 2, dtype=torch.float32) * (-math.log(10000.0) / dim))
    table = torch.zeros(length, dim)
    table[:, 0::2] = torch.sin(position * freq)
    table[:, 1::2] = torch.cos(position * freq[: dim // 2])
    return table


class TransformerEncoder(nn.Module):
    """Encoder-only baseline: sinusoidal positions, key-padding mask, pre-LN, masked-mean pooling.

    The feed-forward width is ``ff_size`` when given (size matching sets it: the width must be
    divisible by ``nhead``, too coarse a step to reach a parameter count), else ff_mult x hidden_size."""

    def __init__(self, input_dim: int = 0, vocab_size: int = 0, hidden_size: int = 64,
                 num_layers: int = 1, dropout: float = 0.0, nhead: int = 4, ff_mult: int = 2,
                 causal: bool = False, ff_size: int | None = None):
        super().__init__()
        self.causal = causal  # each step attends only to itself and the past (language models)
        if hidden_size % nhead:
            raise ValueError(f"hidden_size {hidden_size} must be divisible by nhead {nhead}")
        self.embed = InputEmbedding(input_dim, vocab_size, hidden_size, project_floats=True)
        layer = nn.TransformerEncoderLayer(
            hidden_size, nhead, dim_feedforward=int(ff_size or ff_mult * hidden_size), dropout=dropout,
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
