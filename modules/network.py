"""The network every variant builds: an encoder and a task head, one ``forward`` for training
and serving. A variant may bring its own network class instead (a decoder, a normalization
wrapper) as long as it keeps this call signature."""

from __future__ import annotations

import torch
from torch import nn


class SequenceNetwork(nn.Module):
    def __init__(self, encoder: nn.Module, head: nn.Module, per_step: bool = False):
        super().__init__()
        self.encoder = encoder
        self.head = head
        self.per_step = per_step  # many-to-many: the head reads every step, not the summary

    def forward(self, x: torch.Tensor, lengths: torch.Tensor,
                y: torch.Tensor | None = None) -> torch.Tensor:
        """``y`` is there for networks that use the targets while training (teacher forcing)."""
        outputs, pooled = self.encoder(x, lengths)
        features = outputs if self.per_step else pooled
        if getattr(self.head, "reads_window", False):  # covariates known for the forecast steps
            return self.head(features, x, lengths)
        return self.head(features)


def count_parameters(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters() if p.requires_grad)
