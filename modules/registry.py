"""Variants by name, and the one function that builds a network for a task from plain values.

A user variant is a class named ``package.module:ClassName`` whose constructor takes
``input_dim, vocab_size, hidden_size, num_layers, dropout`` (plus its own keyword arguments),
whose forward maps (x, lengths) to (outputs (B, T, D), pooled (B, D)), and which sets
``output_dim``.
"""

from __future__ import annotations

import importlib
from functools import partial
from typing import Any, Callable

from torch import nn

from modules.encoders import RNNEncoder, TransformerEncoder
from modules.heads import LinearHead

VARIANTS: dict[str, Callable[..., nn.Module]] = {
    "rnn": partial(RNNEncoder, "rnn", bidirectional=False),
    "lstm": partial(RNNEncoder, "lstm", bidirectional=False),
    "gru": partial(RNNEncoder, "gru", bidirectional=False),
    "birnn": partial(RNNEncoder, "rnn", bidirectional=True),
    "bilstm": partial(RNNEncoder, "lstm", bidirectional=True),
    "bigru": partial(RNNEncoder, "gru", bidirectional=True),
    "transformer": TransformerEncoder,
}

# Hyperparameters every encoder takes; anything else in a config goes to the encoder as-is
# only if it is listed in ENCODER_EXTRAS for that variant (or the variant is a user class).
ENCODER_ARGS = ("hidden_size", "num_layers", "dropout")
ENCODER_EXTRAS = {"transformer": ("nhead", "ff_mult")}
BIDIRECTIONAL = ("birnn", "bilstm", "bigru")
# Tasks whose targets are the inputs shifted by one step: a variant that reads the future
# would see the answers, so they take only causal variants.
CAUSAL_TASKS = ("language-model",)
PER_STEP_TASKS = ("language-model", "sequence")


def incompatibility(variant: str, task: str) -> str | None:
    """Why ``variant`` cannot be trained on a ``task`` dataset, or None if it can."""
    if task in CAUSAL_TASKS and variant in BIDIRECTIONAL:
        return (f"{variant} reads sequences in both directions, so on a {task} dataset it would "
                "see the tokens it must predict")
    return None


class VariantError(ValueError):
    pass


def resolve_variant(name: str, custom: dict[str, str] | None = None) -> Callable[..., nn.Module]:
    """A built-in variant by name, or a user's class from ``custom`` (name -> "module:Class")."""
    custom = custom or {}
    if name in VARIANTS:
        return VARIANTS[name]
    if name in custom:
        target = custom[name]
        module_name, _, attr = target.partition(":")
        try:
            return getattr(importlib.import_module(module_name), attr)
        except (ImportError, AttributeError, ValueError) as exc:
            raise VariantError(f"variant {name!r}: cannot import {target!r} ({exc})") from None
    valid = [*VARIANTS, *custom]
    raise VariantError(f"unknown variant {name!r}; valid: {', '.join(valid)}")


def build_network(variant: str, config: dict[str, Any], data: dict[str, Any],
                  custom: dict[str, str] | None = None) -> tuple[nn.Module, nn.Module]:
    """(encoder, head) for ``variant`` on a dataset described by its manifest ``data``."""
    factory = resolve_variant(variant, custom)
    reason = incompatibility(variant, data["task"])
    if reason:
        raise VariantError(reason)
    kwargs = {k: config[k] for k in ENCODER_ARGS if k in config}
    if variant == "transformer" and data["task"] in CAUSAL_TASKS:
        kwargs["causal"] = True
    kwargs.update({k: config[k] for k in ENCODER_EXTRAS.get(variant, ()) if k in config})
    if variant not in VARIANTS:
        kwargs.update(config.get("variant_kwargs", {}))
    encoder = factory(input_dim=data.get("input_dim", 0), vocab_size=data.get("vocab_size", 0), **kwargs)
    dropout = float(config.get("dropout", 0.0))
    if data["task"] == "classification":
        head = LinearHead(encoder.output_dim, data["num_classes"], dropout)
    elif data["task"] == "forecasting":
        head = LinearHead(encoder.output_dim, data["horizon"], dropout)
    elif data["task"] == "regression":
        head = LinearHead(encoder.output_dim, data["outputs"], dropout)
    elif data["task"] in PER_STEP_TASKS:
        head = LinearHead(encoder.output_dim, data["num_classes"], dropout, per_step=True)
    else:
        raise VariantError(f"no head for task {data['task']!r}")
    return encoder, head


def count_parameters(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters() if p.requires_grad)
