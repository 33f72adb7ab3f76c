"""The Ray Tune sweep of one variant on one dataset, built in one place, and its MLflow record.

A sweep run holds the best trial's configuration, its validation and test scores, the model
(see flows.serving) and the sweep's compute time; its trials are nested runs below it.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import ray
from ray import tune
from ray.tune import CheckpointConfig, FailureConfig, RunConfig, TuneConfig
from ray.tune.schedulers import ASHAScheduler
from ray.tune.search import BasicVariantGenerator

from datamodules.artifact import read_extra, read_manifest
from datamodules.datamodule import SequenceDataModule
from flows import progress, tracking
from flows.presets import Preset, search_space
from flows.quiet import silence
from flows.settings import Settings
from flows.trial import (CHECKPOINT_FILE, CONTEXT_KEY, build_module, hyperparameters, load_weights,
                         make_trainer, train_trial)

# The metric each task is tuned and ranked on: (name without stage, mode)
TASK_METRIC = {"classification": ("acc", "max"), "forecasting": ("mae", "min"),
               "regression": ("mse", "min"), "language-model": ("bpc", "min"),
               "sequence": ("bpc", "min")}
REPORTED = {"classification": ["val/loss", "val/acc", "val/f1", "train/loss"],
            "forecasting": ["val/loss", "val/mae", "val/rmse", "val/mase", "train/loss"],
            "regression": ["val/loss", "val/mse", "val/mae", "train/loss"],
            "language-model": ["val/loss", "val/bpc", "val/acc", "train/loss"],
            "sequence": ["val/loss", "val/bpc", "val/acc", "train/loss"]}


@dataclass
class SweepRequest:
    dataset: str
    variant: str
    artifact_dir: Path
    preset: Preset
    settings: Settings
    experiment_id: str
    run_key: str  # identifies "the same command" so an interrupted sweep resumes
    parent_run_id: str | None = None
    tags: dict[str, str] = field(default_factory=dict)


def start_ray(settings: Settings) -> None:
    """Start (or join, with --ray-address) Ray once per process, quietly."""
    if ray.is_initialized():
        return
    silence()
    ray.init(
        address=settings.ray_address, include_dashboard=False, log_to_driver=False,
        logging_level="ERROR", configure_logging=True,
        runtime_env={"worker_process_setup_hook": "flows.quiet.silence",
                     "env_vars": {"PYTHONWARNINGS": "ignore", "RAY_AUTH_MODE": os.environ.get("RAY_AUTH_MODE", "disabled")}},
    )


def stop_ray() -> None:
    if ray.is_initialized():
        ray.shutdown()


def _tuner(req: SweepRequest, sweep_run_id: str, tags: dict[str, str], metric: str, mode: str,
           path: Path) -> tune.Tuner:
    b = req.preset.budget
    manifest = read_manifest(req.artifact_dir)
    trainable = tune.with_resources(train_trial, {"cpu": b.cpus_per_trial, "gpu": b.gpus_per_trial})
    if tune.Tuner.can_restore(str(path)):
        return tune.Tuner.restore(str(path), trainable, resume_errored=True)
    if path.exists():  # interrupted before Tune saved any state: nothing to resume
        shutil.rmtree(path)
    context = {
        "artifact_dir": str(req.artifact_dir), "variant": req.variant, "seed": b.seed,
        "max_epochs": b.max_epochs, "tracking_uri": req.settings.tracking_uri,
        "experiment_id": req.experiment_id, "parent_run_id": sweep_run_id,
        "tags": tags, "report_metrics": REPORTED[manifest["task"]],
        "custom_variants": req.preset.custom_variants,
        "threads": max(1, int(b.cpus_per_trial)),
    }
    space = {**search_space(req.preset.space_for(req.dataset, req.variant)), CONTEXT_KEY: context}
    return tune.Tuner(
        trainable,
        param_space=space,
        tune_config=TuneConfig(
            metric=metric, mode=mode, num_samples=b.num_samples,
            max_concurrent_trials=b.max_concurrent_trials, reuse_actors=True,
            scheduler=ASHAScheduler(max_t=b.max_epochs, grace_period=min(b.grace_period, b.max_epochs),
                                    reduction_factor=b.reduction_factor),
            search_alg=BasicVariantGenerator(random_state=b.seed),
        ),
        run_config=RunConfig(
            name=path.name, storage_path=str(path.parent), verbose=0,
            callbacks=[progress.TrialProgress(f"{req.dataset} · {req.variant}", metric, mode, b.max_epochs)],
            checkpoint_config=CheckpointConfig(num_to_keep=1, checkpoint_score_attribute=metric,
                                               checkpoint_score_order=mode),
            failure_config=FailureConfig(max_failures=1),
        ),
    )


def evaluate(req: SweepRequest, hparams: dict[str, Any], checkpoint_path: Path) -> tuple[dict, Any]:
    """Score a trial's checkpoint on the test split; returns (metrics, module)."""
    manifest = read_manifest(req.artifact_dir)
    module = build_module(req.variant, hparams, manifest, req.artifact_dir, req.preset.custom_variants)
    module.load_state_dict(load_weights(checkpoint_path))
    datamodule = SequenceDataModule(req.artifact_dir, batch_size=int(hparams["batch_size"]))
    trainer = make_trainer(1, 0.0, [])
    trainer.test(module, datamodule, verbose=False)
    metrics = {k: float(v) for k, v in trainer.callback_metrics.items() if k.startswith("test/")}
    return metrics, module


