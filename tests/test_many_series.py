"""Forecasting many series at once, calendar inputs and odd time columns: a long-format file of
series whose scales differ by 1000x trains one global model, is scored per series in each one's
own units (aggregates in the leaderboard), and its logged model forecasts a named series from
raw values in a fresh process; calendar channels are exact and reach the head; unsorted rows
warn and uneven spacing fails at its first gap."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import types
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from datamodules import calendar
from datamodules.builtin import store_sales_frame
from datamodules.errors import DataError
from datamodules.userdata import DEFAULTS, build_timeseries
from flows.training import PreparedData, build_module
from modules import tasks
from modules.normalization import WindowNorm
from modules.variants import VARIANTS

FORECASTING = tasks.get("forecasting")
TINY = {"hidden_size": 8, "num_layers": 1, "dropout": 0.0, "lr": 1e-2, "batch_size": 64, "norm": "revin"}
RNNBENCH = str(Path(sys.executable).parent / "rnnbench")


def _hourly(tmp_path: Path, n: int = 200, drop: int | None = None, shuffle: bool = False) -> Path:
    times = pd.date_range("2024-01-01", periods=n, freq="h")
    frame = pd.DataFrame({"time": times.astype(str), "load": 10 + np.sin(np.arange(n) * 2 * np.pi / 24)})
    if drop is not None:
        frame = frame.drop(index=drop)
    if shuffle:
        frame = frame.sample(frac=1.0, random_state=0)
    path = tmp_path / f"load-{drop}-{shuffle}.csv"
    frame.to_csv(path, index=False)
    return path


def _params(**kw) -> dict:
    return {**DEFAULTS["timeseries"], "target": "load", "time_column": "time", "window": 24,
            "horizon": 6, **kw}


# ---------------------------------------------------------------- odd input

def test_unsorted_rows_are_sorted_and_say_so(tmp_path):
    shuffled = build_timeseries({"f": _hourly(tmp_path, shuffle=True)}, _params())
    ordered = build_timeseries({"f": _hourly(tmp_path)}, _params())
    assert any("rows not in time order were sorted by 'time'" in w for w in shuffled.warnings)
    assert not ordered.warnings
    np.testing.assert_array_equal(np.stack(shuffled.splits["test"].x), np.stack(ordered.splits["test"].x))


def test_an_unevenly_spaced_time_column_names_its_first_gap_and_the_way_out(tmp_path):
    gappy = _hourly(tmp_path, drop=50)
    with pytest.raises(DataError) as err:
        build_timeseries({"f": gappy}, _params())
    message = str(err.value)
    assert "'time' is not evenly spaced: 2024-01-03 01:00:00 is followed by 2024-01-03 03:00:00" in message
    assert "--resample FREQ (e.g. --resample h)" in message
    # resampled to the stated frequency, the empty hour is a missing value like any other
    with pytest.raises(DataError, match="1 missing.*first at time 2024-01-03 02:00:00"):
        build_timeseries({"f": gappy}, _params(resample="1h"))
    filled = build_timeseries({"f": gappy}, _params(resample="1h", on_missing="interpolate"))
    assert len(filled.splits["train"].x) == len(build_timeseries({"f": _hourly(tmp_path)}, _params()).splits["train"].x)


def test_a_constant_window_is_not_divided_by_zero_and_calendar_channels_pass_unscaled():
    seen = {}

    class Probe(torch.nn.Module):
        def forward(self, x, lengths, y=None):
            seen["x"] = x.clone()
            return x[:, -3:, 0]

    for affine in (False, True):
        norm = WindowNorm(Probe(), channels=3, keep=2, affine=affine)
        x = torch.zeros(2, 10, 3)
        x[..., 0] = 7.0  # constant target: std 0, only eps keeps the division finite
        x[..., 1:] = torch.rand(2, 10, 2) * 2 - 1
        out = norm(x, torch.tensor([10, 7]))
        assert torch.isfinite(out).all() and torch.isfinite(seen["x"]).all()
        torch.testing.assert_close(out, torch.full_like(out, 7.0))
        torch.testing.assert_close(seen["x"][0, :, 1:], x[0, :, 1:])  # not normalized


# ---------------------------------------------------------------- calendar

def test_a_known_timestamp_gets_its_known_sin_and_cos():
    # Wednesday 2024-03-06 18:00: a quarter turn from midnight's top; dow 2 of 7; March is month 2 of 12
    got = calendar.channels(["2024-03-06 18:00"], ["hour", "dow", "month"], "h", 6)[0]
    own, ahead = got[:6], got[6:]
    np.testing.assert_allclose(own[:2], [-1.0, 0.0], atol=1e-12)  # 18/24 of a turn
    np.testing.assert_allclose(own[2:4], [np.sin(2 * np.pi * 2 / 7), np.cos(2 * np.pi * 2 / 7)])
    np.testing.assert_allclose(own[4:], [np.sin(2 * np.pi * 2 / 12), np.cos(2 * np.pi * 2 / 12)])
    np.testing.assert_allclose(ahead[:2], [0.0, 1.0], atol=1e-12)  # six hours later: midnight
    np.testing.assert_allclose(ahead[2:4], [np.sin(2 * np.pi * 3 / 7), np.cos(2 * np.pi * 3 / 7)])
    with pytest.raises(DataError, match="--calendar takes a comma-separated list of hour, dow, month"):
        calendar.parse("hour,weekday")


def test_calendar_channels_are_prepared_recorded_read_by_the_head_and_applied_by_the_logged_model(tmp_path):
    from flows.pyfunc_model import SequenceModel
    from flows.serving import write_model_files

    path = _hourly(tmp_path, n=240)
    prepared = build_timeseries({"f": path}, _params(calendar="hour,dow"))
    assert prepared.meta["calendar"] == ["hour", "dow"] and prepared.meta["calendar_channels"] == 8
    assert prepared.meta["input_dim"] == 9 and prepared.meta["freq"] == "h"
    first = prepared.splits["train"].x[0]  # starts at 2024-01-01 00:00, a Monday
    np.testing.assert_allclose(first[0, 1:5], [0.0, 1.0, 0.0, 1.0], atol=1e-6)
    np.testing.assert_allclose(first[0, 5:7], [1.0, 0.0], atol=1e-6)  # 06:00, a horizon ahead
    artifact = tmp_path / "artifact"
    from datamodules.artifact import write_artifact

    write_artifact(artifact, prepared, {"dataset": "load", "task": "forecasting", "modality": "timeseries"})
    dataset = PreparedData.load(artifact)
    torch.manual_seed(0)
    module = build_module(VARIANTS["gru"], FORECASTING, FORECASTING.resolved(TINY), dataset.data).eval()
    window = torch.from_numpy(np.stack(dataset.splits["test"].x[:1]))
    lengths = torch.tensor([24])
    with torch.no_grad():
        out = module(window, lengths)
        shifted = window.clone()
        shifted[0, -6:, 5:] = -shifted[0, -6:, 5:]  # other calendar values for the forecast steps
        assert not torch.allclose(module(shifted, lengths), out), "the head reads the future calendar"
    artifacts = write_model_files(module, VARIANTS["gru"], FORECASTING, FORECASTING.resolved(TINY),
                                  dataset, tmp_path / "model")
    model = SequenceModel()
    model.load_context(types.SimpleNamespace(artifacts=artifacts))
    raw = pd.read_csv(path)
    start = int(dataset.splits["test"].ids[0]) - 24  # the window's first step in the file
    rows = raw.iloc[start:start + 24]
    served = model.predict(None, pd.DataFrame({"sequence": [rows["load"].tolist()],
                                               "time": [rows["time"].tolist()]}))
    scaler = dataset.extras["scaler"]
    np.testing.assert_allclose(served.to_numpy()[0], out.numpy()[0] * scaler["std"][0] + scaler["mean"][0],
                               rtol=1e-4, atol=1e-4)
    with pytest.raises(ValueError, match="give a 'time' column"):
        model.predict(None, pd.DataFrame({"sequence": [rows["load"].tolist()]}))


# ---------------------------------------------------------------- many series, end to end

def _shops(tmp_path: Path) -> Path:
    """20 shops (scales 1 to 1000) and one too short to use, rows shuffled, as a user's CSV."""
    frame = store_sales_frame(seed=3, stores=20, days=140)
    short = store_sales_frame(seed=4, stores=1, days=30).assign(store="tiny-kiosk")
    frame = pd.concat([frame, short]).sample(frac=1.0, random_state=1)
    frame["date"] = frame["date"].dt.strftime("%Y-%m-%d")
    path = tmp_path / "shops.csv"
    frame.to_csv(path, index=False)
    return path


