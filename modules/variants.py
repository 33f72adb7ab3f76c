"""The variant table: one entry per network variant, the one place that knows how each is built.

An entry names its encoder by import path (so reading the table imports no torch), says whether
it reads sequences in both directions and whether it may serve tasks whose targets are the
inputs shifted (language models), lists its extra hyperparameters and the constraints a search
space must satisfy for it. A user's encoder named in a preset becomes an entry like the rest.
"""

from __future__ import annotations

import importlib
import itertools
import numbers
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Callable, Iterable, Mapping

if TYPE_CHECKING:
    from torch import nn

    from modules.tasks import Task

# Hyperparameters every encoder takes, and those the training loop (not the network) reads.
ENCODER_ARGS = ("hidden_size", "num_layers", "dropout")
TRAINING_ARGS = ("lr", "weight_decay", "batch_size", "grad_clip")
# Samplers whose values can be listed, so constraints can be checked before any trial starts.
_LISTABLE_RANGE = 100_000
_ABSENT = object()  # a hyperparameter neither given nor defaulted


class VariantError(ValueError):
    """A variant that is unknown, cannot be imported, or cannot do what it is asked."""


@dataclass(frozen=True)
class Constraint:
    """A rule over some hyperparameters that every configuration of a search space must keep."""

    params: tuple[str, ...]
    check: Callable[..., bool]
    rule: str  # what must hold, in words, e.g. "hidden_size divisible by nhead"
    # what a configuration that leaves a parameter out gets (the encoder's default); a parameter
    # without one must be in every search space
    defaults: Mapping[str, Any] = field(default_factory=dict)
    applies: Callable[["Task"], bool] | None = None  # only on the tasks where this holds; None: all
    # facts of the dataset (its parameters, or the prepared data's facts) passed to ``check``
    # after ``params``; a dataset without them leaves the rule unchecked
    facts: tuple[str, ...] = ()

    def holds_on(self, task: "Task | None") -> bool:
        """Whether the rule binds on ``task`` (a task-specific rule binds on no task at all)."""
        return self.applies is None or (task is not None and self.applies(task))


def _divides(hidden_size: int, nhead: int) -> bool:
    return int(hidden_size) % int(nhead) == 0


# The values some encoders' own hyperparameters take; the encoders check them too.
MERGE_MODES = ("concat", "sum")
NONLINEARITIES = ("tanh", "relu")
DECODER_CELLS = ("gru", "lstm")  # an encoder-decoder's cell, the same on both sides
ATTENTIONS = ("none", "bahdanau", "luong")  # what a decoder reads of the encoder's states


def _is_merge(merge: str) -> bool:
    return merge in MERGE_MODES


def _is_nonlinearity(nonlinearity: str) -> bool:
    return nonlinearity in NONLINEARITIES


def _positive_ints(*values: Any) -> bool:
    # Integral: a sampler may hand over a numpy integer; bool is an int but never a size
    return all(v is None or (isinstance(v, numbers.Integral) and not isinstance(v, bool) and v >= 1)
               for v in values)


def _stride_within_kernel(kernel: int, stride: int) -> bool:
    return int(stride) <= int(kernel)


def _unit_stride(stride: int) -> bool:
    return int(stride) == 1


def _aligned(task: "Task") -> bool:
    return task.per_step and task.aligned


def _unaligned(task: "Task") -> bool:
    return not task.aligned


def _enough_outputs(stride: int, frames_per_label: int) -> bool:
    return 2 * int(stride) <= int(frames_per_label)


def _as_wide(hparams: Mapping[str, Any]) -> int:
    return int(hparams["hidden_size"])


def _feed_forward(hparams: Mapping[str, Any]) -> int:
    """The Transformer's feed-forward width when ``ff_size`` is unset (read from the encoder's
    own default, so it cannot drift; sizing has imported torch by the time it asks)."""
    import inspect

    from modules.encoders import TransformerEncoder

    ff_mult = hparams.get("ff_mult", inspect.signature(TransformerEncoder).parameters["ff_mult"].default)
    return int(ff_mult) * int(hparams["hidden_size"])


