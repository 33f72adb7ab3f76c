"""Forecasting's ``norm``: window-local normalization makes every variant's forecast move with
the input's level and scale (also through the logged model, from raw values), the plan accepts
``norm`` only on forecasting datasets, and on a series that trends out of its training range a
window-normalized model beats the seasonal-naive forecast where a globally scaled one cannot."""

from __future__ import annotations

import types
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from datamodules.series import series_splits
from flows.training import PreparedData, build_module, evaluate, fit, score_baseline
from modules import tasks
from modules.variants import BUILTIN, VARIANTS
from tests.conftest import TINY_PRESET

FORECASTING = tasks.get("forecasting")
AFFINE_MAPS = [(3.5, -20.0), (0.2, 7.0)]
TINY = {"hidden_size": 8, "num_layers": 1, "dropout": 0.0, "nhead": 2, "ff_mult": 2,
        "lr": 1e-2, "batch_size": 32}


def _network(variant: str, norm: str, data: dict, diff=0) -> torch.nn.Module:
    from modules.normalization import WindowNorm

    torch.manual_seed(0)
    net = VARIANTS[variant].build(FORECASTING, data, {**TINY, "norm": norm, "diff": diff})
    if norm == "revin":  # away from the identity they start at, so the test sees them act
        revin = next(m for m in net.modules() if isinstance(m, WindowNorm))
        with torch.no_grad():
            revin.gamma.uniform_(0.5, 2.0)
            revin.beta.uniform_(-1.0, 1.0)
    return net.eval()


@pytest.mark.parametrize("variant", BUILTIN)
def test_window_normalized_forecasts_move_with_the_inputs_level_and_scale(variant):
    data = {"task": "forecasting", "horizon": 6, "input_dim": 2, "vocab_size": 0,
            "target_channel": 1, "window": 16, "season": 4}
    x = torch.randn(3, 16, 2, generator=torch.Generator().manual_seed(1)) * 2 + 1
    lengths = torch.tensor([16, 12, 9])  # padded windows (a served batch) keep the identity too
    # differencing first (lag 1, or the season with a horizon past it), then normalization
    for norm, diff in [(n, d) for n in ("window", "revin") for d in (0, 1, "season")]:
        net = _network(variant, norm, data, diff)
        with torch.no_grad():
            base = net(x, lengths)
            for a, c in AFFINE_MAPS:
                torch.testing.assert_close(net(a * x + c, lengths), a * base + c,
                                           rtol=1e-4, atol=1e-4 * max(a, abs(c)))
            constant = net(torch.full((2, 16, 2), 5.0), torch.tensor([16, 10]))
        assert torch.isfinite(constant).all(), (norm, diff)
    net = _network(variant, "global", data)
    with torch.no_grad():
        base = net(x, lengths)
        for a, c in AFFINE_MAPS:
            assert not torch.allclose(net(a * x + c, lengths), a * base + c, rtol=1e-2, atol=1e-2)


def trending_series(n: int = 600, season: int = 12, slope: float = 0.5, amplitude: float = 3.0,
                    noise: float = 1.0, seed: int = 0) -> np.ndarray:
    """A linear trend plus a seasonal sine plus Gaussian noise: the drift per season
    (slope * season = 6) is six times the noise."""
    t = np.arange(n)
    rng = np.random.default_rng(seed)
    return 100.0 + slope * t + amplitude * np.sin(2 * np.pi * t / season) + rng.normal(0, noise, n)


def prepared_series(values: np.ndarray, window: int = 24, horizon: int = 6,
                    season: int = 12) -> PreparedData:
    """Split and scaled exactly as a user's series is (``series_splits``), held in memory.
    A long validation span puts the test part far above anything the training part reached."""
    params = {"window": window, "horizon": horizon, "season": season,
              "val_fraction": 0.3, "test_fraction": 0.3}
    prepared = series_splits("trend", values, params)
    manifest = {**prepared.meta, "task": "forecasting", "dataset": "trend", "content_hash": "test"}
    return PreparedData(manifest, dict(prepared.extras), prepared.splits)


def test_the_trending_series_leaves_its_training_range():
    values = trending_series()
    train = values[: int(len(values) * 0.4)]
    test = values[int(len(values) * 0.7):]
    assert test[:12].min() > train.max() + 2 * train.std()


@pytest.mark.parametrize("variant", ["lstm", "transformer"])
def test_the_logged_model_applies_the_normalization_to_raw_values(variant, tmp_path):
    from flows.pyfunc_model import SequenceModel
    from flows.serving import write_model_files

    dataset = prepared_series(trending_series(240), window=24, horizon=4)
    raw = trending_series(240)[-48:]
    windows = [raw[i: i + 24] for i in (0, 10, 24)]
    for norm in ("window", "revin"):
        hparams = {**TINY, "norm": norm}
        torch.manual_seed(0)
        module = build_module(VARIANTS[variant], FORECASTING, hparams, dataset.data)
        if norm == "revin":
            assert {"gamma", "beta"} <= set(module.net.state_dict())  # they travel in the weights
            with torch.no_grad():
                module.net.gamma.uniform_(0.5, 2.0)
                module.net.beta.uniform_(-1.0, 1.0)
        artifacts = write_model_files(module, VARIANTS[variant], FORECASTING, hparams, dataset,
                                      tmp_path / norm)
        model = SequenceModel()
        model.load_context(types.SimpleNamespace(artifacts=artifacts))

        def predict(ws):
            frame = pd.DataFrame({"sequence": [w[:, None].tolist() for w in ws]})
            return model.predict(None, frame).to_numpy(dtype=np.float64)

        base = predict(windows)
        assert base.shape == (3, 4) and np.isfinite(base).all()
        for a, c in AFFINE_MAPS:
            np.testing.assert_allclose(predict([a * w + c for w in windows]), a * base + c,
                                       rtol=1e-4, atol=1e-3 * a)


