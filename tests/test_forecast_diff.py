"""Forecasting's ``diff``: a differenced network forecasts differences and integrates them back
(lag 1 from the window's last value, seasonal lag chained through a horizon past the season),
the logged model does the same from raw values, and the plan refuses a seasonal difference
the dataset cannot take, in one line."""

from __future__ import annotations

import types
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from flows.training import build_module, evaluate, fit
from modules import tasks
from modules.network import SequenceNetwork
from modules.variants import BUILTIN, VARIANTS
from tests.conftest import TINY_PRESET
from tests.test_forecast_norm import TINY, prepared_series, trending_series

FORECASTING = tasks.get("forecasting")
WINDOW, HORIZON, SEASON = 16, 10, 4  # a horizon of two and a half seasons: the chain is used


def _silent(variant: str, norm: str, diff) -> torch.nn.Module:
    """A network whose encoder-and-head always outputs zero (its head zeroed): inside window
    normalization that is a forecast of the window's mean difference, so what comes out is
    the differencing and its integration alone."""
    data = {"task": "forecasting", "horizon": HORIZON, "input_dim": 1, "vocab_size": 0,
            "target_channel": 0, "window": WINDOW, "season": SEASON}
    torch.manual_seed(0)
    net = VARIANTS[variant].build(FORECASTING, data, {**TINY, "norm": norm, "diff": diff})
    inner = next(m for m in net.modules() if isinstance(m, SequenceNetwork))
    with torch.no_grad():
        for p in inner.head.parameters():
            p.zero_()
    return net.eval()


def _windows(series) -> tuple[torch.Tensor, torch.Tensor, np.ndarray]:
    """Two windows of ``series(t)`` (one padded, as in a served batch) and their true futures."""
    lengths = [WINDOW, WINDOW - 5]
    starts = [3, 20]
    x = torch.zeros(2, WINDOW, 1)
    future = []
    for i, (start, n) in enumerate(zip(starts, lengths)):
        t = np.arange(start, start + n)
        x[i, :n, 0] = torch.as_tensor(series(t), dtype=torch.float32)
        future.append(series(np.arange(start + n, start + n + HORIZON)))
    return x, torch.tensor(lengths), np.stack(future)


@pytest.mark.parametrize("variant", BUILTIN)
@pytest.mark.parametrize("norm", ["window", "revin"])
def test_a_first_differenced_model_continues_a_linear_trend_exactly(variant, norm):
    x, lengths, future = _windows(lambda t: 5.0 + 0.7 * t)
    with torch.no_grad():
        out = _silent(variant, norm, 1)(x, lengths)
    np.testing.assert_allclose(out.numpy(), future, rtol=0, atol=1e-4)


@pytest.mark.parametrize("variant", ["lstm", "transformer"])
def test_a_seasonally_differenced_model_continues_a_seasonal_pattern_with_its_drift(variant):
    pattern = np.array([3.0, -1.0, 4.0, 0.5])
    for slope in (0.0, 0.3):  # a pure seasonal pattern, then one drifting by 4 * 0.3 a season
        x, lengths, future = _windows(lambda t: pattern[t % SEASON] + slope * t)
        with torch.no_grad():
            out = _silent(variant, "window", "season")(x, lengths)
        np.testing.assert_allclose(out.numpy(), future, rtol=0, atol=1e-4)


def test_without_normalization_a_silent_differenced_model_repeats_the_last_value_or_season():
    x, lengths, _ = _windows(lambda t: np.sin(t) * 10)
    last = x[[0, 1], lengths - 1, 0]
    with torch.no_grad():
        np.testing.assert_allclose(_silent("gru", "global", 1)(x, lengths).numpy(),
                                   last[:, None].expand(2, HORIZON).numpy(), atol=1e-5)
        season = _silent("gru", "global", "season")(x, lengths)
    steps = (lengths[:, None] - SEASON + torch.arange(HORIZON) % SEASON)
    np.testing.assert_allclose(season.numpy(), x[torch.arange(2)[:, None], steps, 0].numpy(), atol=1e-5)


def test_differencing_refuses_what_the_data_cannot_take():
    data = {"task": "forecasting", "horizon": 4, "input_dim": 1, "vocab_size": 0, "window": 12, "season": 1}
    with pytest.raises(tasks.TaskError, match="diff='season' needs a dataset with a season > 1"):
        VARIANTS["lstm"].build(FORECASTING, data, {**TINY, "diff": "season"})
    with pytest.raises(tasks.TaskError, match="window must be longer than 12 steps, got window=12"):
        VARIANTS["lstm"].build(FORECASTING, {**data, "season": 12}, {**TINY, "diff": "season"})
    with pytest.raises(tasks.TaskError, match=r"diff=2 is not valid on a forecasting dataset; valid: 0, 1, season"):
        VARIANTS["lstm"].build(FORECASTING, data, {**TINY, "diff": 2})
    assert VARIANTS["lstm"].check_space({"diff": {"choice": [0, True]}}, FORECASTING) == (
        "diff on a forecasting dataset must be one of 0, 1, season (a constant or a choice), got True")
    net = VARIANTS["lstm"].build(FORECASTING, {**data, "season": 4}, {**TINY, "diff": "season"}).eval()
    with pytest.raises(ValueError, match="every window needs more than 4 steps, got one of 3"):
        net(torch.zeros(2, 12, 1), torch.tensor([12, 3]))


