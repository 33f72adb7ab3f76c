"""Bidirectional merge modes and the Elman RNN's relu with identity recurrence. The shared
shape, padding and causality checks run them too (tests/test_modules.py)."""

from __future__ import annotations

import pytest
import torch

from modules import tasks
from modules.variants import VARIANTS, VariantError

SPEECH = {"task": "classification", "num_classes": 3, "input_dim": 4, "vocab_size": 0}
HP = {"hidden_size": 8, "num_layers": 2, "dropout": 0.0}


def encoder(variant: str, data: dict = SPEECH, **hp):
    torch.manual_seed(0)
    return VARIANTS[variant].build(tasks.get(data["task"]), data, {**HP, **hp}).encoder.eval()


def frames(lengths=(9, 5, 1), dim=4, seed=0):
    x = torch.randn(len(lengths), max(lengths), dim, generator=torch.Generator().manual_seed(seed)) * 2
    for i, n in enumerate(lengths):
        x[i, n:] = 0.0
    return x, torch.tensor(lengths)


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
