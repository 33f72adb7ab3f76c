"""The Ray Tune sweep of one variant on one dataset, built in one place, and its MLflow record.

A sweep run holds the best trial's configuration, its validation and test scores, the model
(see flows.serving) and the sweep's compute time; its trials are nested runs below it. A sweep
is identified by its key (dataset, variant, seed) under its benchmark run, and its Tune state
lives under that benchmark run's id, so only that run can resume it.
"""

from __future__ import annotations

import os
import shutil
import signal
import tempfile
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import ray
from prefect.exceptions import TerminationSignal
from ray import tune
from ray.tune import CheckpointConfig, FailureConfig, RunConfig, TuneConfig
from ray.tune.schedulers import ASHAScheduler
from ray.tune.search import BasicVariantGenerator

from flows import progress, tracking
from flows.plan import Budget, search_space
from flows.quiet import silence
from flows.settings import Settings
from flows.signals import stop_like_ctrl_c
from flows.training import PreparedData, build_module, evaluate, load_weights
from flows.trial import CHECKPOINT_FILE, CONTEXT_KEY, hyperparameters, train_trial
from modules.tasks import Task
from modules.variants import Variant

SWEEP_KEY = "rnnbench.sweep"


@dataclass
class SweepRequest:
    dataset: str
    variant: Variant
    task: Task
    artifact_dir: Path
    budget: Budget
    space: dict[str, Any]  # preset sampler tables, already merged for this dataset and variant
    settings: Settings
    experiment_id: str
    parent_run_id: str  # the benchmark run: the sweep's Tune state belongs to it
    tags: dict[str, str] = field(default_factory=dict)

    @property
    def key(self) -> str:
        """What identifies the sweep within its benchmark run (a seed repeat is another sweep)."""
        return f"{self.dataset}/{self.variant.name}/seed{self.budget.seed}"

    @property
    def tune_path(self) -> Path:
        return (self.settings.tune_root / self.parent_run_id
                / f"{self.dataset}__{self.variant.name}__seed{self.budget.seed}")


class SweepInterrupted(KeyboardInterrupt):
    """Tune stopped on Ctrl-C or SIGTERM after saving its state; the same run can resume."""

    def __init__(self, grid):
        super().__init__()
        self.grid = grid


def start_ray(settings: Settings) -> None:
    """Start (or join, with --ray-address) Ray once per process, quietly."""
    if ray.is_initialized():
        return
    silence()
    # ray.init installs a SIGTERM handler that calls sys.exit; rnnbench's own (stop like Ctrl-C,
    # so Tune saves its state and runs end KILLED) must stay in place
    main = threading.current_thread() is threading.main_thread()
    on_sigterm = signal.getsignal(signal.SIGTERM) if main else None
    ray.init(
        address=settings.ray_address, include_dashboard=False, log_to_driver=False,
        logging_level="ERROR", configure_logging=True,
        runtime_env={"worker_process_setup_hook": "flows.quiet.worker_setup",
                     # a cluster keeps its own auth settings; the local instance runs without
                     "env_vars": {"PYTHONWARNINGS": "ignore",
                                  **({} if settings.ray_address else
                                     {"RAY_AUTH_MODE": os.environ.get("RAY_AUTH_MODE", "disabled")})}},
    )
    if main and callable(on_sigterm):
        signal.signal(signal.SIGTERM, on_sigterm)


def stop_ray() -> None:
    if ray.is_initialized():
        ray.shutdown()


def _tuner(req: SweepRequest, dataset: PreparedData, sweep_run_id: str, tags: dict[str, str]) -> tune.Tuner:
    b = req.budget
    metric, mode = f"val/{req.task.monitor}", req.task.mode
    trainable = tune.with_resources(
        tune.with_parameters(train_trial, dataset=dataset, variant=req.variant, task=req.task),
        {"cpu": b.cpus_per_trial, "gpu": b.gpus_per_trial})
    path = req.tune_path
    if tune.Tuner.can_restore(str(path)):
        return tune.Tuner.restore(str(path), trainable, resume_errored=True)
    if path.exists():  # interrupted before Tune saved any state: nothing to resume
        shutil.rmtree(path)
    context = {
        "seed": b.seed, "max_epochs": b.max_epochs, "tracking_uri": req.settings.tracking_uri,
        "experiment_id": req.experiment_id, "parent_run_id": sweep_run_id, "tags": tags,
        "threads": max(1, int(b.cpus_per_trial)), "deterministic": b.deterministic,
        # a trial that asked for no GPU trains on the CPU, even on a node that has one
        "accelerator": "gpu" if b.gpus_per_trial > 0 else "cpu",
    }
    return tune.Tuner(
        trainable,
        param_space={**search_space(req.space), CONTEXT_KEY: context},
        tune_config=TuneConfig(
            metric=metric, mode=mode, num_samples=b.num_samples,
            reuse_actors=True,
            scheduler=ASHAScheduler(max_t=b.max_epochs, grace_period=min(b.grace_period, b.max_epochs),
                                    reduction_factor=b.reduction_factor),
            # Tune ignores TuneConfig.max_concurrent_trials (with a warning) when given a
            # generator instance: the generator must carry the limit itself
            search_alg=BasicVariantGenerator(random_state=b.seed, max_concurrent=b.max_concurrent_trials),
        ),
        run_config=RunConfig(
            name=path.name, storage_path=str(path.parent), verbose=0,
            callbacks=[progress.TrialProgress(f"{req.dataset} · {req.variant.name}", metric, mode,
                                              b.max_epochs)],
            checkpoint_config=CheckpointConfig(num_to_keep=1, checkpoint_score_attribute=metric,
                                               checkpoint_score_order=mode),
            failure_config=FailureConfig(max_failures=1),
        ),
    )