def test_the_logged_model_differences_raw_values_as_the_trained_one_does(tmp_path):
    from datamodules.scaling import apply, invert
    from flows.pyfunc_model import SequenceModel
    from flows.serving import write_model_files

    values = trending_series(240)
    dataset = prepared_series(values, window=24, horizon=14, season=12)
    hparams = {**TINY, "norm": "revin", "diff": "season"}
    torch.manual_seed(0)
    module = build_module(VARIANTS["lstm"], FORECASTING, hparams, dataset.data)
    artifacts = write_model_files(module, VARIANTS["lstm"], FORECASTING, hparams, dataset, tmp_path)
    model = SequenceModel()
    model.load_context(types.SimpleNamespace(artifacts=artifacts))
    assert model.spec["hparams"]["diff"] == "season"
    raw = [values[-48:-24], values[-30:-10]]  # a full window and a shorter one
    served = model.predict(None, pd.DataFrame({"sequence": [w[:, None].tolist() for w in raw]}))
    scaler = dataset.extras["scaler"]
    seqs = [torch.from_numpy(apply(w[:, None], scaler)) for w in raw]
    x = torch.nn.utils.rnn.pad_sequence(seqs, batch_first=True)
    with torch.no_grad():
        mine = invert(module.net.eval()(x, torch.tensor([24, 20])).numpy(), scaler)
    np.testing.assert_allclose(served.to_numpy(dtype=np.float64), mine, rtol=1e-5, atol=1e-4)


def test_a_differenced_model_trains_scores_in_the_datas_units_and_records_diff(tmp_path):
    from mlflow.tracking import MlflowClient

    from flows.trial import LogParams

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    client = MlflowClient(uri)
    run_id = client.create_run(client.create_experiment("diff", (tmp_path / "art").as_uri())).info.run_id
    dataset = prepared_series(trending_series(240), window=24, horizon=6, season=12)
    hparams = {**TINY, "diff": 1}  # norm left to its default: spelled out in the record as trials do
    result = fit(hparams, dataset, VARIANTS["gru"], FORECASTING, max_epochs=2, seed=0, threads=1,
                 callbacks=[LogParams(uri, run_id, FORECASTING.resolved(hparams))])
    client.set_terminated(run_id, "FINISHED")
    params = client.get_run(run_id).data.params
    assert params["diff"] == "1" and params["norm"] == tasks.DEFAULT_NORM
    assert result.epochs == 2 and np.isfinite(result.metrics["val/mae"])
    scores = evaluate(result.module, dataset, "test")
    # raw units (the series' slope is 0.5 a step, its noise 1): not z-scored, not differences
    assert 0.3 < scores["test/mae"] < 30


@pytest.fixture
def settings(tmp_path):
    from flows.settings import load_settings

    return load_settings(home=tmp_path / "home", tracking_uri=f"sqlite:///{tmp_path / 'mlflow.db'}")


def test_the_plan_refuses_a_seasonal_difference_the_dataset_cannot_take(settings, tmp_path):
    from flows.plan import PlanError, make_plan

    text = Path(TINY_PRESET).read_text()
    preset = tmp_path / "diff.toml"

    def plan(datasets: str, extra: str):
        preset.write_text(text.replace('datasets = ["japanese-vowels"]', f"datasets = {datasets}") + extra)
        return make_plan(settings, None, preset, variants_=["lstm"], check_machine=False)

    assert len(plan('["electricity"]', '\n[dataset_space.electricity]\n'
                                       'diff = { choice = [0, 1, "season"] }\n').pairs) == 1
    with pytest.raises(PlanError) as refused:  # sunspots has no season (its cycle is ~11 years)
        plan('["sunspots"]', '\n[dataset_space.sunspots]\ndiff = { choice = [0, "season"] }\n')
    assert "\n" not in str(refused.value)
    assert "sunspots: diff='season' needs a dataset with a season > 1" in str(refused.value)
    with pytest.raises(PlanError) as refused:
        plan('["electricity"]', '\n[dataset_space.electricity]\ndiff = "season"\n'
                                '[dataset_params.electricity]\nwindow = 48\n')
    assert "electricity: diff='season' differences at lag 48, so the window must be longer " \
           "than 48 steps, got window=48" in str(refused.value)
