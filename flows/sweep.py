"""The Ray Tune sweep of one variant on one dataset, built in one place, and its MLflow record.

A sweep run holds the best trial's configuration, its validation and test scores, the model
(see flows.serving) and the sweep's compute time; its trials are nested runs below it. A sweep
is identified by its key (dataset, variant, seed) under its benchmark run, and its Tune state
lives under that benchmark run's id in the storage location (a local folder, a folder every
node of a cluster mounts, or an ``s3://``/``gs://`` URI), so only that run can resume it.

Nothing a trial needs comes from the driver's disk: the code travels in Ray's runtime
environment, the prepared arrays through the object store (``tune.with_parameters``), and
checkpoints go to the storage location. Several sweeps may run at once, each in its own thread
with its own Tune experiment and its own trainable (Tune registers trainables by name).
"""

from __future__ import annotations

import hashlib
import json
import os
import signal
import sys
import tempfile
import threading
import traceback
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import ray
from prefect.exceptions import TerminationSignal
from ray import tune
from ray.tune import CheckpointConfig, FailureConfig, RunConfig, TuneConfig
from ray.tune.schedulers import ASHAScheduler
from ray.tune.search import BasicVariantGenerator

from flows import progress, stats, storage, tracking
from flows.tune_threads import forget_interrupt, this_sweep_interrupted
from flows.plan import Budget, search_space
from flows.quiet import silence
from flows.settings import Settings
from flows.signals import stop_like_ctrl_c
from flows.training import PreparedData, build_module, evaluate, load_weights
from flows.trial import CHECKPOINT_FILE, CONTEXT_KEY, EpochTimes, hyperparameters, train_ddp_trial, train_trial
from modules.tasks import Task
from modules.variants import Variant

SWEEP_KEY = "rnnbench.sweep"
DDP_DRIVER_MEMORY = 128 * 1024**2  # bytes reserved by a data-parallel trial's own (driving) actor
TRAIN_STATE = "train"  # below a sweep's Tune folder: Ray Train's runs of its data-parallel trials
FINALS = "final"  # the role of a seed repeat's MLflow run, and the suffix of their Tune experiment
FINAL_SEED_BASE = 1000  # see final_seed
# Packages every Ray worker imports; shipped to a cluster's nodes in the runtime environment.
PROJECT_PACKAGES = ("flows", "modules", "datamodules")
# Credentials the trials' MLflow client needs, forwarded from the driver's environment when set
# (see README "Secrets": a runtime environment's variables are visible through Ray's state API).
FORWARDED_ENV = ("MLFLOW_TRACKING_TOKEN", "MLFLOW_TRACKING_USERNAME", "MLFLOW_TRACKING_PASSWORD",
                 "MLFLOW_TRACKING_INSECURE_TLS", "MLFLOW_TRACKING_SERVER_CERT_PATH",
                 "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN",
                 "AWS_ENDPOINT_URL", "AWS_DEFAULT_REGION", "GOOGLE_APPLICATION_CREDENTIALS")
# MLflow's client retries a failing request for minutes by default; a trial's logging gives up
# sooner (metrics missed while the server is away are backfilled from Tune's results)
WORKER_ENV = {"PYTHONWARNINGS": "ignore", "MLFLOW_HTTP_REQUEST_MAX_RETRIES": "2",
              "MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR": "1", "MLFLOW_HTTP_REQUEST_TIMEOUT": "10",
              # a trial that asked for no GPU must not see the node's GPUs (Ray 2.60 no longer
              # hides them by default)
              "RAY_ACCEL_ENV_VAR_OVERRIDE_ON_ZERO": "1",
              # a data-parallel trial's worker group waits for its resources while other sweeps'
              # trials hold them (Ray Train gives up after 60 s by default)
              "RAY_TRAIN_WORKER_GROUP_START_TIMEOUT_S": "900"}


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
    packages: tuple[str, ...] = ()  # a user's variant and task packages, shipped to a cluster
    size_target: int | None = None  # size matching: the parameter count ``space``'s width was solved for
    input_gradients: bool = False  # the dataset's spec asks for them (flows.gradients)

    @property
    def key(self) -> str:
        """What identifies the sweep within its benchmark run (a seed repeat, or another size
        target, is another sweep)."""
        sized = f"/params{self.size_target}" if self.size_target else ""
        return f"{self.dataset}/{self.variant.name}/seed{self.budget.seed}{sized}"

    @property
    def tune_name(self) -> str:
        sized = f"__params{self.size_target}" if self.size_target else ""
        return f"{self.dataset}__{self.variant.name}__seed{self.budget.seed}{sized}"

    @property
    def label(self) -> str:
        """The variant as tables and progress name it: with its size target when it has one."""
        from modules.sizing import size_label

        return size_label(self.variant.name, self.size_target)

    @property
    def tune_parent(self) -> str:
        """Where this benchmark run's Tune experiments live (a folder or a URI)."""
        return f"{self.settings.tune_root.rstrip('/')}/{self.parent_run_id}"

    @property
    def tune_path(self) -> str:
        return f"{self.tune_parent}/{self.tune_name}"

    @property
    def finals_name(self) -> str:
        """The Tune experiment of the seed repeats of the sweep's best configuration."""
        return f"{self.tune_name}__{FINALS}"

    @property
    def trainable_name(self) -> str:
        """Unique to this sweep and stable across resumes: Tune registers trainables by name,
        and sweeps running side by side in one driver must not share one."""
        digest = hashlib.sha256(f"{self.parent_run_id}/{self.key}".encode()).hexdigest()[:12]
        return f"rnnbench_trial_{digest}"


