"""The benchmark flow end to end on a tiny budget: Ray Tune trials nested in MLflow, a
leaderboard rebuilt from MLflow, a logged model that loads back, and resume after Ctrl-C."""

from __future__ import annotations

import mlflow
import numpy as np
import pandas as pd
import pytest
from mlflow.tracking import MlflowClient

from tests.conftest import TINY_PRESET

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def tracking_uri(tmp_path_factory) -> str:
    return f"sqlite:///{tmp_path_factory.mktemp('mlflow') / 'mlflow.db'}"


@pytest.fixture(scope="module")
def finished(prefect_harness, tracking_uri):
    from flows.pipeline import benchmark

    result = benchmark(preset_path=TINY_PRESET, experiment="e2e", tracking_uri=tracking_uri)
    client = MlflowClient(tracking_uri)
    exp = client.get_experiment_by_name("e2e")
    runs = client.search_runs([exp.experiment_id], max_results=1000)
    return result, runs, client


def _role(runs, role):
    return [r for r in runs if r.data.tags.get("rnnbench.role") == role]


def test_runs_nest_benchmark_then_sweep_then_trial_and_none_is_left_running(finished):
    result, runs, _ = finished
    (bench,) = _role(runs, "benchmark")
    sweeps, trials = _role(runs, "sweep"), _role(runs, "trial")
    assert {s.data.tags["variant"] for s in sweeps} == {"lstm", "bigru"}
    assert all(s.data.tags["mlflow.parentRunId"] == bench.info.run_id for s in sweeps)
    sweep_ids = {s.info.run_id for s in sweeps}
    assert len(trials) == 4 and all(t.data.tags["mlflow.parentRunId"] in sweep_ids for t in trials)
    assert {r.info.status for r in runs} == {"FINISHED"}
    assert all(r.data.tags.get("dataset") == "japanese-vowels" for r in sweeps + trials)
    digests = {r.inputs.dataset_inputs[0].dataset.digest for r in sweeps + trials}
    assert len(digests) == 1, "every sweep and trial run names the same prepared artifact"
    # per-epoch metrics on trials, provenance on the benchmark run
    trial_history = finished[2].get_metric_history(trials[0].info.run_id, "val/acc")
    assert len(trial_history) >= 1
    assert {"git_commit", "seed", "version.torch", "lock_sha256", "deterministic"} <= set(bench.data.params)
    assert len(bench.data.params["lock_sha256"]) == 64 and bench.data.params["deterministic"] == "false"


def test_leaderboard_ranks_variants_on_validation_above_the_baseline(finished):
    result, runs, client = finished
    board = result["boards"]["japanese-vowels"]
    variants = board["variant"].tolist()
    assert set(variants[:2]) == {"lstm", "bigru"} and variants[2] == "(majority class)"
    accs = board["val/acc"].tolist()
    assert accs[0] >= accs[1] > accs[2], "the baseline row carries its validation score too"
    assert board.attrs["headlines"][0].startswith("Ranked and chosen on val/acc")
    assert (board["params"].iloc[:2] > 0).all()
    logged = {a.path for a in client.list_artifacts(result["run_id"], "leaderboard")}
    assert {"leaderboard/leaderboard.md", "leaderboard/leaderboard_japanese-vowels.csv"} <= logged


def test_logged_model_loads_back_and_scores_what_mlflow_recorded(finished, prepared, tracking_uri):
    from datamodules.artifact import load_split, read_extra

    result, runs, client = finished
    sweep = next(r for r in _role(runs, "sweep") if r.data.tags["variant"] == "bigru")
    mlflow.set_tracking_uri(tracking_uri)
    model = mlflow.pyfunc.load_model(f"runs:/{sweep.info.run_id}/model")
    artifact, _ = prepared["japanese-vowels"]
    test = load_split(artifact, "test")
    scaler = read_extra(artifact, "scaler")
    raw = [(s * np.array(scaler["std"]) + np.array(scaler["mean"])).tolist() for s in test.x]
    out = model.predict(pd.DataFrame({"sequence": raw}))
    labels = read_extra(artifact, "labels")
    accuracy = float((out["label"].to_numpy() == np.array(labels)[test.y]).mean())
    assert accuracy == pytest.approx(sweep.data.metrics["test/acc"], abs=1e-6)
    requirements = mlflow.pyfunc.get_model_dependencies(f"runs:/{sweep.info.run_id}/model")
    with open(requirements) as fh:
        pins = fh.read()
    assert "torch==" in pins and "+cpu" not in pins


