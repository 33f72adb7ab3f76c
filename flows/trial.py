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
from contextlib import nullcontext, suppress
from typing import Any

import pytorch_lightning as pl
import torch
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
SYSTEM_METRICS_EVERY_S = 5  # MLFLOW_SYSTEM_METRICS_SAMPLING_INTERVAL overrides it


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


class SystemMetrics:
    """MLflow's own system-metrics logging (CPU, memory, disk, network; GPU utilisation where
    NVML is installed: the ``gpu`` extra) on a trial's run, sampled in a background thread.
    Stopping sends what is buffered but waits at most ``STOP_WAIT_S`` for the tracking server:
    a trial ending while it is away goes on."""

    STOP_WAIT_S = 15.0

    def __init__(self, tracking_uri: str, run_id: str):
        from mlflow.system_metrics.system_metrics_monitor import SystemMetricsMonitor

        self.monitor = SystemMetricsMonitor(run_id, sampling_interval=SYSTEM_METRICS_EVERY_S,
                                            resume_logging=True, tracking_uri=tracking_uri)

    def __enter__(self) -> "SystemMetrics":
        self.monitor.start()
        return self

    def _stop(self) -> None:
        """Stop sampling, then log one last sample: a trial shorter than the sampling interval
        gets one too."""
        self.monitor.finish()
        with suppress(Exception):  # the tracking server is away: the trial goes on without it
            self.monitor.collect_metrics()
            self.monitor.publish_metrics(self.monitor.aggregate_metrics())
            self.monitor.mlflow_logger.flush()

    def __exit__(self, *exc) -> None:
        stopping = threading.Thread(target=self._stop, name="rnnbench-system-metrics", daemon=True)
        stopping.start()
        stopping.join(self.STOP_WAIT_S)


class EpochTimes(pl.Callback):
    """Seconds each epoch spent training and validating (loading, steps, metrics), logged as
    ``time/train_epoch_s`` and ``time/val_epoch_s``: what a trial's time outside them (start-up,
    reporting, checkpoints, logging) is measured against (benchmarks/orchestration_share.py).
    Place it before Tune's report callback, which runs at the same hook: the times go into
    ``trainer.callback_metrics`` too, so Tune's results hold them and the sweep backfills them
    when the trial's logger could not send its last epochs (a trial stopped, its actor ended)."""

    KEYS = ("time/train_epoch_s", "time/val_epoch_s")

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
        trainer.callback_metrics.update({k: torch.tensor(times[k]) for k in self.KEYS})


def hyperparameters(config: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in config.items() if k != CONTEXT_KEY}


def _run_name(variant: Variant, trial_id: str, ctx: dict[str, Any]) -> str:
    """A trial's run is named by its trial id; a seed repeat (role ``final``) by its seed."""
    if ctx.get("role") == "final":
        return f"{variant.name}-final-seed{ctx['seed']}"
    return f"{variant.name}-{trial_id}"


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
        name=_run_name(variant, trial_id, ctx), role=ctx.get("role", "trial"),
        tags={**ctx["tags"], **where_it_runs(ctx["accelerator"]), "rnnbench.precision": precision,
              "rnnbench.seed": str(ctx["seed"])})
    tracking.patiently(tracking.dataset_input, uri, run_id, dataset.manifest)  # its data version
    logger = TrialLogger(tracking_uri=uri, run_id=run_id)
    report = TuneReportCheckpointCallback(metrics=[*task.report_metrics, *EpochTimes.KEYS], filename=CHECKPOINT_FILE,
                                          on="validation_end")
    checkpoint = tune.get_checkpoint()  # set when Tune restarts or resumes this trial
    try:
        with tracking.patiently(SystemMetrics, uri, run_id), \
                (checkpoint.as_directory() if checkpoint is not None else nullcontext()) as ckpt_dir:
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


# Data-parallel trials (workers_per_trial > 1): the Tune trial is only the driver of a Ray Train
# run (it reserves no resources the workers need); each worker calls the same ``fit`` with Ray's
# DDP strategy, and Ray Train hands rank 0's results and checkpoint paths back to Tune.
TRAIN_RUN_PREFIX = "train-"