def run_sweep(req: SweepRequest) -> dict[str, Any]:
    """Tune ``req.variant`` on ``req.dataset``; returns the sweep's summary (also in MLflow)."""
    from flows import serving

    uri = req.settings.tracking_uri
    manifest = read_manifest(req.artifact_dir)
    name, mode = TASK_METRIC[manifest["task"]]
    metric = f"val/{name}"
    tags = {**req.tags, "dataset": req.dataset, "variant": req.variant,
            "modality": manifest["modality"], "rnnbench.task": manifest["task"],
            "rnnbench.run_key": req.run_key}
    lookup = {"rnnbench.role": "sweep", "dataset": req.dataset, "variant": req.variant,
              "rnnbench.run_key": req.run_key}
    previous = tracking.find_child(uri, req.experiment_id, req.parent_run_id, lookup)
    shown = progress.current()
    if previous is not None and previous.info.status == "FINISHED":
        if shown is not None:
            shown.end_sweep(f"  [green]✓[/] {req.dataset:<16} {req.variant:<12} finished earlier, kept")
        return summary_from_run(previous)
    if previous is not None:
        sweep_run_id = previous.info.run_id
        tracking.client(uri).update_run(sweep_run_id, status="RUNNING")
    else:
        sweep_run_id = tracking.create_run(
            uri, req.experiment_id, f"{req.dataset}/{req.variant}", {**tags, tracking.ROLE: "sweep"},
            params={"num_samples": req.preset.budget.num_samples,
                    "max_epochs": req.preset.budget.max_epochs, "metric": metric, "mode": mode},
            parent_run_id=req.parent_run_id)
        tracking.dataset_input(uri, sweep_run_id, manifest)

    if shown is not None:
        shown.start_sweep(f"{req.dataset} · {req.variant}", req.preset.budget.num_samples * req.preset.budget.max_epochs)
    path = req.settings.tune_root / req.run_key / f"{req.dataset}__{req.variant}"
    status = "FAILED"
    try:
        start_ray(req.settings)
        grid = _tuner(req, sweep_run_id, tags, metric, mode, path).fit()
        for result in grid:
            trial_run = tracking.find_child(uri, req.experiment_id, sweep_run_id,
                                            {"rnnbench.trial_id": result.metrics.get("trial_id", "")})
            if trial_run is not None:  # Tune's verdict on each trial is the final word
                epochs = int(result.metrics.get("training_iteration", 0))
                tracking.set_tags(uri, trial_run.info.run_id,
                                  {"rnnbench.epochs": epochs,
                                   "rnnbench.stopped_early": str(epochs < req.preset.budget.max_epochs).lower()})
                tracking.finish(uri, trial_run.info.run_id, "FAILED" if result.error else "FINISHED")
        ok = [r for r in grid if r.error is None and r.metrics and metric in r.metrics]
        if not ok:
            first_error = next((r.error for r in grid if r.error is not None), None)
            raise RuntimeError(f"every trial of {req.dataset}/{req.variant} failed: {first_error}")
        best = grid.get_best_result(metric, mode, scope="all")
        # the checkpoint with the best validation score is the model that gets tested and logged
        pick = max if mode == "max" else min
        checkpoint, ckpt_metrics = pick(best.best_checkpoints, key=lambda cm: cm[1][metric])
        best_val = float(ckpt_metrics[metric])
        hparams = hyperparameters(best.config)
        with checkpoint.as_directory() as ckpt_dir:
            test_metrics, module = evaluate(req, hparams, Path(ckpt_dir) / CHECKPOINT_FILE)
        train_time = float(sum(r.metrics.get("time_total_s", 0.0) for r in grid if r.metrics))
        metrics = {**test_metrics, metric: best_val, "n_params": module.n_params,
                   "train_time_s": train_time, "trials": len(grid)}
        tracking.log_metrics(uri, sweep_run_id, metrics)
        tracking.log_params(uri, sweep_run_id, {f"best.{k}": v for k, v in hparams.items()})
        tracking.set_tags(uri, sweep_run_id, {"rnnbench.best_trial_id": best.metrics.get("trial_id", "")})
        if manifest["task"] == "language-model":  # one-to-many: text generated from a prompt
            sample = serving.sample_text(module, read_extra(req.artifact_dir, "vocab"), seed=req.preset.budget.seed)
            tracking.log_text(uri, sweep_run_id, sample, "sample.txt")
        with tempfile.TemporaryDirectory() as tmp:
            serving.log_model(uri, sweep_run_id, module, req.variant, hparams, req.artifact_dir,
                              Path(tmp), req.preset.custom_variants)
        status = "FINISHED"
        summary = {"dataset": req.dataset, "variant": req.variant, "run_id": sweep_run_id, **metrics,
                   "best": hparams}
        if shown is not None:
            score = test_metrics.get(f"test/{name}")
            shown.end_sweep(f"  [green]✓[/] {req.dataset:<16} {req.variant:<12} test/{name} {score:.3f}")
        return summary
    except KeyboardInterrupt:
        status = "KILLED"
        raise
    finally:
        tracking.close_descendants(uri, req.experiment_id, sweep_run_id, status)
        tracking.finish(uri, sweep_run_id, status)


def summary_from_run(run) -> dict[str, Any]:
    data = run.data
    return {"dataset": data.tags.get("dataset"), "variant": data.tags.get("variant"),
            "run_id": run.info.run_id, **data.metrics,
            "best": {k[len("best."):]: v for k, v in data.params.items() if k.startswith("best.")}}
