"""``rnnbench gc``: old finished runs' local state goes; running, recent and unknown runs keep
theirs; MLflow's records are never touched."""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
import time
from pathlib import Path

from mlflow.tracking import MlflowClient

from flows import cleanup
from flows.settings import load_settings

RNNBENCH = str(Path(sys.executable).parent / "rnnbench")
ROOT = Path(__file__).resolve().parents[1]
DAY_MS = 86400 * 1000


def _state(home: Path, tune_root: Path) -> dict[str, str]:
    """A state folder as runs leave it: MLflow runs in several states, each with Tune state
    and a report, plus a folder of a run MLflow does not know and a half-written artifact."""
    uri = f"sqlite:///{home / 'mlflow.db'}"
    client = MlflowClient(uri)
    exp = client.create_experiment("rnnbench", artifact_location=(home / "mlartifacts").as_uri())
    now_ms = int(time.time() * 1000)
    runs = {}
    for name, status, ended_days_ago in [("old_finished", "FINISHED", 40), ("old_killed", "KILLED", 30),
                                         ("recent_finished", "FINISHED", 2), ("running", None, None)]:
        run = client.create_run(exp, run_name=name, start_time=now_ms - 60 * DAY_MS)
        if status:
            client.set_terminated(run.info.run_id, status, end_time=now_ms - ended_days_ago * DAY_MS)
        runs[name] = run.info.run_id
    client.log_param(runs["old_finished"], "seed", "17")
    runs["unknown"] = "f" * 32
    for run_id in runs.values():
        trial = tune_root / run_id / "japanese-vowels__lstm__seed17" / "trial_0" / "checkpoint_000001"
        trial.mkdir(parents=True)
        (trial / "model.ckpt").write_bytes(b"x" * 4096)
        (home / "reports" / run_id).mkdir(parents=True)
        (home / "reports" / run_id / "leaderboard.md").write_text("| variant |\n")
    (tune_root / "not-a-run").mkdir()
    old_tmp = home / "data" / "sunspots" / ".abc123.tmp-xyz"
    old_tmp.mkdir(parents=True)
    (old_tmp / "x.npy").write_bytes(b"0" * 100)
    os.utime(old_tmp, (time.time() - 20 * 86400,) * 2)
    fresh_tmp = home / "data" / "sunspots" / ".def456.tmp-uvw"  # a preparation in progress
    fresh_tmp.mkdir()
    (home / "mlartifacts" / "1" / runs["old_finished"] / "artifacts").mkdir(parents=True)
    return runs


def _digest(path: Path) -> str:
    h = hashlib.sha256()
    for p in sorted(path.rglob("*")):
        h.update(str(p).encode())
        if p.is_file():
            h.update(p.read_bytes())
    return h.hexdigest()


def test_gc_removes_only_old_finished_runs_state_and_leaves_mlflow_alone(tmp_path):
    home = tmp_path / "home"
    home.mkdir()
    runs = _state(home, home / "ray")
    env = {**{k: v for k, v in os.environ.items() if not k.startswith(("MLFLOW_", "RNNBENCH_"))},
           "RNNBENCH_HOME": str(home), "PYTHONPATH": str(ROOT), "COLUMNS": "250"}
    db, artifacts = (home / "mlflow.db").read_bytes(), _digest(home / "mlartifacts")

    dry = subprocess.run([RNNBENCH, "gc", "--older-than", "7", "--dry-run"], capture_output=True,
                         text=True, env=env, cwd=tmp_path, timeout=120)
    assert dry.returncode == 0, dry.stdout + dry.stderr
    assert dry.stdout.count("would remove") == 5  # two runs x (tune state, report) + one temp folder
    assert "Would free" in dry.stdout
    assert (home / "ray" / runs["old_finished"]).is_dir(), "--dry-run removes nothing"

    proc = subprocess.run([RNNBENCH, "gc", "--older-than", "7"], capture_output=True, text=True,
                          env=env, cwd=tmp_path, timeout=120)
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, out
    assert f"removing tune state {home / 'ray' / runs['old_finished']} (4.0 KB; run FINISHED 40.0 days ago)" in out
    for name in ("old_finished", "old_killed"):
        assert not (home / "ray" / runs[name]).exists() and not (home / "reports" / runs[name]).exists()
    for name in ("recent_finished", "running", "unknown"):
        assert (home / "ray" / runs[name]).is_dir() and (home / "reports" / runs[name]).is_dir(), name
    assert (home / "ray" / "not-a-run").is_dir()
    assert not (home / "data" / "sunspots" / ".abc123.tmp-xyz").exists()
    assert (home / "data" / "sunspots" / ".def456.tmp-uvw").is_dir()
    assert "Freed" in out and "kept 7 folder(s)" in out and "Traceback" not in out
    # MLflow's store and artifacts are exactly as they were, every run still there
    assert (home / "mlflow.db").read_bytes() == db and _digest(home / "mlartifacts") == artifacts
    client = MlflowClient(f"sqlite:///{home / 'mlflow.db'}")
    assert client.get_run(runs["old_finished"]).data.params == {"seed": "17"}
    assert client.get_run(runs["running"]).info.status == "RUNNING"


def test_gc_works_on_a_tune_storage_uri(tmp_path):
    home, tune = tmp_path / "home", tmp_path / "bucket" / "tune"
    home.mkdir()
    runs = _state(home, tune)
    settings = load_settings(home=home, tracking_uri=f"sqlite:///{home / 'mlflow.db'}",
                             storage=f"file://{tune}")
    removed, kept = cleanup.find(settings, 7)
    tune_items = [i for i in removed if i.what == "tune state"]
    assert sorted(i.location for i in tune_items) == sorted(
        f"file://{tune}/{runs[n]}" for n in ("old_finished", "old_killed"))
    assert all(i.size == 4096 for i in tune_items)
    cleanup.remove(removed)
    assert sorted(p.name for p in tune.iterdir()) == sorted(
        [runs["recent_finished"], runs["running"], runs["unknown"], "not-a-run"])
