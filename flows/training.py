"""Training and scoring one configuration: plain functions of hyperparameters and prepared data.

Nothing here imports Ray, MLflow or Prefect: the Tune trial, Ray Train's workers, seed repeats
and a bare GPU host all call ``fit`` and ``evaluate`` with what they have.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Mapping, Sequence

import pytorch_lightning as pl
import torch

from datamodules.artifact import Split, load_split, read_extra, read_manifest
from datamodules.datamodule import SequenceDataModule
from modules.sequence import SequenceModule
from modules.tasks import Task
from modules.variants import Variant

if TYPE_CHECKING:
    import pandas as pd

# What the network, the task and a logged model need to know about a prepared dataset.
DATA_KEYS = ("task", "num_classes", "horizon", "input_dim", "vocab_size", "target_channel",
             "window", "outputs", "season", "mase_scale", "calendar_channels", "frames_per_label",
             "max_label_length")
SPLIT_NAMES = ("train", "val", "test")


@dataclass
class PreparedData:
    """A prepared dataset held in memory: its manifest, side files and split arrays."""

    manifest: dict[str, Any]
    extras: dict[str, Any]
    splits: dict[str, Split]

    @classmethod
    def load(cls, artifact_dir: str | Path) -> "PreparedData":
        manifest = read_manifest(artifact_dir)
        extras = {key: read_extra(artifact_dir, key) for key in manifest.get("extras", [])}
        return cls(manifest, extras, {s: load_split(artifact_dir, s) for s in SPLIT_NAMES})

    @property
    def data(self) -> dict[str, Any]:
        facts = {k: self.manifest[k] for k in DATA_KEYS if k in self.manifest}
        shapes = [self.manifest.get("splits", {}).get(s) or {} for s in SPLIT_NAMES]
        ends = {(s.get("length_min"), s.get("length_max")) for s in shapes}
        if len(ends) == 1 and None not in (end := ends.pop()) and end[0] == end[1]:
            facts["fixed_length"] = int(end[0])  # every sequence of every split (an encoder may rely on it)
        scaler = self.extras.get("scaler")
        if scaler is not None and "target_channel" in facts:  # metrics in the data's own units
            facts["target_scale"] = float(scaler["std"][facts["target_channel"]])
        return facts


class NonFiniteLoss(FloatingPointError):
    """The training loss became NaN or infinite: the trial fails, with where it happened."""


class FailOnNonFiniteLoss(pl.Callback):
    """Stop a trial whose loss is no longer finite, as a failure with the reason: training on
    would only produce NaN weights, reported as if they were a result."""

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        loss = outputs["loss"] if isinstance(outputs, dict) else outputs
        if loss is not None and not torch.isfinite(loss.detach()).all():
            raise NonFiniteLoss(f"the training loss became {float(loss.detach().float().mean())} "
                                f"at epoch {trainer.current_epoch}, batch {batch_idx}")


@dataclass
class FitResult:
    module: SequenceModule
    metrics: dict[str, float]  # the last validation epoch's values
    epochs: int
    extra: dict[str, Any] = field(default_factory=dict)


def build_module(variant: Variant, task: Task, hparams: Mapping[str, Any],
                 data: Mapping[str, Any]) -> SequenceModule:
    net = variant.build(task, data, hparams)
    # the task's own hyperparameters reach its metrics too (transcription decodes with its beam)
    data = {**data, **{k: v for k, v in task.resolved(hparams).items() if k in task.hyperparameters}}
    return SequenceModule(net, task, data, lr=float(hparams["lr"]),
                          weight_decay=float(hparams.get("weight_decay", 0.0)))


def make_trainer(max_epochs: int = 1, grad_clip: float = 0.0, callbacks: Sequence = (), logger=False,
                 accelerator: str = "cpu", devices: int | str = 1, deterministic: bool = False,
                 precision: str | None = None, **kwargs) -> pl.Trainer:
    return pl.Trainer(
        max_epochs=max_epochs, accelerator=accelerator, devices=devices, callbacks=list(callbacks),
        logger=logger, gradient_clip_val=grad_clip or None, enable_checkpointing=False,
        enable_progress_bar=False, enable_model_summary=False, num_sanity_val_steps=0,
        log_every_n_steps=1_000_000, deterministic=deterministic, precision=precision, **kwargs,
    )


def fit(hparams: Mapping[str, Any], dataset: PreparedData, variant: Variant, task: Task, *,
        max_epochs: int, seed: int = 0, callbacks: Sequence = (), logger=False,
        ckpt_path: str | Path | None = None, threads: int | None = None,
        accelerator: str = "cpu", devices: int | str = 1, deterministic: bool = False,
        precision: str | None = None, trainer_kwargs: Mapping[str, Any] | None = None,
        prepare: Callable[[pl.Trainer], pl.Trainer] | None = None) -> FitResult:
    """Train ``variant`` with ``hparams`` on ``dataset`` for up to ``max_epochs`` epochs.

    ``callbacks`` and ``logger`` are where the caller hooks in (Tune's reporting, MLflow);
    ``ckpt_path`` continues from a Lightning checkpoint; ``trainer_kwargs`` and ``prepare``
    (called on the Trainer before it fits) are how Ray Train's data-parallel workers bring
    their strategy."""
    if threads:
        torch.set_num_threads(int(threads))
    pl.seed_everything(int(seed), workers=True, verbose=False)
    data = dataset.data
    module = build_module(variant, task, hparams, data)
    datamodule = SequenceDataModule(splits=dataset.splits, batch_size=int(hparams["batch_size"]),
                                    seed=int(seed))
    trainer = make_trainer(max_epochs, float(hparams.get("grad_clip", 0.0)),
                           [FailOnNonFiniteLoss(), *callbacks], logger,
                           accelerator=accelerator, devices=devices, deterministic=deterministic,
                           precision=precision, **dict(trainer_kwargs or {}))
    if prepare is not None:
        trainer = prepare(trainer)
    trainer.fit(module, datamodule, ckpt_path=str(ckpt_path) if ckpt_path else None)
    metrics = {k: float(v) for k, v in trainer.callback_metrics.items()}
    return FitResult(module, metrics, int(trainer.current_epoch))


def evaluate(module: SequenceModule, dataset: PreparedData, split: str = "test",
             batch_size: int = 256) -> dict[str, float]:
    """``module`` scored on one split with the task's own metrics: ``<split>/<metric>``."""
    datamodule = SequenceDataModule(splits=dataset.splits, batch_size=int(batch_size))
    trainer = make_trainer()
    if split == "val":
        trainer.validate(module, datamodule, verbose=False)
    elif split == "test":
        trainer.test(module, datamodule, verbose=False)
    else:
        raise ValueError(f"split must be val or test, got {split!r}")
    scores = {k: float(v) for k, v in trainer.callback_metrics.items()
              if k.startswith(f"{split}/") and not k.endswith("_best")}
    if "series" in dataset.extras:  # many series: scored per series in their own units too
        scores.update({f"{split}/{k}": v for k, v in series_report(module, dataset, split)[1].items()})
    return scores


def series_report(module, dataset: PreparedData, split: str = "test",
                  batch_size: int = 512) -> tuple["pd.DataFrame", dict[str, float]]:
    """A dataset of many series: ``module``'s forecasts of one split scored per series, each in
    its own units (a table, one row per series, named), and the aggregates."""
    import numpy as np
    import pandas as pd

    from modules.metrics import per_series_scores
    from modules.tasks import naive_forecast

    info, data, part = dataset.extras["series"], dataset.data, dataset.splits[split]
    target = int(data.get("target_channel", 0))
    outs, naives = [], []
    module.eval()
    with torch.no_grad():
        for i in range(0, len(part.x), batch_size):
            x = torch.from_numpy(np.stack(part.x[i:i + batch_size]))  # windows share one length
            lengths = torch.full((x.size(0),), x.size(1), dtype=torch.int64)
            outs.append(module(x, lengths).numpy())
            naives.append(naive_forecast(x, lengths, target, int(data["horizon"]),
                                         int(data.get("season", 1))).numpy())
    std = [s[target] for s in info["std"]]
    rows, aggregates = per_series_scores(np.concatenate(outs), np.asarray(part.y), np.concatenate(naives),
                                         np.asarray(part.ids)[:, 0], std, info["mase_scale"])
    table = pd.DataFrame(rows)
    table.insert(0, "series", [info["names"][i] for i in table.pop("series")])
    return table, aggregates


def score_baseline(task: Task, dataset: PreparedData) -> dict[str, float]:
    """The task's trivial baseline, fit on the training split, scored on val and test by the
    same metric code as every model."""
    data = dataset.data
    module = SequenceModule(task.baseline(dataset.splits["train"].y, data), task, data)
    return {**evaluate(module, dataset, "val"), **evaluate(module, dataset, "test")}


def load_weights(checkpoint_path: str | Path) -> dict[str, torch.Tensor]:
    """Model weights from a Lightning checkpoint, without unpickling arbitrary objects."""
    state = torch.load(checkpoint_path, map_location="cpu", weights_only=True)
    return state["state_dict"]

