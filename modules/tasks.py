"""The task table: everything that differs between classification, forecasting, regression,
language modelling, per-step prediction and transcription lives in one entry each: loss, metrics, the metric a
sweep selects on and its direction, the head, the trivial baseline and how a served model
formats its predictions, and the task-level hyperparameters it takes (forecasting's input
normalization) with the wrapper that applies them. Code elsewhere asks the entry and never
compares task names.

Reading the table imports no torch; the methods that build tensors import it when called.
"""

from __future__ import annotations

from dataclasses import dataclass
from types import MappingProxyType
from typing import TYPE_CHECKING, Any, ClassVar, Mapping

if TYPE_CHECKING:
    import numpy as np
    import pandas as pd
    import torch
    from torch import nn
    from torchmetrics import MetricCollection

IGNORE = -100  # per-step targets with this value (padding) count in no loss or metric


class TaskError(ValueError):
    pass


@dataclass(frozen=True)
class Option:
    """A hyperparameter the task (not the variant) reads: its valid values, what a
    configuration that leaves it out gets, and what a model logged before it existed did."""

    values: tuple[str, ...]
    default: str
    before: str  # a logged model's spec without the key predates it: rebuild it as it was


@dataclass(frozen=True)
class Task:
    """One kind of prediction. Subclasses implement the methods (the base class raises
    NotImplementedError for the ones every task must define); the fields are plain facts."""

    name: str
    monitor: str  # the validation metric sweeps select on (without the stage prefix)
    mode: str  # "max" or "min": which direction is better for ``monitor``
    reported: tuple[str, ...]  # the metrics tables show, ``monitor`` first
    per_step: bool = False  # the head reads every step (many-to-many), not the pooled summary
    # per-step outputs line up one to one with the labels; False: the labels are a sequence of
    # their own length (a transcript), read off the outputs by the task (CTC)
    aligned: bool = True
    causal: bool = False  # targets are the inputs shifted by one: only causal variants may train
    decodes: bool = False  # the target is a sequence a decoder can produce step by step (decoder_head)
    # Hyperparameters the task (not the variant) reads; every variant accepts them on this task.
    hyperparameters: ClassVar[Mapping[str, Option]] = MappingProxyType({})

    @property
    def report_metrics(self) -> list[str]:
        """What each trial reports to Tune after every validation epoch."""
        return ["val/loss", *(f"val/{m}" for m in self.reported), "train/loss"]

    def better(self, a: float, b: float) -> bool:
        return a > b if self.mode == "max" else a < b

    # ---- training
    def head(self, in_dim: int, data: Mapping[str, Any], dropout: float) -> "nn.Module":
        from modules.heads import LinearHead

        return LinearHead(in_dim, self.output_size(data), dropout)

    def output_size(self, data: Mapping[str, Any]) -> int:
        raise NotImplementedError

    def decoder_head(self, in_dim: int, data: Mapping[str, Any], decoder: Mapping[str, Any]) -> "nn.Module":
        """The head an encoder-decoder variant puts after its encoder (on a task that
        ``decodes``): what each decoder step reads and emits is the task's; ``decoder`` (cell,
        attention, sizes) shapes the recurrence (``modules.seq2seq.Decoder``)."""
        raise NotImplementedError

    def option(self, hparams: Mapping[str, Any], name: str) -> str:
        """A task-level hyperparameter's value in ``hparams`` (its default when absent)."""
        option = self.hyperparameters[name]
        value = hparams.get(name, option.default)
        if value not in option.values or isinstance(value, bool):  # True == 1, but it is not
            raise TaskError(f"{name}={value!r} is not valid on a {self.name} dataset; "
                            f"valid: {', '.join(map(str, option.values))}")
        return value

    def resolved(self, hparams: Mapping[str, Any]) -> dict[str, Any]:
        """``hparams`` with every task-level hyperparameter spelled out, so a logged model says
        what it was built with even when a default later changes."""
        return {**hparams, **{name: self.option(hparams, name) for name in self.hyperparameters}}

    def as_logged(self, hparams: Mapping[str, Any]) -> dict[str, Any]:
        """A logged model's ``hparams`` as it was built: a task-level key it lacks did not exist
        yet, so it gets what the task did then, not today's default."""
        return {**{name: o.before for name, o in self.hyperparameters.items()}, **hparams}

    def option_problem(self, values: Mapping[str, list], params: Mapping[str, Any]) -> str | None:
        """Why some value of the task's own hyperparameters (``values``: every value a search
        space lets each take) cannot work on a dataset prepared with ``params``, in one line,
        or None. The plan asks before any run; ``wrap`` asks again for a build outside one."""
        return None

    def wrap(self, net: "nn.Module", hparams: Mapping[str, Any], data: Mapping[str, Any]) -> "nn.Module":
        """The network as trained and served: ``net`` (encoder and head) inside whatever the
        task's own hyperparameters put around it. ``Variant.build`` calls this."""
        return net

    def loss(self, out: "torch.Tensor", y: "torch.Tensor") -> "torch.Tensor":
        raise NotImplementedError

    def metrics(self, data: Mapping[str, Any]) -> "MetricCollection":
        """A fresh collection; the LightningModule clones it once per stage."""
        raise NotImplementedError

    def metric_inputs(self, out: "torch.Tensor", batch, data: Mapping[str, Any]) -> tuple[tuple, dict]:
        """The arguments the metric collection's ``update`` takes for one batch."""
        x, lengths, y = batch
        return (out.detach(), y), {}

    # ---- the trivial baseline: a fixed "network" scored by the same metric code as the models
    def baseline(self, train_y: "np.ndarray", data: Mapping[str, Any]) -> "nn.Module":
        raise NotImplementedError

    def baseline_name(self, data: Mapping[str, Any]) -> str:
        raise NotImplementedError

    # ---- serving
    def predictions(self, out: "torch.Tensor", lengths: "torch.Tensor",
                    spec: Mapping[str, Any]) -> "pd.DataFrame":
        raise NotImplementedError


