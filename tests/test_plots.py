"""The figures and the HTML report are drawn from the tracking store alone: a constructed store
with sweeps, trials and their per-epoch curves, as the benchmark writes them (the flow end to
end, with a real sweep, is in test_benchmark_flow.py)."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
from mlflow.tracking import MlflowClient

from flows import leaderboard, plots, report, stats

REPO = Path(__file__).resolve().parents[1]
# variant -> trials in start order: (start s, seconds, curve of val/acc); cap 3 epochs
TRIALS = {
    "lstm": [(0, 10, [0.5, 0.7, 0.8]), (1, 4, [0.4]), (2, 12, [0.6, 0.75, 0.9])],
    "gru": [(0, 8, [0.55, 0.65, 0.7]), (3, 3, [0.3])],
}


@pytest.fixture(scope="module")
def store(tmp_path_factory) -> tuple[str, str, str]:
    """(tracking URI, experiment id, benchmark run id), filled once for the module."""
    tmp_path = tmp_path_factory.mktemp("store")
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    client = MlflowClient(uri)
    exp = client.create_experiment("pics", (tmp_path / "artifacts").as_uri())
    bench = client.create_run(exp, tags={"rnnbench.role": "benchmark", "preset": "quick"}).info.run_id
    for stage in ("val", "test"):
        client.log_metric(bench, f"baseline/jv/{stage}/acc", 0.1)
    for variant, trials in TRIALS.items():
        sweep = client.create_run(exp, tags={"mlflow.parentRunId": bench, "rnnbench.role": "sweep",
                                             "dataset": "jv", "variant": variant, "modality": "speech",
                                             "rnnbench.task": "classification",
                                             "rnnbench.best_trial_id": f"{variant}0"}).info.run_id
        client.log_param(sweep, "max_epochs", 3)
        best = max(max(c) for _, _, c in trials)
        for key, value in {"val/acc": best, "test/acc": best - 0.05, "n_params": 1000 * len(variant),
                           "trials": len(trials)}.items():
            client.log_metric(sweep, key, value)
        for seed, shift in enumerate((-0.02, 0.0, 0.02)):  # seed repeats: the size figure's error bars
            for stage, value in (("val", best), ("test", best - 0.05)):
                client.log_metric(sweep, stats.seed_metric_name(stage, "acc", seed), value + shift)
        for i, (start, seconds, curve) in enumerate(trials):
            t0 = 1_700_000_000_000 + start * 1000
            run = client.create_run(exp, start_time=t0, tags={
                "mlflow.parentRunId": sweep, "rnnbench.role": "trial", "rnnbench.trial_id": f"{variant}{i}",
                "rnnbench.stopped_early": str(len(curve) < 3).lower()}).info.run_id
            for epoch, value in enumerate(curve):
                client.log_metric(run, "val/acc", value, step=epoch)
                if variant == "gru":  # per-epoch timings: a second of validation after each epoch
                    client.log_metric(run, "time/train_epoch_s", seconds / len(curve) - 1, step=epoch)
                    client.log_metric(run, "time/val_epoch_s", 1.0, step=epoch)
            client.set_terminated(run, "FINISHED", end_time=t0 + seconds * 1000)
        client.set_terminated(sweep, "FINISHED")
    client.set_terminated(bench, "FINISHED")
    return uri, exp, bench


def test_time_to_quality_adds_trial_seconds_in_start_order_and_keeps_the_best_so_far(store):
    uri, exp, bench = store
    board = leaderboard.build(uri, exp, bench)["jv"]
    found = plots.sweeps(uri, board)
    assert plots.time_to_quality(found["lstm"], "max") == [(10, 0.8), (14, 0.8), (26, 0.9)]
    # timed per epoch: every epoch is a point (8 s over 3 epochs, then 3 s for 1)
    assert plots.time_to_quality(found["gru"], "max") == [
        (pytest.approx(8 / 3), 0.55), (pytest.approx(16 / 3), 0.65), (pytest.approx(8), 0.7), (11, 0.7)]
    # the sweep's tag names the best trial, not the highest curve
    assert plots.best_trial(found["lstm"], "max").trial_id == "lstm0"
    assert [t.stopped_early for t in found["lstm"].trials] == [False, True, False]


def _check_report(out: Path) -> None:
    for kind in plots.FIGURES:
        png = out / f"{kind}-jv.png"
        assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and png.stat().st_size > 5000, png
    page = (out / plots.PAGE).read_text()
    refs = re.findall(r"""(?:src|href)\s*=\s*['"]([^'"]*)""", page)
    assert len(refs) == len(plots.FIGURES) and all(r.startswith("data:image/png;base64,") for r in refs)
    assert "<h2 id='jv'>jv (speech)</h2>" in page and "Ranked and chosen on the mean over seeds of val/acc" in page
    for variant in ("lstm", "gru", "(baseline)"):
        assert f"<td>{variant}</td>" in page
    assert "<td>0.8500 ± 0.0497</td>" in page  # lstm's test mean over 3 seeds with its interval


def test_the_benchmark_figures_and_a_self_contained_page_are_written(store, tmp_path):
    uri, exp, bench = store
    run = report.benchmark_run(uri, "pics", bench)
    boards, modalities = report.rebuild(uri, run)
    paths, figures = plots.write(uri, run, boards, tmp_path / "out", modalities)
    assert len(figures["jv"]) == len(plots.FIGURES) and set(paths) == {*figures["jv"], tmp_path / "out" / plots.PAGE}
    _check_report(tmp_path / "out")


def test_a_figure_without_data_is_a_warning_not_an_error(store, tmp_path, capsys):
    uri, exp, bench = store
    board = leaderboard.build(uri, exp, bench)["jv"]
    board = board.drop(columns=["params"])
    figures = plots.draw(uri, {"jv": board}, tmp_path / "out")
    assert [p.name.split("-")[0] for p in figures["jv"]] == ["curves", "compute", "asha"]
    assert "jv: no data for the test score against parameter count figure" in capsys.readouterr().out
    assert not (tmp_path / "out" / "size-jv.png").exists()


def test_report_writes_the_page_figures_and_tables_from_the_store_alone(store, tmp_path):
    uri, _, bench = store
    fresh = tmp_path / "fresh"
    fresh.mkdir()
    env = {**os.environ, "PYTHONPATH": str(REPO), "COLUMNS": "200", "RNNBENCH_HOME": str(fresh / "home")}
    proc = subprocess.run([sys.executable, "-m", "flows.cli", "report", "--experiment", "pics", "--run", bench,
                           "--tracking-uri", uri, "--out", str(fresh / "out")],
                          capture_output=True, text=True, env=env, cwd=fresh, timeout=300)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    _check_report(fresh / "out")
    assert (fresh / "out" / "leaderboard_jv.csv").exists() and (fresh / "out" / "leaderboard.md").exists()
