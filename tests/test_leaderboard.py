"""Leaderboards are rebuilt from MLflow alone, also from runs an earlier rnnbench wrote."""

from __future__ import annotations

import pandas as pd
import pytest
from mlflow.tracking import MlflowClient

from flows import leaderboard, stats


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



def _store(tmp_path, sweeps: dict[str, dict], baseline: dict, tags: dict | None = None,
           task: str = "classification"):
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
                                           "rnnbench.task": task}).info.run_id
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


def test_many_series_where_no_variant_beats_the_naive_forecast_on_most_say_so_in_one_line(tmp_path):
    line = "No variant beats majority class on most series: the best, gru, beats it on 42% of them (test)."
    sweeps = {"rnn": {"val/mae": 1.0, "test/mae": 1.1, "test/beats_naive": 0.25},
              "gru": {"val/mae": 0.9, "test/mae": 1.0, "test/beats_naive": 5 / 12}}
    board = _store(tmp_path / "a", sweeps, {"val/mae": 1.2, "test/mae": 1.3}, task="forecasting")
    assert line in board.attrs["headlines"]  # though both beat it on the mean over series
    sweeps["rnn"]["test/beats_naive"] = 0.75
    board = _store(tmp_path / "b", sweeps, {"val/mae": 1.2, "test/mae": 1.3}, task="forecasting")
    assert not any("on most series" in h for h in board.attrs["headlines"])


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


def _seeds(stage_metric: str, values) -> dict[str, float]:
    """Per-seed final scores as the sweep logs them (flows.stats's layout), seeds 0, 1, ..."""
    stage, metric = stage_metric.split("/", 1)
    return {stats.seed_metric_name(stage, metric, k): v for k, v in enumerate(values)}