def test_each_series_is_split_by_time_and_scaled_on_its_own(tmp_path):
    prepared = build_timeseries({"f": _shops(tmp_path)}, _params(
        target="sales", time_column="date", id_column="store", window=28, horizon=7, season=7))
    assert prepared.meta["n_series"] == 20 and prepared.meta["series_skipped"] == ["tiny-kiosk (30 steps)"]
    info = prepared.extras["series"]
    stds = np.array([s[0] for s in info["std"]])
    assert stds.max() / stds.min() > 100
    splits = prepared.splits
    for s in range(20):  # chronological per series: every val target after every train target
        last = {name: splits[name].ids[splits[name].ids[:, 0] == s, 1] for name in splits}
        assert last["train"].max() + 7 <= last["val"].min() and last["val"].max() + 7 <= last["test"].min()
        train_y = splits["train"].y[splits["train"].ids[:, 0] == s]
        assert abs(float(train_y.mean())) < 0.5 and 0.5 < float(train_y.std()) < 1.5  # own z-scores


@pytest.mark.slow
def test_many_series_run_end_to_end_with_per_series_scores_and_a_served_model(
        prefect_harness, state_home, tmp_path):
    from mlflow.tracking import MlflowClient

    from flows.pipeline import benchmark

    env = {**os.environ, "RNNBENCH_HOME": str(state_home), "COLUMNS": "250"}
    env.pop("MLFLOW_TRACKING_URI", None)
    proc = subprocess.run([RNNBENCH, "prepare", "--from", str(_shops(tmp_path)), "--kind", "timeseries",
                           "--name", "shops", "--target", "sales", "--time-column", "date",
                           "--id-column", "store", "--window", "28", "--horizon", "7", "--season", "7"],
                          capture_output=True, text=True, env=env, timeout=300)
    assert proc.returncode == 0, proc.stdout + proc.stderr[-3000:]
    out = " ".join(proc.stdout.split())
    assert "1 series too short for window=28 plus horizon=7 in every split" in out
    assert "skipped: tiny-kiosk (30 steps)" in out and "rows not in time order were sorted" in out

    preset = tmp_path / "one.toml"
    preset.write_text(Path(__file__).with_name("presets").joinpath("tiny.toml").read_text()
                      .replace("num_samples = 2", "num_samples = 1").replace("max_epochs = 2", "max_epochs = 1")
                      .replace("max_concurrent_trials = 2", "max_concurrent_trials = 1"))
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    result = benchmark(preset_path=str(preset), datasets=["shops"], variants=["gru"],
                       experiment="shops", tracking_uri=uri, home=str(state_home))
    board = result["boards"]["shops"]
    assert board["variant"].tolist() == ["gru", "(seasonal naive (lag 7))"]
    for col in ("test/series_mae", "test/series_mase", "test/beats_naive"):
        assert board[col].notna().all(), col
    assert board["test/beats_naive"].iloc[1] == 0.0  # the naive forecast never beats itself
    assert 0 < board["test/series_mase"].iloc[1] < 5

    client = MlflowClient(uri)
    (sweep,) = [r for r in client.search_runs([result["experiment_id"]])
                if r.data.tags.get("rnnbench.role") == "sweep"]
    table = pd.read_csv(client.download_artifacts(sweep.info.run_id, "series_metrics.csv", str(tmp_path)))
    assert len(table) == 20 and "tiny-kiosk" not in set(table["series"])
    assert table["mae"].max() / table["mae"].min() > 100  # each in its own units
    assert table["mase"].mean() == pytest.approx(sweep.data.metrics["test/series_mase"], rel=1e-6)
    assert table["beats_naive"].mean() == pytest.approx(sweep.data.metrics["test/beats_naive"])

    # the logged model, loaded in a fresh process away from the checkout, forecasts named series
    raw = pd.read_csv(tmp_path / "shops.csv").sort_values("date")
    windows = {s: raw[raw["store"] == s]["sales"].iloc[-28:].tolist() for s in ("store-00", "store-19")}
    request = pd.DataFrame({"series": list(windows), "sequence": list(windows.values())})
    # away from every checkout (the repository's and an editable install's): the model brings
    # its own code, and the check proves it
    script = ("import io, os, sys; sys.path = [p for p in sys.path if p not in ('', '.') and not "
              "os.path.isfile(os.path.join(p, 'modules', 'tasks.py'))]\n"
              "for name in ('modules', 'datamodules', 'flows'):\n"
              "    try:\n        __import__(name); raise SystemExit(name + ' is importable')\n"
              "    except ImportError:\n        pass\n"
              "import mlflow, pandas as pd; mlflow.set_tracking_uri(sys.argv[1]); "
              "m = mlflow.pyfunc.load_model(sys.argv[2]); "
              "print(m.predict(pd.read_json(io.StringIO(sys.argv[3]), orient='records')).to_json(orient='records'))")
    fresh_env = {k: v for k, v in env.items() if k != "PYTHONPATH"}
    done = subprocess.run([sys.executable, "-c", script, uri, f"runs:/{sweep.info.run_id}/model",
                           request.to_json(orient="records")], capture_output=True, text=True,
                          env=fresh_env, cwd=tmp_path, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    forecasts = json.loads(done.stdout.strip().splitlines()[-1])
    for name, forecast in zip(windows, forecasts):
        level = np.mean(windows[name])
        assert all(0.2 * level < v < 5 * level for v in forecast.values()), (name, forecast, level)


def test_the_built_in_store_sales_served_per_series_with_its_calendar_matches_the_in_memory_model(tmp_path):
    from datamodules.catalog import prepare
    from flows.pyfunc_model import SequenceModel
    from flows.serving import write_model_files

    artifact, manifest, _ = prepare("store-sales", tmp_path / "data", {"calendar": "dow"})
    assert manifest["n_series"] == 24 and manifest["calendar_channels"] == 4
    dataset = PreparedData.load(artifact)
    stds = [s[0] for s in dataset.extras["series"]["std"]]
    assert max(stds) / min(stds) > 100
    # global norm: window norm's scale equivariance would hide a series served with another's
    # scaler; differenced at the season too (calendar channels pass through it)
    for diff in (0, "season"):
        torch.manual_seed(0)
        hp = FORECASTING.resolved({**TINY, "norm": "global", "diff": diff})
        module = build_module(VARIANTS["lstm"], FORECASTING, hp, dataset.data).eval()
        test = dataset.splits["test"]
        picks = [int(np.flatnonzero(test.ids[:, 0] == s)[0]) for s in (0, 23)]
        with torch.no_grad():
            out = module(torch.from_numpy(np.stack([test.x[i] for i in picks])), torch.tensor([28, 28])).numpy()
        model = SequenceModel()
        model.load_context(types.SimpleNamespace(
            artifacts=write_model_files(module, VARIANTS["lstm"], FORECASTING, hp, dataset, tmp_path / f"m{diff}")))
        frame = store_sales_frame()
        rows = {"series": [], "sequence": [], "time": []}
        for i in picks:
            name = dataset.extras["series"]["names"][test.ids[i, 0]]
            part = frame[frame["store"] == name].iloc[test.ids[i, 1] - 28: test.ids[i, 1]]
            rows["series"].append(name)
            rows["sequence"].append(part["sales"].tolist())
            rows["time"].append(part["date"].astype(str).tolist())
        served = model.predict(None, pd.DataFrame(rows)).to_numpy()
        info = dataset.extras["series"]
        for row, i in enumerate(picks):
            s = test.ids[i, 0]
            np.testing.assert_allclose(served[row], out[row] * info["std"][s][0] + info["mean"][s][0], rtol=1e-4)
    with pytest.raises(ValueError, match="unknown series"):
        model.predict(None, pd.DataFrame({**rows, "series": ["nowhere", "store-00"]}))
