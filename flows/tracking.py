"""Everything rnnbench writes to MLflow goes through here: runs, their nesting and status,
provenance, and the logged model. Runs nest benchmark > sweep > trial via mlflow.parentRunId.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import platform
import subprocess
import threading
import time
from importlib import metadata
from pathlib import Path
from typing import Any, Callable, Iterable, TypeVar

from mlflow.entities import Metric, Param, RunTag
from mlflow.tracking import MlflowClient

T = TypeVar("T")

ROLE = "rnnbench.role"
SIZE_TARGET = "rnnbench.size_target"  # sweep-run tag: the parameter count its width was solved for
TERMINAL = ("FINISHED", "FAILED", "KILLED")
PACKAGES = ("torch", "pytorch-lightning", "ray", "mlflow", "prefect", "torchmetrics", "numpy")
LOCK_FILE = Path(__file__).resolve().parents[1] / "infra" / "requirements.lock"
HEARTBEAT = "rnnbench.heartbeat"  # seconds since the epoch, refreshed while a driver owns the run
HEARTBEAT_EVERY_S = 5
STALE_AFTER_S = 20  # a run whose heartbeat is older has no live owner (4 beats missed)


def client(tracking_uri: str) -> MlflowClient:
    return MlflowClient(tracking_uri=tracking_uri)


def ensure_experiment(tracking_uri: str, name: str, artifact_root: Path | None) -> str:
    c = client(tracking_uri)
    exp = c.get_experiment_by_name(name)
    if exp is not None:
        if exp.lifecycle_stage == "deleted":
            c.restore_experiment(exp.experiment_id)
        return exp.experiment_id
    location = None
    if artifact_root is not None and tracking_uri.startswith("sqlite"):
        # a SQLite store's default artifact root is ./mlruns of whatever the cwd is; pin it
        location = (Path(artifact_root) / name).resolve().as_uri()
    return c.create_experiment(name, artifact_location=location)


def _flat_params(params: dict[str, Any]) -> list[Param]:
    from flows.settings import redact  # a URI's password or a credential never becomes a param

    return [Param(k, redact(str(v))[:6000]) for k, v in sorted(params.items())]


def create_run(tracking_uri: str, experiment_id: str, name: str, tags: dict[str, str],
               params: dict[str, Any] | None = None, parent_run_id: str | None = None) -> str:
    c = client(tracking_uri)
    all_tags = dict(tags)
    if parent_run_id:
        all_tags["mlflow.parentRunId"] = parent_run_id
    run = c.create_run(experiment_id, run_name=name, tags=all_tags)
    if params:
        c.log_batch(run.info.run_id, params=_flat_params(params))
    return run.info.run_id


def find_child(tracking_uri: str, experiment_id: str, parent_run_id: str | None,
               tags: dict[str, str]) -> Any | None:
    """The newest run carrying all ``tags`` (below ``parent_run_id`` when given), if any."""
    clauses = [f"tags.mlflow.parentRunId = '{parent_run_id}'"] if parent_run_id else []
    clauses += [f"tags.`{k}` = '{v}'" for k, v in tags.items()]
    runs = client(tracking_uri).search_runs(
        [experiment_id], " and ".join(clauses), order_by=["attributes.start_time DESC"], max_results=1)
    return runs[0] if runs else None


def children(tracking_uri: str, experiment_id: str, parent_run_id: str) -> list:
    return client(tracking_uri).search_runs(
        [experiment_id], f"tags.mlflow.parentRunId = '{parent_run_id}'", max_results=5000)


def open_trial_run(tracking_uri: str, experiment_id: str, parent_run_id: str, trial_id: str,
                   name: str, tags: dict[str, str], role: str = "trial") -> str:
    """One MLflow run per Tune trial id: a restarted trial (a lost node, a resumed sweep)
    continues its own run, tagged with where it runs now and how often it restarted.
    ``role``: ``trial`` for a sweep's trials, ``final`` for a seed repeat of its best one."""
    existing = find_child(tracking_uri, experiment_id, parent_run_id, {"rnnbench.trial_id": trial_id})
    if existing is not None:
        restarts = int(existing.data.tags.get("rnnbench.restarts", "0")) + 1
        client(tracking_uri).update_run(existing.info.run_id, status="RUNNING")
        set_tags(tracking_uri, existing.info.run_id, {**tags, "rnnbench.restarts": restarts})
        return existing.info.run_id
    return create_run(tracking_uri, experiment_id, name,
                      {**tags, ROLE: role, "rnnbench.trial_id": trial_id},
                      parent_run_id=parent_run_id)