def test_seed_repeats_rank_on_the_validation_mean_and_mark_ties_with_the_winner(tmp_path):
    from rich.console import Console

    # rnn is best on test but clearly worse on validation; transformer has the best single
    # sweep score but was not retrained on seeds, so it is not compared
    board = _store(tmp_path, {
        "rnn": {"val/acc": 0.99, "val/loss": 0.3, "test/acc": 0.99, "test/f1": 0.99,
                **_seeds("val/acc", [0.900, 0.905, 0.910]), **_seeds("test/acc", [0.99, 0.99, 0.99]),
                **_seeds("test/f1", [0.98, 0.99, 0.97])},
        "bilstm": {"val/acc": 0.98, "val/loss": 0.2, "test/acc": 0.975, "test/f1": 0.97,
                   **_seeds("val/acc", [0.975, 0.980, 0.985]), **_seeds("test/acc", [0.97, 0.975, 0.98])},
        "bigru": {"val/acc": 0.985, "val/loss": 0.1, "test/acc": 0.96, "test/f1": 0.96,
                  **_seeds("val/acc", [0.980, 0.981, 0.982]), **_seeds("test/acc", [0.95, 0.96, 0.97]),
                  **_seeds("val/loss", [0.1, 0.1, 0.1])},
        "transformer": {"val/acc": 0.995, "val/loss": 0.05, "test/acc": 0.99, "test/f1": 0.99},
    }, {"val/acc": 0.11, "test/acc": 0.08, "test/f1": 0.02})
    assert board["variant"].tolist() == ["bigru", "bilstm", "rnn", "transformer", "(majority class)"]
    assert leaderboard.winner(board)["variant"] == "bigru"
    assert leaderboard.score_text(board, leaderboard.winner(board), "val/acc") == "mean 0.981 ± 0.0025 over 3 seeds"
    assert board["val/acc"].iloc[0] == pytest.approx(0.981)  # the mean, not the sweep's 0.985
    # t(0.975, 2) · 0.001 / √3
    assert board["val/acc ±95%"].iloc[0] == pytest.approx(4.302653 * 0.001 / 3 ** 0.5, rel=1e-5)
    assert board["test/acc"].iloc[0] == pytest.approx(0.96) and board["test/f1"].iloc[0] == 0.96
    assert pd.isna(board["test/f1 ±95%"].iloc[0])  # its sweep's test score alone: no interval
    assert board["n"].tolist()[:3] == [3, 3, 3] and board["n"].iloc[3:].isna().all()
    versus = board["vs winner"].tolist()
    assert versus[0] == "winner" and versus[1].startswith("tied (p ") and versus[2].startswith("worse (p 0.0")
    assert pd.isna(versus[3]) and board["note"].iloc[3] == leaderboard.NO_SEEDS
    assert list(board.columns[:9]) == ["variant", "val/acc", "val/acc ±95%", "test/acc", "test/acc ±95%",
                                       "test/f1", "test/f1 ±95%", "n", "vs winner"]
    lines = board.attrs["headlines"]
    assert lines[0].startswith("Ranked and chosen on the mean over seeds of val/acc (higher is better")
    assert any(line.startswith("Welch's t-test on 3 seeds per variant, Holm-corrected against the winner;")
               for line in lines)
    assert "Not distinguishable from the winner bigru on val/acc: bilstm." in lines

    md = leaderboard.to_markdown("jv", board)
    assert "| bigru | 0.9810 ± 0.0025 | 0.9600 ± 0.0248 | 0.9600 | 3 | winner |" in md
    assert "±95%" not in md.split("\n")[-7]  # the header names the mean; the cell shows both
    console = Console(width=100, record=True)  # too narrow for every column: numbers stay whole
    console.print(leaderboard.to_rich("jv", board, width=100))
    text = console.export_text()
    assert "0.9810 ± 0.0025" in text and "worse (p 0.00" in text and "…" not in text
    assert max(len(line) for line in text.splitlines()) <= 100
    assert "test/f1, params, time (s), trials: in the CSV and Markdown reports" in text.replace("\n", " ")
    leaderboard.write({"jv": board}, tmp_path / "reports")
    csv = pd.read_csv(tmp_path / "reports" / "leaderboard_jv.csv")
    assert csv["val/acc ±95%"].iloc[0] == pytest.approx(board["val/acc ±95%"].iloc[0])


def test_seed_repeats_of_a_lower_is_better_metric_and_single_seeds(tmp_path):
    board = _store(tmp_path, {
        "lstm": {"val/mae": 20.0, "test/mae": 19.0, **_seeds("val/mae", [19.0]), **_seeds("test/mae", [18.0])},
        "gru": {"val/mae": 18.0, "test/mae": 17.0, **_seeds("val/mae", [21.0]), **_seeds("test/mae", [16.0])},
    }, {"val/mae": 25.0, "test/mae": 24.0}, task="forecasting")
    assert board["variant"].tolist() == ["lstm", "gru", "(majority class)"]  # lower val mean first
    assert board["vs winner"].tolist()[:2] == ["winner", "not tested: the winner has 1 seed"]
    assert board["val/mae ±95%"].iloc[:2].isna().all()
    assert any("1 seed per variant: no test of val/mae" in line for line in board.attrs["headlines"])
    assert "| lstm | 19.00 | 18.00 |" in leaderboard.to_markdown("jv", board)


def test_without_seed_repeats_the_board_keeps_its_columns(tmp_path):
    board = _store(tmp_path, {"lstm": {"val/acc": 0.9, "val/loss": 0.3, "test/acc": 0.91, "test/f1": 0.9}},
                   {"val/acc": 0.1, "test/acc": 0.1, "test/f1": 0.1})
    assert list(board.columns) == ["variant", "val/acc", "test/acc", "test/f1", "params", "time (s)",
                                   "trials", "note", "best hyperparameters", "run_id"]
    assert not any("seed" in line for line in board.attrs["headlines"])
    assert leaderboard.score_text(board, leaderboard.winner(board), "val/acc") == "0.9"
