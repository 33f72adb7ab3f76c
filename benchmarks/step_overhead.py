"""Step overhead: an epoch through rnnbench's own training path (``flows.training.fit``: its
LightningModule, DataModule, the task table's metrics and an MLflow logger on a local sqlite
store, as a Tune trial configures them, minus Ray) against a minimal hand-written PyTorch loop
on the same tensors, network, batch size, thread count, optimizer and metrics.

Both sides train one epoch and then run one validation pass over the same validation split,
computing loss mean, accuracy and macro-F1 with torchmetrics (updated per batch, computed once
per epoch). The hand loop's epoch runs inside a callback at the start of every Lightning epoch,
so the two alternate (H L H L ...) in one process under the same load; a Lightning epoch is the
time from the end of one hand epoch to the start of the next: its data loading, training,
validation, metric computation and MLflow logging. One-off costs per fit (building the trainer,
creating the MLflow run) are left out of both and reported separately in the JSON.
Not included: Ray Tune's report-and-checkpoint callback (it needs a Tune session; a real trial
also writes a checkpoint each validation epoch) and ``LogParams`` (once per fit, not per epoch).
"""

from __future__ import annotations

import logging
import tempfile
import time
import warnings
from dataclasses import dataclass

import numpy as np
import pytorch_lightning as pl
import torch
import torch.nn.functional as F
from torchmetrics import MeanMetric

from benchmarks.common import finish, parser, ratios, report, spread
from datamodules.artifact import Split
from flows.training import PreparedData, fit
from modules import tasks
from modules.variants import VARIANTS

SEQ_LEN, FEATURES, CLASSES, LR = 50, 16, 5, 1e-3


@dataclass(frozen=True)
class Shape:
    name: str
    variant: str
    hidden: int
    batch: int
    target: float
    extra: tuple = ()


SHAPES = (
    Shape("step_overhead_lstm_h64_b64", "lstm", 64, 64, 1.05),
    Shape("step_overhead_lstm_h256_b128", "lstm", 256, 128, 1.05),
    Shape("step_overhead_transformer_h64_b64", "transformer", 64, 64, 1.10, (("nhead", 4),)),
)


def synthetic(n: int, seed: int) -> Split:
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((n, SEQ_LEN, FEATURES)).astype(np.float32)
    y = (x[:, :, 0].mean(axis=1) > 0).astype(np.int64) + 2 * (x[:, :, 1].mean(axis=1) > 0)
    return Split(x=list(x), y=y.astype(np.int64))


class HandLoop:
    """The minimal loop: pre-stacked tensors, a random permutation per epoch, AdamW, the same
    torchmetrics objects the task table builds, computed once per epoch."""

    def __init__(self, shape: Shape, hparams: dict, data: dict, splits: dict[str, Split], seed: int):
        self.task = tasks.get("classification")
        torch.manual_seed(seed)
        self.net = VARIANTS[shape.variant].build(self.task, data, hparams)
        self.opt = torch.optim.AdamW(self.net.parameters(), lr=LR, weight_decay=0.0)
        self.batch = shape.batch
        self.train = self._stack(splits["train"])
        self.val = self._stack(splits["val"])
        self.metrics = {s: self.task.metrics(data) for s in ("train", "val")}
        self.loss = {s: MeanMetric() for s in ("train", "val")}
        self.generator = torch.Generator().manual_seed(seed)
        self.last: dict[str, float] = {}

    @staticmethod
    def _stack(split: Split):
        x = torch.from_numpy(np.stack(split.x))
        return x, torch.full((len(x),), x.size(1), dtype=torch.int64), torch.from_numpy(split.y)

    def _pass(self, stage: str, order: torch.Tensor) -> None:
        x, lengths, y = self.train if stage == "train" else self.val
        metrics, loss_mean = self.metrics[stage], self.loss[stage]
        for start in range(0, len(order), self.batch):
            idx = order[start:start + self.batch]
            xb, lb, yb = x[idx], lengths[idx], y[idx]
            out = self.net(xb, lb)
            loss = F.cross_entropy(out, yb)
            if stage == "train":
                self.opt.zero_grad(set_to_none=True)
                loss.backward()
                self.opt.step()
            metrics.update(out.detach(), yb)
            loss_mean.update(loss.detach())
        self.last.update({f"{stage}/{k}": float(v) for k, v in metrics.compute().items()})
        self.last[f"{stage}/loss"] = float(loss_mean.compute())
        metrics.reset()
        loss_mean.reset()

    def epoch(self) -> None:
        self.net.train()
        self._pass("train", torch.randperm(len(self.train[0]), generator=self.generator))
        self.net.eval()
        with torch.inference_mode():  # what Lightning's validation loop uses
            self._pass("val", torch.arange(len(self.val[0])))


