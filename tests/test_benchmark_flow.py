"""The benchmark flow end to end on a tiny budget: Ray Tune trials nested in MLflow, a
leaderboard rebuilt from MLflow, a logged model that loads back, and resume after Ctrl-C."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

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
    assert not _role(runs, "final"), "no seed repeats: the tiny budget has seeds off"
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
    assert "n" not in board.columns and not any("seed" in line for line in board.attrs["headlines"])
    assert (board["params"].iloc[:2] > 0).all()
    logged = {a.path for a in client.list_artifacts(result["run_id"], "leaderboard")}
    assert {"leaderboard/leaderboard.md", "leaderboard/leaderboard_japanese-vowels.csv"} <= logged
    assert not any("input_gradients" in p for p in logged), "only long-memory datasets ask for it"


def test_every_figure_and_the_report_page_are_written_and_logged_beside_the_leaderboard(finished):
    from flows import plots

    result, _, client = finished
    logged = {a.path: a.file_size for a in client.list_artifacts(result["run_id"], "leaderboard")}
    for name in [*(f"{kind}-japanese-vowels.png" for kind in plots.FIGURES), plots.PAGE]:
        written = Path(result["reports"]) / name
        assert written.stat().st_size > 1000 and logged[f"leaderboard/{name}"] == written.stat().st_size, name
    page = (Path(result["reports"]) / plots.PAGE).read_text()
    assert "<h2 id='japanese-vowels'>" in page and "<td>(majority class)</td>" in page
    assert page.count("src='data:image/png;base64,") == len(plots.FIGURES)


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


REPO = Path(__file__).resolve().parents[1]


def _rnnbench(*args, cwd: Path) -> subprocess.CompletedProcess:
    """The CLI in a fresh process, started outside the repository (the code comes from the
    install, here PYTHONPATH; the model from the tracking store)."""
    env = {**os.environ, "PYTHONPATH": str(REPO), "COLUMNS": "200", "RNNBENCH_HOME": str(cwd / "home")}
    return subprocess.run([sys.executable, "-m", "flows.cli", *args], capture_output=True, text=True,
                          env=env, cwd=cwd, timeout=300)


def test_the_validation_winner_is_registered_as_champion_and_every_variant_as_its_best(
        finished, tracking_uri):
    from flows import registry
    from flows.leaderboard import winner

    result, runs, client = finished
    board = result["boards"]["japanese-vowels"]
    chosen = winner(board)
    registry_client = MlflowClient(tracking_uri, registry_uri=tracking_uri)
    name = "rnnbench-japanese-vowels"
    champion = registry_client.get_model_version_by_alias(name, "champion")
    assert champion.run_id == chosen["run_id"]  # the row chosen on validation, not on test
    for variant in ("lstm", "bigru"):
        version = registry_client.get_model_version_by_alias(name, f"best-{variant}")
        sweep = next(r for r in _role(runs, "sweep") if r.data.tags["variant"] == variant)
        assert version.run_id == sweep.info.run_id and version.tags["variant"] == variant
        assert version.tags[registry.BENCHMARK_RUN] == result["run_id"]
    assert result["registered"]["japanese-vowels"]["champion"] == champion.version
    # a resumed benchmark registers again without new versions
    assert registry.register(tracking_uri, result["run_id"], result["boards"]) == result["registered"]
    assert len(registry_client.search_model_versions(f"name = '{name}'")) == 2


def test_predict_in_a_fresh_process_outside_the_repository_matches_the_served_model(
        finished, prepared, tracking_uri, tmp_path):
    from datamodules.artifact import load_split, read_extra

    result, runs, _ = finished
    artifact, _ = prepared["japanese-vowels"]
    test = load_split(artifact, "test")
    scaler = read_extra(artifact, "scaler")
    raw = [(s * np.array(scaler["std"]) + np.array(scaler["mean"])).tolist() for s in test.x]
    (tmp_path / "home").mkdir()
    inputs = tmp_path / "utterances.jsonl"
    inputs.write_text("".join(json.dumps({"sequence": seq}) + "\n" for seq in raw))
    proc = _rnnbench("predict", "--dataset", "japanese-vowels", "--input", str(inputs),
                     "--tracking-uri", tracking_uri, cwd=tmp_path)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    printed = pd.DataFrame([json.loads(line) for line in proc.stdout.splitlines()])
    assert len(printed) == len(raw), "one prediction per input, nothing else on stdout"
    mlflow.set_tracking_uri(tracking_uri)
    champion = mlflow.pyfunc.load_model("models:/rnnbench-japanese-vowels@champion")
    served = champion.predict(pd.DataFrame({"sequence": raw}))
    assert printed["label"].tolist() == served["label"].tolist()
    np.testing.assert_allclose(printed["probability"], served["probability"], rtol=1e-6)
    # and that is the in-memory model the sweep scored on the test split
    winner_run = next(r for r in runs if r.info.run_id == champion.metadata.run_id)
    labels = read_extra(artifact, "labels")
    accuracy = float((printed["label"].to_numpy() == np.array(labels)[test.y]).mean())
    assert accuracy == pytest.approx(winner_run.data.metrics["test/acc"], abs=1e-6)
    # one window as CSV rows (a column per channel) gives the same as its JSONL line
    pd.DataFrame(raw[0]).to_csv(tmp_path / "one.csv", index=False)
    proc = _rnnbench("predict", "--dataset", "japanese-vowels", "--input", str(tmp_path / "one.csv"),
                     "--tracking-uri", tracking_uri, cwd=tmp_path)
    assert proc.returncode == 0 and json.loads(proc.stdout)["label"] == printed["label"][0]
    # bad input: one line naming what is wrong and what is valid, exit 2
    (tmp_path / "texts.txt").write_text("not a sequence\n")
    for args, message in [
        (["--dataset", "sunspots", "--input", str(inputs)],
         "no registered model 'rnnbench-sunspots' with alias 'champion' in " + tracking_uri
         + "; registered: rnnbench-japanese-vowels"),
        (["--dataset", "japanese-vowels", "--input", str(tmp_path / "texts.txt")],
         "this model reads sequences of 12 value(s) per step"),
        (["--dataset", "japanese-vowels", "--input", str(tmp_path / "nope.csv")], "nope.csv: no such file"),
    ]:
        proc = _rnnbench("predict", *args, "--tracking-uri", tracking_uri, cwd=tmp_path)
        assert proc.returncode == 2 and message in proc.stdout and len(proc.stdout.splitlines()) == 1, proc.stdout


def test_report_rebuilds_the_leaderboard_from_the_tracking_store_alone(finished, tracking_uri, tmp_path):
    result, _, _ = finished
    (tmp_path / "home").mkdir()
    proc = _rnnbench("report", "--experiment", "e2e", "--run", result["run_id"], "--tracking-uri",
                     tracking_uri, "--out", str(tmp_path / "out"), cwd=tmp_path)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    written = Path(result["reports"]) / "leaderboard_japanese-vowels.csv"
    rebuilt = tmp_path / "out" / "leaderboard_japanese-vowels.csv"
    assert rebuilt.read_text() == written.read_text()  # the rows the benchmark wrote, byte for byte
    from flows import plots

    for kind in plots.FIGURES:  # the same figures, drawn again from the store in a fresh folder
        assert (tmp_path / "out" / f"{kind}-japanese-vowels.png").stat().st_size > 1000, kind
    page = (tmp_path / "out" / plots.PAGE).read_text()
    assert page.count("src='data:image/png;base64,") == len(plots.FIGURES) and "<td>bigru</td>" in page
    for variant in ("lstm", "bigru", "(majority class)"):
        assert variant in proc.stdout
    assert "Ranked and chosen on val/acc" in proc.stdout


def test_report_compare_puts_two_runs_side_by_side(finished, tracking_uri, tmp_path):
    result, _, _ = finished
    (tmp_path / "home").mkdir()
    proc = _rnnbench("report", "--compare", result["run_id"], result["run_id"], "--tracking-uri",
                     tracking_uri, cwd=tmp_path)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    rows = [line for line in proc.stdout.splitlines() if "val/acc" in line and "│" in line]
    assert len(rows) == 3  # lstm, bigru and the baseline; the same run: no difference
    assert all(line.split("│")[-2].strip() == "0.0000" for line in rows)
    assert "Plain differences, no intervals" in proc.stdout


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