@dataclass(frozen=True)
class Sizing:
    """How a variant is brought to a target parameter count (``modules.sizing``): ``width`` is
    solved first (the count grows with it); where its steps are too coarse to land near the
    target, the first of ``second`` ((knob name, the value the network uses when the knob is
    unset, from the other hyperparameters) pairs) that moves the count closes the gap. Every
    knob must make the count grow with its value."""

    width: str = "hidden_size"
    second: tuple[tuple[str, Callable[[Mapping[str, Any]], int]], ...] = ()


@dataclass(frozen=True)
class Variant:
    """One network variant. ``build`` puts the encoder and the task's head together; a variant
    that brings its own head, decoder or wrapper (teacher forcing through ``y``) subclasses
    this and overrides ``build``; its logged model rebuilds it through the same class."""

    name: str
    encoder: str  # "package.module:Class"; the class maps (x, lengths) to (outputs, pooled)
    kwargs: Mapping[str, Any] = field(default_factory=dict)  # fixed constructor arguments
    bidirectional: bool = False
    causal: bool = True  # with ``causal_kwargs``, no step's output reads a later step
    causal_kwargs: Mapping[str, Any] = field(default_factory=dict)  # given on causal tasks only
    extras: tuple[str, ...] | None = ()  # its own hyperparameters; None: any (a user's class)
    constraints: tuple[Constraint, ...] = ()
    builtin: bool = True
    per_step_kwargs: Mapping[str, Any] = field(default_factory=dict)  # given on per-step tasks only
    data_args: tuple[str, ...] = ()  # dataset facts the encoder takes, when the dataset has them
    noncausal_why: str = ""  # how it reads a sequence, in words, when it is not causal
    # why it cannot serve a task whose labels are a sequence of their own length, read off its
    # per-step outputs (transcription's CTC), in words; empty: it can
    unaligned_why: str = ""
    sizing: Sizing = Sizing()  # the knobs size matching turns (a user's class: hidden_size alone)

    @property
    def module(self) -> str:
        return self.encoder.partition(":")[0]

    def factory(self) -> Callable[..., "nn.Module"]:
        module_name, _, attr = self.encoder.partition(":")
        try:
            return getattr(importlib.import_module(module_name), attr)
        except (ImportError, AttributeError, ValueError) as exc:
            raise VariantError(f"variant {self.name!r}: cannot import {self.encoder!r} ({exc})") from None

    def incompatibility(self, task: "Task") -> str | None:
        """Why this variant cannot be trained on a ``task`` dataset, or None if it can."""
        if task.causal and not self.causal:
            why = ("reads sequences in both directions" if self.bidirectional
                   else self.noncausal_why or "is not declared causal")
            return f"{self.name} {why}, so on a {task.name} dataset it would see the tokens it must predict"
        if not task.aligned and self.unaligned_why:
            return (f"{self.name} {self.unaligned_why}, so on a {task.name} dataset it has no frames "
                    "to read a label sequence from")
        return None

    def hyperparameters(self, task: "Task | None" = None) -> tuple[str, ...] | None:
        """Every key a configuration may set for this variant (on a ``task`` dataset, the
        task's own keys too); None: any (a user's encoder takes what it takes)."""
        if self.extras is None:
            return None
        return (*ENCODER_ARGS, *TRAINING_ARGS, *self.extras, *(task.hyperparameters if task else ()))

    def check_space(self, space: Mapping[str, Any], task: "Task | None" = None,
                    facts: Mapping[str, Any] | None = None) -> str | None:
        """Why some configuration of ``space`` (preset sampler tables) would be invalid for this
        variant on a ``task`` dataset (whose parameters are ``facts``), in one line, or None
        when every configuration is valid."""
        allowed = self.hyperparameters(task)
        if allowed is not None:
            unknown = sorted(k for k in space if k not in allowed)
            if unknown:
                where = f" on a {task.name} dataset" if task else ""
                return (f"{self.name} has no hyperparameter(s) {unknown}{where}{_elsewhere(unknown)}; "
                        f"its hyperparameters: {', '.join(allowed)}")
        for key, option in (task.hyperparameters.items() if task else ()):
            valid = option.values
            if key in space:
                values = listed_values(space[key])
                bad = [v for v in values or [space[key]] if v not in valid or isinstance(v, bool)]
                if values is None or bad:
                    return (f"{key} on a {task.name} dataset must be one of {', '.join(map(str, valid))} "
                            f"(a constant or a choice), got {bad[0] if bad else space[key]!r}")
        for rule in self.constraints:
            if not rule.holds_on(task) or any(f not in (facts or {}) for f in rule.facts):
                continue
            known = [facts[f] for f in rule.facts]
            missing = [p for p in rule.params if p not in space and p not in rule.defaults]
            if missing:
                return f"{self.name} needs {', '.join(missing)} in its search space ({rule.rule})"
            options = {p: listed_values(space[p]) if p in space else [rule.defaults[p]]
                       for p in rule.params}
            unlisted = [p for p, v in options.items() if v is None]
            if unlisted:
                return (f"{self.name}: {', '.join(unlisted)} must be a constant, a choice or a small "
                        f"randint range so that '{rule.rule}' can be checked before any trial")
            bad = [combo for combo in itertools.product(*options.values()) if not rule.check(*combo, *known)]
            if bad:
                shown = ", ".join("/".join(f"{p}={v}" for p, v in zip(rule.params, combo))
                                  for combo in bad[:4])
                choices = "; ".join(f"{p} in {options[p]}" for p in rule.params)
                given = "".join(f", {f}={v}" for f, v in zip(rule.facts, known))
                return f"{self.name}: {rule.rule}, but the space allows {shown} ({choices}{given})"
        return None

    def check_build(self, task: "Task", data: Mapping[str, Any], hparams: Mapping[str, Any]) -> None:
        """Refuse a build the plan would have refused: a build outside a plan (a script, a
        test) gets its checks too."""
        reason = self.incompatibility(task)
        if reason:
            raise VariantError(reason)
        for rule in self.constraints:
            values = [hparams.get(p, rule.defaults.get(p, _ABSENT)) for p in rule.params]
            values += [data.get(f, _ABSENT) for f in rule.facts]
            if rule.holds_on(task) and _ABSENT not in values and not rule.check(*values):
                given = ", ".join(f"{p}={v!r}" for p, v in zip((*rule.params, *rule.facts), values))
                raise VariantError(f"{self.name}: {rule.rule}, got {given}")

    def build(self, task: "Task", data: Mapping[str, Any], hparams: Mapping[str, Any]) -> "nn.Module":
        """The whole network (encoder and the task's head, inside what the task wraps around
        it, e.g. forecasting's window normalization) for a dataset described by ``data``."""
        self.check_build(task, data, hparams)
        kwargs = {k: hparams[k] for k in ENCODER_ARGS if k in hparams}
        if self.extras is None:
            kwargs.update({k: v for k, v in hparams.items() if k not in ENCODER_ARGS
                           and k not in TRAINING_ARGS and k not in task.hyperparameters})
        else:
            kwargs.update({k: hparams[k] for k in self.extras if k in hparams})
        kwargs.update(self.kwargs)
        kwargs.update({k: data[k] for k in self.data_args if k in data})
        if task.causal:
            kwargs.update(self.causal_kwargs)
        if task.per_step:
            kwargs.update(self.per_step_kwargs)
        encoder = self.factory()(input_dim=data.get("input_dim", 0), vocab_size=data.get("vocab_size", 0),
                                 **kwargs)
        from modules.network import SequenceNetwork

        head = task.head(encoder.output_dim, data, float(hparams.get("dropout", 0.0)))
        return task.wrap(SequenceNetwork(encoder, head, per_step=task.per_step), hparams, data)

    def to_spec(self) -> dict[str, Any]:
        """What a logged model needs to rebuild this variant without the table."""
        return {"class": f"{type(self).__module__}:{type(self).__qualname__}",
                "name": self.name, "encoder": self.encoder, "kwargs": dict(self.kwargs),
                "bidirectional": self.bidirectional, "causal": self.causal,
                "causal_kwargs": dict(self.causal_kwargs),
                "extras": None if self.extras is None else list(self.extras),
                "per_step_kwargs": dict(self.per_step_kwargs), "data_args": list(self.data_args),
                "noncausal_why": self.noncausal_why}

    @classmethod
    def from_spec(cls, spec: Mapping[str, Any]) -> "Variant":
        module_name, _, attr = spec.get("class", "modules.variants:Variant").partition(":")
        klass = getattr(importlib.import_module(module_name), attr)
        extras = spec.get("extras")
        return klass(name=spec["name"], encoder=spec["encoder"], kwargs=spec.get("kwargs", {}),
                   bidirectional=spec.get("bidirectional", False), causal=spec.get("causal", True),
                   causal_kwargs=spec.get("causal_kwargs", {}),
                   extras=None if extras is None else tuple(extras), builtin=False,
                   per_step_kwargs=spec.get("per_step_kwargs", {}),
                   data_args=tuple(spec.get("data_args", ())),
                   noncausal_why=spec.get("noncausal_why", ""))