class Interleave(pl.Callback):
    """Runs one hand epoch at the start of every Lightning epoch and times both."""

    def __init__(self, hand: HandLoop):
        self.hand = hand
        self.lightning: list[float] = []
        self.hand_times: list[float] = []
        self.mark: float | None = None
        self.fit_start = time.perf_counter()
        self.setup_s: float | None = None

    def on_train_epoch_start(self, trainer, pl_module) -> None:
        now = time.perf_counter()
        if self.mark is None:
            self.setup_s = now - self.fit_start
        else:
            self.lightning.append(now - self.mark)
        start = time.perf_counter()
        self.hand.epoch()
        self.hand_times.append(time.perf_counter() - start)
        self.mark = time.perf_counter()


def run_shape(shape: Shape, repeats: int, n_train: int, n_val: int, store: str, smoke: bool) -> bool:
    from pytorch_lightning.loggers import MLFlowLogger

    torch.set_num_threads(1)
    splits = {"train": synthetic(n_train, 0), "val": synthetic(n_val, 1), "test": synthetic(n_val, 2)}
    dataset = PreparedData({"task": "classification", "num_classes": CLASSES, "input_dim": FEATURES},
                           {}, splits)
    hparams = {"hidden_size": shape.hidden, "num_layers": 1, "dropout": 0.0, "lr": LR,
               "batch_size": shape.batch, **dict(shape.extra)}
    hand = HandLoop(shape, hparams, dataset.data, splits, seed=0)
    warmup = 1
    logger = MLFlowLogger(experiment_name="bench-step-overhead", run_name=shape.name,
                          tracking_uri=f"sqlite:///{store}/mlflow.db",
                          artifact_location=f"{store}/artifacts")
    timer = Interleave(hand)
    # +1: the last hand epoch has no Lightning epoch after it to pair with
    result = fit(hparams, dataset, VARIANTS[shape.variant], tasks.get("classification"),
                 max_epochs=warmup + repeats + 1, seed=0, callbacks=[timer], logger=logger,
                 threads=1)
    light = timer.lightning[warmup:]
    hand_t = timer.hand_times[warmup:len(timer.lightning)]
    per = ratios(light, hand_t)
    s = spread(per)
    batches = -(-n_train // shape.batch) + -(-n_val // shape.batch)
    note = (f"spread IQR {s['q1']:.3f}-{s['q3']:.3f} (n={s['n']}); "
            f"epoch {np.median(light) * 1e3:.0f} ms vs {np.median(hand_t) * 1e3:.0f} ms, "
            f"{batches} batches incl. validation")
    raw = {"shape": {"variant": shape.variant, "hidden": shape.hidden, "batch": shape.batch,
                     "seq_len": SEQ_LEN, "features": FEATURES, "classes": CLASSES,
                     "n_train": n_train, "n_val": n_val, **dict(shape.extra)},
           "threads": torch.get_num_threads(), "warmup_epochs_dropped": warmup,
           "includes": "train epoch + validation pass + metric compute; Lightning side also its "
                       "DataModule collation and MLflow (sqlite) epoch logging",
           "rnnbench_epoch_s": light, "hand_epoch_s": hand_t, "ratios": per, "spread": s,
           "rnnbench_fit_setup_s": timer.setup_s,
           "last_metrics": {"rnnbench": result.metrics, "hand": hand.last}}
    return report(shape.name, s["median"], "<=", shape.target, note, raw, smoke)


def measure(smoke: bool) -> bool:
    """Run every shape; print and save their lines."""
    warnings.filterwarnings("ignore")
    logging.getLogger("pytorch_lightning").setLevel(logging.ERROR)
    logging.getLogger("lightning").setLevel(logging.ERROR)
    import mlflow  # noqa: F401  (configures its own logger on import; quieted below)

    for name in ("alembic", "mlflow"):
        logging.getLogger(name).setLevel(logging.ERROR)
    repeats, n_train, n_val = (2, 256, 128) if smoke else (15, 2048, 512)
    # one throwaway tracking store for all shapes, like a sweep's trials sharing one
    with tempfile.TemporaryDirectory(prefix="rnnbench-bench-") as store:
        ok = [run_shape(shape, repeats, n_train, n_val, store, smoke) for shape in SHAPES]
    return all(ok)


def main() -> None:
    args = parser(__doc__.splitlines()[0]).parse_args()
    finish(measure(args.smoke), args.smoke)


if __name__ == "__main__":
    main()