def _collection(metrics: dict) -> "MetricCollection":
    from torchmetrics import MetricCollection

    # members are updated with different arguments (filtered by signature): no shared state
    return MetricCollection(metrics, compute_groups=False)


def _constant(value) -> "nn.Module":
    from modules.baselines import Constant

    return Constant(value)


@dataclass(frozen=True)
class Classification(Task):
    def output_size(self, data):
        return int(data["num_classes"])

    def loss(self, out, y):
        import torch.nn.functional as F

        return F.cross_entropy(out, y)

    def metrics(self, data):
        from torchmetrics.classification import MulticlassAccuracy, MulticlassF1Score

        c = int(data["num_classes"])
        return _collection({"acc": MulticlassAccuracy(c, average="micro"),
                            "f1": MulticlassF1Score(c, average="macro")})

    def baseline(self, train_y, data):
        """The training split's class frequencies (add-one smoothed): it always predicts the
        majority class, and its loss is that of the class prior."""
        import numpy as np
        import torch

        counts = np.bincount(train_y.astype(np.int64), minlength=int(data["num_classes"])) + 1.0
        return _constant(torch.as_tensor(np.log(counts / counts.sum()), dtype=torch.float32))

    def baseline_name(self, data):
        return "majority class"

    def predictions(self, out, lengths, spec):
        import pandas as pd

        probs = out.softmax(dim=-1)
        labels = spec["labels"]
        return pd.DataFrame({"label": [labels[i] for i in probs.argmax(dim=-1).tolist()],
                             "probability": probs.max(dim=-1).values.numpy()})


@dataclass(frozen=True)
class Regression(Task):
    def output_size(self, data):
        return int(data["outputs"])

    def loss(self, out, y):
        import torch.nn.functional as F

        return F.mse_loss(out, y)

    def metrics(self, data):
        from torchmetrics.regression import MeanAbsoluteError, MeanSquaredError

        return _collection({"mse": MeanSquaredError(), "mae": MeanAbsoluteError()})

    def baseline(self, train_y, data):
        import torch

        return _constant(torch.as_tensor(train_y.reshape(len(train_y), -1).mean(axis=0), dtype=torch.float32))

    def baseline_name(self, data):
        return "mean target"

    def predictions(self, out, lengths, spec):
        import pandas as pd

        if out.shape[1] == 1:
            return pd.DataFrame({"prediction": out[:, 0].numpy()})
        return pd.DataFrame(out.numpy(), columns=[f"prediction_{i}" for i in range(out.shape[1])])


def naive_forecast(x: "torch.Tensor", lengths: "torch.Tensor", channel: int, horizon: int,
                   season: int = 1) -> "torch.Tensor":
    """(B, horizon): each target step's value one season earlier, read from the input window."""
    import torch

    offsets = torch.arange(horizon, device=x.device) % season - season
    steps = lengths.to(x.device)[:, None] + offsets[None, :]
    return x[torch.arange(x.size(0), device=x.device)[:, None], steps, channel]