def test_interrupted_benchmark_is_marked_killed_and_the_same_command_resumes(
        prefect_harness, tracking_uri, monkeypatch):
    import flows.pipeline as pipeline

    real = pipeline.run_sweep

    def interrupt_on_bigru(request):
        if request.variant.name == "bigru":
            raise KeyboardInterrupt
        return real(request)

    monkeypatch.setattr(pipeline, "run_sweep", interrupt_on_bigru)
    with pytest.raises(KeyboardInterrupt):
        pipeline.benchmark(preset_path=TINY_PRESET, experiment="resume", tracking_uri=tracking_uri)
    client = MlflowClient(tracking_uri)
    exp = client.get_experiment_by_name("resume")
    runs = client.search_runs([exp.experiment_id])
    (bench,) = _role(runs, "benchmark")
    assert bench.info.status == "KILLED"
    assert not [r for r in runs if r.info.status == "RUNNING"]
    # the two sweeps ran side by side: the interrupt stopped the lstm sweep too, unless it had
    # already finished (then it is kept)
    (lstm_sweep,) = _role(runs, "sweep")
    assert lstm_sweep.info.status in ("FINISHED", "KILLED")

    monkeypatch.setattr(pipeline, "run_sweep", real)
    result = pipeline.benchmark(preset_path=TINY_PRESET, experiment="resume", tracking_uri=tracking_uri)
    assert result["run_id"] == bench.info.run_id and result["resumed"]
    runs = client.search_runs([exp.experiment_id])
    sweeps = _role(runs, "sweep")
    assert sorted(s.data.tags["variant"] for s in sweeps) == ["bigru", "lstm"]  # one run each
    assert {r.info.status for r in runs} == {"FINISHED"}


def test_sweep_flow_tunes_one_variant_under_its_own_parent_run(prefect_harness, tracking_uri):
    from flows.pipeline import sweep

    result = sweep(dataset="japanese-vowels", variant="gru", preset_path=TINY_PRESET,
                   experiment="one-sweep", tracking_uri=tracking_uri)
    client = MlflowClient(tracking_uri)
    exp = client.get_experiment_by_name("one-sweep")
    runs = client.search_runs([exp.experiment_id])
    (sweep_run,) = _role(runs, "sweep")
    assert sweep_run.data.tags["variant"] == "gru"
    assert sweep_run.data.tags["mlflow.parentRunId"] == result["run_id"]
    assert len(_role(runs, "trial")) == 2 and {r.info.status for r in runs} == {"FINISHED"}
    assert list(result["boards"]["japanese-vowels"]["variant"]) == ["gru", "(majority class)"]


def test_a_registered_dataset_runs_through_the_flows_by_name(prefect_harness, tracking_uri, tmp_path):
    from flows.pipeline import benchmark, import_dataset

    n = 500  # two channels: the load follows a daily cycle, the temperature leads it
    t = np.arange(n)
    pd.DataFrame({"hour": pd.date_range("2024-01-01", periods=n, freq="h").astype(str),
                  "load": 10 + np.sin(t * 2 * np.pi / 24), "temp": np.cos(t * 2 * np.pi / 24)}
                 ).to_csv(tmp_path / "site.csv", index=False)
    # an underscore is fine for rnnbench but not in a Prefect artifact key: keys are derived
    imported = import_dataset(str(tmp_path / "site.csv"), "timeseries", "site_load",
                              {"target": "load", "time_column": "hour", "window": 24,
                               "horizon": 6, "season": 24})
    assert imported["site_load"]["manifest"]["input_dim"] == 2
    result = benchmark(preset_path=TINY_PRESET, datasets=["site_load"], variants=["gru"],
                       experiment="byo", tracking_uri=tracking_uri)
    board = result["boards"]["site_load"]
    assert board["variant"].tolist() == ["gru", "(seasonal naive (lag 24))"]
    client = MlflowClient(tracking_uri)
    runs = client.search_runs([result["experiment_id"]])
    assert {r.info.status for r in runs} == {"FINISHED"}
    (sweep,) = [r for r in runs if r.data.tags.get("rnnbench.role") == "sweep"]
    assert sweep.inputs.dataset_inputs[0].dataset.name == "site_load"
    mlflow.set_tracking_uri(tracking_uri)
    model = mlflow.pyfunc.load_model(f"runs:/{sweep.info.run_id}/model")
    window = [[10 + np.sin(h * 2 * np.pi / 24), np.cos(h * 2 * np.pi / 24)] for h in range(24)]
    out = model.predict(pd.DataFrame({"sequence": [window]}))
    assert list(out.columns) == [f"t+{i}" for i in range(1, 7)]
    assert 8 < float(out["t+1"].iloc[0]) < 12  # in the series' own units
