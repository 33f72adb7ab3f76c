"""Vanishing gradients made visible: the per-step input-gradient norms are the ones autograd
gives, for every variant, and a benchmark on a long-memory dataset logs their figure beside
its leaderboards without ever failing because of it."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest
import torch
from torch import nn

from flows.training import build_module
from modules import tasks, variants
from modules.sequence import SequenceModule

ADDING = {"task": "regression", "outputs": 1, "input_dim": 2, "vocab_size": 0, "fixed_length": 12}
COPY = {"task": "sequence", "num_classes": 10, "input_dim": 0, "vocab_size": 10, "fixed_length": 12}
HPARAMS = {"hidden_size": 8, "num_layers": 1, "dropout": 0.2, "lr": 1e-3, "nhead": 2, "ff_mult": 2,
           "batch_size": 4}


class LinearReadout(nn.Module):
    """out_b = sum_t w_t . x_{b,t}: dL/dx_{b,t} by hand, and no InputEmbedding (raw input)."""

    def __init__(self, steps: int, width: int):
        super().__init__()
        self.w = nn.Parameter(torch.randn(steps, width))

    def forward(self, x, lengths, y=None):
        return (x * self.w[: x.size(1)]).sum(dim=(1, 2))[:, None]


def test_linear_model_norms_match_the_hand_computed_gradient():
    torch.manual_seed(0)
    module = SequenceModule(LinearReadout(6, 3), tasks.get("regression"), {"outputs": 1})
    x, y = torch.randn(5, 6, 3), torch.randn(5, 1)
    lengths = torch.tensor([6, 6, 4, 6, 2])  # steps past a length count for no sequence
    x[2, 4:] = 0
    x[4, 2:] = 0
    norms = module.input_gradient_norms(x, lengths, y)
    # L = B * mean_b (out_b - y_b)^2, so dL/dx_{b,t} = 2 (out_b - y_b) w_t
    residual = 2 * ((x * module.net.w).sum(dim=(1, 2)) - y[:, 0]).abs()
    w_norm = module.net.w.detach().norm(dim=1)
    for t in range(6):
        reach = lengths > t
        assert norms[t].item() == pytest.approx((residual[reach] * w_norm[t]).mean().item(), rel=1e-5)


def test_lstm_norms_match_autograd_on_the_input_with_padding():
    torch.manual_seed(0)
    task = tasks.get("regression")
    module = build_module(variants.resolve("lstm"), task, task.resolved(HPARAMS), {**ADDING, "fixed_length": None})
    module.train()
    x, y = torch.rand(4, 12, 2), torch.rand(4, 1)
    lengths = torch.tensor([12, 7, 12, 3])
    norms = module.input_gradient_norms(x, lengths, y)
    assert module.training, "the module's mode is restored"
    assert all(p.grad is None for p in module.parameters()), "no parameter gradient is left behind"
    module.eval()
    leaf = x.clone().requires_grad_()
    (grad,) = torch.autograd.grad(task.loss(module(leaf, lengths), y) * 4, leaf)
    for t in range(12):
        reach = lengths > t
        assert norms[t].item() == pytest.approx(grad[reach, t].norm(dim=-1).mean().item(), rel=1e-4)
    assert norms[0] < norms[2], "a short sequence's late steps do not count; its early ones do"


# every variant that trains on each (a decoder produces no single target: the plan skips it)
@pytest.mark.parametrize("data,name", [
    pytest.param(data, name, id=f"{kind}-{name}")
    for kind, data in (("floats", ADDING), ("tokens", COPY)) for name in variants.BUILTIN
    if not variants.resolve(name).incompatibility(tasks.get(data["task"]))])
def test_every_variant_gives_a_finite_norm_per_input_step(name, data):
    torch.manual_seed(0)
    task = tasks.get(data["task"])
    module = build_module(variants.resolve(name), task, task.resolved(HPARAMS), data)
    if data["vocab_size"]:
        x, y = torch.randint(1, 10, (3, 12)), torch.randint(0, 10, (3, 12))
    else:
        x, y = torch.rand(3, 12, 2), torch.rand(3, 1)
    norms = module.input_gradient_norms(x, torch.tensor([12, 12, 12]), y)
    assert norms.shape == (12,) and torch.isfinite(norms).all() and (norms > 0).any()


def test_long_memory_datasets_ask_for_the_figure_and_others_do_not():
    from datamodules.builtin import DATASETS

    assert {n for n, s in DATASETS.items() if s.input_gradients} == {"adding", "copy-memory"}


def test_failures_become_warnings_never_errors(tmp_path, capsys, monkeypatch):
    from flows import gradients

    gradients.record("sqlite:///unused.db", "run-1", None, None)  # nothing to compute on
    board = pd.DataFrame([{"variant": "lstm", "run_id": "run-1", "note": None}])
    monkeypatch.setattr(gradients, "curves", lambda uri, board: {"lstm": [0.1, 0.2]})
    blocked = tmp_path / "not-a-folder"
    blocked.write_text("")  # the figure cannot be written below a file
    assert gradients.publish("sqlite:///unused.db", "run-1", {"adding": board}, ["adding"], blocked) == {}
    out = capsys.readouterr().out
    assert "input gradients not recorded" in out and "adding: input-gradient figure not made" in out


TINY_ADDING = """
description = "test preset: adding, 1 trial x 1 epoch, two variants"
datasets = ["adding"]
variants = ["rnn", "lstm"]
[budget]
num_samples = 1
max_epochs = 1
max_concurrent_trials = 1
cpus_per_trial = 1
seed = 0
[space]
hidden_size = 8
num_layers = 1
dropout = 0.0
lr = 5e-3
weight_decay = 0.0
batch_size = 32
grad_clip = 1.0
[dataset_params.adding]
length = 30
train_size = 64
val_size = 32
test_size = 32
"""


@pytest.mark.slow
def test_benchmark_on_adding_logs_the_figure_beside_its_leaderboards(prefect_harness, tmp_path):
    from mlflow.tracking import MlflowClient

    from flows import gradients
    from flows.pipeline import benchmark

    preset = tmp_path / "adding.toml"
    preset.write_text(TINY_ADDING)
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    result = benchmark(preset_path=str(preset), experiment="grads", tracking_uri=uri)
    client = MlflowClient(uri)
    logged = {a.path for a in client.list_artifacts(result["run_id"], "leaderboard")}
    assert "leaderboard/input_gradients-adding.png" in logged
    local = Path(client.download_artifacts(result["run_id"], "leaderboard/input_gradients-adding.png",
                                           str(tmp_path)))
    assert local.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert Path(result["reports"], "input_gradients-adding.png").is_file()
    for summary in result["sweeps"]:
        history = client.get_metric_history(summary["run_id"], gradients.METRIC)
        assert sorted(m.step for m in history) == list(range(30)), summary["variant"]
        assert all(m.value > 0 for m in history)