@pytest.mark.parametrize("variant,epochs", [("lstm", 20), ("transformer", 20)])
def test_window_normalization_forecasts_a_trend_beyond_its_training_range(variant, epochs):
    dataset = prepared_series(trending_series())
    naive = score_baseline(FORECASTING, dataset)["test/mae"]
    hparams = {"hidden_size": 32, "num_layers": 1, "dropout": 0.0, "nhead": 4, "ff_mult": 2,
               "lr": 1e-2, "batch_size": 32, "grad_clip": 1.0}
    mae = {}
    for norm in ("window", "revin", "global"):
        result = fit({**hparams, "norm": norm}, dataset, VARIANTS[variant], FORECASTING,
                     max_epochs=epochs, seed=0, threads=1)
        mae[norm] = evaluate(result.module, dataset, "test")["test/mae"]
    assert mae["window"] <= 0.8 * naive and mae["revin"] <= 0.8 * naive, (mae, naive)
    assert mae["global"] >= 1.5 * naive, (mae, naive)


# ---- the plan: the task declares ``norm``, so it is valid for every variant on forecasting only

@pytest.mark.parametrize("variant", BUILTIN)
def test_every_variant_takes_norm_on_a_forecasting_dataset_only(variant):
    space = {**{k: v for k, v in TINY.items() if k in VARIANTS[variant].hyperparameters()},
             "norm": {"choice": ["global", "window", "revin"]}}
    assert VARIANTS[variant].check_space(space, FORECASTING) is None
    refused = VARIANTS[variant].check_space(space, tasks.get("classification"))
    assert "has no hyperparameter(s) ['norm']" in refused
    assert "norm applies to forecasting datasets only" in refused
    bad = VARIANTS[variant].check_space({**space, "norm": {"choice": ["window", "robust"]}}, FORECASTING)
    assert bad == ("norm on a forecasting dataset must be one of global, window, revin "
                   "(a constant or a choice), got 'robust'")


@pytest.fixture
def settings(tmp_path):
    from flows.settings import load_settings

    return load_settings(home=tmp_path / "home", tracking_uri=f"sqlite:///{tmp_path / 'mlflow.db'}")


def test_the_plan_checks_norm_against_the_datasets_task(settings, tmp_path):
    from flows.plan import PlanError, make_plan

    preset = tmp_path / "norm.toml"
    text = Path(TINY_PRESET).read_text()
    preset.write_text(text.replace('datasets = ["japanese-vowels"]', 'datasets = ["sunspots"]')
                      + '\n[dataset_space.sunspots]\nnorm = { choice = ["window", "revin"] }\n')
    plan = make_plan(settings, None, preset, variants_=["lstm", "transformer"], check_machine=False)
    assert len(plan.pairs) == 2
    preset.write_text(text.replace("[space]\n", '[space]\nnorm = "window"\n'))
    with pytest.raises(PlanError) as refused:
        make_plan(settings, None, preset, check_machine=False)
    assert "\n" not in str(refused.value)
    assert "japanese-vowels: lstm has no hyperparameter(s) ['norm'] on a classification dataset " \
           "(norm applies to forecasting datasets only)" \
        in str(refused.value)


def test_a_served_model_with_an_unknown_norm_is_refused_by_name():
    data = {"task": "forecasting", "horizon": 2, "input_dim": 1, "vocab_size": 0}
    with pytest.raises(tasks.TaskError, match="norm='robust' is not valid on a forecasting dataset"):
        VARIANTS["lstm"].build(FORECASTING, data, {**TINY, "norm": "robust"})


def test_a_users_encoder_that_takes_any_hyperparameter_is_not_handed_norm():
    # a custom variant gets every key that is not the loop's; norm is the task's, not the encoder's
    from modules.normalization import WindowNorm
    from modules.variants import custom_variant

    mine = custom_variant("mine", "modules.encoders:TransformerEncoder")
    data = {"task": "forecasting", "horizon": 2, "input_dim": 1, "vocab_size": 0}
    net = mine.build(FORECASTING, data, {**TINY, "norm": "window"})
    assert isinstance(net, WindowNorm)
    refused = mine.check_space({"norm": "median"}, FORECASTING)
    assert refused.startswith("norm on a forecasting dataset must be one of")


def test_a_logged_model_records_its_norm_and_one_logged_before_norm_existed_is_rebuilt_global(tmp_path):
    import json

    from flows.serving import write_model_files
    from modules.network import SequenceNetwork
    from modules.tasks import DEFAULT_NORM

    dataset = prepared_series(trending_series(240), window=24, horizon=4)
    module = build_module(VARIANTS["gru"], FORECASTING, TINY, dataset.data)  # no norm given
    artifacts = write_model_files(module, VARIANTS["gru"], FORECASTING, dict(TINY), dataset, tmp_path)
    logged = json.loads(Path(artifacts["spec"]).read_text())["hparams"]
    assert logged["norm"] == DEFAULT_NORM and logged["diff"] == 0  # defaults spelled out
    old = VARIANTS["gru"].build(FORECASTING, dataset.data, FORECASTING.as_logged(TINY))
    assert type(old) is SequenceNetwork  # as every model logged before norm was trained