def _elsewhere(keys: list[str]) -> str:
    """Which tasks or variants do take some of ``keys``, so the refusal says where they belong."""
    from modules.tasks import TASKS

    owners = {k: [t.name for t in TASKS.values() if k in t.hyperparameters] for k in keys}
    hints = [f"{k} applies to {' and '.join(names)} datasets only" for k, names in owners.items() if names]
    takers = {k: [v.name for v in VARIANTS.values() if v.extras and k in v.extras] for k in keys}
    hints += [f"{k} is a hyperparameter of {', '.join(names)} only" for k, names in takers.items() if names]
    return f" ({'; '.join(hints)})" if hints else ""


def listed_values(sampler: Any) -> list | None:
    """Every value a preset sampler can produce, or None when they cannot be listed."""
    if not isinstance(sampler, Mapping):
        return [sampler]
    (kind, arg), = sampler.items()
    if kind == "choice":
        return list(arg)
    if kind == "randint" and arg[1] - arg[0] <= _LISTABLE_RANGE:
        return list(range(int(arg[0]), int(arg[1])))
    return None


_EMBED = Constraint(("embed_size",), _positive_ints, "embed_size must be a positive integer",
                    defaults={"embed_size": None})  # None: hidden_size
# token inputs: the embedding's width is the second knob (with a large vocabulary each unit of
# width costs a vocabulary's worth of parameters)
_EMBED_SIZING = Sizing(second=(("embed_size", _as_wide),))
_MERGE = Constraint(("merge",), _is_merge, f"merge must be one of {', '.join(MERGE_MODES)}",
                    defaults={"merge": "concat"})
