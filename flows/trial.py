"""The Ray Tune trial: a thin adapter that hands its config to ``flows.training.fit``, reports
through Ray's TuneReportCheckpointCallback and logs per-epoch metrics to its own MLflow run,
nested under the sweep run named in the config. It never imports Prefect.
"""

from __future__ import annotations

import os
import platform
import queue
import threading
import time
from contextlib import nullcontext
from typing import Any

import pytorch_lightning as pl
from pytorch_lightning.loggers import MLFlowLogger
from ray import tune
from ray.tune.integration.pytorch_lightning import TuneReportCheckpointCallback

from flows import tracking
from flows.quiet import silence
from flows.training import PreparedData, fit
from modules.tasks import Task
from modules.variants import Variant

CONTEXT_KEY = "rnnbench"  # static, non-searched values travel in the config under this key
CHECKPOINT_FILE = "checkpoint.ckpt"


class TrialLogger(MLFlowLogger):
    """Lightning's MLflow logger for a trial, with two differences:

    - Metrics are sent by a background thread, one epoch's batch at a time, with the epoch as
      their step: a tracking server that is away (a restart) costs training nothing. A batch
      the server did not take is dropped; the sweep fills the gap from Tune's results when the
      trial has ended (``flows.tracking.backfill_metrics``).
    - It never ends the run: the sweep gives each trial run its final status from Tune's
      verdict, and a trial stopped by the scheduler must not race it by marking its own run
      FAILED on the way out.
    """

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self._outbox: "queue.Queue[list | None]" = queue.Queue()
        self._sender = threading.Thread(target=self._send, name="rnnbench-trial-metrics", daemon=True)
        self._sender.start()

    def _send(self) -> None:
        from mlflow.tracking import MlflowClient

        client = MlflowClient(self._tracking_uri)
        while (batch := self._outbox.get()) is not None:
            try:
                client.log_batch(self.run_id, metrics=batch)
            except Exception:  # missed: backfilled from Tune's results (see above)
                pass
            finally:
                self._outbox.task_done()
        self._outbox.task_done()

    def log_metrics(self, metrics, step=None) -> None:
        from mlflow.entities import Metric

        epoch = int(metrics.get("epoch", step or 0))
        now = int(time.time() * 1000)
        batch = [Metric(k, float(v), now, epoch) for k, v in metrics.items()
                 if k != "epoch" and not isinstance(v, str)]
        self._outbox.put(batch)

    def flush(self, timeout_s: float = 30.0) -> None:
        """Wait (at most ``timeout_s``) for the metrics still queued; what is left is backfilled."""
        deadline = time.monotonic() + timeout_s
        while self._outbox.unfinished_tasks and time.monotonic() < deadline:
            time.sleep(0.05)

    def finalize(self, status: str = "success") -> None:
        """Leave the run open: its final status comes from the sweep (see above)."""
        self.flush()

    def close(self) -> None:
        """Send what is queued (within the flush's limit) and stop the sender thread (an actor
        that Tune reuses runs many trials)."""
        self.flush()
        self._outbox.put(None)


class LogParams(pl.Callback):
    """The trial's hyperparameters and its model's size, logged once the model exists."""

    def __init__(self, tracking_uri: str, run_id: str, hparams: dict[str, Any]):
        self.tracking_uri, self.run_id, self.hparams = tracking_uri, run_id, hparams

    def on_fit_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if not tracking.patiently(tracking.has_param, self.tracking_uri, self.run_id, "n_params"):
            tracking.patiently(tracking.log_params, self.tracking_uri, self.run_id,
                               {**self.hparams, "n_params": pl_module.n_params})  # not on a restart