def _fit(tuner: tune.Tuner):
    """``tuner.fit()``, raising SweepInterrupted when Ctrl-C or SIGTERM stopped it.

    In the main thread Tune installs its own SIGINT handler for the duration of the sweep: the
    first signal makes it stop the trials and save the experiment's state (what a resume starts
    from), then it puts the previous handler back and ``fit`` returns normally, every trial
    marked TERMINATED. So a handler that is back to the previous one tells the sweep was
    interrupted; Tune's own handler still in place (it never uninstalls it) tells it was not.
    """
    before = signal.getsignal(signal.SIGINT)
    watching = threading.current_thread() is threading.main_thread()
    if watching:  # SIGTERM too (Prefect's own handler would abort the loop without a save)
        on_sigterm = signal.signal(signal.SIGTERM, stop_like_ctrl_c)
    try:
        grid = tuner.fit()
    finally:
        after = signal.getsignal(signal.SIGINT)
        signal.signal(signal.SIGINT, before)  # later Ctrl-C must raise KeyboardInterrupt again
        if watching:
            signal.signal(signal.SIGTERM, on_sigterm)
    if watching and after is before:
        raise SweepInterrupted(grid)
    return grid


def run_sweep(req: SweepRequest) -> dict[str, Any]:
    """Tune ``req.variant`` on ``req.dataset``; returns the sweep's summary (also in MLflow)."""
    from flows import serving

    uri = req.settings.tracking_uri
    dataset = PreparedData.load(req.artifact_dir)
    name = req.task.monitor
    metric, mode = f"val/{name}", req.task.mode
    tags = {**req.tags, "dataset": req.dataset, "variant": req.variant.name,
            "modality": dataset.manifest["modality"], "rnnbench.task": req.task.name,
            SWEEP_KEY: req.key}
    previous = tracking.find_child(uri, req.experiment_id, req.parent_run_id,
                                   {tracking.ROLE: "sweep", SWEEP_KEY: req.key})
    shown = progress.current()
    label = f"{req.dataset:<16} {req.variant.name:<12}"
    if previous is not None and previous.info.status == "FINISHED":
        if shown is not None:
            shown.end_sweep(f"  [green]✓[/] {label} finished earlier, kept")
        return summary_from_run(previous)
    if previous is not None:
        sweep_run_id = previous.info.run_id
        tracking.client(uri).update_run(sweep_run_id, status="RUNNING")
    else:
        sweep_run_id = tracking.create_run(
            uri, req.experiment_id, f"{req.dataset}/{req.variant.name}", {**tags, tracking.ROLE: "sweep"},
            params={"num_samples": req.budget.num_samples, "max_epochs": req.budget.max_epochs,
                    "metric": metric, "mode": mode, "seed": req.budget.seed},
            parent_run_id=req.parent_run_id)
        tracking.dataset_input(uri, sweep_run_id, dataset.manifest)

    if shown is not None:
        shown.start_sweep(f"{req.dataset} · {req.variant.name}", req.budget.num_samples * req.budget.max_epochs)
    status = "FAILED"
    try:
        start_ray(req.settings)
        tuner = _tuner(req, dataset, sweep_run_id, tags)
        grid = _fit(tuner)
        _record_verdicts(req, sweep_run_id, grid)
        ok = [r for r in grid if r.error is None and r.metrics and metric in r.metrics]
        if not ok:
            first_error = next((r.error for r in grid if r.error is not None), None)
            raise RuntimeError(f"every trial of {req.dataset}/{req.variant.name} failed: "
                               f"{_root_cause(first_error)}")
        best = grid.get_best_result(metric, mode, scope="all")
        # the checkpoint with the best validation score is the model that gets tested and logged
        pick = max if mode == "max" else min
        checkpoint, ckpt_metrics = pick(best.best_checkpoints, key=lambda cm: cm[1][metric])
        best_val = float(ckpt_metrics[metric])
        hparams = req.task.resolved(hyperparameters(best.config))  # task-level defaults spelled out
        module = build_module(req.variant, req.task, hparams, dataset.data)
        with checkpoint.as_directory() as ckpt_dir:
            module.load_state_dict(load_weights(Path(ckpt_dir) / CHECKPOINT_FILE))
        test_metrics = evaluate(module, dataset, "test", batch_size=int(hparams["batch_size"]))
        train_time = float(sum(r.metrics.get("time_total_s", 0.0) for r in grid if r.metrics))
        failed = sum(1 for r in grid if r.error is not None)
        metrics = {**test_metrics, metric: best_val, "n_params": module.n_params,
                   "val/loss": float(ckpt_metrics.get("val/loss", float("nan"))),
                   "train_time_s": train_time, "trials": len(grid), "trials_failed": failed}
        tracking.log_metrics(uri, sweep_run_id, metrics)
        tracking.log_params(uri, sweep_run_id, {f"best.{k}": v for k, v in hparams.items()})
        tracking.set_tags(uri, sweep_run_id, {"rnnbench.best_trial_id": best.metrics.get("trial_id", "")})
        if "series" in dataset.extras:  # many series: each one's test scores, in its own units
            from flows.training import series_report

            table = series_report(module, dataset, "test", int(hparams["batch_size"]))[0]
            tracking.log_text(uri, sweep_run_id, table.to_csv(index=False), "series_metrics.csv")
        if req.task.causal:  # one-to-many: text generated from a prompt by a language model
            sample = serving.sample_text(module, dataset.extras["vocab"], seed=req.budget.seed)
            tracking.log_text(uri, sweep_run_id, sample, "sample.txt")
        with tempfile.TemporaryDirectory() as tmp:
            serving.log_model(uri, sweep_run_id, module, req.variant, req.task, hparams, dataset, Path(tmp))
        status = "FINISHED"
        summary = {"dataset": req.dataset, "variant": req.variant.name, "run_id": sweep_run_id,
                   **metrics, "best": hparams}
        if shown is not None:
            score = test_metrics.get(f"test/{name}")
            shown.end_sweep(f"  [green]✓[/] {label} val/{name} {best_val:.3f}  test/{name} {score:.3f}")
        return summary
    except (KeyboardInterrupt, TerminationSignal) as exc:
        status = "KILLED"
        if isinstance(exc, SweepInterrupted):  # trials that ran to the end keep their FINISHED
            _record_verdicts(req, sweep_run_id, exc.grid, only_done=True)
        raise
    except BaseException as exc:
        tracking.set_tags(uri, sweep_run_id, {"rnnbench.error": f"{type(exc).__name__}: {exc}"[:4000]})
        if shown is not None:
            shown.end_sweep(f"  [red]✗[/] {label} failed: {type(exc).__name__}: {str(exc)[:200]}")
        raise
    finally:
        tracking.close_descendants(uri, req.experiment_id, sweep_run_id, status)
        tracking.finish(uri, sweep_run_id, status)


