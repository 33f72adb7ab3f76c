"""The encoder-decoder variants ``seq2seq`` and ``seq2seq-attn``: the decoder forecasts the
horizon step by step, reads the truth while teacher forced (through the task's normalization
and differencing) and its own forecasts when free running, attends with weights that sum to 1
over the valid steps only, serves token decoders with the same loop, is refused where the
target is not a sequence, and trains through a sweep to a leaderboard row and a logged model
that forecasts in a fresh process."""

from __future__ import annotations

import types

import numpy as np
import pytest
import torch

from modules import tasks
from modules.seq2seq import Decoder, Seq2SeqNetwork
from modules.variants import VARIANTS, VariantError
from tests.conftest import predict_elsewhere

FORECASTING = tasks.get("forecasting")
# two channels (the target second) and a calendar of 2 (one feature, now and a horizon ahead)
DATA = {"task": "forecasting", "horizon": 5, "input_dim": 4, "vocab_size": 0, "target_channel": 1,
        "window": 16, "season": 4, "calendar_channels": 2}
HP = {"hidden_size": 8, "num_layers": 2, "dropout": 0.0}
KINDS = [("seq2seq", "none"), ("seq2seq-attn", "bahdanau"), ("seq2seq-attn", "luong")]


def network(variant: str, attention: str, cell: str = "gru", **hp) -> torch.nn.Module:
    torch.manual_seed(0)
    chosen = {**HP, "cell": cell, **hp}
    if variant == "seq2seq-attn":
        chosen["attention"] = attention
    return VARIANTS[variant].build(FORECASTING, DATA, chosen)


def windows(lengths=(16, 11, 7), seed=1):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(len(lengths), max(lengths), DATA["input_dim"], generator=g) * 3 + 2
    for i, n in enumerate(lengths):
        x[i, n:] = 0.0
    return x, torch.tensor(lengths), torch.randn(len(lengths), DATA["horizon"], generator=g) * 3 + 2


def inner(net) -> Seq2SeqNetwork:
    return next(m for m in net.modules() if isinstance(m, Seq2SeqNetwork))


@pytest.mark.parametrize("variant,attention", KINDS)
@pytest.mark.parametrize("cell", ["gru", "lstm"])
def test_a_decoder_forecasts_the_horizon_and_padding_changes_no_forecast(variant, attention, cell):
    net = network(variant, attention, cell, norm="revin", diff=1).eval()
    x, lengths, _ = windows()
    with torch.no_grad():
        batched = net(x, lengths)
        assert batched.shape == (3, DATA["horizon"])
        for i, n in enumerate(lengths.tolist()):
            alone = net(x[i: i + 1, :n], lengths[i: i + 1])
            torch.testing.assert_close(batched[i: i + 1], alone, atol=1e-5, rtol=1e-4)


@pytest.mark.parametrize("variant,attention", KINDS)
def test_teacher_forcing_reads_the_truth_and_free_running_reads_its_own_forecasts(variant, attention):
    # revin and first differences around it: the truth must reach the decoder in the units its
    # own forecasts come out in, or feeding it back its free-running forecast would change them
    # (without attention the teacher-forced steps run in one fused call, checked against the loop)
    net = network(variant, attention, "lstm", norm="revin", diff=1).eval()
    x, lengths, y = windows()
    with torch.no_grad():
        free = net(x, lengths)
        torch.testing.assert_close(net(x, lengths, free), free, atol=1e-5, rtol=1e-4)
        forced = net(x, lengths, y)
        assert not torch.allclose(forced[:, 1:], free[:, 1:], atol=1e-3)
        torch.testing.assert_close(forced[:, 0], free[:, 0])  # step 1 reads the window, never y
        later = y.clone()
        later[:, 2] += 5.0
        moved = net(x, lengths, later)
    torch.testing.assert_close(moved[:, :3], forced[:, :3])  # step h reads the truth at h - 1 only
    assert not torch.allclose(moved[:, 3], forced[:, 3], atol=1e-3)


def test_scheduled_sampling_feeds_the_decoder_its_own_forecasts_with_its_probability():
    x, lengths, y = windows()
    forced = network("seq2seq", "none", scheduled_sampling=0.0).eval()
    always = network("seq2seq", "none", scheduled_sampling=1.0)  # the same weights (seed)
    half = network("seq2seq", "none", scheduled_sampling=0.5)
    with torch.no_grad():
        truth_fed, free = forced(x, lengths, y), forced(x, lengths)
        torch.testing.assert_close(always.train()(x, lengths, y), free)  # training, yet free running
        torch.testing.assert_close(always.eval()(x, lengths, y), truth_fed)  # sampling only trains
        torch.manual_seed(3)
        mixed = half.train()(x, lengths, y)
    own = [(mixed[i, 1:] - free[i, 1:]).abs().max() < 1e-5 for i in range(3)]
    truth = [(mixed[i, 1:] - truth_fed[i, 1:]).abs().max() < 1e-5 for i in range(3)]
    assert not all(own) and not all(truth)  # some steps read the truth, some their own forecast


