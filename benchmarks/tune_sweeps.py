"""What the Tune benchmarks (trial scaling, early-stopping payoff) share: a throwaway rnnbench
home with a prepared dataset, an MLflow store and one local Ray instance, and one sweep run
through the very Tuner ``flows.sweep`` builds (its trainable ``flows.trial.train_trial``, ASHA
as the budget configures it, actors reused), timed around ``Tuner.fit`` only: the sweep's own
test scoring and model logging are per-sweep costs, not trial throughput."""

from __future__ import annotations

import logging
import tempfile
import time
import warnings
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator

from flows import tracking
from flows.plan import Budget
from flows.settings import Settings, apply_environment, load_settings
from flows.training import PreparedData


EPOCH_METRICS = ("time/train_epoch_s", "time/val_epoch_s")  # logged by flows.trial.EpochTimes


def trial_record(client, run) -> tuple[float, float, dict[str, list]]:
    """A trial run's opening and the end of its last epoch (when that epoch's times were logged),
    in seconds since the epoch, and its epoch-time histories by epoch. The run's own end time
    is not the trial's: a trial that Tune stops (ASHA at any rung, the last included) is ended
    by its sweep afterwards."""
    history = {key: sorted(client.get_metric_history(run.info.run_id, key), key=lambda m: m.step)
               for key in EPOCH_METRICS}
    if not all(history.values()):
        raise SystemExit(f"trial run {run.info.run_id} has no {' or '.join(EPOCH_METRICS)}: "
                         "is flows.trial.EpochTimes among the trial's callbacks?")
    last = max(m.timestamp for ms in history.values() for m in ms) / 1000
    return run.info.start_time / 1000, last, history


@dataclass
class Workspace:
    settings: Settings
    dataset: str
    artifact_dir: Path
    prepared: PreparedData
    experiment_id: str


@contextmanager
def workspace(dataset: str = "japanese-vowels") -> Iterator[Workspace]:
    """A temporary rnnbench home holding ``dataset`` prepared, an MLflow experiment and Ray
    started as a benchmark run starts it; Ray is stopped and the folder removed afterwards."""
    from datamodules import catalog
    from flows.sweep import start_ray, stop_ray

    warnings.filterwarnings("ignore")
    with tempfile.TemporaryDirectory(prefix="rnnbench-bench-tune-") as home:
        settings = load_settings(home=home)
        apply_environment(settings)
        for name in ("alembic", "mlflow"):
            logging.getLogger(name).setLevel(logging.ERROR)
        artifact_dir, _, _ = catalog.prepare(dataset, settings.data_root)
        experiment_id = tracking.ensure_experiment(settings.tracking_uri, settings.experiment,
                                                   settings.artifact_root)
        start_ray(settings)
        try:
            yield Workspace(settings, dataset, Path(artifact_dir), PreparedData.load(artifact_dir),
                            experiment_id)
        finally:
            stop_ray()


def sweep(ws: Workspace, variant: str, budget: Budget, space: dict[str, Any], label: str):
    """One sweep of ``variant`` through ``flows.sweep``'s Tuner, in its own benchmark and sweep
    runs (so every call gets fresh Tune state); returns (seconds in ``Tuner.fit``, Tune's grid,
    the trials' MLflow runs)."""
    from flows.sweep import SweepRequest, _fit, _tuner
    from modules import tasks
    from modules.variants import VARIANTS

    uri = ws.settings.tracking_uri
    task = tasks.get(ws.prepared.manifest["task"])
    parent = tracking.create_run(uri, ws.experiment_id, label, {tracking.ROLE: "benchmark"})
    req = SweepRequest(dataset=ws.dataset, variant=VARIANTS[variant], task=task,
                       artifact_dir=ws.artifact_dir, budget=budget, space=space,
                       settings=ws.settings, experiment_id=ws.experiment_id, parent_run_id=parent)
    tags = {"dataset": ws.dataset, "variant": variant}
    sweep_run = tracking.create_run(uri, ws.experiment_id, f"{ws.dataset}/{variant}",
                                    {tracking.ROLE: "sweep"}, parent_run_id=parent)
    status = "FAILED"
    try:
        tuner = _tuner(req, ws.prepared, sweep_run, tags)
        start = time.perf_counter()
        grid = _fit(tuner)
        elapsed = time.perf_counter() - start
        errors = [r.error for r in grid if r.error is not None]
        if errors:
            raise RuntimeError(f"{len(errors)} of {len(grid)} trials failed; first: {errors[0]}")
        status = "FINISHED"
        return elapsed, grid, tracking.children(uri, ws.experiment_id, sweep_run)
    finally:
        for run_id in (sweep_run, parent):
            tracking.close_descendants(uri, ws.experiment_id, run_id, status)
            tracking.finish(uri, run_id, status)
