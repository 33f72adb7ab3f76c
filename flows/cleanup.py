"""``rnnbench gc``: the local state old runs leave behind, found and removed.

What belongs to a benchmark run lives under its MLflow run id: its Tune experiments and
checkpoints in the Tune storage (``<storage>/<run id>/``, a folder or a pyarrow URI) and its
leaderboard files in ``$RNNBENCH_HOME/reports/<run id>/``. They go once MLflow says the run
ended (FINISHED, FAILED or KILLED) longer ago than the given age; a run that is RUNNING (or
whose driver died, which a rerun resumes), recent, or unknown to the tracking store keeps them. Half-written
prepared artifacts (``data/<name>/.<key>.tmp-*``, left by a killed preparation) go by age.
MLflow's own store and artifacts, Prefect's database and the prepared datasets are never
touched: the leaderboard and every logged model stay in MLflow.
"""

from __future__ import annotations

import re
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

from flows import storage
from flows.settings import Settings

RUN_ID = re.compile(r"^[0-9a-f]{32}$")  # how MLflow names runs; any other folder is not ours to judge
TEMP = re.compile(r"^\..+\.tmp-")  # datamodules.artifact's temporary sibling folders
DAY_S = 86400


@dataclass(frozen=True)
class Item:
    what: str  # "tune state", "report", "temporary artifact"
    location: str
    size: int
    why: str  # why it goes or stays


def find(settings: Settings, older_than_days: float, now: Optional[float] = None
         ) -> tuple[list[Item], list[Item]]:
    """(what to remove, what is kept and why) for runs that ended more than ``older_than_days``
    ago; asks MLflow for each run's status, never changes it."""
    from flows import tracking

    now = time.time() if now is None else now
    cutoff = now - older_than_days * DAY_S
    places = [("tune state", settings.tune_root), ("report", str(settings.reports_root))]
    owners: dict[str, list[tuple[str, str]]] = {}
    for what, root in places:
        for name in storage.folders(root):
            if RUN_ID.match(name):
                owners.setdefault(name, []).append((what, f"{root.rstrip('/')}/{name}"))
    client = tracking.client(settings.tracking_uri)
    remove, keep = [], []
    for run_id, found in owners.items():
        why, old = _judge(client, run_id, cutoff, now)
        for what, location in found:
            (remove if old else keep).append(Item(what, location, storage.size(location), why))
    for temp in _temporaries(settings.data_root):
        old = temp.stat().st_mtime < cutoff
        item = Item("temporary artifact", str(temp), storage.size(str(temp)),
                    f"left by a preparation {_age(now - temp.stat().st_mtime)} ago")
        (remove if old else keep).append(item)
    return remove, keep


def _judge(client, run_id: str, cutoff: float, now: float) -> tuple[str, bool]:
    """(why, whether the run's state may go)."""
    from mlflow.exceptions import MlflowException

    from flows import tracking

    try:
        run = client.get_run(run_id)
    except MlflowException:
        return "no such run in the tracking store", False
    status = run.info.status
    if status not in tracking.TERMINAL:
        return f"run {status}", False
    ended = (run.info.end_time or run.info.start_time or 0) / 1000
    return f"run {status} {_age(now - ended)} ago", ended < cutoff


def _temporaries(data_root: Path) -> list[Path]:
    if not data_root.is_dir():
        return []
    return sorted(p for dataset in data_root.iterdir() if dataset.is_dir()
                  for p in dataset.iterdir() if TEMP.match(p.name))


def _age(seconds: float) -> str:
    days = seconds / DAY_S
    return f"{days:.1f} days" if days >= 1 else f"{seconds / 3600:.1f} hours"


def remove(items: list[Item]) -> None:
    for item in items:
        if "://" in item.location:
            storage.delete(item.location)
        else:
            path = Path(item.location)
            if path.is_dir():
                shutil.rmtree(path)
            elif path.exists():
                path.unlink()


def human(size: int) -> str:
    value = float(size)
    for unit in ("B", "KB", "MB"):
        if value < 1024:
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    return f"{value / 1024:.1f} GB"
