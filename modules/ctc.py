"""Connectionist temporal classification (Graves et al. 2006) for the ``transcription`` task:
the wrapper that turns any encoder's per-frame outputs into per-frame log-probabilities over
the labels and a blank (the last class), the loss, greedy and prefix beam-search decoding, the
whole-string accuracy metric and the trivial baseline.

Frames past a sequence's own end (batch padding, or past a strided front end's shorter output)
are fixed to "certainly blank", so decoding and the loss can read every frame of a padded
batch: a blank appended to an alignment never changes what it reads as.
"""

from __future__ import annotations

import math
from collections import defaultdict

import torch
import torch.nn.functional as F
from torch import nn
from torchmetrics import Metric

# log-probability of a class a padded frame cannot emit; finite, so no NaN reaches a gradient
IMPOSSIBLE = -1e4


def blank_past_end(log_probs: torch.Tensor, out_lengths: torch.Tensor) -> torch.Tensor:
    """``log_probs`` (B, T, C) with every frame at or past ``out_lengths`` set to blank (C - 1)."""
    steps, classes = log_probs.size(1), log_probs.size(2)
    past = torch.arange(steps, device=log_probs.device)[None, :] >= out_lengths.to(log_probs.device)[:, None]
    blank = torch.full((classes,), IMPOSSIBLE, dtype=log_probs.dtype, device=log_probs.device)
    blank[-1] = 0.0
    return torch.where(past[..., None], blank, log_probs)


class CTCOutput(nn.Module):
    """``net`` (encoder and a per-step head over the labels and a blank) returning per-frame
    log-probabilities. An encoder that shortens sequences says by how much through an
    ``output_lengths(lengths)`` method (the convolutional front end does)."""

    def __init__(self, net: nn.Module):
        super().__init__()
        self.net = net

    def output_lengths(self, lengths: torch.Tensor) -> torch.Tensor:
        shorten = getattr(getattr(self.net, "encoder", None), "output_lengths", None)
        return shorten(lengths) if shorten is not None else lengths

    def forward(self, x: torch.Tensor, lengths: torch.Tensor, y: torch.Tensor | None = None) -> torch.Tensor:
        log_probs = self.net(x, lengths, y).float().log_softmax(dim=-1)
        return blank_past_end(log_probs, self.output_lengths(lengths.cpu()))


def label_lists(y: torch.Tensor) -> list[list[int]]:
    """Each row's labels: the values >= 0 (the row is padded with negative values)."""
    return [[int(v) for v in row if v >= 0] for row in y.tolist()]


def ctc_loss(log_probs: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Mean over the batch of each sequence's negative log-likelihood divided by its label
    length (torch's ``reduction="mean"``). Every frame is read: past the end they are blank."""
    target_lengths = (y >= 0).sum(dim=1)
    steps = torch.full((y.size(0),), log_probs.size(1), dtype=torch.int64)
    return F.ctc_loss(log_probs.transpose(0, 1), y.clamp(min=0), steps, target_lengths.cpu(),
                      blank=log_probs.size(-1) - 1, reduction="mean", zero_infinity=True)


def greedy_decode(log_probs: torch.Tensor) -> list[list[int]]:
    """Best path: the most likely class of each frame, repeats merged, blanks dropped."""
    blank = log_probs.size(-1) - 1
    out = []
    for row in log_probs.argmax(dim=-1).tolist():
        labels, last = [], None
        for c in row:
            if c != last and c != blank:
                labels.append(c)
            last = c
        out.append(labels)
    return out


def _add(a: float, b: float) -> float:
    if a < b:
        a, b = b, a
    return a if b == -math.inf else a + math.log1p(math.exp(b - a))


def beam_decode(log_probs: torch.Tensor, beam: int) -> list[list[int]]:
    """CTC prefix beam search (Hannun et al. 2014, without a language model): the ``beam``
    most likely label prefixes, each summed over all the alignments that read as it, are
    carried frame to frame; the most likely at the end wins. Beam 1 keeps one prefix, which
    is close to but not always the best path."""
    blank = log_probs.size(-1) - 1
    out = []
    for frames in log_probs.double().tolist():
        beams: dict[tuple, tuple[float, float]] = {(): (0.0, -math.inf)}  # (ends in blank, not)
        for lp in frames:
            nxt: dict[tuple, list[float]] = defaultdict(lambda: [-math.inf, -math.inf])
            for prefix, (p_b, p_nb) in beams.items():
                total = _add(p_b, p_nb)
                stay = nxt[prefix]
                stay[0] = _add(stay[0], total + lp[blank])
                last = prefix[-1] if prefix else None
                for c, p in enumerate(lp):
                    if c == blank or p <= IMPOSSIBLE / 2:
                        continue
                    grown = nxt[prefix + (c,)]
                    if c == last:  # a repeat reads as a new label only after a blank
                        stay[1] = _add(stay[1], p_nb + p)
                        grown[1] = _add(grown[1], p_b + p)
                    else:
                        grown[1] = _add(grown[1], total + p)
            ranked = sorted(nxt.items(), key=lambda kv: _add(*kv[1]), reverse=True)[:beam]
            beams = {prefix: (s[0], s[1]) for prefix, s in ranked}
        out.append(list(max(beams.items(), key=lambda kv: _add(*kv[1]))[0]))
    return out


def decode(log_probs: torch.Tensor, beam: int = 1) -> list[list[int]]:
    """Greedy (best path) at ``beam`` 1, prefix beam search above."""
    return greedy_decode(log_probs) if int(beam) <= 1 else beam_decode(log_probs, int(beam))


class StringAccuracy(Metric):
    """The share of sequences whose decoded labels equal the reference exactly."""

    higher_is_better = True
    full_state_update = False

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.add_state("correct", default=torch.tensor(0, dtype=torch.int64), dist_reduce_fx="sum")
        self.add_state("total", default=torch.tensor(0, dtype=torch.int64), dist_reduce_fx="sum")

    def update(self, preds: list[str], target: list[str]) -> None:
        self.correct += sum(p == t for p, t in zip(preds, target))
        self.total += len(target)

    def compute(self) -> torch.Tensor:
        return self.correct.float() / self.total.clamp(min=1)


class RepeatedLabel(nn.Module):
    """The trivial transcriber: whatever it hears, ``label`` said ``times`` times (frames
    alternate label and blank, the rest blank), with probability ``confidence`` on each
    frame's choice so its loss stays finite."""

    def __init__(self, label: int, times: int, classes: int, confidence: float = 0.9):
        super().__init__()
        self.label, self.times, self.classes = int(label), int(times), int(classes)
        self.confidence = float(confidence)

    def forward(self, x: torch.Tensor, lengths: torch.Tensor, y=None) -> torch.Tensor:
        steps = x.size(1)
        choice = torch.full((steps,), self.classes - 1, dtype=torch.int64)
        choice[0: 2 * self.times - 1: 2] = self.label
        other = math.log((1 - self.confidence) / (self.classes - 1))
        log_probs = torch.full((steps, self.classes), other)
        log_probs[torch.arange(steps), choice] = math.log(self.confidence)
        return blank_past_end(log_probs.expand(x.size(0), -1, -1), lengths.cpu())
