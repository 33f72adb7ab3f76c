"""A new task and a new variant are one table entry each: defined here, in this file only, they
reach a sweep, a leaderboard row beside their baseline, and a logged model that predicts in a
process where neither this repository nor this file is importable. A variant that cannot train
fails its own sweep only: the others run, the leaderboard says why, the benchmark fails."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from datamodules.artifact import Prepared, Split
from modules import tasks, variants
from modules.tasks import Task
from modules.variants import Variant

pytestmark = pytest.mark.slow
REPO = Path(__file__).resolve().parents[1]


@dataclass(frozen=True)
class AbsoluteSum(Task):
    """Toy task: regress the sum of each sequence's values, trained and scored by L1."""

    def output_size(self, data):
        return 1

    def loss(self, out, y):
        return (out - y).abs().mean()

    def metrics(self, data):
        from torchmetrics import MetricCollection
        from torchmetrics.regression import MeanAbsoluteError

        return MetricCollection({"l1": MeanAbsoluteError()})

    def baseline(self, train_y, data):
        from modules.baselines import Constant

        return Constant(torch.zeros(1))  # "always zero"

    def baseline_name(self, data):
        return "zero"

    def predictions(self, out, lengths, spec):
        import pandas as pd

        return pd.DataFrame({"sum": out[:, 0].numpy()})


class MeanEncoder(nn.Module):
    """Toy variant: a linear projection of each step, averaged over the valid steps."""

    def __init__(self, input_dim, vocab_size, hidden_size, num_layers, dropout):
        super().__init__()
        self.proj = nn.Linear(input_dim, hidden_size)
        self.output_dim = hidden_size

    def forward(self, x, lengths):
        h = self.proj(x)
        return h, h.sum(dim=1) / lengths[:, None].to(h.dtype)


class BrokenEncoder(MeanEncoder):
    def forward(self, x, lengths):
        raise RuntimeError("this encoder cannot train")


def _sums(files, p) -> Prepared:
    rng = np.random.default_rng(p["seed"])

    def split(n):
        x = [rng.normal(size=(int(rng.integers(3, 9)), 1)).astype(np.float32) for _ in range(n)]
        return Split(x, np.array([[s.sum()] for s in x], dtype=np.float32), np.arange(n))

    return Prepared({"train": split(256), "val": split(64), "test": split(64)},
                    {"input_dim": 1, "vocab_size": 0}, {})


TASK = tasks.register(AbsoluteSum("absolute-sum", monitor="l1", mode="min", reported=("l1",)))
TOY = variants.register(Variant(name="toy-mean", encoder=f"{__name__}:MeanEncoder", builtin=False, extras=()))
BROKEN = variants.register(Variant(name="toy-broken", encoder=f"{__name__}:BrokenEncoder", builtin=False,
                                   extras=()))


@pytest.fixture(scope="module")
def toy_dataset():
    # registered here, not at import: a served model imports this module for its task and
    # variant, and needs none of the catalogue for that
    from datamodules import catalog
    from datamodules.specs import DatasetSpec

    if "toy-sums" not in catalog.available():
        catalog.register_dataset(DatasetSpec(name="toy-sums", modality="synthetic", task="absolute-sum",
                                             description="sums of random sequences", folder="",
                                             files=(), build=_sums, defaults={"seed": 3}))

PRESET = """
description = "toy task and variant"
datasets = ["toy-sums"]
[budget]
num_samples = 1
max_epochs = 3
max_concurrent_trials = 1
[space]
hidden_size = 8
num_layers = 1
dropout = 0.0
lr = 0.02
batch_size = 32
"""


def test_a_task_and_a_variant_defined_in_a_test_reach_sweep_leaderboard_and_served_model(
        prefect_harness, toy_dataset, tmp_path):
    from flows.pipeline import IncompleteBenchmark, benchmark

    preset = tmp_path / "toy.toml"
    preset.write_text(PRESET)
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    with pytest.raises(IncompleteBenchmark) as failed:
        benchmark(preset_path=str(preset), variants=["gru"], extra_variants=["toy-mean", "toy-broken"],
                  experiment="toy", tracking_uri=uri, home=str(tmp_path / "home"))
    result = failed.value.result
    board = result["boards"]["toy-sums"]
    ranked = board["variant"].tolist()
    assert set(ranked[:2]) == {"gru", "toy-mean"} and ranked[2:] == ["toy-broken", "(zero)"]
    assert "this encoder cannot train" in board.set_index("variant").loc["toy-broken", "note"]
    baseline = board.set_index("variant").loc["(zero)", "test/l1"]
    assert board.set_index("variant").loc["toy-mean", "test/l1"] < baseline
    assert [(d, v) for d, v, _ in result["failures"]] == [("toy-sums", "toy-broken")]

    from mlflow.tracking import MlflowClient

    client = MlflowClient(uri)
    runs = client.search_runs([result["experiment_id"]])
    status = {(r.data.tags.get("rnnbench.role"), r.data.tags.get("variant")): r.info.status for r in runs}
    assert status[("sweep", "toy-broken")] == "FAILED" and status[("sweep", "toy-mean")] == "FINISHED"
    assert status[("benchmark", None)] == "FAILED"
    assert not [r for r in runs if r.info.status == "RUNNING"]

    sweep = next(r for r in runs if r.data.tags.get("rnnbench.role") == "sweep"
                 and r.data.tags["variant"] == "toy-mean")
    # a fresh process, outside the repository, with the repository taken off sys.path: the
    # model must bring this file and rnnbench's modules as its own code
    script = f"""
import sys
sys.path = [p for p in sys.path if p.rstrip('/') != {str(REPO)!r} and p not in ('', '.')]
import json, mlflow, pandas as pd
for name in ('tests', 'modules', 'datamodules', 'flows'):
    try:
        __import__(name); raise SystemExit(name + ' is importable: the test would prove nothing')
    except ImportError:
        pass
mlflow.set_tracking_uri({uri!r})
model = mlflow.pyfunc.load_model('runs:/{sweep.info.run_id}/model')
out = model.predict(pd.DataFrame({{'sequence': [[[1.0], [2.0], [3.5]], [[-1.0], [0.5]]]}}))
print(json.dumps(out['sum'].tolist()))
"""
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, cwd=tmp_path,
                          env=env, timeout=300)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-3000:]
    served = json.loads(proc.stdout.strip().splitlines()[-1])
    assert len(served) == 2 and all(np.isfinite(served))
