"""One LightningModule for every variant and task: the encoder and head come in as arguments."""

from __future__ import annotations

import math

import pytorch_lightning as pl
import torch
import torch.nn.functional as F
from torch import nn
from torchmetrics import MaxMetric, MeanMetric, MetricCollection, MinMetric, SumMetric
from torchmetrics.classification import MulticlassAccuracy, MulticlassF1Score
from torchmetrics.regression import MeanAbsoluteError, MeanSquaredError
from typing_extensions import override

from modules.registry import PER_STEP_TASKS, count_parameters

STAGES = ("train", "val", "test")
IGNORE = -100  # per-step targets with this value (padding) count in no loss or metric


def apply_head(net: nn.Module, head: nn.Module, x: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
    """The encoder, then the head on its pooled summary or, for per-step heads, every step."""
    outputs, pooled = net(x, lengths)
    return head(outputs if getattr(head, "per_step", False) else pooled)  # user heads: pooled


def naive_forecast(x: torch.Tensor, lengths: torch.Tensor, channel: int, horizon: int,
                   season: int = 1) -> torch.Tensor:
    """(B, horizon): each target step's value one season earlier, read from the input window."""
    offsets = torch.arange(horizon, device=x.device) % season - season
    steps = lengths.to(x.device)[:, None] + offsets[None, :]
    return x[torch.arange(x.size(0), device=x.device)[:, None], steps, channel]


def _per_stage(factory) -> nn.ModuleDict:
    # "train" would shadow nn.Module.train inside a ModuleDict, hence the key suffix
    return nn.ModuleDict({f"{s}_": factory() for s in STAGES})


class SequenceModule(pl.LightningModule):
    """Classification (``val/acc``, ``val/f1``), per-step prediction (``val/bpc``: cross-entropy
    in bits per step, per character for a character language model; ``val/acc``), regression of one value per sequence
    (``val/mse``, ``val/mae``) or multi-step forecasting (``val/mae``,
    ``val/rmse``, ``val/mase`` in the data's original units; MASE is the MAE relative to the
    naive forecast: the value one ``season`` before each target step, the last value when
    ``season`` is 1)."""

    def __init__(self, net: nn.Module, head: nn.Module, task: str, lr: float = 1e-3,
                 weight_decay: float = 0.0, num_classes: int = 0, target_scale: float = 1.0,
                 target_channel: int = 0, season: int = 1):
        super().__init__()
        self.save_hyperparameters(ignore=["net", "head"])
        self.net = net
        self.head = head
        self.losses = _per_stage(MeanMetric)
        if task == "classification":
            make = lambda: MetricCollection({  # noqa: E731
                "acc": MulticlassAccuracy(num_classes, average="micro"),
                "f1": MulticlassF1Score(num_classes, average="macro"),
            })
            self.best = MaxMetric()
            self.monitor = "acc"
        elif task == "forecasting":
            make = lambda: MetricCollection({  # noqa: E731
                "mae": MeanAbsoluteError(), "rmse": MeanSquaredError(squared=False),
            })
            self.abs_err = _per_stage(SumMetric)
            self.naive_err = _per_stage(SumMetric)
            self.best = MinMetric()
            self.monitor = "mae"
        elif task in PER_STEP_TASKS:
            make = lambda: MetricCollection({  # noqa: E731
                "acc": MulticlassAccuracy(num_classes, average="micro", ignore_index=IGNORE),
            })
            self.bits = _per_stage(MeanMetric)
            self.best = MinMetric()
            self.monitor = "bpc"
        elif task == "regression":
            make = lambda: MetricCollection({  # noqa: E731
                "mse": MeanSquaredError(), "mae": MeanAbsoluteError(),
            })
            self.best = MinMetric()
            self.monitor = "mse"
        else:
            raise ValueError(f"unknown task {task!r}")
        self.metrics = _per_stage(make)
        self.n_params = count_parameters(self)

    def forward(self, x: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        return apply_head(self.net, self.head, x, lengths)

    @override
    def on_train_start(self) -> None:
        # the sanity check must not leave its numbers in the best-so-far
        self.best.reset()
        self.metrics["val_"].reset()
        self.losses["val_"].reset()

    def _shared_step(self, batch, stage: str) -> torch.Tensor:
        x, lengths, y = batch
        out = self(x, lengths)
        hp = self.hparams
        if hp.task == "classification":
            loss = F.cross_entropy(out, y)
            self.metrics[f"{stage}_"].update(out.argmax(dim=-1), y)
        elif hp.task in PER_STEP_TASKS:
            flat_out, flat_y = out.reshape(-1, out.size(-1)), y.reshape(-1)
            loss = F.cross_entropy(flat_out, flat_y, ignore_index=IGNORE)
            self.metrics[f"{stage}_"].update(flat_out.argmax(dim=-1), flat_y)
            counted = (flat_y != IGNORE).sum()
            self.bits[f"{stage}_"].update(loss.detach() / math.log(2), weight=counted)
        elif hp.task == "regression":
            loss = F.mse_loss(out, y)
            self.metrics[f"{stage}_"].update(out.detach(), y)
        else:
            loss = F.mse_loss(out, y)
            scale = hp.target_scale
            pred, target = out.detach() * scale, y * scale
            self.metrics[f"{stage}_"].update(pred, target)
            naive = naive_forecast(x, lengths, hp.target_channel, target.size(1), hp.season)
            self.abs_err[f"{stage}_"].update((pred - target).abs().sum())
            self.naive_err[f"{stage}_"].update((naive * scale - target).abs().sum())
        self.losses[f"{stage}_"].update(loss.detach())
        return loss

    def _log_epoch(self, stage: str) -> None:
        values = {f"{stage}/{k}": v for k, v in self.metrics[f"{stage}_"].compute().items()}
        values[f"{stage}/loss"] = self.losses[f"{stage}_"].compute()
        if self.hparams.task in PER_STEP_TASKS:
            values[f"{stage}/bpc"] = self.bits[f"{stage}_"].compute()
            self.bits[f"{stage}_"].reset()
        if self.hparams.task == "forecasting":
            values[f"{stage}/mase"] = self.abs_err[f"{stage}_"].compute() / self.naive_err[f"{stage}_"].compute()
            self.abs_err[f"{stage}_"].reset()
            self.naive_err[f"{stage}_"].reset()
        if stage == "val" and not self.trainer.sanity_checking:
            self.best.update(values[f"val/{self.monitor}"])
            values[f"val/{self.monitor}_best"] = self.best.compute()
        self.log_dict(values, sync_dist=True)
        self.metrics[f"{stage}_"].reset()
        self.losses[f"{stage}_"].reset()

    @override
    def training_step(self, batch, batch_idx: int) -> torch.Tensor:
        return self._shared_step(batch, "train")

    @override
    def validation_step(self, batch, batch_idx: int) -> None:
        self._shared_step(batch, "val")

    @override
    def test_step(self, batch, batch_idx: int) -> None:
        self._shared_step(batch, "test")

    @override
    def on_train_epoch_end(self) -> None:
        self._log_epoch("train")

    @override
    def on_validation_epoch_end(self) -> None:
        self._log_epoch("val")

    @override
    def on_test_epoch_end(self) -> None:
        self._log_epoch("test")

    @override
    def configure_optimizers(self):
        return torch.optim.AdamW(self.parameters(), lr=self.hparams.lr,
                                 weight_decay=self.hparams.weight_decay)