_NONLINEARITY = Constraint(("nonlinearity",), _is_nonlinearity,
                           f"nonlinearity must be one of {', '.join(NONLINEARITIES)}",
                           defaults={"nonlinearity": "tanh"})
# The convolutional front end: symmetric padding reads later steps, so causal tasks get left
# padding (``causal_kwargs``); a stride s shortens a sequence of T steps to ceil(T / s), which
# no longer lines up with a per-step task's labels.
_CONV_DEFAULTS = {"kernel": 3, "stride": 1, "channels": None}  # channels None: hidden_size
_CONV = (
    Constraint(("kernel", "stride", "channels"), _positive_ints,
               "kernel, stride and channels must be positive integers", defaults=_CONV_DEFAULTS),
    Constraint(("kernel", "stride"), _stride_within_kernel,
               "stride must not exceed kernel (a longer stride skips steps unread)",
               defaults=_CONV_DEFAULTS),
    Constraint(("stride",), _unit_stride,
               "stride must be 1 on a per-step task (a stride above 1 shortens the outputs, "
               "which then no longer line up with a label per step)",
               defaults=_CONV_DEFAULTS, applies=_aligned),
    # CTC reads a label from at least one output step, two between equal labels: with at least
    # frames_per_label input frames per label, stride <= frames_per_label / 2 always leaves enough
    Constraint(("stride",), _enough_outputs,
               "stride must be at most frames_per_label / 2 on a transcription dataset (CTC needs "
               "an output step per label and a blank between repeated ones; the dataset has at "
               "least frames_per_label input frames per label)",
               defaults=_CONV_DEFAULTS, applies=_unaligned, facts=("frames_per_label",)),
)