class SweepInterrupted(KeyboardInterrupt):
    """Tune stopped on Ctrl-C or SIGTERM after saving its state; the same run can resume."""

    def __init__(self, grid):
        super().__init__()
        self.grid = grid


def runtime_env(settings: Settings, packages: tuple[str, ...] = ()) -> dict[str, Any]:
    """What every Ray worker gets: the setup hook, quiet settings, forwarded credentials and,
    on a cluster, the code: rnnbench's packages and those of a user's variants and tasks
    (``packages``), uploaded by Ray and unpacked on each node (``py_modules``, not a
    ``working_dir``, which would change the workers' folder and upload .git and caches)."""
    env = {**WORKER_ENV, **{k: os.environ[k] for k in FORWARDED_ENV if os.environ.get(k)}}
    if not settings.ray_address:  # the local instance runs without auth (see apply_environment)
        env["RAY_AUTH_MODE"] = os.environ.get("RAY_AUTH_MODE", "disabled")
    out: dict[str, Any] = {"worker_process_setup_hook": "flows.quiet.worker_setup", "env_vars": env}
    if settings.ray_address:
        from flows.serving import package_dir

        shipped = []
        for name in dict.fromkeys((*PROJECT_PACKAGES, *packages)):
            path = package_dir(name)
            if path is None:
                raise RuntimeError(f"cannot find the package {name!r} to ship to the cluster's workers")
            if "site-packages" not in path.parts:  # an installed package is the node's to have
                shipped.append(str(path))
        out["py_modules"] = shipped
        out["excludes"] = ["__pycache__", "*.pyc"]
    return out


class RayAuthError(ConnectionError):
    """The cluster uses token authentication and this process's token is missing or wrong."""


@contextmanager
def _native_stderr_captured():
    """Ray's C++ client writes a warning a second to file descriptor 2 while it retries a
    connection (for about 20 s when the token is refused): kept out of the terminal, and
    readable afterwards to tell why the connection failed."""
    with tempfile.TemporaryFile(mode="w+") as sink:
        sys.stderr.flush()
        saved = os.dup(2)
        os.dup2(sink.fileno(), 2)
        try:
            yield sink
        finally:
            os.dup2(saved, 2)
            os.close(saved)