def log_params(tracking_uri: str, run_id: str, params: dict[str, Any]) -> None:
    client(tracking_uri).log_batch(run_id, params=_flat_params(params))


def has_param(tracking_uri: str, run_id: str, key: str) -> bool:
    return key in client(tracking_uri).get_run(run_id).data.params


def log_metrics(tracking_uri: str, run_id: str, metrics: dict[str, float], step: int = 0) -> None:
    now = int(time.time() * 1000)
    client(tracking_uri).log_batch(
        run_id, metrics=[Metric(k, float(v), now, step) for k, v in sorted(metrics.items())])


def patiently(call: Callable[..., T], *args, deadline_s: float = 120.0, **kwargs) -> T:
    """``call(*args, **kwargs)``, tried again for up to ``deadline_s`` while the tracking server
    is away (a restart, a network blip): what a trial must record at its start and end is
    worth waiting for, where a metric in the middle is not (see flows.trial.TrialLogger)."""
    deadline = time.monotonic() + deadline_s
    while True:
        try:
            return call(*args, **kwargs)
        except Exception as exc:
            if time.monotonic() > deadline or not _unreachable(exc):
                raise
            time.sleep(2.0)


def _unreachable(exc: BaseException) -> bool:
    text = f"{type(exc).__name__}: {exc}"
    return any(s in text for s in ("Connection", "connection", "Max retries", "timed out", "Timeout",
                                   "503", "502", "504", "API request to"))


def backfill_metrics(tracking_uri: str, run_id: str, rows: list[dict[str, float]], keys: list[str]) -> int:
    """Log the (metric, epoch) points of ``rows`` (one per epoch, ``epoch`` 0-based) that the
    run does not hold yet; returns how many. Tune's own results are the record a trial's
    MLflow run is filled from when the tracking server missed some of its epochs."""
    c = client(tracking_uri)
    missing: list[Metric] = []
    now = int(time.time() * 1000)
    for key in keys:
        have = {m.step for m in c.get_metric_history(run_id, key)}
        for row in rows:
            value = row.get(key)
            if value is not None and int(row["epoch"]) not in have and value == value:
                missing.append(Metric(key, float(value), now, int(row["epoch"])))
    for start in range(0, len(missing), 1000):
        c.log_batch(run_id, metrics=missing[start:start + 1000])
    return len(missing)


def set_tags(tracking_uri: str, run_id: str, tags: dict[str, str]) -> None:
    from flows.settings import redact  # error messages land here and may quote a URI

    client(tracking_uri).log_batch(run_id, tags=[RunTag(k, redact(str(v))) for k, v in tags.items()])


def finish(tracking_uri: str, run_id: str, status: str = "FINISHED") -> None:
    c = client(tracking_uri)
    if c.get_run(run_id).info.status != status:
        c.set_terminated(run_id, status)


def close_descendants(tracking_uri: str, experiment_id: str, run_id: str, status: str) -> int:
    """Give every still-RUNNING run below ``run_id`` a final status; returns how many."""
    closed = 0
    for child in children(tracking_uri, experiment_id, run_id):
        closed += close_descendants(tracking_uri, experiment_id, child.info.run_id, status)
        if child.info.status not in TERMINAL:
            client(tracking_uri).set_terminated(child.info.run_id, status)
            closed += 1
    return closed


def log_json(tracking_uri: str, run_id: str, payload: Any, artifact_file: str) -> None:
    client(tracking_uri).log_dict(run_id, payload, artifact_file)


def log_text(tracking_uri: str, run_id: str, text: str, artifact_file: str) -> None:
    client(tracking_uri).log_text(run_id, text, artifact_file)


def log_files(tracking_uri: str, run_id: str, paths: Iterable[Path], artifact_path: str | None = None) -> None:
    c = client(tracking_uri)
    for path in paths:
        c.log_artifact(run_id, str(path), artifact_path)


