"""Data path: how many batches per second rnnbench's DataModule delivers (per-sample tensors,
per-batch padding and collation; the train dataloader iterated fully, shuffled, no workers)
against how many training steps per second the model takes at shape (a): LSTM hidden 64,
batch 64, 50 steps x 16 features, forward + backward + AdamW step on one ready batch.
Ratio = data batches/s / model steps/s: above 1 the loader can keep up with training; the
target (>= 5) keeps its share of an epoch under about a sixth. One thread for both."""

from __future__ import annotations

import warnings

import numpy as np
import torch
import torch.nn.functional as F

from benchmarks.common import finish, parser, ratios, report, spread, timeit_interleaved
from datamodules.artifact import Split
from datamodules.datamodule import SequenceDataModule
from modules import tasks
from modules.variants import VARIANTS

BATCH, TARGET = 64, 5.0


def text_splits(n: int, rng: np.random.Generator) -> dict[str, Split]:
    """Token ids (vocab 5,000; 0 is padding), lengths 5 to 60, one label each."""
    def split(k: int) -> Split:
        lengths = rng.integers(5, 61, size=k)
        return Split(x=[rng.integers(1, 5000, size=int(t)).astype(np.int64) for t in lengths],
                     y=rng.integers(0, 4, size=k).astype(np.int64))
    return {"train": split(n), "val": split(BATCH), "test": split(BATCH)}


def series_splits(n: int, rng: np.random.Generator) -> dict[str, Split]:
    """Fixed windows of 120 steps x 1 feature, a 12-step horizon as the target."""
    def split(k: int) -> Split:
        walk = rng.standard_normal((k, 132, 1)).astype(np.float32).cumsum(axis=1)
        return Split(x=list(walk[:, :120]), y=walk[:, 120:, 0].copy())
    return {"train": split(n), "val": split(BATCH), "test": split(BATCH)}


def loader_epoch(splits: dict[str, Split]):
    dm = SequenceDataModule(splits=splits, batch_size=BATCH, seed=0)
    dm.setup("fit")
    loader = dm.train_dataloader()

    def epoch() -> int:
        n = 0
        for _ in loader:
            n += 1
        return n
    return epoch, len(loader)


def model_steps(steps: int):
    task = tasks.get("classification")
    data = {"task": "classification", "num_classes": 5, "input_dim": 16}
    torch.manual_seed(0)
    net = VARIANTS["lstm"].build(task, data, {"hidden_size": 64, "num_layers": 1, "dropout": 0.0})
    opt = torch.optim.AdamW(net.parameters(), lr=1e-3)
    x, lengths = torch.randn(BATCH, 50, 16), torch.full((BATCH,), 50, dtype=torch.int64)
    y = torch.randint(0, 5, (BATCH,))

    def run() -> None:
        for _ in range(steps):
            loss = F.cross_entropy(net(x, lengths), y)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
    return run


def measure(smoke: bool) -> bool:
    """Run both data sets against the model; print and save their lines."""
    warnings.filterwarnings("ignore")
    torch.set_num_threads(1)
    n, steps, repeats = (512, 4, 2) if smoke else (8192, 24, 9)
    rng = np.random.default_rng(0)
    text, text_batches = loader_epoch(text_splits(n, rng))
    series, series_batches = loader_epoch(series_splits(n, rng))
    times = timeit_interleaved({"text": text, "model": model_steps(steps), "series": series},
                               repeats)
    model_rate = [steps / t for t in times["model"]]
    ok = []
    for name, batches in (("text", text_batches), ("series", series_batches)):
        rate = [batches / t for t in times[name]]
        per = ratios(rate, model_rate)
        s = spread(per)
        note = (f"spread IQR {s['q1']:.2f}-{s['q3']:.2f} (n={s['n']}); {np.median(rate):.0f} "
                f"batches/s vs {np.median(model_rate):.0f} steps/s")
        raw = {"batch": BATCH, "samples": n, "batches_per_epoch": batches, "model_steps": steps,
               "data_epoch_s": times[name], "model_s": times["model"],
               "data_batches_per_s": rate, "model_steps_per_s": model_rate, "ratios": per,
               "spread": s, "threads": torch.get_num_threads()}
        ok.append(report(f"data_path_{name}", s["median"], ">=", TARGET, note, raw, smoke))
    return all(ok)


def main() -> None:
    args = parser(__doc__.splitlines()[0]).parse_args()
    finish(measure(args.smoke), args.smoke)


if __name__ == "__main__":
    main()