def start_ray(settings: Settings, packages: tuple[str, ...] = ()) -> None:
    """Start (or join, with --ray-address) Ray once per process, quietly. ``packages``: the
    top-level packages of a user's variants and tasks, shipped to a cluster's workers."""
    if ray.is_initialized():
        return
    silence()
    # ray.init installs a SIGTERM handler that calls sys.exit; rnnbench's own (stop like Ctrl-C,
    # so Tune saves its state and runs end KILLED) must stay in place
    main = threading.current_thread() is threading.main_thread()
    on_sigterm = signal.getsignal(signal.SIGTERM) if main else None
    # without --ray-address, always a new local instance: Ray's default would join any cluster
    # that `ray start` left running on this machine
    with _native_stderr_captured() as captured:
        try:
            ray.init(address=settings.ray_address or "local", include_dashboard=False,
                     log_to_driver=False, logging_level="ERROR", configure_logging=True,
                     runtime_env=runtime_env(settings, packages))
        except ConnectionError as exc:
            captured.seek(0)
            if "InvalidAuthToken" in captured.read():
                raise RayAuthError(
                    f"the Ray cluster at {settings.ray_address} refused this process's token: "
                    + ("it is wrong" if os.environ.get("RAY_AUTH_MODE") == "token" else "none was given")
                    + "; set RAY_AUTH_TOKEN_PATH (or RAY_AUTH_TOKEN) to the token its nodes were "
                    "started with") from None
            raise
    if main and callable(on_sigterm):
        signal.signal(signal.SIGTERM, on_sigterm)


def cluster_nodes() -> list[dict[str, float]]:
    """The resources of each live node of the Ray instance this process joined."""
    return [dict(n.get("Resources", {})) for n in ray.nodes() if n.get("Alive")]


def node_types() -> list[tuple[dict[str, float], int]]:
    """The node types an autoscaling cluster declares (resources, most nodes; -1: no limit),
    as its autoscaler published them in the cluster's state; none on a fixed cluster."""
    try:
        config = ray._private.state.state.get_cluster_config()
    except Exception:  # an older head without the autoscaler's state: fixed nodes only
        return []
    if config is None:
        return []
    return [({k: float(v) for k, v in group.resources.items()}, int(group.max_count))
            for group in config.node_group_configs if group.max_count != 0 and group.resources]


