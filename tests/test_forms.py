"""The other forms of sequence model: the one-to-one ``mlp``, bidirectional merge modes, the
Elman RNN's relu with identity recurrence, convolutional front ends and their limits, and the
parallel-scan minGRU/minLSTM. The shared shape, padding and causality checks run them too
(tests/test_modules.py); here is what is particular to each, and one sweep of them all through
to a leaderboard and a logged model served in a fresh process."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from modules import tasks
from modules.variants import VARIANTS, VariantError
from tests.conftest import TINY_PRESET, predict_elsewhere

SPEECH = {"task": "classification", "num_classes": 3, "input_dim": 4, "vocab_size": 0}
COPY = {"task": "sequence", "num_classes": 10, "input_dim": 0, "vocab_size": 10}
HP = {"hidden_size": 8, "num_layers": 2, "dropout": 0.0}


def encoder(variant: str, data: dict = SPEECH, **hp):
    torch.manual_seed(0)
    return VARIANTS[variant].build(tasks.get(data["task"]), data, {**HP, **hp}).encoder.eval()


def frames(lengths=(9, 5, 1), dim=4, seed=0):
    x = torch.randn(len(lengths), max(lengths), dim, generator=torch.Generator().manual_seed(seed)) * 2
    for i, n in enumerate(lengths):
        x[i, n:] = 0.0
    return x, torch.tensor(lengths)


# ---- minGRU / minLSTM

@pytest.mark.parametrize("variant", ["mingru", "minlstm"])
def test_the_parallel_log_space_scan_gives_what_the_step_by_step_recurrence_gives(variant):
    net = encoder(variant)
    x, lengths = frames((40, 17, 1))
    with torch.no_grad():
        parallel, pooled = net(x, lengths)
        net.scan = "sequential"
        stepped, stepped_pooled = net(x, lengths)
    assert parallel.abs().amax() > 0.1  # states that carry something, not all near zero
    torch.testing.assert_close(parallel, stepped, atol=1e-5, rtol=1e-4)
    torch.testing.assert_close(pooled, stepped_pooled, atol=1e-5, rtol=1e-4)
    # the pooled feature is the state at each sequence's last valid step, not at the padding
    torch.testing.assert_close(pooled, stepped[torch.arange(3), lengths - 1], atol=1e-5, rtol=1e-4)


def test_the_scan_matches_a_hand_computed_recurrence_and_its_gradient_too():
    from modules.minrnn import parallel_scan_log

    a = torch.rand(2, 30, 3) * 0.98 + 0.01
    b = torch.rand(2, 30, 3, requires_grad=True)
    h, expected = torch.zeros(2, 3), []
    for t in range(30):
        h = a[:, t] * h + b[:, t]
        expected.append(h)
    expected = torch.stack(expected, dim=1)
    scanned = parallel_scan_log(a.log(), b.log())
    torch.testing.assert_close(scanned, expected, atol=1e-5, rtol=1e-4)
    (grad,) = torch.autograd.grad(scanned[:, -1].sum(), b)
    (want,) = torch.autograd.grad(expected[:, -1].sum(), b)
    torch.testing.assert_close(grad, want, atol=1e-5, rtol=1e-4)


# ---- bidirectional merge modes and the Elman RNN's activation

@pytest.mark.parametrize("variant", ["birnn", "bilstm", "bigru"])
def test_merge_sum_adds_the_two_directions_and_halves_the_width(variant):
    concat, summed = encoder(variant, merge="concat"), encoder(variant, merge="sum")
    hidden = HP["hidden_size"]
    assert (concat.output_dim, summed.output_dim) == (2 * hidden, hidden)
    x, lengths = frames()
    with torch.no_grad():
        both, both_pooled = concat(x, lengths)
        out, pooled = summed(x, lengths)  # same seed: the same recurrent weights
    assert out.shape == (3, 9, hidden) and pooled.shape == (3, hidden)
    torch.testing.assert_close(out, both[..., :hidden] + both[..., hidden:])
    torch.testing.assert_close(pooled, both_pooled[:, :hidden] + both_pooled[:, hidden:])
    net = VARIANTS[variant].build(tasks.get("classification"), SPEECH, {**HP, "merge": "sum"})
    assert net.head.net[-1].in_features == hidden


@pytest.mark.parametrize("variant", ["rnn", "birnn"])
def test_a_relu_rnn_starts_from_identity_recurrence_and_carries_its_state_unchanged(variant):
    relu = encoder(variant, nonlinearity="relu", num_layers=1)
    weights = dict(relu.rnn.named_parameters())
    for name, param in weights.items():
        if name.startswith("weight_hh"):
            torch.testing.assert_close(param, torch.eye(HP["hidden_size"]))
        elif name.startswith("bias"):
            assert not param.any()
    # behaviour: a state written at step 0 and then fed zeros stays as it was, step after step
    x = torch.zeros(2, 12, 4)
    x[:, 0] = torch.randn(2, 4) * 3
    with torch.no_grad():
        out, _ = relu(x, torch.tensor([12, 12]))
    forward = out[..., :HP["hidden_size"]]
    assert forward[:, 0].abs().sum() > 0
    torch.testing.assert_close(forward, forward[:, :1].expand_as(forward))
    tanh = encoder(variant, num_layers=1)
    with torch.no_grad():
        decaying, _ = tanh(x, torch.tensor([12, 12]))
    assert not torch.allclose(decaying[:, -1, :HP["hidden_size"]], decaying[:, 0, :HP["hidden_size"]])


def test_merge_and_nonlinearity_are_refused_where_they_do_not_apply():
    classification = tasks.get("classification")
    assert VARIANTS["bigru"].check_space({"merge": {"choice": ["concat", "sum"]}}, classification) is None
    assert VARIANTS["birnn"].check_space({"merge": "sum", "nonlinearity": "relu"}, classification) is None
    assert VARIANTS["bigru"].check_space({"merge": "max"}, classification) == (
        "bigru: merge must be one of concat, sum, but the space allows merge=max (merge in ['max'])")
    refused = VARIANTS["lstm"].check_space({"nonlinearity": "relu"}, classification)
    assert "lstm has no hyperparameter(s) ['nonlinearity']" in refused
    assert "nonlinearity is a hyperparameter of rnn, birnn only" in refused
    with pytest.raises(VariantError, match="nonlinearity must be one of tanh, relu, got nonlinearity='gelu'"):
        encoder("rnn", nonlinearity="gelu")


# ---- convolutional front ends

@pytest.mark.parametrize("variant", ["cnn-lstm", "cnn-gru"])
def test_a_strided_front_end_shortens_the_sequence_and_padding_still_changes_nothing(variant):
    net = encoder(variant, kernel=4, stride=3, channels=6)
    x, lengths = frames((10, 7, 2))
    with torch.no_grad():
        out, pooled = net(x, lengths)
        assert out.shape == (3, 4, 8)  # ceil(10 / 3) steps for the recurrence
        for i, n in enumerate(lengths.tolist()):
            alone, alone_pooled = net(x[i: i + 1, :n], lengths[i: i + 1])
            steps = -(-n // 3)
            assert alone.shape[1] == steps
            torch.testing.assert_close(out[i: i + 1, :steps], alone, atol=1e-5, rtol=1e-4)
            torch.testing.assert_close(pooled[i: i + 1], alone_pooled, atol=1e-5, rtol=1e-4)
            assert not out[i, steps:].any()  # nothing past the shortened length


def test_symmetric_padding_reads_ahead_and_causal_padding_does_not():
    x, lengths = frames((8, 8))
    later = x.clone()
    later[:, 5] += 1.0
    for causal, reads_ahead in ((False, True), (True, False)):
        torch.manual_seed(0)
        from modules.forms import ConvRNNEncoder

        net = ConvRNNEncoder("gru", input_dim=4, hidden_size=8, kernel=3, causal=causal).eval()
        with torch.no_grad():
            before, after = net(x, lengths)[0], net(later, lengths)[0]
        assert not torch.allclose(before[:, 5:], after[:, 5:])
        assert (not torch.allclose(before[:, 4], after[:, 4])) is reads_ahead


def test_a_stride_above_one_on_a_per_step_task_is_refused_before_any_trial(tmp_path):
    from flows.plan import PlanError, make_plan
    from flows.settings import load_settings

    settings = load_settings(home=tmp_path / "home", tracking_uri=f"sqlite:///{tmp_path / 'mlflow.db'}")
    preset = tmp_path / "cnn.toml"
    preset.write_text(Path(TINY_PRESET).read_text().replace('variants = ["lstm", "bigru"]', 'variants = ["cnn-gru"]')
                      + '\n[variant_space.cnn-gru]\nkernel = 3\nstride = { choice = [1, 2] }\nchannels = 8\n')
    plan = make_plan(settings, None, preset, check_machine=False)  # classification: any stride
    assert [p.variant for p in plan.pairs] == ["cnn-gru"]
    with pytest.raises(PlanError) as refused:
        make_plan(settings, None, preset, datasets=["copy-memory"], check_machine=False)
    assert "\n" not in str(refused.value)
    assert str(refused.value) == (
        "preset 'cnn', copy-memory: cnn-gru: stride must be 1 on a per-step task (a stride above 1 "
        "shortens the outputs, which then no longer line up with a label per step), but the space "
        "allows stride=2 (stride in [1, 2])")
    with pytest.raises(VariantError, match="stride must be 1 on a per-step task"):  # a direct build too
        VARIANTS["cnn-gru"].build(tasks.get("sequence"), COPY, {**HP, "stride": 2})
    assert VARIANTS["cnn-lstm"].check_space({"kernel": 2, "stride": 3}, tasks.get("classification")) \
        .startswith("cnn-lstm: stride must not exceed kernel")


def test_front_end_sizes_are_checked_as_integers_whatever_integer_type_a_sampler_gives():
    import numpy as np

    classification = tasks.get("classification")
    assert VARIANTS["cnn-gru"].check_space({"channels": {"choice": [8, 0]}}, classification) == (
        "cnn-gru: kernel, stride and channels must be positive integers, but the space allows "
        "kernel=3/stride=1/channels=0 (kernel in [3]; stride in [1]; channels in [8, 0])")
    assert "positive integers" in VARIANTS["cnn-gru"].check_space({"kernel": 2.5}, classification)
    net = VARIANTS["cnn-gru"].build(classification, SPEECH, {**HP, "kernel": np.int64(4), "stride": np.int64(2)})
    assert net.encoder.conv.kernel_size == (4,) and net.encoder.conv.stride == (2,)


# ---- the one-to-one mlp

def test_the_mlp_on_fixed_lengths_knows_positions_and_on_varying_lengths_does_not():
    x, lengths = frames((6, 6, 6))
    reversed_ = x.flip(1)
    fixed = VARIANTS["mlp"].build(tasks.get("classification"), {**SPEECH, "fixed_length": 6}, HP).eval()
    bag = VARIANTS["mlp"].build(tasks.get("classification"), SPEECH, HP).eval()
    with torch.no_grad():
        assert not torch.allclose(fixed(x, lengths), fixed(reversed_, lengths))
        torch.testing.assert_close(bag(x, lengths), bag(reversed_, lengths))
        # a served sequence shorter than the training length is read as if zero-padded
        short = fixed(x[:1, :4], torch.tensor([4]))
        padded = torch.cat([x[:1, :4], torch.zeros(1, 2, 4)], dim=1)
        torch.testing.assert_close(short, fixed(padded, torch.tensor([4])))
        with pytest.raises(ValueError, match="trained on sequences of 6 steps; got one of 7"):
            fixed(torch.zeros(1, 7, 4), torch.tensor([7]))


def test_the_mlp_gives_each_step_its_own_output_on_a_fixed_length_per_step_task():
    net = VARIANTS["mlp"].build(tasks.get("sequence"), {**COPY, "fixed_length": 8}, HP).eval()
    x = torch.randint(2, 10, (2, 8), generator=torch.Generator().manual_seed(0))
    changed = x.clone()
    changed[:, 0] = (changed[:, 0] + 1) % 8 + 2
    with torch.no_grad():
        out, moved = net(x, torch.tensor([8, 8])), net(changed, torch.tensor([8, 8]))
    assert out.shape == (2, 8, 10)
    assert not torch.allclose(out[:, -1], moved[:, -1])  # the last step reads the first: one-to-one over all
    assert not torch.allclose(out[:, 0], out[:, 1])  # and steps differ: not one vector repeated
    refused = VARIANTS["mlp"].incompatibility(tasks.get("language-model"))
    assert refused == ("mlp reads the whole sequence at once, so on a language-model dataset it "
                       "would see the tokens it must predict")


def test_a_prepared_dataset_says_when_every_sequence_has_one_length(prepared):
    from flows.training import PreparedData

    assert PreparedData.load(prepared["copy-memory"][0]).data["fixed_length"] == 220
    assert PreparedData.load(prepared["adding"][0]).data["fixed_length"] == 200
    assert "fixed_length" not in PreparedData.load(prepared["japanese-vowels"][0]).data


# ---- every new form through a sweep, a leaderboard row and a logged model in a fresh process

FORMS = ["mlp", "cnn-lstm", "cnn-gru", "mingru", "minlstm", "birnn"]
PRESET = """
description = "every new form: 1 trial of 1 epoch, tiny widths"
datasets = ["japanese-vowels"]
[budget]
num_samples = 1
max_epochs = 1
max_concurrent_trials = 1
[space]
hidden_size = 8
num_layers = 1
dropout = 0.0
lr = 0.01
batch_size = 32
[variant_space.birnn]
merge = "sum"
nonlinearity = "relu"
[variant_space.cnn-lstm]
kernel = 3
stride = 2
channels = 8
[variant_space.cnn-gru]
kernel = 4
stride = 1
channels = 6
"""


@pytest.mark.slow
def test_every_new_form_reaches_a_leaderboard_row_and_a_model_served_in_a_fresh_process(
        prefect_harness, prepared, tmp_path):
    import mlflow
    import pandas as pd
    from mlflow.tracking import MlflowClient

    from datamodules.artifact import load_split, read_extra
    from flows.pipeline import benchmark

    preset = tmp_path / "forms.toml"
    preset.write_text(PRESET)
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    result = benchmark(preset_path=str(preset), variants=FORMS, experiment="forms", tracking_uri=uri)
    board = result["boards"]["japanese-vowels"].set_index("variant")
    assert set(FORMS) < set(board.index) and "(majority class)" in board.index
    assert board.loc[FORMS, "val/acc"].notna().all() and (board.loc[FORMS, "params"] > 0).all()

    runs = MlflowClient(uri).search_runs([result["experiment_id"]])
    assert {r.info.status for r in runs} == {"FINISHED"}
    sweeps = {r.data.tags["variant"]: r.info.run_id for r in runs if r.data.tags.get("rnnbench.role") == "sweep"}
    assert set(sweeps) == set(FORMS)

    artifact, _ = prepared["japanese-vowels"]
    scaler = read_extra(artifact, "scaler")
    test = load_split(artifact, "test")
    raw = [(s * np.array(scaler["std"]) + np.array(scaler["mean"])).tolist() for s in test.x[:4]]
    mlflow.set_tracking_uri(uri)
    here = {v: mlflow.pyfunc.load_model(f"runs:/{run}/model").predict(pd.DataFrame({"sequence": raw}))
            ["label"].tolist() for v, run in sweeps.items()}
    assert predict_elsewhere(uri, sweeps, raw, tmp_path, column="label") == here
