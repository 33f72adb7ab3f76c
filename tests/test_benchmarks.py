"""The benchmark helpers' contract: one parseable summary line, smoke results kept out of git,
sides timed in turn, and a GPU benchmark that a bare host without Ray, MLflow or Prefect runs."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

from benchmarks import common

ROOT = Path(__file__).resolve().parents[1]


def test_report_prints_the_summary_line_and_keeps_smoke_results_apart(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(common, "RESULTS", tmp_path)
    assert common.report("demo", 1.5, "<=", 1.05, "a note", {"x": [1.0]}, smoke=True) is False
    line = capsys.readouterr().out.strip()
    assert re.fullmatch(r"bench demo: ratio=1\.500 target<=1\.05 MISS  a note", line)
    saved = json.loads((tmp_path / "smoke" / "demo.json").read_text())
    assert saved["raw"] == {"x": [1.0]} and saved["machine"]["cpu_count"] >= 1
    assert not (tmp_path / "demo.json").exists()
    assert common.report("demo", 6.0, ">=", 5, smoke=False) is True
    assert capsys.readouterr().out.strip() == "bench demo: ratio=6.000 target>=5 PASS"


def test_timeit_interleaved_alternates_sides_and_drops_warmup():
    calls = []
    times = common.timeit_interleaved({"a": lambda: calls.append("a"), "b": lambda: calls.append("b")},
                                      repeats=3, warmup=1)
    assert calls == ["a", "b"] * 4
    assert [len(v) for v in times.values()] == [3, 3]


def test_smoke_results_are_ignored_by_git():
    ignored = subprocess.run(["git", "check-ignore", "-q", "benchmarks/results/smoke/x.json"], cwd=ROOT)
    assert ignored.returncode == 0


def test_gpu_benchmark_imports_no_ray_mlflow_or_prefect():
    code = ("import sys, benchmarks.gpu; "
            "print(sorted({m.split('.')[0] for m in sys.modules} & {'ray', 'mlflow', 'prefect'}))")
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True,
                         check=True).stdout
    assert out.strip() == "[]"


def test_report_misses_when_the_second_condition_fails(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(common, "RESULTS", tmp_path)
    assert common.report("demo", 3.0, ">=", 2, "quality NOT within 1%", also=False) is False
    assert capsys.readouterr().out.strip() == "bench demo: ratio=3.000 target>=2 MISS  quality NOT within 1%"
    assert json.loads((tmp_path / "demo.json").read_text())["pass"] is False


def test_epoch_times_log_the_training_and_validation_loops_each_epoch():
    import numpy as np
    from pytorch_lightning.loggers.logger import DummyLogger

    from datamodules.artifact import Split
    from flows.training import PreparedData, fit
    from flows.trial import EpochTimes
    from modules import tasks
    from modules.variants import VARIANTS

    class Recorder(DummyLogger):
        def __init__(self):
            super().__init__()
            self.logged = []

        def log_metrics(self, metrics, step=None):
            self.logged.append(dict(metrics))

    rng = np.random.default_rng(0)
    split = lambda n: Split(x=list(rng.standard_normal((n, 5, 2)).astype(np.float32)),  # noqa: E731
                            y=rng.integers(0, 2, n).astype(np.int64))
    data = PreparedData({"task": "classification", "num_classes": 2, "input_dim": 2}, {},
                        {"train": split(16), "val": split(8), "test": split(8)})
    recorder = Recorder()
    fit({"hidden_size": 4, "num_layers": 1, "dropout": 0.0, "lr": 1e-2, "batch_size": 8}, data,
        VARIANTS["gru"], tasks.get("classification"), max_epochs=2, callbacks=[EpochTimes()],
        logger=recorder, threads=1)
    times = [m for m in recorder.logged if "time/train_epoch_s" in m]
    assert [m["epoch"] for m in times] == [0, 1]
    assert all(m["time/train_epoch_s"] > 0 and m["time/val_epoch_s"] > 0 for m in times)


def test_orchestration_phases_add_up_to_the_slots_wall_time(tmp_path):
    """A run's records (built here with known times) split into phases that account for every
    slot-second of its wall time."""
    from mlflow.entities import Metric
    from mlflow.tracking import MlflowClient

    from benchmarks.orchestration_share import phases, preset_for

    client = MlflowClient(f"sqlite:///{tmp_path / 'mlflow.db'}")
    exp = client.create_experiment("rnnbench", artifact_location=(tmp_path / "artifacts").as_uri())
    ms = lambda s: int((1000 + s) * 1000)  # noqa: E731  (seconds after t0 = 1000)

    def run(role, start, end, parent=None, **tags):
        tags = {"rnnbench.role": role, **tags, **({"mlflow.parentRunId": parent} if parent else {})}
        r = client.create_run(exp, start_time=ms(start), tags=tags)
        client.set_terminated(r.info.run_id, "FINISHED", end_time=ms(end))
        return r.info.run_id

    bench = run("benchmark", 4, 60)
    sweep = run("sweep", 10, 50, bench)
    # two trials of 2 epochs, each epoch 3 s training + 1 s validation, logged at its end
    for opened, first_epoch in ((20, 22), (21, 24)):
        trial = run("trial", opened, first_epoch + 10, sweep, **{"rnnbench.stopped_early": "false"})
        client.log_batch(trial, metrics=[
            Metric(key, value, ms(first_epoch + 4 * (epoch + 1) + epoch), epoch)
            for epoch in range(2) for key, value in (("time/train_epoch_s", 3.0), ("time/val_epoch_s", 1.0))])
    split = phases(tmp_path, start=1000.0, end=1070.0, slots=2)
    accounted = sum(v for k, v in split.items() if not k.startswith("_"))
    assert accounted == pytest.approx(2 * 70)
    assert split["training and validation"] == pytest.approx(16)
    assert split["trial start (Lightning set-up)"] == pytest.approx(2 + 3)
    assert split["start-up: CLI, Prefect, MLflow"] == pytest.approx(8)
    assert split["in-trial reporting, checkpoints, logging"] == pytest.approx((31 - 20) + (33 - 21) - 5 - 16)
    # a trial ends with its last epoch's log (its run is ended by the sweep, later)
    assert split["closing: last sweeps, leaderboards, shutdown"] == pytest.approx(2 * (70 - 33))
    assert (split["_sweep_head_s"], split["_sweep_tail_s"]) == pytest.approx((20 - 10, 50 - 33))
    text = preset_for(ROOT / "flows" / "presets" / "quick.toml", "japanese-vowels")
    assert 'datasets = ["japanese-vowels"]' in text and "[dataset_space.sunspots]" in text


def test_the_smoke_shares_one_tiny_run_only_while_the_test_preset_is_what_orchestration_runs():
    """bench-smoke reuses sweep_scaling's side-by-side run as orchestration_share's smoke: that
    holds only while the test preset lists JapaneseVowels alone (a change there fails here
    first, not in CI's bench-smoke)."""
    from benchmarks import orchestration_share, sweep_scaling

    preset = sweep_scaling.SMOKE_PRESET
    assert orchestration_share.source_preset(smoke=True) == preset
    assert orchestration_share.preset_for(preset, orchestration_share.DATASET) == preset.read_text()