def git_commit() -> str:
    try:
        return subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True,
                              cwd=Path(__file__).parent, timeout=5).stdout.strip() or "unknown"
    except (OSError, subprocess.TimeoutExpired):
        return "unknown"


def lock_hash() -> str:
    """sha256 of the lock file the install came from (``none`` for an install without one)."""
    if not LOCK_FILE.is_file():
        return "none"
    return hashlib.sha256(LOCK_FILE.read_bytes()).hexdigest()


def code_fingerprint() -> str:
    """What must match for an unfinished run to be resumed: the code and its locked libraries."""
    return f"{git_commit()[:12]}-{lock_hash()[:12]}"


def provenance(seed: int, deterministic: bool = False) -> dict[str, str]:
    """What a reader needs to reproduce a benchmark: code, libraries, machine, determinism."""
    import torch

    info = {
        "seed": str(seed), "deterministic": str(deterministic).lower(), "git_commit": git_commit(),
        "lock_sha256": lock_hash(), "python": platform.python_version(),
        "platform": platform.platform(), "cpu_count": str(os.cpu_count()),
        "cuda_devices": str(torch.cuda.device_count()),
        "gpu": torch.cuda.get_device_name(0) if torch.cuda.is_available() else "none",
    }
    for pkg in PACKAGES:
        try:
            info[f"version.{pkg}"] = metadata.version(pkg)
        except metadata.PackageNotFoundError:
            pass
    return info


class Heartbeat:
    """While the block runs, a thread stamps ``HEARTBEAT`` on the run, so another process can
    tell a run that is being driven from one whose driver died (SIGKILL, a lost machine)."""

    def __init__(self, tracking_uri: str, run_id: str, every_s: float = HEARTBEAT_EVERY_S):
        self.tracking_uri, self.run_id, self.every_s = tracking_uri, run_id, every_s
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._beat, name="rnnbench-heartbeat", daemon=True)

    def _beat(self) -> None:
        while True:
            try:
                set_tags(self.tracking_uri, self.run_id, {HEARTBEAT: f"{time.time():.0f}"})
            except Exception:  # a tracking server that is briefly away must not stop the run
                pass
            if self._stop.wait(self.every_s):
                return

    def __enter__(self) -> "Heartbeat":
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join(timeout=5)
        set_tags(self.tracking_uri, self.run_id, {HEARTBEAT: "0"})  # released


def has_live_owner(run, now: float | None = None) -> bool:
    beat = float(run.data.tags.get(HEARTBEAT, "0") or 0)
    return run.info.status == "RUNNING" and (now or time.time()) - beat < STALE_AFTER_S


def dataset_input(tracking_uri: str, run_id: str, manifest: dict) -> None:
    """Attach the prepared dataset's manifest to a run as an MLflow dataset input."""
    from mlflow.entities import DatasetInput, InputTag
    from mlflow.entities import Dataset as DatasetEntity

    entity = DatasetEntity(
        name=manifest["dataset"], digest=manifest["content_hash"][:32], source_type="local",
        source=json.dumps({"cache_key": manifest["cache_key"]}),
        profile=json.dumps(manifest["splits"]), schema=json.dumps({"task": manifest["task"]}),
    )
    inputs = [DatasetInput(entity, tags=[InputTag("mlflow.data.context", "training")])]
    try:
        client(tracking_uri).log_inputs(run_id, datasets=inputs)
    except Exception as exc:
        # runs logging the same new dataset at once (sweeps side by side, concurrent trials)
        # race to insert it; the loser finds it there on a second try
        if "UNIQUE" not in str(exc) and "IntegrityError" not in str(exc) and "already exists" not in str(exc):
            raise
        client(tracking_uri).log_inputs(run_id, datasets=inputs)


def log_history(tracking_uri: str, run_id: str, key: str, values: Iterable[float]) -> None:
    """``values`` as one metric's history, the i-th at step i (NaN and infinite ones left out)."""
    now = int(time.time() * 1000)
    points = [Metric(key, float(v), now, i) for i, v in enumerate(values) if math.isfinite(v)]
    c = client(tracking_uri)
    for start in range(0, len(points), 1000):
        c.log_batch(run_id, metrics=points[start:start + 1000])
