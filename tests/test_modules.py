"""Every variant builds, trains and pools correctly, whatever the padding."""

from __future__ import annotations

import re

import pytest
import torch

from modules import tasks
from modules.network import count_parameters
from modules.sequence import SequenceModule
from modules.variants import BUILTIN, VARIANTS, VariantError, custom_variant, resolve


def build_network(variant: str, hp: dict, data: dict, custom: dict | None = None):
    entry = resolve(variant, {k: custom_variant(k, v) for k, v in (custom or {}).items()})
    return entry.build(tasks.get(data["task"]), data, hp)


def apply_head(net, x, lengths):
    return net(x, lengths)

HP = {"hidden_size": 8, "num_layers": 2, "dropout": 0.0, "nhead": 2}
SPEECH = {"task": "classification", "num_classes": 3, "input_dim": 4, "vocab_size": 0}
TEXT = {"task": "classification", "num_classes": 2, "input_dim": 0, "vocab_size": 20}
SERIES = {"task": "forecasting", "horizon": 5, "input_dim": 1, "vocab_size": 0}
LM = {"task": "language-model", "num_classes": 11, "input_dim": 0, "vocab_size": 11}
COPY = {"task": "sequence", "num_classes": 10, "input_dim": 0, "vocab_size": 10}
ADDING = {"task": "regression", "outputs": 1, "input_dim": 4, "vocab_size": 0}


def _batch(data: dict, lengths=(6, 3, 1)):
    torch.manual_seed(0)
    steps = max(lengths)
    if data["vocab_size"]:
        x = torch.randint(2, data["vocab_size"], (len(lengths), steps))
        for i, n in enumerate(lengths):
            x[i, n:] = 0
    else:
        x = torch.randn(len(lengths), steps, data["input_dim"])
        for i, n in enumerate(lengths):
            x[i, n:] = 0.0
    return x, torch.tensor(lengths)


@pytest.mark.parametrize("variant", BUILTIN)
@pytest.mark.parametrize("data,expected", [(SPEECH, (3, 3)), (TEXT, (3, 2)), (SERIES, (3, 5)),
                                           (LM, (3, 6, 11)), (COPY, (3, 6, 10)), (ADDING, (3, 1))])
def test_every_variant_gives_the_shape_of_its_task(variant, data, expected):
    reason = VARIANTS[variant].incompatibility(tasks.get(data["task"]))
    if reason:  # a bidirectional encoder on a language model, a decoder on a single target, ...
        assert "would see the tokens it must predict" in reason or "decodes an output sequence" in reason
        with pytest.raises(VariantError, match=re.escape(reason)):
            build_network(variant, HP, data)
        return
    net = build_network(variant, HP, data)
    x, lengths = _batch(data)
    assert apply_head(net, x, lengths).shape == expected


@pytest.mark.parametrize("variant", [v for v in BUILTIN  # decoders: tests/test_seq2seq.py
                                     if not VARIANTS[v].incompatibility(tasks.get("classification"))])
@pytest.mark.parametrize("data", [SPEECH, TEXT], ids=["frames", "tokens"])
def test_padding_does_not_change_any_sequence_output(variant, data):
    net = build_network(variant, HP, data)
    net.eval()
    x, lengths = _batch(data)
    with torch.no_grad():
        batched = apply_head(net, x, lengths)
        for i, n in enumerate(lengths.tolist()):
            alone = apply_head(net, x[i: i + 1, :n], lengths[i: i + 1])
            torch.testing.assert_close(batched[i: i + 1], alone, atol=1e-5, rtol=1e-4)


@pytest.mark.parametrize("variant", ["birnn", "bilstm", "bigru"])
def test_bidirectional_pooling_uses_both_directions(variant):
    net = build_network(variant, HP, SPEECH).encoder
    net.eval()
    x, lengths = _batch(SPEECH)
    with torch.no_grad():
        outputs, pooled = net(x, lengths)
    hidden = HP["hidden_size"]
    last = outputs[torch.arange(3), lengths - 1]
    # forward half: state after the last valid step; backward half: state after reading back to step 0
    torch.testing.assert_close(pooled[:, :hidden], last[:, :hidden])
    torch.testing.assert_close(pooled[:, hidden:], outputs[:, 0, hidden:])