class RecordWorkers(pl.Callback):
    """Where each worker of a data-parallel trial runs, gathered from every rank once the
    process group is up and recorded by rank 0 on the trial's run (comma-separated, by rank)."""

    def __init__(self, tracking_uri: str, run_id: str, accelerator: str, precision: str):
        self.tracking_uri, self.run_id = tracking_uri, run_id
        self.accelerator, self.precision = accelerator, precision

    def on_fit_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        import torch.distributed as dist

        mine = where_it_runs(self.accelerator)
        everyone = [None] * trainer.world_size
        dist.all_gather_object(everyone, mine)
        if trainer.is_global_zero:
            tags = {key: ",".join(w[key] for w in everyone) for key in mine}
            tracking.patiently(tracking.set_tags, self.tracking_uri, self.run_id,
                               {**tags, "rnnbench.workers": str(trainer.world_size),
                                "rnnbench.precision": self.precision})


def train_ddp_worker(cfg: dict[str, Any]) -> None:
    """One Ray Train worker of a data-parallel trial: ``fit`` under RayDDPStrategy; only rank 0
    logs to MLflow, every rank reports to Ray Train (which keeps rank 0's checkpoint)."""
    import ray
    import ray.train
    from ray.train.lightning import (RayDDPStrategy, RayLightningEnvironment, RayTrainReportCallback,
                                     prepare_trainer)

    silence()
    ctx, hp, uri, run_id = cfg["ctx"], cfg["hparams"], cfg["tracking_uri"], cfg["run_id"]
    dataset: PreparedData = ray.get(cfg["dataset"])  # from the node's object store, once per node
    variant, task = cfg["variant"], cfg["task"]
    precision = precision_for(ctx.get("precision", "32"), ctx["accelerator"])
    rank0 = ray.train.get_context().get_world_rank() == 0
    logger = TrialLogger(tracking_uri=uri, run_id=run_id) if rank0 else False
    callbacks = [RecordWorkers(uri, run_id, ctx["accelerator"], precision), EpochTimes(),
                 RayTrainReportCallback()]
    if rank0:
        callbacks.insert(0, LogParams(uri, run_id, task.resolved(hp)))
    checkpoint = ray.train.get_checkpoint()  # Train's own, when it restarts this run
    try:
        with (tracking.patiently(SystemMetrics, uri, run_id) if rank0 else nullcontext()), \
                (checkpoint.as_directory() if checkpoint is not None else nullcontext()) as ckpt_dir:
            fit(hp, dataset, variant, task, max_epochs=ctx["max_epochs"], seed=ctx["seed"],
                callbacks=callbacks, logger=logger, threads=ctx["threads"],
                accelerator=ctx["accelerator"], devices="auto", precision=precision,
                deterministic=ctx["deterministic"],
                trainer_kwargs={"strategy": RayDDPStrategy(), "plugins": [RayLightningEnvironment()]},
                prepare=prepare_trainer,
                ckpt_path=os.path.join(ckpt_dir, RayTrainReportCallback.CHECKPOINT_NAME) if ckpt_dir else None)
    finally:
        if logger:
            logger.close()


def stoppable_torch_trainer(stop_event: threading.Event, done: threading.Event, **kwargs):
    """Ray Train's TorchTrainer, whose run is aborted (its workers stopped, their placement
    group removed) as soon as Tune stops the trial that drives it (ASHA's early stop); ``done``
    is set once the run has ended either way. Without this, Tune ended the trial's actor under
    a running Train controller, whose workers' resources were then held by a placement group
    nothing removed: Train's cleaner for it needs Ray's state API (the dashboard)."""
    import ray
    from ray._common.constants import RAY_WARN_BLOCKING_GET_INSIDE_ASYNC_ENV_VAR
    from ray.train.torch import TorchTrainer
    from ray.train.v2._internal.constants import (DEFAULT_RAY_WARN_BLOCKING_GET_INSIDE_ASYNC_VALUE,
                                                  get_env_vars_to_propagate)
    from ray.train.v2._internal.callbacks.placement_group_callback import PlacementGroupCleanerCallback
    from ray.train.v2._internal.execution.controller import TrainController

    class StoppableTorchTrainer(TorchTrainer):
        def _create_default_callbacks(self):
            # Train's placement-group cleaner asks Ray's state API, which needs the dashboard
            # (ray[default], not installed): each run's end then waited 12 s for it to time out
            return [c for c in super()._create_default_callbacks()
                    if not isinstance(c, PlacementGroupCleanerCallback)]

        def _initialize_and_run_controller(self, **controller_init_kwargs):
            # Ray 2.60's own body (DataParallelTrainer), with the wait that watches Tune's stop
            env_vars = get_env_vars_to_propagate()
            env_vars.setdefault(RAY_WARN_BLOCKING_GET_INSIDE_ASYNC_ENV_VAR,
                                DEFAULT_RAY_WARN_BLOCKING_GET_INSIDE_ASYNC_VALUE)
            controller = ray.remote(
                num_cpus=0,
                label_selector={ray._raylet.RAY_NODE_ID_KEY: ray.get_runtime_context().get_node_id()},
                runtime_env={"env_vars": env_vars},
            )(TrainController).remote(**controller_init_kwargs)
            running = controller.run.remote()
            try:
                while not ray.wait([running], timeout=0.5)[0]:
                    if stop_event.is_set():
                        try:
                            ray.get(controller.abort.remote())
                        except ray.exceptions.RayActorError:
                            pass  # abort ends the controller's process
                        raise SystemExit(0)  # how a trial the scheduler stopped ends
                ray.get(running)
                return ray.get(controller.get_result.remote())
            finally:
                done.set()

    return StoppableTorchTrainer(**kwargs)