def _root_cause(error: BaseException | None) -> str:
    """The trial's own exception, not Ray's wrapper with its remote traceback."""
    cause = getattr(error, "cause", None) or error
    return f"{type(cause).__name__}: {cause}".splitlines()[0] if cause is not None else "no result"


def _record_verdicts(req: SweepRequest, sweep_run_id: str, grid, only_done: bool = False) -> None:
    """Tune's verdict on each trial is the final word on its MLflow run (``only_done``: after an
    interruption, only for the trials that had run to the end)."""
    uri = req.settings.tracking_uri
    for result in grid:
        metrics = result.metrics or {}
        epochs = int(metrics.get("training_iteration", 0))
        if only_done and not (metrics.get("done") or epochs >= req.budget.max_epochs):
            continue
        trial_run = tracking.find_child(uri, req.experiment_id, sweep_run_id,
                                        {"rnnbench.trial_id": metrics.get("trial_id", "")})
        if trial_run is not None:
            tracking.set_tags(uri, trial_run.info.run_id,
                              {"rnnbench.epochs": epochs,
                               "rnnbench.stopped_early": str(epochs < req.budget.max_epochs).lower()})
            tracking.finish(uri, trial_run.info.run_id, "FAILED" if result.error else "FINISHED")


def summary_from_run(run) -> dict[str, Any]:
    data = run.data
    return {"dataset": data.tags.get("dataset"), "variant": data.tags.get("variant"),
            "run_id": run.info.run_id, **data.metrics,
            "best": {k[len("best."):]: v for k, v in data.params.items() if k.startswith("best.")}}