def test_unidirectional_pooling_is_the_last_valid_step_not_the_padding():
    net = build_network("gru", HP, SPEECH).encoder
    net.eval()
    x, lengths = _batch(SPEECH)
    with torch.no_grad():
        outputs, pooled = net(x, lengths)
    torch.testing.assert_close(pooled, outputs[torch.arange(3), lengths - 1])


def test_module_counts_only_trainable_parameters_of_net_and_head():
    net = build_network("lstm", HP, SPEECH)
    module = SequenceModule(net, tasks.get("classification"), SPEECH)
    assert module.n_params == count_parameters(net.encoder) + count_parameters(net.head) > 0


def test_unknown_variant_names_the_valid_ones():
    with pytest.raises(VariantError, match="unknown variant 'lstmm'; valid: rnn, lstm, gru"):
        resolve("lstmm")


def test_user_variant_named_in_a_preset_trains_like_a_builtin(tmp_path, monkeypatch):
    (tmp_path / "my_nets.py").write_text(
        "import torch\n"
        "class MeanPool(torch.nn.Module):\n"
        "    def __init__(self, input_dim, vocab_size, hidden_size, num_layers, dropout):\n"
        "        super().__init__()\n"
        "        self.proj = torch.nn.Linear(input_dim, hidden_size)\n"
        "        self.output_dim = hidden_size\n"
        "    def forward(self, x, lengths):\n"
        "        h = self.proj(x)\n"
        "        return h, h.sum(1) / lengths[:, None]\n"
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    hp = {k: v for k, v in HP.items() if k != "nhead"}  # a user's class gets every other key
    net = build_network("meanpool", hp, SPEECH, custom={"meanpool": "my_nets:MeanPool"})
    x, lengths = _batch(SPEECH)
    assert apply_head(net, x, lengths).shape == (3, 3)


def test_ray_callback_and_rnnbench_use_the_same_lightning_namespace():
    # Ray picks lightning.pytorch when the `lightning` package is installed; a callback from
    # that namespace is rejected by a pytorch_lightning Trainer, so both must agree.
    import pytorch_lightning as pl
    from ray.tune.integration.pytorch_lightning import TuneReportCheckpointCallback

    assert issubclass(TuneReportCheckpointCallback, pl.Callback)
    assert issubclass(SequenceModule, pl.LightningModule)


@pytest.mark.parametrize("variant", ["gru", "bilstm"])
def test_a_batch_without_padding_gives_the_same_output_as_a_padded_one(variant):
    # full-length batches skip packing (a CPU speed-up); the numbers must not change
    net = build_network(variant, HP, SPEECH)
    net.eval()
    x, _ = _batch(SPEECH, lengths=(5, 5, 5))
    full = torch.tensor([5, 5, 5])
    with torch.no_grad():
        unpacked = apply_head(net, x, full)
        padded = torch.cat([x, torch.zeros(3, 2, 4)], dim=1)  # same sequences, forced through packing
        packed = apply_head(net, padded, full)
    torch.testing.assert_close(unpacked, packed, atol=1e-5, rtol=1e-4)


def test_the_naive_forecast_is_the_value_one_season_earlier():
    from modules.tasks import naive_forecast

    x = torch.arange(10, dtype=torch.float32).view(1, 10, 1)  # values 0..9
    lengths = torch.tensor([10])
    assert naive_forecast(x, lengths, 0, 3, season=1).tolist() == [[9.0, 9.0, 9.0]]
    assert naive_forecast(x, lengths, 0, 6, season=4).tolist() == [[6.0, 7.0, 8.0, 9.0, 6.0, 7.0]]


@pytest.mark.parametrize("variant", ["rnn", "lstm", "gru", "transformer", "cnn-lstm", "cnn-gru",
                                     "mingru", "minlstm"])
def test_language_model_outputs_never_depend_on_future_tokens(variant):
    net = build_network(variant, HP, LM)
    net.eval()
    x, lengths = _batch(LM, lengths=(6, 6, 6))
    changed = x.clone()
    changed[:, 4:] = (changed[:, 4:] + 1) % 11  # rewrite the last two tokens
    with torch.no_grad():
        before, after = apply_head(net, x, lengths), apply_head(net, changed, lengths)
    torch.testing.assert_close(before[:, :4], after[:, :4], atol=1e-5, rtol=1e-4)
    assert not torch.allclose(before[:, 4:], after[:, 4:])


def test_baseline_f1_is_the_models_f1_even_when_a_class_is_missing_from_the_split():
    # the old numpy formula divided by every class; torchmetrics is what the models are scored by
    import numpy as np
    from torchmetrics.classification import MulticlassF1Score

    from datamodules.artifact import Split
    from flows.training import PreparedData, score_baseline

    rng = np.random.default_rng(0)
    train_y = np.array([0] * 30 + [1] * 10 + [2] * 5)
    test_y = np.array([0] * 8 + [1] * 4)  # class 2 never appears here
    split = lambda y: Split([rng.normal(size=(4, 2)).astype(np.float32) for _ in y], y, np.arange(len(y)))  # noqa: E731
    data = PreparedData({"task": "classification", "num_classes": 3, "input_dim": 2, "vocab_size": 0},
                        {}, {"train": split(train_y), "val": split(test_y), "test": split(test_y)})
    scores = score_baseline(tasks.get("classification"), data)
    expected = MulticlassF1Score(3, average="macro")(torch.zeros(len(test_y), dtype=torch.long),
                                                     torch.as_tensor(test_y))
    assert scores["test/acc"] == pytest.approx(8 / 12)
    assert scores["test/f1"] == pytest.approx(float(expected))


def test_deterministic_training_repeats_bit_for_bit():
    import numpy as np

    from datamodules.artifact import Split
    from flows.training import PreparedData, fit

    rng = np.random.default_rng(1)
    y = rng.integers(0, 3, size=64)
    split = Split([rng.normal(size=(int(rng.integers(3, 9)), 4)).astype(np.float32) for _ in y], y, np.arange(64))
    data = PreparedData({"task": "classification", "num_classes": 3, "input_dim": 4, "vocab_size": 0},
                        {}, {"train": split, "val": split, "test": split})
    hp = {"hidden_size": 8, "num_layers": 1, "dropout": 0.1, "lr": 0.01, "batch_size": 16}
    runs = [fit(hp, data, VARIANTS["lstm"], tasks.get("classification"), max_epochs=2, seed=5,
                deterministic=True).metrics for _ in range(2)]
    assert runs[0] == runs[1] and "val/acc" in runs[0]


# layers with weights: what "before the first learned map" means for every variant
_WEIGHTED = (torch.nn.Linear, torch.nn.Conv1d, torch.nn.RNNBase, torch.nn.Embedding, torch.nn.LayerNorm,
             torch.nn.MultiheadAttention)


def _compatible(variant: str, *datas: dict) -> dict:
    """The first of ``datas`` ``variant`` can train on (the encoder-decoders forecast only)."""
    return next(d for d in datas if VARIANTS[variant].incompatibility(tasks.get(d["task"])) is None)


def _weight_layer_inputs(net, x, lengths, training: bool, y=None) -> list[torch.Tensor]:
    """The input of every layer with weights, in the order the forward pass reaches them."""
    seen: list[torch.Tensor] = []
    hooks = [m.register_forward_pre_hook(lambda module, args: seen.append(args[0].detach().clone()))
             for m in net.modules() if isinstance(m, _WEIGHTED)]
    net.train(training)
    torch.manual_seed(0)
    try:
        net(x, lengths, y)
    finally:
        for hook in hooks:
            hook.remove()
    return seen


def _dropout_pair(variant: str, data: dict):
    """The same weights built with dropout 0.99 and with none."""
    torch.manual_seed(0)
    dropped = build_network(variant, {**HP, "dropout": 0.99}, data)
    plain = build_network(variant, HP, data)
    plain.load_state_dict(dropped.state_dict())
    return dropped, plain


@pytest.mark.parametrize("variant", BUILTIN)
def test_dropout_never_touches_raw_numeric_inputs(variant):
    # dropout on the raw values would delete observations and markers (adding's second
    # channel): every variant's first learned layer must see them whole, in training too
    data = _compatible(variant, SPEECH, SERIES)
    net, _ = _dropout_pair(variant, data)
    x, lengths = _batch(data, lengths=(6, 6, 6))
    train = _weight_layer_inputs(net, x, lengths, training=True)[0]
    torch.testing.assert_close(train, _weight_layer_inputs(net, x, lengths, training=False)[0])
    if data is SPEECH and train.shape == x.shape:  # nothing between the data and the first layer
        torch.testing.assert_close(train, x)


@pytest.mark.parametrize("variant", ["seq2seq", "seq2seq-attn"])
def test_a_decoder_reads_the_previous_values_whole(variant):
    # the decoder's step input is the value before it (raw, like the encoder's): no dropout there
    net, _ = _dropout_pair(variant, SERIES)
    x, lengths = _batch(SERIES, lengths=(6, 6, 6))
    y = torch.randn(3, SERIES["horizon"])
    rnn = net.net.head.decoder.rnn
    steps = {}
    for training in (True, False):
        seen: list[torch.Tensor] = []
        hook = rnn.register_forward_pre_hook(lambda module, args: seen.append(args[0][..., 0].detach().clone()))
        try:
            _weight_layer_inputs(net, x, lengths, training, y)
        finally:
            hook.remove()
        steps[training] = torch.cat([s.reshape(3, -1) for s in seen], dim=1)
    torch.testing.assert_close(steps[True], steps[False])
    assert bool((steps[True][:, 1:] != 0).all())  # the teacher's values, none deleted


@pytest.mark.parametrize("variant", BUILTIN)
def test_dropout_acts_in_training_and_changes_nothing_in_eval(variant):
    for data in {id(d): d for d in (_compatible(variant, SPEECH, SERIES), _compatible(variant, TEXT, SERIES))}.values():
        dropped, plain = _dropout_pair(variant, data)
        x, lengths = _batch(data, lengths=(6, 6, 6))
        dropped.eval(), plain.eval()
        torch.testing.assert_close(dropped(x, lengths), plain(x, lengths))
        dropped.train(), plain.train()
        assert not torch.allclose(dropped(x, lengths), plain(x, lengths))  # it does act somewhere


@pytest.mark.parametrize("variant", [v for v in BUILTIN if VARIANTS[v].incompatibility(tasks.get("classification")) is None])
def test_token_inputs_get_dropout_after_the_embedding(variant):
    net, _ = _dropout_pair(variant, TEXT)
    x, lengths = _batch(TEXT, lengths=(6, 6, 6))

    def after_embedding(training: bool) -> torch.Tensor:
        inputs = _weight_layer_inputs(net, x, lengths, training)
        assert inputs[0].dtype == torch.long  # the embedding lookup comes first
        return inputs[1]

    zeros = lambda h: float((h == 0).float().mean())
    assert zeros(after_embedding(True)) > 0.9 and zeros(after_embedding(False)) < 0.5


def test_only_tunes_snapshot_race_is_kept_out_of_the_console():
    import logging

    from flows.quiet import _SNAPSHOT_LOGGER, _SnapshotRace

    def record(error):
        try:
            raise error
        except OSError:
            import sys

            return logging.LogRecord(_SNAPSHOT_LOGGER, logging.ERROR, __file__, 1,
                                     "Saving experiment state to storage at '/x' failed with exception: ",
                                     None, sys.exc_info())

    race = FileNotFoundError("Failed to open local file '/tmp/a/.1-tmp-basic-variant-state-x.json'")
    assert not _SnapshotRace().filter(record(race))
    assert _SnapshotRace().filter(record(PermissionError("storage refused the write")))