def _rnn(cell: str, bidirectional: bool) -> Variant:
    rules = ((_MERGE,) if bidirectional else ()) + ((_NONLINEARITY,) if cell == "rnn" else ()) + (_EMBED,)
    return Variant(name=("bi" if bidirectional else "") + cell, encoder="modules.encoders:RNNEncoder",
                   kwargs={"cell": cell, "bidirectional": bidirectional},
                   bidirectional=bidirectional, causal=not bidirectional,
                   extras=tuple(p for rule in rules for p in rule.params), constraints=rules,
                   sizing=_EMBED_SIZING)


def _conv_rnn(cell: str) -> Variant:
    return Variant(name=f"cnn-{cell}", encoder="modules.forms:ConvRNNEncoder", kwargs={"cell": cell},
                   causal_kwargs={"causal": True}, extras=("kernel", "stride", "channels", "embed_size"),
                   constraints=(*_CONV, _EMBED),
                   sizing=Sizing(second=(("embed_size", _as_wide), ("channels", _as_wide))))


def _is_cell(cell: str) -> bool:
    return cell in DECODER_CELLS


def _is_attention(attention: str) -> bool:
    return attention in ATTENTIONS[1:]


def _is_probability(p: Any) -> bool:
    return isinstance(p, numbers.Real) and not isinstance(p, bool) and 0.0 <= float(p) <= 1.0


# the keys an encoder-decoder hands its decoder (hidden_size, num_layers and dropout go to both)
DECODER_ARGS = ("cell", "attention", "scheduled_sampling")
DEFAULT_CELL = "gru"  # Cho et al.'s and Bahdanau et al.'s encoder-decoders were gated this way
DEFAULT_ATTENTION = "bahdanau"  # where an entry lets attention be chosen
_CELL = Constraint(("cell",), _is_cell, f"cell must be one of {', '.join(DECODER_CELLS)}",
                   defaults={"cell": DEFAULT_CELL})
_SAMPLING = Constraint(("scheduled_sampling",), _is_probability,
                       "scheduled_sampling must be a probability between 0 and 1",
                       defaults={"scheduled_sampling": 0.0})
_ATTENTION = Constraint(("attention",), _is_attention,
                        f"attention must be one of {', '.join(ATTENTIONS[1:])}",
                        defaults={"attention": DEFAULT_ATTENTION})


@dataclass(frozen=True)
class EncoderDecoder(Variant):
    """An encoder RNN and a decoder RNN that produces the output sequence one step at a time
    (``modules.seq2seq``), on the tasks whose table entry says it can be decoded
    (``Task.decodes``) and gives the decoder head (``Task.decoder_head``). The encoder takes
    ``cell`` and the shared sizes; the decoder takes ``DECODER_ARGS`` and the same sizes."""

    def incompatibility(self, task: "Task") -> str | None:
        if not task.decodes:
            from modules.tasks import TASKS

            able = " and ".join(t.name for t in TASKS.values() if t.decodes)
            return (f"{self.name} decodes an output sequence step by step, and a {task.name} "
                    f"dataset's target is not a sequence it produces (it trains on {able} datasets)")
        return super().incompatibility(task)

    def build(self, task: "Task", data: Mapping[str, Any], hparams: Mapping[str, Any]) -> "nn.Module":
        self.check_build(task, data, hparams)
        chosen = {**{k: hparams[k] for k in self.extras or () if k in hparams}, **self.kwargs}
        # defaults from what the logged spec keeps (extras), so a served model is rebuilt alike
        chosen.setdefault("cell", DEFAULT_CELL)
        chosen.setdefault("attention", DEFAULT_ATTENTION if "attention" in (self.extras or ()) else "none")
        sizes = {k: hparams[k] for k in ENCODER_ARGS if k in hparams}
        encoder = self.factory()(input_dim=data.get("input_dim", 0), vocab_size=data.get("vocab_size", 0),
                                 cell=chosen["cell"], **sizes)
        decoder = {**sizes, **{k: chosen[k] for k in DECODER_ARGS if k in chosen}}
        from modules.seq2seq import Seq2SeqNetwork

        head = task.decoder_head(encoder.output_dim, data, decoder)
        return task.wrap(Seq2SeqNetwork(encoder, head), hparams, data)


