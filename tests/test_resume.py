"""What "the same command" means: a finished run is never resumed (a second run trains again),
and a run interrupted inside ``Tuner.fit`` resumes from Tune's saved state, with no finished
trial trained again and exactly one MLflow run per trial."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from mlflow.tracking import MlflowClient

pytestmark = pytest.mark.slow
RNNBENCH = str(Path(sys.executable).parent / "rnnbench")

PRESET = """
description = "one sweep of three trials, one at a time, slow enough to interrupt"
datasets = ["japanese-vowels"]
variants = ["gru"]
[budget]
num_samples = 3
max_epochs = {epochs}
grace_period = {epochs}          # no early stopping: every trial runs to the end
max_concurrent_trials = 1
cpus_per_trial = 1
[space]
hidden_size = 8
num_layers = 1
dropout = 0.0
lr = {{ loguniform = [5e-3, 1e-2] }}
weight_decay = 0.0
batch_size = 16
grad_clip = 1.0
"""


def _start(home: Path, preset: Path) -> subprocess.Popen:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PREFECT_", "MLFLOW_"))}
    env.update(RNNBENCH_HOME=str(home), COLUMNS="200")
    # its own process group, so the test can send what a terminal's Ctrl-C sends
    return subprocess.Popen([RNNBENCH, "run", "--preset", str(preset)], env=env, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, start_new_session=True)


def _runs(home: Path) -> list:
    client = MlflowClient(f"sqlite:///{home / 'mlflow.db'}")
    exp = client.get_experiment_by_name("rnnbench")
    return client.search_runs([exp.experiment_id], max_results=1000)


def _role(runs, role: str) -> list:
    return [r for r in runs if r.data.tags.get("rnnbench.role") == role]


def _history_lengths(home: Path, runs) -> dict[str, int]:
    client = MlflowClient(f"sqlite:///{home / 'mlflow.db'}")
    return {r.data.tags["rnnbench.trial_id"]: len(client.get_metric_history(r.info.run_id, "val/loss"))
            for r in runs}


def test_running_the_same_command_twice_after_it_finished_trains_twice(tmp_path):
    preset = tmp_path / "twice.toml"
    preset.write_text(PRESET.format(epochs=2))
    for _ in range(2):
        proc = _start(tmp_path / "home", preset)
        out, _ = proc.communicate(timeout=600)
        assert proc.returncode == 0, out[-3000:]
        assert "new benchmark run" in out
    runs = _runs(tmp_path / "home")
    benchmarks = _role(runs, "benchmark")
    assert len(benchmarks) == 2 and {r.info.status for r in runs} == {"FINISHED"}
    for bench in benchmarks:
        (sweep,) = [r for r in _role(runs, "sweep") if r.data.tags["mlflow.parentRunId"] == bench.info.run_id]
        trials = [r for r in _role(runs, "trial") if r.data.tags["mlflow.parentRunId"] == sweep.info.run_id]
        assert len(trials) == 3, "each benchmark run trained its own trials"


def test_a_sweep_interrupted_inside_tune_resumes_from_its_saved_state(tmp_path):
    home, preset = tmp_path / "home", tmp_path / "resume.toml"
    preset.write_text(PRESET.format(epochs=40))
    proc = _start(home, preset)
    try:
        # wait until the first trial has finished and the second has written a checkpoint
        deadline = time.monotonic() + 300
        while time.monotonic() < deadline:
            second = list(home.glob("ray/*/japanese-vowels__gru__seed0/*_00001_*/checkpoint_*"))
            if second:
                break
            assert proc.poll() is None, proc.stdout.read()[-3000:]
            time.sleep(0.2)
        else:
            pytest.fail("the second trial never wrote a checkpoint")
        os.killpg(proc.pid, signal.SIGINT)  # what Ctrl-C in a terminal sends
        out, _ = proc.communicate(timeout=180)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
    assert proc.returncode == 130, out[-3000:]
    assert "Run the same command again to resume" in out and "Traceback" not in out
    runs = _runs(home)
    (bench,) = _role(runs, "benchmark")
    assert bench.info.status == "KILLED" and not [r for r in runs if r.info.status == "RUNNING"]
    before = {r.data.tags["rnnbench.trial_id"]: r for r in _role(runs, "trial")}
    finished_before = {t for t, r in before.items() if r.info.status == "FINISHED"}
    assert len(finished_before) == 1, "the first trial had run to the end before the interrupt"
    assert [r.info.status for t, r in before.items() if t not in finished_before] == ["KILLED"]
    history_before = _history_lengths(home, [before[t] for t in finished_before])

    again = _start(home, preset)
    out, _ = again.communicate(timeout=600)
    assert again.returncode == 0, out[-3000:]
    assert f"resuming unfinished benchmark run {bench.info.run_id}" in out
    runs = _runs(home)
    assert len(_role(runs, "benchmark")) == 1 and {r.info.status for r in runs} == {"FINISHED"}
    trials = _role(runs, "trial")
    trial_ids = [r.data.tags["rnnbench.trial_id"] for r in trials]
    assert len(trial_ids) == len(set(trial_ids)) == 3, "exactly one MLflow run per trial"
    # Tune restored its experiment (a new one would have new trial ids), and the trials that
    # had finished were not trained again: their curves did not grow
    assert set(before) <= set(trial_ids)
    assert _history_lengths(home, [r for r in trials if r.data.tags["rnnbench.trial_id"] in finished_before]) \
        == history_before
    epochs = {r.data.tags["rnnbench.trial_id"]: int(r.data.tags["rnnbench.epochs"]) for r in trials}
    assert set(epochs.values()) == {40}


def _processes_of(home: Path) -> dict[int, str]:
    """Every process started for this run: they all inherit its RNNBENCH_HOME."""
    marker = f"RNNBENCH_HOME={home}".encode()
    found = {}
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            if marker in (proc / "environ").read_bytes().split(b"\0"):
                found[int(proc.name)] = (proc / "cmdline").read_bytes().replace(b"\0", b" ").decode()[:200]
        except OSError:  # gone, or not ours to read
            continue
    return found


def test_a_driver_killed_with_sigkill_leaves_no_process_behind(tmp_path):
    """What the OOM killer does: no Prefect API server, Ray process or trial outlives it."""
    home, preset = tmp_path / "home", tmp_path / "long.toml"
    preset.write_text(PRESET.format(epochs=500))
    proc = _start(home, preset)
    try:
        deadline = time.monotonic() + 300
        while not list(home.glob("ray/*/japanese-vowels__gru__seed0/*_00000_*/checkpoint_*")):
            assert proc.poll() is None and time.monotonic() < deadline, proc.stdout.read()[-3000:]
            time.sleep(0.2)
        running = _processes_of(home)
        assert any("prefect" in cmd or "uvicorn" in cmd for cmd in running.values()), running
        assert any("raylet" in cmd for cmd in running.values()), running
        proc.kill()  # the driver alone, as the OOM killer picks one process
        proc.wait()
        deadline = time.monotonic() + 90
        while _processes_of(home) and time.monotonic() < deadline:
            time.sleep(0.5)
        assert not _processes_of(home), f"outlived their driver: {_processes_of(home)}"
    finally:
        if proc.poll() is None:
            proc.kill()
        for pid in _processes_of(home):
            os.kill(pid, signal.SIGKILL)