@pytest.mark.parametrize("attention", ["bahdanau", "luong"])
def test_attention_weights_sum_to_one_over_the_valid_steps_only(attention):
    net = inner(network("seq2seq-attn", attention, norm="global")).eval()
    x, lengths, _ = windows()
    with torch.no_grad():
        out, weights = net(x, lengths, weights=True)
    assert out.shape == (3, DATA["horizon"]) and weights.shape == (3, DATA["horizon"], 16)
    torch.testing.assert_close(weights.sum(dim=-1), torch.ones(3, DATA["horizon"]))
    for i, n in enumerate(lengths.tolist()):
        assert not weights[i, :, n:].any() and (weights[i, :, :n] > 0).all()
    assert not torch.allclose(weights[0, :, 0], weights[0, :, 1])  # not uniform: the scores read the states
    assert inner(network("seq2seq", "none", norm="global"))(x, lengths, weights=True)[1] is None


def test_the_same_loop_decodes_tokens_through_an_embedding_and_stops_at_the_end_token():
    torch.manual_seed(0)
    vocab, end = 7, 1
    embedding = torch.nn.Embedding(vocab, 6)
    decoder = Decoder("gru", 6, vocab, summary_dim=5, memory_dim=5, hidden_size=8,
                      attention="luong").eval()
    memory, lengths = torch.randn(2, 9, 5), torch.tensor([9, 4])
    start = torch.zeros(2, dtype=torch.long)
    labels = torch.tensor([[3, 4, 5], [6, 2, 3]])

    def argmax(logits):
        return logits.argmax(dim=-1)

    with torch.no_grad():
        logits, weights = decoder(memory, lengths, memory[:, 0], start, 3, embedding, argmax, teacher=labels)
        assert logits.shape == (2, 3, vocab) and weights.shape == (2, 3, 9)
        changed = labels.clone()
        changed[:, 1] = 0
        moved, _ = decoder(memory, lengths, memory[:, 0], start, 3, embedding, argmax, teacher=changed)
        torch.testing.assert_close(moved[:, :2], logits[:, :2])  # step s reads label s - 1 only
        assert not torch.allclose(moved[:, 2], logits[:, 2])
        decoder.out.bias.data[end] = 100.0  # now every step says "end"
        free, _ = decoder(memory, lengths, memory[:, 0], start, 6, embedding, argmax, end=end)
    assert free.shape == (2, 1, vocab)  # free running stopped once every sequence had ended


def test_decoders_are_refused_where_the_target_is_not_a_sequence_and_bad_settings_in_one_line(tmp_path):
    from pathlib import Path

    from flows.plan import PlanError, make_plan
    from flows.settings import load_settings
    from tests.conftest import TINY_PRESET

    classification = tasks.get("classification")
    reason = VARIANTS["seq2seq"].incompatibility(classification)
    assert reason == ("seq2seq decodes an output sequence step by step, and a classification dataset's "
                      "target is not a sequence it produces (it trains on forecasting and transcription datasets)")
    for task in ("language-model", "sequence", "regression"):
        assert "decodes an output sequence" in VARIANTS["seq2seq-attn"].incompatibility(tasks.get(task))
    with pytest.raises(VariantError, match="decodes an output sequence"):
        VARIANTS["seq2seq"].build(classification, {"num_classes": 2, "input_dim": 3}, HP)

    settings = load_settings(home=tmp_path / "home", tracking_uri=f"sqlite:///{tmp_path / 'mlflow.db'}")
    preset = tmp_path / "s2s.toml"
    text = Path(TINY_PRESET).read_text().replace('datasets = ["japanese-vowels"]',
                                                 'datasets = ["japanese-vowels", "sunspots"]')
    preset.write_text(text)
    plan = make_plan(settings, None, preset, variants_=["lstm", "seq2seq"], check_machine=False)
    assert [(p.dataset, p.variant) for p in plan.pairs] == [
        ("japanese-vowels", "lstm"), ("sunspots", "lstm"), ("sunspots", "seq2seq")]
    assert plan.skipped == [f"japanese-vowels · seq2seq skipped: {reason}"]
    for space, message in [
            ('[variant_space.seq2seq]\nattention = "luong"\n',
             "seq2seq has no hyperparameter(s) ['attention']"),
            ('[variant_space.seq2seq-attn]\nattention = { choice = ["none", "luong"] }\n',
             "seq2seq-attn: attention must be one of bahdanau, luong, but the space allows attention=none"),
            ('[variant_space.seq2seq-attn]\nscheduled_sampling = 1.5\ncell = "rnn"\n',
             "seq2seq-attn: cell must be one of gru, lstm, but the space allows cell=rnn")]:
        preset.write_text(text + space)
        with pytest.raises(PlanError) as refused:
            make_plan(settings, None, preset, datasets=["sunspots"], variants_=["seq2seq", "seq2seq-attn"],
                      check_machine=False)
        assert message in str(refused.value) and "\n" not in str(refused.value)
    with pytest.raises(VariantError, match="scheduled_sampling must be a probability between 0 and 1"):
        network("seq2seq", "none", scheduled_sampling=1.5)