def _seq2seq(attention: bool) -> Variant:
    rules = (_CELL, _SAMPLING) + ((_ATTENTION,) if attention else ())
    return EncoderDecoder(name="seq2seq-attn" if attention else "seq2seq",
                          encoder="modules.encoders:RNNEncoder",
                          kwargs={} if attention else {"attention": "none"},
                          extras=tuple(p for rule in rules for p in rule.params), constraints=rules)


VARIANTS: dict[str, Variant] = {v.name: v for v in (
    _rnn("rnn", False), _rnn("lstm", False), _rnn("gru", False),
    _rnn("rnn", True), _rnn("lstm", True), _rnn("gru", True),
    Variant(name="transformer", encoder="modules.encoders:TransformerEncoder",
            causal_kwargs={"causal": True}, extras=("nhead", "ff_mult", "ff_size"),
            constraints=(Constraint(("hidden_size", "nhead"), _divides,
                                    "hidden_size must be divisible by nhead"),
                         Constraint(("ff_size",), _positive_ints, "ff_size must be a positive integer",
                                    defaults={"ff_size": None})),  # None: ff_mult x hidden_size
            sizing=Sizing(second=(("ff_size", _feed_forward),))),
    # one-to-one: no recurrence at all, so a table shows whether order matters on a dataset
    Variant(name="mlp", encoder="modules.forms:MLPEncoder", causal=False,
            noncausal_why="reads the whole sequence at once", data_args=("fixed_length", "window"),
            unaligned_why="maps the whole input at once",
            per_step_kwargs={"per_step": True}, extras=("embed_size",), constraints=(_EMBED,),
            sizing=_EMBED_SIZING),
    _conv_rnn("lstm"), _conv_rnn("gru"),
    # Feng et al. 2024: gates from the input alone, trained with a parallel scan; causal as built
    Variant(name="mingru", encoder="modules.minrnn:MinRNNEncoder", kwargs={"cell": "mingru"},
            extras=("embed_size",), constraints=(_EMBED,), sizing=_EMBED_SIZING),
    Variant(name="minlstm", encoder="modules.minrnn:MinRNNEncoder", kwargs={"cell": "minlstm"},
            extras=("embed_size",), constraints=(_EMBED,), sizing=_EMBED_SIZING),
    # many-to-many, unaligned: two entries, so every table shows what attention adds
    _seq2seq(False), _seq2seq(True),
)}
BUILTIN = tuple(VARIANTS)


def register(variant: Variant) -> Variant:
    """Add a variant to the table (a plugin or a test); the same entry twice is a no-op."""
    existing = VARIANTS.get(variant.name)
    if existing is not None and existing != variant:
        raise VariantError(f"variant {variant.name!r} is already defined")
    VARIANTS[variant.name] = variant
    return variant


def custom_variant(name: str, declared: str | Mapping[str, Any]) -> Variant:
    """A user's encoder from a preset's ``[custom_variants]``: ``name = "pkg.mod:Class"`` or
    ``name = {class = "pkg.mod:Class", causal = true, bidirectional = false}``."""
    if name in VARIANTS:
        raise VariantError(f"custom variant {name!r} would replace a built-in one; choose another name")
    fields = {"class": declared} if isinstance(declared, str) else dict(declared)
    target = fields.get("class", "")
    if ":" not in target:
        raise VariantError(f"custom variant {name!r}: expected \"package.module:ClassName\", got {target!r}")
    unknown = sorted(set(fields) - {"class", "causal", "bidirectional"})
    if unknown:
        raise VariantError(f"custom variant {name!r}: unknown key(s) {unknown}; valid: class, causal, bidirectional")
    bidirectional = bool(fields.get("bidirectional", False))
    return Variant(name=name, encoder=target, bidirectional=bidirectional,
                   causal=bool(fields.get("causal", False)) and not bidirectional,
                   extras=None, builtin=False)


def resolve(name: str, custom: Mapping[str, Variant] | None = None) -> Variant:
    """The table's entry for ``name`` (or a preset's custom variant); unknown names list the valid."""
    table = {**VARIANTS, **(custom or {})}
    if name not in table:
        raise VariantError(f"unknown variant {name!r}; valid: {', '.join(table)}")
    return table[name]


def names(custom: Iterable[str] = ()) -> list[str]:
    return [*VARIANTS, *custom]