def _stop_waits_for(session, done: threading.Event, timeout_s: float = 30.0) -> None:
    """Tune ends a stopped trial's actor right after the trial's session finishes; the session
    of a data-parallel trial finishes only once its Train run has ended (aborted by the stop,
    or ``timeout_s``), so the run's workers are never orphaned mid-abort."""
    finish = session.finish

    def finish_after_abort(timeout=None):
        result = finish(timeout=timeout)  # sets the stop event the trainer watches
        done.wait(timeout_s)
        return result

    session.finish = finish_after_abort


def train_ddp_trial(config: dict[str, Any], dataset_ref, manifest: dict[str, Any], variant: Variant,
                    task: Task) -> None:
    """A Tune trial that trains data-parallel: it opens the trial's one MLflow run and drives a
    Ray Train run of ``workers`` workers under a name stable across restarts, so a restarted
    trial (its node died, or the driver did and the sweep resumed) continues from Train's
    last checkpoint in the shared storage."""
    import ray.train
    from ray.train._internal.session import get_session
    from ray.train.torch import TorchConfig
    from ray.tune.integration.ray_train import TuneReportCallback

    silence()
    ctx = config[CONTEXT_KEY]
    hp = hyperparameters(config)
    trial_id = tune.get_context().get_trial_id()
    uri = ctx["tracking_uri"]
    run_id = tracking.patiently(
        tracking.open_trial_run, uri, ctx["experiment_id"], ctx["parent_run_id"], trial_id,
        name=_run_name(variant, trial_id, ctx), role=ctx.get("role", "trial"),
        tags={**ctx["tags"], "rnnbench.seed": str(ctx["seed"])})
    tracking.patiently(tracking.dataset_input, uri, run_id, manifest)
    gpu = ctx["accelerator"] == "gpu"
    per_worker = {"CPU": ctx["cpus_per_worker"], **({"GPU": ctx["gpus_per_worker"]} if gpu else {})}
    session, done = get_session(), threading.Event()
    _stop_waits_for(session, done)
    trainer = stoppable_torch_trainer(
        session.stop_event, done,  # set when Tune stops this trial; set when the run ended
        train_loop_per_worker=train_ddp_worker,
        train_loop_config={"ctx": ctx, "hparams": hp, "tracking_uri": uri, "run_id": run_id,
                           "dataset": dataset_ref, "variant": variant, "task": task},
        scaling_config=ray.train.ScalingConfig(num_workers=ctx["workers"], use_gpu=gpu,
                                               resources_per_worker=per_worker),
        torch_config=TorchConfig(backend="nccl" if gpu else "gloo"),
        run_config=ray.train.RunConfig(
            name=f"{TRAIN_RUN_PREFIX}{trial_id}", storage_path=ctx["train_storage"],
            callbacks=[TuneReportCallback()],
            checkpoint_config=ray.train.CheckpointConfig(
                num_to_keep=1, checkpoint_score_attribute=ctx["metric"],
                checkpoint_score_order=ctx["mode"]),
            failure_config=ray.train.FailureConfig(max_failures=1)),
    )
    try:
        trainer.fit()
    except SystemExit:
        raise  # the scheduler stopped the trial; the sweep records it
    except BaseException as exc:
        cause = getattr(exc, "__cause__", None) or exc
        tracking.patiently(tracking.set_tags, uri, run_id,
                           {"rnnbench.error": f"{type(cause).__name__}: {cause}"[:4000]})
        tracking.patiently(tracking.finish, uri, run_id, "FAILED")
        raise
    tracking.patiently(tracking.finish, uri, run_id, "FINISHED")