def test_attention_defaults_to_bahdanau_and_a_logged_decoder_is_rebuilt_as_trained(tmp_path):
    import pandas as pd

    from datamodules.scaling import apply, invert
    from flows.pyfunc_model import SequenceModel
    from flows.serving import write_model_files
    from flows.training import build_module
    from modules.seq2seq import AdditiveAttention
    from tests.test_forecast_norm import prepared_series, trending_series

    values = trending_series(240)
    dataset = prepared_series(values, window=24, horizon=6, season=12)
    hparams = FORECASTING.resolved({**HP, "lr": 0.01, "batch_size": 32, "diff": 1})  # no attention, no cell
    torch.manual_seed(0)
    module = build_module(VARIANTS["seq2seq-attn"], FORECASTING, hparams, dataset.data)
    decoder = inner(module.net).head.decoder
    assert isinstance(decoder.attend, AdditiveAttention) and decoder.cell == "gru"
    artifacts = write_model_files(module, VARIANTS["seq2seq-attn"], FORECASTING, hparams, dataset, tmp_path)
    model = SequenceModel()
    model.load_context(types.SimpleNamespace(artifacts=artifacts))  # strict state_dict: the same network
    raw = [values[-48:-24], values[-30:-12]]  # a full window and a shorter one
    served = model.predict(None, pd.DataFrame({"sequence": [w[:, None].tolist() for w in raw]}))
    scaler = dataset.extras["scaler"]
    x = torch.nn.utils.rnn.pad_sequence([torch.from_numpy(apply(w[:, None], scaler)) for w in raw], batch_first=True)
    with torch.no_grad():
        mine = invert(module.net.eval()(x, torch.tensor([24, 18])).numpy(), scaler)
    assert list(served.columns) == [f"t+{h}" for h in range(1, 7)]
    np.testing.assert_allclose(served.to_numpy(dtype=np.float64), mine, rtol=1e-5, atol=1e-4)


# ---- through a sweep to a leaderboard row and a logged model in a fresh process

PRESET = """
description = "seq2seq-attn: 1 trial of 1 epoch, tiny widths, short windows"
datasets = ["sunspots"]
[budget]
num_samples = 1
max_epochs = 1
max_concurrent_trials = 1
[space]
hidden_size = 8
num_layers = 1
dropout = 0.0
lr = 0.01
batch_size = 128
[variant_space.seq2seq-attn]
cell = "lstm"
attention = "luong"
scheduled_sampling = 0.25
[dataset_params.sunspots]
window = 24
horizon = 6
"""


@pytest.mark.slow
def test_seq2seq_reaches_a_leaderboard_row_and_a_model_served_in_a_fresh_process(
        prefect_harness, prepared, tmp_path):
    import mlflow
    import pandas as pd
    from mlflow.tracking import MlflowClient

    from datamodules.artifact import load_split, read_extra
    from flows.pipeline import benchmark

    preset = tmp_path / "s2s.toml"
    preset.write_text(PRESET)
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    variants = ["seq2seq-attn"]  # the attention-free decoder runs the same loop (tests above)
    result = benchmark(preset_path=str(preset), variants=variants, experiment="s2s", tracking_uri=uri)
    board = result["boards"]["sunspots"].set_index("variant")
    assert set(variants) < set(board.index) and "(last value)" in board.index
    assert board.loc[variants, "val/mae"].notna().all() and (board.loc[variants, "params"] > 0).all()

    runs = MlflowClient(uri).search_runs([result["experiment_id"]])
    assert {r.info.status for r in runs} == {"FINISHED"}
    sweeps = {r.data.tags["variant"]: r.info.run_id for r in runs if r.data.tags.get("rnnbench.role") == "sweep"}
    assert set(sweeps) == set(variants)
    trial = next(r for r in runs if r.data.tags.get("rnnbench.role") == "trial")
    assert {k: trial.data.params[k] for k in ("cell", "attention", "scheduled_sampling")} == {
        "cell": "lstm", "attention": "luong", "scheduled_sampling": "0.25"}

    artifact, _ = prepared["sunspots"]
    scaler = read_extra(artifact, "scaler")
    test = load_split(artifact, "test")
    # the last 24 steps of the prepared (120-step) windows: the preset's windows, in raw units
    raw = [(s[-24:] * np.array(scaler["std"]) + np.array(scaler["mean"])).tolist() for s in test.x[:3]]
    mlflow.set_tracking_uri(uri)
    here = {v: mlflow.pyfunc.load_model(f"runs:/{run}/model").predict(pd.DataFrame({"sequence": raw}))
            .to_numpy().tolist() for v, run in sweeps.items()}
    assert all(np.isfinite(np.asarray(f)).all() and np.asarray(f).shape == (3, 6) for f in here.values())
    served = predict_elsewhere(uri, sweeps, raw, tmp_path)  # a fresh process, without the checkout
    for v in variants:
        np.testing.assert_allclose(served[v], here[v], rtol=1e-6)