def worker_slots(budget: Budget, nodes: list[dict[str, float]]) -> int:
    """How many trial workers (a trial, or one worker of a data-parallel trial) the nodes
    hold at once, node by node (a worker never spans two nodes)."""
    wanted = {"CPU": budget.cpus_per_trial, "GPU": budget.gpus_per_trial}
    return sum(int(min(n.get(r, 0.0) // a for r, a in wanted.items() if a > 0)) for n in nodes)


def trials_at_once(budget: Budget, nodes: list[dict[str, float]]) -> int:
    """Trials of one sweep in flight: the preset's limit, and for data-parallel trials no more
    than the cluster can place whole (a worker group that cannot start waits, then fails)."""
    if budget.workers_per_trial == 1:
        return budget.max_concurrent_trials
    return max(1, min(budget.max_concurrent_trials, worker_slots(budget, nodes) // budget.workers_per_trial))


def sweep_slots(budget: Budget, nodes: list[dict[str, float]] | None = None) -> int:
    """How many sweeps to run side by side when the preset does not say: enough to fill every
    trial slot of the instance (CPUs, or GPUs for GPU trials), plus one, so that a sweep's
    start-up and the slots ASHA frees are used by another sweep's trials. Data-parallel trials
    get no extra sweep: its worker groups would only wait for the others' resources."""
    if budget.max_concurrent_sweeps:
        return budget.max_concurrent_sweeps
    nodes = cluster_nodes() if nodes is None else nodes
    trials = worker_slots(budget, nodes) // budget.workers_per_trial
    sweeps = max(1, -(-trials // trials_at_once(budget, nodes)))
    return sweeps if budget.workers_per_trial > 1 else sweeps + 1


def stop_ray() -> None:
    if ray.is_initialized():
        ray.shutdown()


def _trainable(req: SweepRequest, dataset: PreparedData, name: str):
    """The Tune trainable of a sweep (and of its seed repeats): ``train_trial``, or for
    data-parallel trials ``train_ddp_trial``, bound to the prepared arrays, with its resources."""
    b = req.budget
    if b.workers_per_trial > 1:  # the trial drives a Ray Train run; its workers hold the resources
        def trial(config, dataset_ref, manifest, variant, task):
            return train_ddp_trial(config, dataset_ref[0], manifest, variant, task)

        trial.__name__ = trial.__qualname__ = name  # before with_parameters copies it
        # the arrays go to the object store once per sweep; each node's workers read them there
        bound = tune.with_parameters(trial, dataset_ref=[ray.put(dataset)], manifest=dataset.manifest,
                                     variant=req.variant, task=req.task)
        # (Tune needs the trial to hold something: a little memory, never a CPU a worker needs)
        resources = {"cpu": 0, "memory": DDP_DRIVER_MEMORY}
    else:
        def trial(config, dataset, variant, task):
            return train_trial(config, dataset, variant, task)

        trial.__name__ = trial.__qualname__ = name  # see SweepRequest.trainable_name
        bound = tune.with_parameters(trial, dataset=dataset, variant=req.variant, task=req.task)
        resources = {"cpu": b.cpus_per_trial, "gpu": b.gpus_per_trial}
    return tune.with_resources(bound, resources)


def _restored(path: str, trainable) -> tune.Tuner | None:
    """The Tune experiment saved at ``path``, to resume; None (and the folder cleared) when
    there is nothing to resume."""
    if tune.Tuner.can_restore(path) and _has_trials(path):
        return tune.Tuner.restore(path, trainable, resume_errored=True)
    # interrupted before Tune saved any state, or before it created its first trial (its
    # searcher's saved state then restores to nothing but configs without the search space,
    # seen when a sweep side by side was stopped as it started): nothing to resume
    storage.delete(path)
    return None


def _context(req: SweepRequest, sweep_run_id: str, tags: dict[str, str], path: str) -> dict[str, Any]:
    """What every trial of the sweep gets besides its hyperparameters (``CONTEXT_KEY``)."""
    b = req.budget
    return {
        "seed": b.seed, "max_epochs": b.max_epochs, "tracking_uri": req.settings.tracking_uri,
        "experiment_id": req.experiment_id, "parent_run_id": sweep_run_id, "tags": tags,
        "threads": max(1, int(b.cpus_per_trial)), "deterministic": b.deterministic,
        # a trial that asked for no GPU trains on the CPU, even on a node that has one
        "accelerator": "gpu" if b.gpus_per_trial > 0 else "cpu",
        "precision": b.precision,
        # data-parallel trials: Ray Train's workers and where Train keeps their run state
        "workers": b.workers_per_trial, "cpus_per_worker": b.cpus_per_trial,
        "gpus_per_worker": b.gpus_per_trial, "train_storage": f"{path}/{TRAIN_STATE}",
        "metric": f"val/{req.task.monitor}", "mode": req.task.mode,
    }


def _tuner(req: SweepRequest, dataset: PreparedData, sweep_run_id: str, tags: dict[str, str]) -> tune.Tuner:
    b = req.budget
    metric, mode = f"val/{req.task.monitor}", req.task.mode
    ddp = b.workers_per_trial > 1
    trainable = _trainable(req, dataset, req.trainable_name)
    path = req.tune_path
    restored = _restored(path, trainable)
    if restored is not None:
        return restored
    return tune.Tuner(
        trainable,
        param_space={**search_space(req.space), CONTEXT_KEY: _context(req, sweep_run_id, tags, path)},
        tune_config=TuneConfig(
            metric=metric, mode=mode, num_samples=b.num_samples,
            # a data-parallel trial's actor owns its Train run: ending the actor ends the run
            reuse_actors=not ddp,
            scheduler=ASHAScheduler(max_t=b.max_epochs, grace_period=min(b.grace_period, b.max_epochs),
                                    reduction_factor=b.reduction_factor,
                                    # a data-parallel trial at its last epoch ends by itself (its
                                    # Train run then shuts down cleanly); stopping it kills its actor
                                    stop_last_trials=not ddp),
            search_alg=_generator(req),
        ),
        run_config=RunConfig(
            name=req.tune_name, storage_path=req.tune_parent, verbose=0,
            callbacks=[progress.TrialProgress(req.key, f"{req.dataset} · {req.label}", metric,
                                              mode, b.max_epochs)],
            checkpoint_config=CheckpointConfig(num_to_keep=1, checkpoint_score_attribute=metric,
                                               checkpoint_score_order=mode),
            failure_config=FailureConfig(max_failures=1),
        ),
    )


def _best_checkpoint(req: SweepRequest, result, metric: str, mode: str):
    """The best-scoring checkpoint of a trial and the metrics it was saved with: Tune's own,
    or for a data-parallel trial the one Ray Train kept, whose path Tune got as a metric."""
    pick = max if mode == "max" else min
    if result.best_checkpoints:
        return pick(result.best_checkpoints, key=lambda cm: cm[1][metric])
    from ray.tune.integration.ray_train import CHECKPOINT_PATH_KEY

    frame = result.metrics_dataframe
    rows = [row for row in ([] if frame is None else frame.to_dict(orient="records"))
            if isinstance(row.get(CHECKPOINT_PATH_KEY), str) and row.get(metric) == row.get(metric)]
    if not rows:
        raise RuntimeError(f"the best trial of {req.dataset}/{req.variant.name} left no checkpoint")
    row = pick(rows, key=lambda r: r[metric])
    filesystem, _ = storage.resolve(req.settings.tune_root)
    return tune.Checkpoint(row[CHECKPOINT_PATH_KEY], filesystem=filesystem), row


def _has_trials(path: str) -> bool:
    """Whether Tune's newest saved experiment state at ``path`` holds any trial."""
    states = sorted(f for f in storage.listing(path)
                    if "/" not in f and f.startswith("experiment_state-") and f.endswith(".json"))
    if not states:
        return False
    return bool(json.loads(storage.read_bytes(f"{path}/{states[-1]}")).get("trial_data"))


def _generator(req: SweepRequest, kind: str = "") -> BasicVariantGenerator:
    """Tune's random search with the preset's seed and concurrency limit. Tune names trials
    ``<prefix>_<index>`` with a prefix from a time-based uuid that changes every 0.4 ms, so
    sweeps started side by side got the same trial ids; the prefix comes from the sweep's
    identity instead (unique in its benchmark run, the same when it resumes)."""
    # Tune ignores TuneConfig.max_concurrent_trials (with a warning) when given a generator
    # instance: the generator must carry the limit itself
    generator = BasicVariantGenerator(random_state=req.budget.seed,
                                      max_concurrent=trials_at_once(req.budget, cluster_nodes()))
    # (``kind``: the seed repeats' trials get ids of their own: an MLflow run is found by its id)
    generator._uuid_prefix = req.trainable_name[-5:] + kind + "_"
    return generator


def _fit(tuner: tune.Tuner):
    """``tuner.fit()``, raising SweepInterrupted when Ctrl-C, SIGTERM or ``interrupt_sweeps``
    stopped it.

    Tune's loop ends when its interrupt event is set: in the main thread by its own SIGINT
    handler, installed for the sweep (it saves the experiment's state, what a resume starts
    from, and ``fit`` returns normally with every trial marked TERMINATED); in any thread by
    ``interrupt_sweeps``. The event tells the two endings apart.
    """
    before = signal.getsignal(signal.SIGINT)
    main = threading.current_thread() is threading.main_thread()
    if main:  # SIGTERM too (Prefect's own handler would abort the loop without a save)
        on_sigterm = signal.signal(signal.SIGTERM, stop_like_ctrl_c)
    forget_interrupt()
    try:
        grid = tuner.fit()
    finally:
        if main:  # Tune never uninstalls its handler; later Ctrl-C must raise KeyboardInterrupt
            signal.signal(signal.SIGINT, before)
            signal.signal(signal.SIGTERM, on_sigterm)
    if this_sweep_interrupted():
        raise SweepInterrupted(grid)
    return grid


def run_sweep(req: SweepRequest) -> dict[str, Any]:
    """Tune ``req.variant`` on ``req.dataset``; returns the sweep's summary (also in MLflow)."""
    from flows import gradients, serving

    uri = req.settings.tracking_uri
    dataset = PreparedData.load(req.artifact_dir)
    name = req.task.monitor
    metric, mode = f"val/{name}", req.task.mode
    tags = {**req.tags, "dataset": req.dataset, "variant": req.variant.name,
            "modality": dataset.manifest["modality"], "rnnbench.task": req.task.name,
            SWEEP_KEY: req.key, **({tracking.SIZE_TARGET: str(req.size_target)} if req.size_target else {})}
    previous = tracking.find_child(uri, req.experiment_id, req.parent_run_id,
                                   {tracking.ROLE: "sweep", SWEEP_KEY: req.key})
    shown = progress.current()
    label = f"{req.dataset:<16} {req.label:<12}"
    if previous is not None and previous.info.status == "FINISHED":
        if shown is not None:
            shown.end_sweep(req.key, f"  [green]✓[/] {label} finished earlier, kept")
        return summary_from_run(previous)
    if previous is not None:
        sweep_run_id = previous.info.run_id
        tracking.client(uri).update_run(sweep_run_id, status="RUNNING")
    else:
        sweep_run_id = tracking.create_run(
            uri, req.experiment_id, f"{req.dataset}/{req.label}", {**tags, tracking.ROLE: "sweep"},
            params={"num_samples": req.budget.num_samples, "max_epochs": req.budget.max_epochs,
                    "metric": metric, "mode": mode, "seed": req.budget.seed,
                    **({"size_target": req.size_target} if req.size_target else {})},
            parent_run_id=req.parent_run_id)
        tracking.dataset_input(uri, sweep_run_id, dataset.manifest)

    if shown is not None:
        shown.start_sweep(req.key, f"{req.dataset} · {req.label}",
                          req.budget.num_samples * req.budget.max_epochs)
    status = "FAILED"
    try:
        start_ray(req.settings, req.packages)
        tuner = _tuner(req, dataset, sweep_run_id, tags)
        grid = _fit(tuner)
        _record_verdicts(req, sweep_run_id, grid)
        _backfill(req, sweep_run_id, grid)
        ok = [r for r in grid if r.error is None and r.metrics and metric in r.metrics]
        if not ok:
            first_error = next((r.error for r in grid if r.error is not None), None)
            raise RuntimeError(f"every trial of {req.dataset}/{req.variant.name} failed: "
                               f"{_root_cause(first_error)}")
        best = grid.get_best_result(metric, mode, scope="all")
        module, hparams, ckpt_metrics, test_metrics = _tested(req, dataset, best)
        best_val = float(ckpt_metrics[metric])
        train_time = float(sum(r.metrics.get("time_total_s", 0.0) for r in grid if r.metrics))
        failed = sum(1 for r in grid if r.error is not None)
        metrics = {**test_metrics, metric: best_val, "n_params": module.n_params,
                   **({"size_error": module.n_params / req.size_target - 1} if req.size_target else {}),
                   "val/loss": float(ckpt_metrics.get("val/loss", float("nan"))),
                   "train_time_s": train_time, "trials": len(grid), "trials_failed": failed}
        tracking.log_metrics(uri, sweep_run_id, metrics)
        tracking.log_params(uri, sweep_run_id, {f"best.{k}": v for k, v in hparams.items()})
        tracking.set_tags(uri, sweep_run_id, {"rnnbench.best_trial_id": best.metrics.get("trial_id", "")})
        if "series" in dataset.extras:  # many series: each one's test scores, in its own units
            from flows.training import series_report

            table = series_report(module, dataset, "test", int(hparams["batch_size"]))[0]
            tracking.log_text(uri, sweep_run_id, table.to_csv(index=False), "series_metrics.csv")
        if req.input_gradients:  # how far back the loss still reaches (a warning if it cannot)
            gradients.record(uri, sweep_run_id, module, dataset)
        if req.task.causal:  # one-to-many: text generated from a prompt by a language model
            sample = serving.sample_text(module, dataset.extras["vocab"], seed=req.budget.seed)
            tracking.log_text(uri, sweep_run_id, sample, "sample.txt")
        with tempfile.TemporaryDirectory() as tmp:
            serving.log_model(uri, sweep_run_id, module, req.variant, req.task, hparams, dataset, Path(tmp))
        if req.budget.final_seeds:
            finals = run_finals(req, dataset, sweep_run_id, tags, best)
            tracking.log_metrics(uri, sweep_run_id, finals)
            metrics.update(finals)
        status = "FINISHED"
        summary = {"dataset": req.dataset, "variant": req.variant.name, "run_id": sweep_run_id,
                   **metrics, "best": hparams}
        if shown is not None:
            score = test_metrics.get(f"test/{name}")
            lost = (f"  [yellow]{failed} of {len(grid)} trials failed: "
                    f"{_root_cause(next(r.error for r in grid if r.error is not None))}[/]" if failed else "")
            if metrics.get("seeds_failed"):
                lost += f"  [yellow]{int(metrics['seeds_failed'])} of {req.budget.final_seeds} seeds failed[/]"
            shown.end_sweep(req.key, f"  [green]✓[/] {label} val/{name} {best_val:.3f}  "
                                     f"test/{name} {score:.3f}{lost}")
        return summary
    except (KeyboardInterrupt, TerminationSignal) as exc:
        status = "KILLED"
        if isinstance(exc, SweepInterrupted):  # trials that ran to the end keep their FINISHED
            _record_verdicts(req, sweep_run_id, exc.grid, only_done=True)
        raise
    except BaseException as exc:
        tracking.set_tags(uri, sweep_run_id, {"rnnbench.error": f"{type(exc).__name__}: {exc}"[:4000]})
        tracking.log_text(uri, sweep_run_id, traceback.format_exc(), "error.txt")
        if shown is not None:
            shown.end_sweep(req.key, f"  [red]✗[/] {label} failed: {type(exc).__name__}: {str(exc)[:200]}")
        raise
    finally:
        tracking.close_descendants(uri, req.experiment_id, sweep_run_id, status)
        tracking.finish(uri, sweep_run_id, status)


def final_seed(seed: int, k: int) -> int:
    """The seed the k-th (from 0) retrain of a sweep's best configuration trains with:
    1000·(seed + 1) + k. Every trial of the sweep trains with the budget's ``seed``, so a
    retrain on it would repeat the chosen trial, lucky draw included; these never do (for
    seeds below 1000), and a sweep of another ``seed`` gets other ones."""
    return FINAL_SEED_BASE * (seed + 1) + k


def run_finals(req: SweepRequest, dataset: PreparedData, sweep_run_id: str, tags: dict[str, str],
               best) -> dict[str, float]:
    """Retrain the sweep's ``best`` trial's configuration from scratch on ``final_seeds`` seeds
    (``final_seed``), each for as many epochs as that trial trained (``max_epochs`` unless ASHA
    stopped it sooner), and score each like the sweep's best model: its best validation
    checkpoint, tested on the test split. A second Tuner over the same trainable, with the
    configuration fixed and a grid over the seed, no scheduler and the sweep's concurrency: it
    runs where the sweep's trials run, and a resumed sweep restores it (finished seeds are not
    trained again). Each retrain is an MLflow run (role ``final``) below the sweep run; returns
    what the sweep run records: the per-seed scores under ``flows.stats``'s keys, how many
    seeds there were and how many failed, and the epochs and seconds they trained."""
    b, uri = req.budget, req.settings.tracking_uri
    metric, mode = f"val/{req.task.monitor}", req.task.mode
    epochs = int(best.metrics.get("training_iteration") or b.max_epochs)
    seeds = [final_seed(b.seed, k) for k in range(b.final_seeds)]
    trainable = _trainable(req, dataset, f"{req.trainable_name}_{FINALS}")
    path = f"{req.tune_parent}/{req.finals_name}"
    tuner = _restored(path, trainable)
    tuner = tuner if tuner is not None else tune.Tuner(
        trainable,
        param_space={**hyperparameters(best.config), CONTEXT_KEY: {
            **_context(req, sweep_run_id, tags, path), "role": FINALS, "max_epochs": epochs,
            "seed": tune.grid_search(seeds)}},
        tune_config=TuneConfig(metric=metric, mode=mode, num_samples=1,
                               reuse_actors=b.workers_per_trial == 1, search_alg=_generator(req, "s")),
        run_config=RunConfig(
            name=req.finals_name, storage_path=req.tune_parent, verbose=0,
            callbacks=[progress.TrialProgress(req.key, f"{req.dataset} · {req.label} · {len(seeds)} seeds",
                                              metric, mode, epochs)],
            checkpoint_config=CheckpointConfig(num_to_keep=1, checkpoint_score_attribute=metric,
                                               checkpoint_score_order=mode),
            failure_config=FailureConfig(max_failures=1),
        ),
    )
    shown = progress.current()
    if shown is not None:  # the sweep's bar becomes its seed repeats'
        shown.start_sweep(req.key, f"{req.dataset} · {req.label} · {len(seeds)} seeds", len(seeds) * epochs)
    grid = _fit(tuner)
    seconds = sum(r.metrics.get("time_total_s", 0.0) for r in grid if r.metrics)
    out: dict[str, float] = {"seeds": len(seeds), "final_epochs": epochs, "final_time_s": float(seconds)}
    failed = len(seeds) - len(grid)  # (none, unless Tune lost a trial)
    for result in grid:
        k = seeds.index(result.config[CONTEXT_KEY]["seed"])
        trial_id = (result.metrics or {}).get("trial_id")
        run = trial_id and tracking.find_child(uri, req.experiment_id, sweep_run_id,
                                               {"rnnbench.trial_id": trial_id})
        try:
            if result.error is not None:
                raise RuntimeError(_root_cause(result.error))
            _, _, ckpt_metrics, test_metrics = _tested(req, dataset, result)
        except Exception as exc:  # a failed seed is counted and flagged, like a failed trial
            failed += 1
            if run:
                tracking.set_tags(uri, run.info.run_id,
                                  {"rnnbench.error": f"{type(exc).__name__}: {exc}"[:4000]})
                tracking.finish(uri, run.info.run_id, "FAILED")
            continue
        scores = {metric: float(ckpt_metrics[metric]),
                  "val/loss": float(ckpt_metrics.get("val/loss", float("nan"))), **test_metrics}
        out.update({stats.seed_metric_name(*key.split("/", 1), k): value for key, value in scores.items()})
        if run:  # (its validation scores are in its per-epoch curves already)
            tracking.log_metrics(uri, run.info.run_id, test_metrics)
            tracking.set_tags(uri, run.info.run_id, {
                "rnnbench.final_index": k, "rnnbench.epochs": int(result.metrics.get("training_iteration", 0)),
                "rnnbench.best_epoch": int(ckpt_metrics.get("training_iteration", 0))})
            tracking.finish(uri, run.info.run_id, "FINISHED")
    out["seeds_failed"] = failed
    return out


def _tested(req: SweepRequest, dataset: PreparedData, result):
    """A trial's model at its best validation checkpoint, scored on the test split: (module,
    resolved hyperparameters, the metrics it was checkpointed with, its test scores)."""
    metric, mode = f"val/{req.task.monitor}", req.task.mode
    checkpoint, ckpt_metrics = _best_checkpoint(req, result, metric, mode)
    hparams = req.task.resolved(hyperparameters(result.config))  # task-level defaults spelled out
    module = build_module(req.variant, req.task, hparams, dataset.data)
    with checkpoint.as_directory() as ckpt_dir:
        module.load_state_dict(load_weights(Path(ckpt_dir) / CHECKPOINT_FILE))
    test_metrics = evaluate(module, dataset, "test", batch_size=int(hparams["batch_size"]))
    return module, hparams, ckpt_metrics, test_metrics


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
        # after an interruption Tune reports every trial it stopped as done: only the epochs
        # say which ran to the end (one the scheduler stopped early stays open and is KILLED)
        if only_done and epochs < req.budget.max_epochs:
            continue
        trial_run = tracking.find_child(uri, req.experiment_id, sweep_run_id,
                                        {"rnnbench.trial_id": metrics.get("trial_id", "")})
        if trial_run is not None:
            tracking.set_tags(uri, trial_run.info.run_id,
                              {"rnnbench.epochs": epochs,
                               "rnnbench.stopped_early": str(epochs < req.budget.max_epochs).lower()})
            tracking.finish(uri, trial_run.info.run_id, "FAILED" if result.error else "FINISHED")


def _backfill(req: SweepRequest, sweep_run_id: str, grid) -> None:
    """Fill each trial run's curves from Tune's results where the tracking server missed
    epochs (it was away while the trials trained on; see flows.trial.TrialLogger)."""
    uri = req.settings.tracking_uri
    for result in grid:
        frame = result.metrics_dataframe
        trial_id = (result.metrics or {}).get("trial_id")
        if frame is None or frame.empty or not trial_id or "training_iteration" not in frame:
            continue
        trial_run = tracking.find_child(uri, req.experiment_id, sweep_run_id, {"rnnbench.trial_id": trial_id})
        if trial_run is None:
            continue
        rows = [{**row, "epoch": int(row["training_iteration"]) - 1}
                for row in frame.to_dict(orient="records")]
        keys = [k for k in [*req.task.report_metrics, *EpochTimes.KEYS] if k in frame.columns]
        added = tracking.backfill_metrics(uri, trial_run.info.run_id, rows, keys)
        if added:
            tracking.set_tags(uri, trial_run.info.run_id, {"rnnbench.backfilled_points": added})


def summary_from_run(run) -> dict[str, Any]:
    data = run.data
    return {"dataset": data.tags.get("dataset"), "variant": data.tags.get("variant"),
            "run_id": run.info.run_id, **data.metrics,
            "best": {k[len("best."):]: v for k, v in data.params.items() if k.startswith("best.")}}
