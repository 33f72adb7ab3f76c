"""Encoder-decoder networks (many-to-many, unaligned): a recurrent decoder produces the output
sequence one step at a time from the encoder's summary, reading its own previous output (the
truth while training: teacher forcing, with optional scheduled sampling), with or without
attention over the encoder's states. The attention and the step loop live here once (``Decoder``);
what a step reads and emits is the task's side: values for forecasting (``ForecastDecoder``),
token ids through an embedding and an argmax for transcription (``TokenDecoder``).
"""

from __future__ import annotations

import math
from typing import Callable, NamedTuple

import torch
from torch import nn

from modules.forms import valid_steps
from modules.network import SequenceNetwork
from modules.variants import ATTENTIONS, DECODER_CELLS


def _attend(scores: torch.Tensor, memory: torch.Tensor, mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Softmax over the valid steps only; (context (B, D), weights (B, T))."""
    weights = scores.masked_fill(~mask, float("-inf")).softmax(dim=-1)
    return torch.bmm(weights[:, None], memory)[:, 0], weights


class AdditiveAttention(nn.Module):
    """Bahdanau, Cho & Bengio 2015: score(q, k) = v . tanh(W q + U k), from the decoder's state
    before the step; the context joins the step's input."""

    def __init__(self, query_dim: int, memory_dim: int, dim: int):
        super().__init__()
        self.query = nn.Linear(query_dim, dim, bias=False)
        self.key = nn.Linear(memory_dim, dim)
        self.score = nn.Linear(dim, 1, bias=False)

    def keys(self, memory: torch.Tensor) -> torch.Tensor:
        return self.key(memory)  # once per sequence, not once per step

    def forward(self, query, keys, memory, mask):
        return _attend(self.score(torch.tanh(self.query(query)[:, None] + keys))[..., 0], memory, mask)


class MultiplicativeAttention(nn.Module):
    """Luong, Pham & Manning 2015 ("general"): score(q, k) = q . W k, from the decoder's state
    after the step; the context and that state make the attentional state the output reads."""

    def __init__(self, query_dim: int, memory_dim: int):
        super().__init__()
        self.key = nn.Linear(memory_dim, query_dim, bias=False)

    def keys(self, memory: torch.Tensor) -> torch.Tensor:
        return self.key(memory)

    def forward(self, query, keys, memory, mask):
        return _attend(torch.bmm(keys, query[..., None])[..., 0], memory, mask)


class Decoder(nn.Module):
    """A ``cell`` ("gru" or "lstm") RNN run one step at a time for ``steps`` steps.

    Its initial state is a learned map (tanh) of the encoder's summary, as in Bahdanau et al.,
    so any encoder can feed it. Each step reads ``embed(previous)`` (and the step's known inputs,
    if any): ``previous`` is the caller's ``first`` at step 0, then the step before's output
    through ``feedback`` (free running), or the truth ``teacher[:, s - 1]`` (teacher forcing,
    when ``teacher`` is given). While training, ``sampling`` is the probability that a sequence's
    step reads its own previous output instead of the truth (scheduled sampling, Bengio et al.
    2015; fixed, not annealed). The fed-back output is detached, as a sampled token would be.

    ``attention``: ``none`` (the output reads the top layer's state), ``bahdanau`` (additive,
    queried with the state before the step; the step reads the context, the output reads state
    and context) or ``luong`` (multiplicative, queried with the state after the step; the output
    reads tanh(W [context; state]), which the next step also reads: Luong's input feeding)."""

    def __init__(self, cell: str, input_size: int, output_size: int, summary_dim: int, memory_dim: int,
                 hidden_size: int = 64, num_layers: int = 1, dropout: float = 0.0,
                 attention: str = "none", sampling: float = 0.0):
        super().__init__()
        if cell not in DECODER_CELLS:
            raise ValueError(f"cell must be one of {', '.join(DECODER_CELLS)}, got {cell!r}")
        if attention not in ATTENTIONS:
            raise ValueError(f"attention must be one of {', '.join(ATTENTIONS)}, got {attention!r}")
        if not 0.0 <= float(sampling) <= 1.0:
            raise ValueError(f"scheduled sampling is a probability between 0 and 1, got {sampling!r}")
        self.cell, self.attention, self.sampling = cell, attention, float(sampling)
        self.num_layers, self.hidden_size = int(num_layers), int(hidden_size)
        states = 2 if cell == "lstm" else 1  # (h, c)
        self.bridge = nn.Linear(summary_dim, states * self.num_layers * self.hidden_size)
        extra = {"bahdanau": memory_dim, "luong": hidden_size}.get(attention, 0)
        self.rnn = getattr(nn, cell.upper())(input_size + extra, hidden_size, num_layers=num_layers,
                                             batch_first=True, dropout=dropout if num_layers > 1 else 0.0)
        read = hidden_size
        if attention == "bahdanau":
            self.attend: nn.Module | None = AdditiveAttention(hidden_size, memory_dim, hidden_size)
            read = hidden_size + memory_dim
        elif attention == "luong":
            self.attend = MultiplicativeAttention(hidden_size, memory_dim)
            self.combine = nn.Linear(memory_dim + hidden_size, hidden_size)
        else:
            self.attend = None
        self.dropout = nn.Dropout(dropout)
        self.out = nn.Linear(read, output_size)

    def initial_state(self, summary: torch.Tensor):
        batch = summary.size(0)
        state = torch.tanh(self.bridge(summary)).view(batch, -1, self.num_layers, self.hidden_size)
        state = state.permute(1, 2, 0, 3).contiguous()  # (states, layers, B, H)
        return (state[0], state[1]) if self.cell == "lstm" else state[0]

    def _top(self, state) -> torch.Tensor:
        return (state[0] if self.cell == "lstm" else state)[-1]

    def forward(self, memory: torch.Tensor, memory_lengths: torch.Tensor, summary: torch.Tensor,
                first: torch.Tensor, steps: int, embed: Callable[[torch.Tensor], torch.Tensor],
                feedback: Callable[[torch.Tensor], torch.Tensor], teacher: torch.Tensor | None = None,
                inputs: torch.Tensor | None = None, end: int | None = None
                ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """(outputs (B, steps', output_size), attention weights (B, steps', T) or None).

        ``memory``: the encoder's per-step outputs (B, T, D), valid up to ``memory_lengths``;
        ``summary``: its pooled summary (B, S); ``inputs``: (B, steps, k) known for each step, or
        None; ``end``: free running stops once every sequence's ``feedback`` is this (a token
        decoder's end token), so steps' may be fewer than ``steps``. ``embed`` must map a
        (B, ...) ``previous`` and a (B, S, ...) run of them alike (a teacher-forced decoder
        without attention reads all its steps in one call)."""
        state = self.initial_state(summary)
        if teacher is not None and self.attention == "none" and not (self.training and self.sampling > 0.0):
            # every step's input is known: one fused call over the steps gives what the loop gives
            previous = torch.cat([first[:, None], teacher[:, :steps - 1].to(first.dtype)], dim=1)
            step_in = embed(previous)
            if inputs is not None:
                step_in = torch.cat([step_in, inputs[:, :steps].to(step_in.dtype)], dim=-1)
            h, _ = self.rnn(step_in, state)
            return self.out(self.dropout(h)), None
        mask = valid_steps(memory_lengths, memory.size(1), memory.device)
        keys = self.attend.keys(memory) if self.attend is not None else None
        feed = memory.new_zeros(memory.size(0), self.hidden_size) if self.attention == "luong" else None
        previous, outputs, weights = first, [], []
        finished = None
        for s in range(steps):
            step_in = embed(previous)
            if inputs is not None:
                step_in = torch.cat([step_in, inputs[:, s].to(step_in.dtype)], dim=-1)
            if self.attention == "bahdanau":
                context, w = self.attend(self._top(state), keys, memory, mask)
                h, state = self.rnn(torch.cat([step_in, context], dim=-1)[:, None], state)
                read = torch.cat([h[:, 0], context], dim=-1)
            elif self.attention == "luong":
                h, state = self.rnn(torch.cat([step_in, feed], dim=-1)[:, None], state)
                context, w = self.attend(h[:, 0], keys, memory, mask)
                read = feed = torch.tanh(self.combine(torch.cat([context, h[:, 0]], dim=-1)))
            else:
                h, state = self.rnn(step_in[:, None], state)
                read, w = h[:, 0], None
            out = self.out(self.dropout(read))
            outputs.append(out)
            if w is not None:
                weights.append(w)
            own = feedback(out.detach())
            if teacher is None:
                previous = own
                if end is not None:
                    finished = (own == end) if finished is None else finished | (own == end)
                    if bool(finished.all()):
                        break
            elif self.training and self.sampling > 0.0:
                use_own = torch.rand(own.size(0), device=own.device) < self.sampling
                truth = teacher[:, s]
                previous = torch.where(use_own.view(-1, *[1] * (truth.dim() - 1)), own.to(truth.dtype), truth)
            else:
                previous = teacher[:, s]
        return torch.stack(outputs, dim=1), torch.stack(weights, dim=1) if weights else None


class ForecastDecoder(nn.Module):
    """The decoder as a forecasting head: ``horizon`` steps of one value each, in the units the
    target comes in (scaled, normalized or differenced by what the task wraps around the
    network). Step 1 reads the window's last value of channel ``target``; every later step the
    value before it (the forecast's, or the truth while teacher forcing), beside the ``future``
    covariates known for the step (the calendar a horizon ahead, read where the direct head
    ``FutureCovariateHead`` reads it)."""

    def __init__(self, in_dim: int, horizon: int, target: int = 0, future: int = 0, cell: str = "gru",
                 hidden_size: int = 64, num_layers: int = 1, dropout: float = 0.0,
                 attention: str = "none", scheduled_sampling: float = 0.0):
        super().__init__()
        self.horizon, self.target, self.future = int(horizon), int(target), int(future)
        self.decoder = Decoder(cell, 1 + self.future, 1, summary_dim=in_dim, memory_dim=in_dim,
                               hidden_size=hidden_size, num_layers=num_layers, dropout=dropout,
                               attention=attention, sampling=scheduled_sampling)

    def forward(self, memory: torch.Tensor, summary: torch.Tensor, x: torch.Tensor, lengths: torch.Tensor,
                memory_lengths: torch.Tensor, y: torch.Tensor | None = None, weights: bool = False):
        rows = torch.arange(x.size(0), device=x.device)
        last = lengths.to(x.device)
        first = x[rows, last - 1, self.target][:, None]
        known = None
        if self.future:
            steps = last[:, None] - self.horizon + torch.arange(self.horizon, device=x.device)
            known = x[rows[:, None], steps.clamp_min(0), x.size(-1) - self.future:]
        out, attention = self.decoder(memory, memory_lengths, summary, first, self.horizon,
                                      embed=_same, feedback=_same,
                                      teacher=None if y is None else y[..., None].to(x.dtype), inputs=known)
        return (out[..., 0], attention) if weights else out[..., 0]


def _same(values: torch.Tensor) -> torch.Tensor:
    return values


class Seq2SeqNetwork(SequenceNetwork):
    """An encoder and a decoder head (``head``): the decoder reads the encoder's states and
    summary, the input (where the first step's value is) and, while training, the targets."""

    decodes = True  # it produces the output sequence itself: a task puts no other reading around it

    def forward(self, x: torch.Tensor, lengths: torch.Tensor, y: torch.Tensor | None = None,
                weights: bool = False):
        outputs, pooled = self.encoder(x, lengths)
        # an encoder that shortens sequences (a strided front end) says how long its outputs are
        shorten = getattr(self.encoder, "output_lengths", None)
        memory_lengths = shorten(lengths) if shorten is not None else lengths
        extra = {"weights": True} if weights else {}
        return self.head(outputs, pooled, x, lengths, memory_lengths.to(outputs.device), y, **extra)


class TokenSteps(NamedTuple):
    """A token decoder's output: per-step log-probabilities (B, S, labels + 1) over the labels
    and the end token (the last class). Step s of a sequence that has already said "end" is
    padding; while teacher forced, S is the batch's longest label sequence plus its end."""

    log_probs: torch.Tensor


class TokenDecoder(nn.Module):
    """The decoder as a transcription head: label tokens one at a time, then an end token.
    Each step reads the previous token through an embedding (a start token at step 1): the
    truth while training (teacher forcing), else its own argmax (greedy free running, at most
    ``max_length`` labels and the end). ``y``: the labels, rows padded with negative values."""

    def __init__(self, in_dim: int, labels: int, max_length: int, cell: str = "gru", hidden_size: int = 64,
                 num_layers: int = 1, dropout: float = 0.0, attention: str = "none",
                 scheduled_sampling: float = 0.0):
        super().__init__()
        self.end, self.start, self.max_length = int(labels), int(labels) + 1, int(max_length)
        self.embedding = nn.Embedding(int(labels) + 2, int(hidden_size))
        self.decoder = Decoder(cell, self.embedding.embedding_dim, int(labels) + 1, summary_dim=in_dim,
                               memory_dim=in_dim, hidden_size=hidden_size, num_layers=num_layers,
                               dropout=dropout, attention=attention, sampling=scheduled_sampling)

    def targets(self, y: torch.Tensor) -> torch.Tensor:
        """(B, L + 1): each row's labels, then the end token (which also fills the padding)."""
        y = y.long()
        padded = torch.cat([y, y.new_full((y.size(0), 1), -1)], dim=1)
        return padded.masked_fill(padded < 0, self.end)[:, :int((y >= 0).sum(dim=1).max()) + 1]

    def forward(self, memory: torch.Tensor, summary: torch.Tensor, x: torch.Tensor, lengths: torch.Tensor,
                memory_lengths: torch.Tensor, y: torch.Tensor | None = None, weights: bool = False):
        first = torch.full((x.size(0),), self.start, dtype=torch.long, device=memory.device)
        teacher = None if y is None else self.targets(y.to(memory.device))
        steps = self.max_length + 1 if teacher is None else teacher.size(1)
        logits, attention = self.decoder(memory, memory_lengths, summary, first, steps, embed=self.embedding,
                                         feedback=_argmax, teacher=teacher, end=self.end)
        out = TokenSteps(logits.float().log_softmax(dim=-1))
        return (out, attention) if weights else out


def _argmax(logits: torch.Tensor) -> torch.Tensor:
    return logits.argmax(dim=-1)


def token_loss(out: TokenSteps, y: torch.Tensor) -> torch.Tensor:
    """Cross-entropy over each sequence's labels and its end token (the steps after are not
    scored), averaged per sequence then over the batch. Free running may stop before the
    reference does: the missing steps count as a uniform guess (log of the class count)."""
    lp = out.log_probs
    end = lp.size(-1) - 1
    y = y.to(lp.device).long()
    counts = (y >= 0).sum(dim=1)
    width = int(counts.max()) + 1
    if lp.size(1) < width:
        uniform = torch.full((lp.size(0), width - lp.size(1), lp.size(2)), -math.log(lp.size(2)),
                             dtype=lp.dtype, device=lp.device)
        lp = torch.cat([lp, uniform], dim=1)
    lp = lp[:, :width]
    target = torch.cat([y, y.new_full((y.size(0), 1), -1)], dim=1)[:, :width]
    scored = torch.arange(width, device=lp.device)[None, :] <= counts[:, None]
    target = torch.where(torch.arange(width, device=lp.device)[None, :] == counts[:, None],
                         torch.full_like(target, end), target).clamp(min=0)
    nll = -lp.gather(-1, target[..., None])[..., 0] * scored
    return (nll.sum(dim=1) / (counts + 1)).mean()


def read_tokens(out: TokenSteps) -> list[list[int]]:
    """Each sequence's tokens up to (not including) its first end token."""
    end = out.log_probs.size(-1) - 1
    rows = []
    for row in out.log_probs.detach().argmax(dim=-1).tolist():
        rows.append(row[:row.index(end)] if end in row else row)
    return rows