class EpochTimes(pl.Callback):
    """Seconds each epoch spent training and validating (loading, steps, metrics), logged as
    ``time/train_epoch_s`` and ``time/val_epoch_s``: what a trial's time outside them (start-up,
    reporting, checkpoints, logging) is measured against (benchmarks/orchestration_share.py).
    Place it before Tune's report callback, which runs at the same hook."""

    def on_train_epoch_start(self, trainer, pl_module) -> None:
        self._train_start = time.perf_counter()

    def on_validation_start(self, trainer, pl_module) -> None:
        self._val_start = time.perf_counter()

    def on_validation_end(self, trainer, pl_module) -> None:
        if trainer.sanity_checking or not trainer.is_global_zero or not hasattr(self, "_train_start"):
            return
        times = {"time/train_epoch_s": self._val_start - self._train_start,
                 "time/val_epoch_s": time.perf_counter() - self._val_start, "epoch": trainer.current_epoch}
        for logger in trainer.loggers:
            logger.log_metrics(times, step=trainer.current_epoch)


def hyperparameters(config: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in config.items() if k != CONTEXT_KEY}


def where_it_runs(accelerator: str) -> dict[str, str]:
    """The node and device a trial trains on, as MLflow tags."""
    import ray
    import ray.util
    import torch

    device = "cpu"
    if accelerator == "gpu" and torch.cuda.is_available():
        device = torch.cuda.get_device_name(torch.cuda.current_device())
    return {"rnnbench.host": platform.node(), "rnnbench.node_ip": ray.util.get_node_ip_address(),
            "rnnbench.node_id": ray.get_runtime_context().get_node_id(), "rnnbench.device": device}


def precision_for(wanted: str, accelerator: str) -> str:
    """bf16 mixed precision where the trial's GPU supports it; full precision anywhere else
    (on a CPU it is slower for these models, not faster)."""
    import torch

    if wanted == "bf16-mixed" and accelerator == "gpu" and torch.cuda.is_available() \
            and torch.cuda.is_bf16_supported():
        return "bf16-mixed"
    return "32"


def train_trial(config: dict[str, Any], dataset: PreparedData, variant: Variant, task: Task) -> None:
    silence()
    ctx = config[CONTEXT_KEY]
    hp = hyperparameters(config)
    trial_id = tune.get_context().get_trial_id()
    uri = ctx["tracking_uri"]
    precision = precision_for(ctx.get("precision", "32"), ctx["accelerator"])
    run_id = tracking.patiently(
        tracking.open_trial_run, uri, ctx["experiment_id"], ctx["parent_run_id"], trial_id,
        name=f"{variant.name}-{trial_id}",
        tags={**ctx["tags"], **where_it_runs(ctx["accelerator"]), "rnnbench.precision": precision})
    tracking.patiently(tracking.dataset_input, uri, run_id, dataset.manifest)  # its data version
    logger = TrialLogger(tracking_uri=uri, run_id=run_id)
    report = TuneReportCheckpointCallback(metrics=task.report_metrics, filename=CHECKPOINT_FILE,
                                          on="validation_end")
    checkpoint = tune.get_checkpoint()  # set when Tune restarts or resumes this trial
    try:
        with (checkpoint.as_directory() if checkpoint is not None else nullcontext()) as ckpt_dir:
            fit(hp, dataset, variant, task, max_epochs=ctx["max_epochs"], seed=ctx["seed"],
                callbacks=[LogParams(uri, run_id, task.resolved(hp)), EpochTimes(), report], logger=logger,
                threads=ctx["threads"], accelerator=ctx["accelerator"], precision=precision,
                deterministic=ctx["deterministic"],
                ckpt_path=os.path.join(ckpt_dir, CHECKPOINT_FILE) if ckpt_dir else None)
    except SystemExit:
        raise  # tune.report's way of ending a trial the scheduler stopped; the sweep records it
    except BaseException as exc:
        tracking.patiently(tracking.set_tags, uri, run_id, {"rnnbench.error": f"{type(exc).__name__}: {exc}"[:4000]})
        tracking.patiently(tracking.finish, uri, run_id, "FAILED")
        raise
    finally:
        logger.close()
    tracking.patiently(tracking.finish, uri, run_id, "FINISHED")
