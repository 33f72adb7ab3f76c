"""One Ray Tune trial: a plain function of its config that trains with Lightning.

It reports through Ray's TuneReportCheckpointCallback and logs per-epoch metrics to its own
MLflow run, nested under the sweep run named in the config. It never imports Prefect.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytorch_lightning as pl
import torch
from pytorch_lightning.loggers import MLFlowLogger
from ray import tune
from ray.tune.integration.pytorch_lightning import TuneReportCheckpointCallback

from datamodules.artifact import read_extra, read_manifest
from datamodules.datamodule import SequenceDataModule
from flows import tracking
from flows.quiet import silence
from modules.registry import build_network
from modules.sequence import SequenceModule

class TrialLogger(MLFlowLogger):
    """Lightning's MLflow logger, minus ending the run: the sweep gives each trial run its
    final status from Tune's verdict, and a trial stopped by the scheduler must not race it
    by marking its own run FAILED on the way out."""

    def finalize(self, status: str = "success") -> None:
        """Leave the run open: its final status comes from the sweep (see above)."""


CONTEXT_KEY = "rnnbench"  # static, non-searched values travel in the config under this key
CHECKPOINT_FILE = "checkpoint.ckpt"


def hyperparameters(config: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in config.items() if k != CONTEXT_KEY}


def build_module(variant: str, hparams: dict[str, Any], manifest: dict[str, Any],
                 artifact_dir: Path, custom: dict[str, str] | None = None) -> SequenceModule:
    """The LightningModule for ``variant`` with ``hparams`` on a prepared dataset."""
    net, head = build_network(variant, hparams, manifest, custom)
    scale = 1.0
    if manifest["task"] == "forecasting":
        scale = float(read_extra(artifact_dir, "scaler")["std"][manifest.get("target_channel", 0)])
    return SequenceModule(
        net, head, task=manifest["task"], lr=float(hparams["lr"]),
        weight_decay=float(hparams.get("weight_decay", 0.0)),
        num_classes=int(manifest.get("num_classes", 0)), target_scale=scale,
        target_channel=int(manifest.get("target_channel", 0)), season=int(manifest.get("season", 1)),
    )


def make_trainer(max_epochs: int, grad_clip: float, callbacks: list, logger=False) -> pl.Trainer:
    return pl.Trainer(
        max_epochs=max_epochs, accelerator="auto", devices=1, callbacks=callbacks, logger=logger,
        gradient_clip_val=grad_clip or None, enable_checkpointing=False, enable_progress_bar=False,
        enable_model_summary=False, num_sanity_val_steps=0, log_every_n_steps=1_000_000,
        deterministic=False,
    )


def train_trial(config: dict[str, Any]) -> None:
    silence()
    ctx = config[CONTEXT_KEY]
    hp = hyperparameters(config)
    torch.set_num_threads(max(1, int(ctx.get("threads", 1))))
    pl.seed_everything(int(ctx["seed"]), workers=True, verbose=False)
    artifact_dir = Path(ctx["artifact_dir"])
    manifest = read_manifest(artifact_dir)
    model = build_module(ctx["variant"], hp, manifest, artifact_dir, ctx.get("custom_variants"))
    datamodule = SequenceDataModule(artifact_dir, batch_size=hp["batch_size"], seed=int(ctx["seed"]))

    trial_id = tune.get_context().get_trial_id()
    uri = ctx["tracking_uri"]
    run_id = tracking.open_trial_run(
        uri, ctx["experiment_id"], ctx["parent_run_id"], trial_id,
        name=f"{ctx['variant']}-{trial_id}", tags=ctx["tags"])
    tracking.log_params(uri, run_id, {**hp, "n_params": model.n_params})
    tracking.dataset_input(uri, run_id, manifest)  # every training run names its data version
    logger = TrialLogger(tracking_uri=uri, run_id=run_id)
    report = TuneReportCheckpointCallback(metrics=ctx["report_metrics"], filename=CHECKPOINT_FILE,
                                          on="validation_end")
    trainer = make_trainer(ctx["max_epochs"], hp.get("grad_clip", 0.0), [report], logger)

    checkpoint = tune.get_checkpoint()  # set when Tune restarts or resumes this trial
    try:
        if checkpoint is not None:
            with checkpoint.as_directory() as ckpt_dir:
                trainer.fit(model, datamodule, ckpt_path=os.path.join(ckpt_dir, CHECKPOINT_FILE))
        else:
            trainer.fit(model, datamodule)
    except SystemExit:
        raise  # tune.report's way of ending a trial the scheduler stopped; the sweep records it
    except BaseException:
        tracking.finish(uri, run_id, "FAILED")
        raise
    tracking.finish(uri, run_id, "FINISHED")


def load_weights(checkpoint_path: Path) -> dict[str, torch.Tensor]:
    """Model weights from a Lightning checkpoint, without unpickling arbitrary objects."""
    state = torch.load(checkpoint_path, map_location="cpu", weights_only=True)
    return state["state_dict"]
