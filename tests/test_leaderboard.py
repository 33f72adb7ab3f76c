"""Leaderboards are rebuilt from MLflow alone, also from runs an earlier rnnbench wrote."""

from __future__ import annotations

from mlflow.tracking import MlflowClient

from flows import leaderboard


def test_runs_written_by_the_previous_version_still_make_a_leaderboard(tmp_path):
    # exactly the tags, params and metrics rnnbench 0.1 (before the task table) wrote
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    client = MlflowClient(uri)
    exp = client.create_experiment("old", artifact_location=(tmp_path / "art").as_uri())
    bench = client.create_run(exp, run_name="benchmark-quick", tags={
        "rnnbench.role": "benchmark", "preset": "quick", "rnnbench.run_key": "0123456789ab",
        "rnnbench.baseline.sunspots": "last value"}).info.run_id
    for name, value in {"test/mae": 23.7, "test/rmse": 31.8, "test/mase": 1.0}.items():
        client.log_metric(bench, f"baseline/sunspots/{name}", value)
    for variant, mae in (("lstm", 19.0), ("transformer", 36.2)):
        run = client.create_run(exp, run_name=f"sunspots/{variant}", tags={
            "mlflow.parentRunId": bench, "rnnbench.role": "sweep", "dataset": "sunspots",
            "variant": variant, "modality": "timeseries", "rnnbench.task": "forecasting",
            "rnnbench.run_key": "0123456789ab", "preset": "quick"}).info.run_id
        for key, value in {"test/mae": mae, "test/rmse": mae * 1.3, "test/mase": mae / 23.7,
                           "val/mae": mae * 0.9, "n_params": 4000, "train_time_s": 12.0, "trials": 4}.items():
            client.log_metric(run, key, value)
        client.log_param(run, "best.lr", 0.005)
        client.set_terminated(run, "FINISHED")
    client.set_terminated(bench, "FINISHED")

    board = leaderboard.build(uri, exp, bench)["sunspots"]
    assert board["variant"].tolist() == ["lstm", "transformer", "(last value)"]  # on val/mae
    assert board["test/mae"].tolist()[:2] == [19.0, 36.2] and board["test/mae"].iloc[2] == 23.7
    assert board["best hyperparameters"].iloc[0] == "lr=0.005"
    paths = leaderboard.write({"sunspots": board}, tmp_path / "reports", {"sunspots": "timeseries"})
    assert "| lstm | 17.10 | 19.00 |" in (tmp_path / "reports" / "leaderboard.md").read_text()
    assert len(paths) == 2


def test_building_leaderboards_imports_no_ray_lightning_or_torch():
    import subprocess
    import sys

    proc = subprocess.run([sys.executable, "-X", "importtime", "-c", "import flows.leaderboard"],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]
    imported = {line.rsplit("|", 1)[1].strip().split(".")[0] for line in proc.stderr.splitlines()
                if line.startswith("import time:") and "|" in line}
    assert "mlflow" in imported and not imported & {"ray", "torch", "pytorch_lightning", "lightning"}



def _store(tmp_path, sweeps: dict[str, dict], baseline: dict, tags: dict | None = None):
    uri = f"sqlite:///{tmp_path / 'lb.db'}"
    client = MlflowClient(uri)
    exp = client.create_experiment("lb", artifact_location=(tmp_path / "lb").as_uri())
    bench = client.create_run(exp, tags={"rnnbench.role": "benchmark",
                                         "rnnbench.baseline.jv": "majority class", **(tags or {})}).info.run_id
    for key, value in baseline.items():
        client.log_metric(bench, f"baseline/jv/{key}", value)
    for variant, metrics in sweeps.items():
        run = client.create_run(exp, tags={"mlflow.parentRunId": bench, "rnnbench.role": "sweep",
                                           "dataset": "jv", "variant": variant,
                                           "rnnbench.task": "classification"}).info.run_id
        for key, value in metrics.items():
            client.log_metric(run, key, value)
        client.set_terminated(run, "FINISHED")
    return leaderboard.build(uri, exp, bench)["jv"]


def test_the_ranking_and_the_winner_ignore_the_test_split(tmp_path):
    # birnn is best on test, but bilstm and bigru are best on validation: validation decides,
    # and their tie is broken by validation loss
    board = _store(tmp_path, {
        "birnn": {"val/acc": 0.963, "val/loss": 0.20, "test/acc": 0.976, "test/f1": 0.97},
        "bilstm": {"val/acc": 0.981, "val/loss": 0.12, "test/acc": 0.973, "test/f1": 0.97},
        "bigru": {"val/acc": 0.981, "val/loss": 0.09, "test/acc": 0.960, "test/f1": 0.96},
    }, {"val/acc": 0.11, "test/acc": 0.08, "test/f1": 0.02},
        {leaderboard.UNEQUAL: "bigru searches its own lr=loguniform[0.001, 0.01] (the other variants "
                              "use the shared space)"})
    assert board["variant"].tolist() == ["bigru", "bilstm", "birnn", "(majority class)"]
    assert board.attrs["headlines"][-1] == ("Not equal: bigru searches its own lr=loguniform[0.001, 0.01] "
                                            "(the other variants use the shared space).")
    assert leaderboard.winner(board)["variant"] == "bigru"
    assert any("bigru, bilstm tie on val/acc 0.981" in line for line in board.attrs["headlines"])
    assert board["note"].isna().all()


def test_variants_that_do_not_beat_the_baseline_on_validation_are_flagged(tmp_path):
    board = _store(tmp_path, {
        "rnn": {"val/acc": 0.50, "val/loss": 0.7, "test/acc": 0.58, "test/f1": 0.5},
        "gru": {"val/acc": 0.55, "val/loss": 0.6, "test/acc": 0.52, "test/f1": 0.5},
    }, {"val/acc": 0.56, "test/acc": 0.57, "test/f1": 0.36})
    assert set(board["note"].iloc[:2]) == {"does not beat majority class on validation"}
    assert any(line.startswith("No variant beats majority class on validation")
               for line in board.attrs["headlines"])
    md = leaderboard.to_markdown("jv", board)
    assert "No variant beats majority class on validation" in md.split("|")[0]


def test_a_narrow_terminal_leaves_extra_test_metrics_to_the_reports_without_folding_numbers(tmp_path):
    from rich.console import Console

    board = _store(tmp_path, {v: {"val/acc": 0.9, "val/loss": 0.3, "test/acc": 0.91, "test/f1": 0.9}
                              for v in ("lstm", "transformer")}, {"val/acc": 0.1, "test/acc": 0.1, "test/f1": 0.1})
    board["test/extra_one"], board["test/extra_two"] = 0.123456, 1234.5
    console = Console(width=80, record=True)
    console.print(leaderboard.to_rich("jv", board, width=80))
    text = console.export_text()
    assert max(len(line) for line in text.splitlines()) <= 80
    assert "0.9100" in text and "transformer" in text  # whole numbers and names
    assert "test/extra_two: in the CSV and Markdown reports" in text.replace("\n", " ")