# The default wins on most of the datasets it was measured on (fit, LSTM/GRU/Transformer, two
# configurations, two seeds; mean test relative MAE vs naive, global/window/revin): sunspots 0.92/0.77/0.76, a
# series trending past its training range 20.6/0.38/0.37, electricity 0.83/1.04/1.01 (there
# the level itself is informative: sweep norm per dataset). Logged models record their value.
DEFAULT_NORM = "revin"


@dataclass(frozen=True)
class Forecasting(Task):
    """Multi-step forecasts in the scaled units the model trains in; metrics in the data's own
    units (``target_scale``: the target channel's training standard deviation). ``mase`` is
    Hyndman & Koehler's (MAE over the in-sample seasonal naive MAE of the training part,
    ``mase_scale``), ``rel_mae`` the MAE relative to the (seasonal) naive forecast on the same
    windows, ``smape`` the symmetric MAPE (0 to 2).

    ``norm``: ``global`` feeds the network the dataset's z-scored values as they are; ``window``
    scales each input window by its own statistics inside the network and maps the forecast
    back; ``revin`` (the default, ``DEFAULT_NORM``) adds RevIN's learnable affine map. A series
    that leaves its training range needs one of the last two.

    ``diff``: ``0`` (the default) forecasts values; ``1`` differences the target channel at lag
    1 and ``season`` at the dataset's season, forecasts the differences and integrates them back
    onto the window's values, outside ``norm`` (differences are what gets normalized)."""

    hyperparameters: ClassVar[Mapping[str, Option]] = MappingProxyType(
        {"norm": Option(("global", "window", "revin"), default=DEFAULT_NORM, before="global"),
         "diff": Option((0, 1, "season"), default=0, before=0)})

    def option_problem(self, values, params):
        window, horizon = int(params.get("window", 0)), int(params.get("horizon", 0))
        season = int(params.get("season", 1) or 1)
        for diff in values.get("diff", ()):
            if diff == 0:
                continue
            if diff == "season" and season <= 1:
                return ("diff='season' needs a dataset with a season > 1, this one has none "
                        "(prepare it with --season N, or use diff = 1)")
            lag = season if diff == "season" else 1
            if window <= lag:
                return (f"diff={diff!r} differences at lag {lag}, so the window must be longer "
                        f"than {lag} steps, got window={window}")
            if params.get("calendar") and window - lag < horizon:
                return (f"diff={diff!r} with calendar inputs needs window - {lag} >= horizon "
                        f"(the head reads the forecast steps' calendar there), got "
                        f"window={window}, horizon={horizon}")
        return None

    def wrap(self, net, hparams, data):
        norm, diff = self.option(hparams, "norm"), self.option(hparams, "diff")
        target = int(data.get("target_channel", 0))
        if norm != "global":
            from modules.normalization import WindowNorm

            # inside the network, so RevIN's parameters are in the weights a logged model saves
            net = WindowNorm(net, channels=int(data.get("input_dim", 1)) or 1, target=target,
                             affine=norm == "revin", keep=int(data.get("calendar_channels", 0)))
        if diff == 0:
            return net
        problem = self.option_problem({"diff": [diff]}, {**data, "calendar": data.get("calendar_channels", 0)})
        if problem:
            raise TaskError(problem)
        from modules.differencing import Difference

        # outermost: the normalization sees (and scales) the differences
        return Difference(net, lag=int(data.get("season", 1)) if diff == "season" else 1, target=target)

    def head(self, in_dim, data, dropout):
        calendar = int(data.get("calendar_channels", 0))
        if not calendar:
            return super().head(in_dim, data, dropout)
        from modules.heads import FutureCovariateHead

        # the second half of the calendar channels holds each step's calendar a horizon ahead
        return FutureCovariateHead(in_dim, int(data["horizon"]), calendar // 2, dropout)

    def decoder_head(self, in_dim, data, decoder):
        from modules.seq2seq import ForecastDecoder

        # each step reads the same future calendar the direct head reads (FutureCovariateHead)
        return ForecastDecoder(in_dim, int(data["horizon"]), target=int(data.get("target_channel", 0)),
                               future=int(data.get("calendar_channels", 0)) // 2, **decoder)

    def output_size(self, data):
        return int(data["horizon"])

    def loss(self, out, y):
        import torch.nn.functional as F

        return F.mse_loss(out, y)

    def metrics(self, data):
        from torchmetrics.regression import MeanAbsoluteError, MeanSquaredError

        from torchmetrics.regression import SymmetricMeanAbsolutePercentageError

        from modules.metrics import MeanAbsoluteScaledError, NaiveRelativeMAE

        return _collection({"mae": MeanAbsoluteError(), "rmse": MeanSquaredError(squared=False),
                            "mase": MeanAbsoluteScaledError(data.get("mase_scale")),
                            "rel_mae": NaiveRelativeMAE(),
                            "smape": SymmetricMeanAbsolutePercentageError()})

    def metric_inputs(self, out, batch, data):
        x, lengths, y = batch
        scale = float(data.get("target_scale", 1.0))
        naive = naive_forecast(x, lengths, int(data.get("target_channel", 0)), y.size(1),
                               int(data.get("season", 1)))
        return (out.detach() * scale, y * scale), {"naive": naive * scale}

    def baseline(self, train_y, data):
        from modules.baselines import NaiveForecast

        return NaiveForecast(int(data.get("target_channel", 0)), int(data["horizon"]),
                             int(data.get("season", 1)))

    def baseline_name(self, data):
        season = int(data.get("season", 1))
        return "last value" if season == 1 else f"seasonal naive (lag {season})"

    def predictions(self, out, lengths, spec):
        import pandas as pd

        from datamodules.scaling import invert

        ch = int(spec["data"].get("target_channel", 0))
        values = invert(out.numpy(), spec["scaler"], ch)
        return pd.DataFrame(values, columns=[f"t+{i + 1}" for i in range(values.shape[1])])


@dataclass(frozen=True)
class PerStep(Task):
    """A label at every step (``sequence``) or the next token (``language-model``, causal):
    cross-entropy in bits per step (``bpc``; per character for a character model) and accuracy."""

    baseline_kind: str = "per-position"  # or "unigram"

    def output_size(self, data):
        return int(data["num_classes"])

    def loss(self, out, y):
        import torch.nn.functional as F

        return F.cross_entropy(out.reshape(-1, out.size(-1)), y.reshape(-1), ignore_index=IGNORE)

    def metrics(self, data):
        from torchmetrics.classification import MulticlassAccuracy

        from modules.metrics import BitsPerStep

        return _collection({"bpc": BitsPerStep(IGNORE),
                            "acc": MulticlassAccuracy(int(data["num_classes"]), average="micro",
                                                      ignore_index=IGNORE)})

    def metric_inputs(self, out, batch, data):
        x, lengths, y = batch
        return (out.detach().reshape(-1, out.size(-1)), y.reshape(-1)), {}

    def baseline(self, train_y, data):
        """Add-one smoothed frequencies of the training targets: of all tokens (unigram), or of
        each position (memoryless: a model that knows where it is but remembers nothing)."""
        import numpy as np
        import torch

        c = int(data["num_classes"])
        y = train_y.astype(np.int64)
        if self.baseline_kind == "unigram":
            counts = np.bincount(y[y >= 0].ravel(), minlength=c)[None, :]
        else:
            counts = np.stack([np.bincount(col[col >= 0], minlength=c) for col in y.T])
        counts = counts + 1.0
        log_probs = np.log(counts / counts.sum(axis=-1, keepdims=True)).astype(np.float32)
        from modules.baselines import PerStepConstant

        return PerStepConstant(torch.from_numpy(log_probs))

    def baseline_name(self, data):
        return "unigram frequencies" if self.baseline_kind == "unigram" else "memoryless"

    def predictions(self, out, lengths, spec):
        import pandas as pd

        names = spec.get("vocab") or spec.get("labels")
        chars = (spec.get("tokenizer") or {}).get("level") == "char"
        joiner = "" if chars else " "
        steps = out.argmax(dim=-1).tolist()
        return pd.DataFrame({"prediction": [joiner.join(names[i] for i in row[:n])
                                            for row, n in zip(steps, lengths.tolist())]})


def _label_text(rows: list[list[int]]) -> list[str]:
    """Label sequences as strings of one character per label (digit d is "d"), which is what
    torchmetrics' CharErrorRate counts edits over."""
    return ["".join(chr(ord("0") + c) for c in row) for row in rows]


@dataclass(frozen=True)
class Transcription(Task):
    """A label sequence of its own length for each input (``3141`` for "three one four one"):
    the encoder's every frame scores the labels and a blank, trained with CTC; read off by
    greedy decoding, or by a prefix beam search of width ``beam``. An encoder-decoder variant
    instead emits the labels one token at a time, then an end token (``TokenDecoder``: teacher
    forced cross-entropy in training, greedy free running otherwise). ``der``: the label error
    rate (edit distance over reference length, as torchmetrics' CharErrorRate on label
    strings; the digit error rate on digits); ``string_acc``: whole transcripts right.
    Labels are the values >= 0 of each row of ``y`` (rows are padded with negative values)."""

    hyperparameters: ClassVar[Mapping[str, Option]] = MappingProxyType(
        {"beam": Option((1, 2, 4, 8, 16), default=1, before=1)})

    def output_size(self, data):
        return int(data["num_classes"]) + 1  # the blank last

    def wrap(self, net, hparams, data):
        from modules.ctc import CTCOutput

        self.option(hparams, "beam")
        # a decoder (an encoder-decoder variant) emits the labels itself: no CTC around it
        return net if getattr(net, "decodes", False) else CTCOutput(net)

    def decoder_head(self, in_dim, data, decoder):
        from modules.seq2seq import TokenDecoder

        if "max_label_length" not in data:
            raise TaskError("a decoder on a transcription dataset needs the dataset fact max_label_length "
                            "(how many labels free running may emit before its end token)")
        return TokenDecoder(in_dim, int(data["num_classes"]), int(data["max_label_length"]), **decoder)

    def loss(self, out, y):
        from modules.ctc import ctc_loss
        from modules.seq2seq import TokenSteps, token_loss

        return token_loss(out, y) if isinstance(out, TokenSteps) else ctc_loss(out, y)

    def metrics(self, data):
        from torchmetrics.text import CharErrorRate

        from modules.ctc import StringAccuracy

        return _collection({"der": CharErrorRate(), "string_acc": StringAccuracy()})

    def transcripts(self, out, beam) -> list[list[int]]:
        """CTC frames decoded (greedy or beam search); a decoder's tokens read up to its end
        token (greedy: ``beam`` applies to CTC only)."""
        from modules.ctc import decode
        from modules.seq2seq import TokenSteps, read_tokens

        if isinstance(out, TokenSteps):
            return read_tokens(out)
        return decode(out.detach().float().cpu(), beam)

    def metric_inputs(self, out, batch, data):
        from modules.ctc import label_lists

        x, lengths, y = batch
        # a beam set as a hyperparameter reaches ``data`` (flows.training.build_module)
        hyps = self.transcripts(out, self.option(data, "beam"))
        return (_label_text(hyps), _label_text(label_lists(y))), {}

    def baseline(self, train_y, data):
        """The most frequent label said the most frequent number of times."""
        import numpy as np

        from modules.ctc import RepeatedLabel

        y = train_y.astype(np.int64)
        label = int(np.bincount(y[y >= 0]).argmax())
        times = int(np.bincount((y >= 0).sum(axis=1)).argmax())
        return RepeatedLabel(label, times, self.output_size(data))

    def baseline_name(self, data):
        return "most frequent label x most frequent length"

    def predictions(self, out, lengths, spec):
        import pandas as pd

        names = spec["labels"]
        rows = self.transcripts(out, self.option(spec["hparams"], "beam"))
        return pd.DataFrame({"transcript": ["".join(names[i] for i in row) for row in rows]})


TASKS: dict[str, Task] = {t.name: t for t in (
    Classification("classification", monitor="acc", mode="max", reported=("acc", "f1")),
    Forecasting("forecasting", monitor="mae", mode="min",
                reported=("mae", "rmse", "mase", "rel_mae", "smape"), decodes=True),
    Regression("regression", monitor="mse", mode="min", reported=("mse", "mae")),
    PerStep("language-model", monitor="bpc", mode="min", reported=("bpc", "acc"), per_step=True,
            causal=True, baseline_kind="unigram"),
    PerStep("sequence", monitor="bpc", mode="min", reported=("bpc", "acc"), per_step=True),
    Transcription("transcription", monitor="der", mode="min", reported=("der", "string_acc"),
                  per_step=True, aligned=False, decodes=True),
)}
BUILTIN = tuple(TASKS)


def register(task: Task) -> Task:
    """Add a task to the table (a plugin, or a test); the same entry twice is a no-op."""
    existing = TASKS.get(task.name)
    if existing is not None and existing != task:
        raise TaskError(f"task {task.name!r} is already defined")
    TASKS[task.name] = task
    return task


def get(name: str) -> Task:
    if name not in TASKS:
        raise TaskError(f"unknown task {name!r}; valid: {', '.join(TASKS)}")
    return TASKS[name]


def module_of(task: Task) -> str | None:
    """The module a logged model must import to find a task defined outside this table."""
    return None if task.name in BUILTIN else type(task).__module__


def describe_metric(task: Task) -> str:
    return f"val/{task.monitor} ({'higher' if task.mode == 'max' else 'lower'} is better)"

