"""GPU: training throughput of rnnbench's Ray-free ``flows.training.fit`` for LSTM, GRU and the
Transformer in fp32 and bf16 (Lightning's ``bf16-mixed``), against a raw ``nn.LSTM``/``nn.GRU``
+ linear head forward/backward/AdamW step of the same shape on batches already on the device;
and N training processes sharing one device against one.

For a bare GPU host: imports only torch, pytorch_lightning, torchmetrics, numpy and rnnbench's
modules/datamodules/flows.training (no Ray, MLflow or Prefect), makes its data in memory, and
finishes in minutes. ``--smoke`` runs it on the CPU in seconds with tiny sizes and 2 processes
(no target is meaningful there: the lines are printed, nothing is enforced).
"""

from __future__ import annotations

import logging
import time
import warnings

import numpy as np
import pytorch_lightning as pl
import torch
import torch.multiprocessing as mp
import torch.nn.functional as F
from torch import nn

from benchmarks.common import finish, parser, ratios, report, spread, timeit_interleaved
from datamodules.artifact import Split
from flows.training import PreparedData, fit
from modules import tasks
from modules.variants import VARIANTS

FEATURES, CLASSES, SEQ_LEN = 16, 5, 50
FULL = {"hidden": 256, "batch": 128, "n_train": 16384, "epochs": 3, "repeats": 3, "procs": 4}
SMOKE = {"hidden": 32, "batch": 32, "n_train": 256, "epochs": 2, "repeats": 1, "procs": 2}


def quiet() -> None:
    warnings.filterwarnings("ignore")
    for name in ("pytorch_lightning", "lightning", "lightning.pytorch"):
        logging.getLogger(name).setLevel(logging.ERROR)


def dataset(n: int, seed: int = 0) -> PreparedData:
    rng = np.random.default_rng(seed)

    def split(k: int) -> Split:
        x = rng.standard_normal((k, SEQ_LEN, FEATURES)).astype(np.float32)
        return Split(x=list(x), y=rng.integers(0, CLASSES, size=k).astype(np.int64))
    return PreparedData({"task": "classification", "num_classes": CLASSES, "input_dim": FEATURES},
                        {}, {"train": split(n), "val": split(8), "test": split(8)})


class EpochTimer(pl.Callback):
    """Seconds per training epoch (validation is switched off: throughput of training only)."""

    def __init__(self):
        self.epochs: list[float] = []
        self._start = 0.0

    def _sync(self, module) -> None:
        if module.device.type == "cuda":
            torch.cuda.synchronize(module.device)

    def on_train_epoch_start(self, trainer, pl_module) -> None:
        self._sync(pl_module)
        self._start = time.perf_counter()

    def on_train_epoch_end(self, trainer, pl_module) -> None:
        self._sync(pl_module)
        self.epochs.append(time.perf_counter() - self._start)


def fit_throughput(variant: str, data: PreparedData, cfg: dict, accelerator: str,
                   precision: str | None) -> float:
    """Samples per second of ``fit``'s training epochs after the first (warm-up) one."""
    hparams = {"hidden_size": cfg["hidden"], "num_layers": 1, "dropout": 0.0, "lr": 1e-3,
               "batch_size": cfg["batch"], **({"nhead": 4} if variant == "transformer" else {})}
    timer = EpochTimer()
    fit(hparams, data, VARIANTS[variant], tasks.get("classification"), max_epochs=cfg["epochs"],
        callbacks=[timer], accelerator=accelerator, precision=precision, threads=cfg.get("threads"),
        trainer_kwargs={"limit_val_batches": 0})
    steady = timer.epochs[1:] or timer.epochs
    return len(data.splits["train"].x) / float(np.median(steady))


class RawNet(nn.Module):
    def __init__(self, cell: str, hidden: int):
        super().__init__()
        self.rnn = getattr(nn, cell.upper())(FEATURES, hidden, batch_first=True)
        self.head = nn.Linear(hidden, CLASSES)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        _, state = self.rnn(x)
        h = state[0] if isinstance(state, tuple) else state
        return self.head(h[-1])


def raw_epoch(cell: str, data: PreparedData, cfg: dict, device: torch.device, precision: str | None):
    """One epoch of the bare network over the same training set, batches already on device."""
    torch.manual_seed(0)
    net = RawNet(cell, cfg["hidden"]).to(device)
    opt = torch.optim.AdamW(net.parameters(), lr=1e-3)
    train = data.splits["train"]
    x = torch.from_numpy(np.stack(train.x)).to(device)
    y = torch.from_numpy(train.y).to(device)
    batch = cfg["batch"]
    bf16 = precision == "bf16-mixed"

    def epoch() -> float:
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        start = time.perf_counter()
        order = torch.randperm(len(x), device=device)
        for i in range(0, len(x), batch):
            idx = order[i:i + batch]
            with torch.autocast(device.type, dtype=torch.bfloat16, enabled=bf16):
                loss = F.cross_entropy(net(x[idx]), y[idx])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        return len(x) / (time.perf_counter() - start)
    return epoch


def fit_vs_raw(cfg: dict, accelerator: str, device: torch.device, smoke: bool) -> tuple[float, dict]:
    data = dataset(cfg["n_train"])
    precisions = [None, "bf16-mixed"]
    results: dict[str, dict] = {}
    for precision in precisions:
        label = precision or "32-true"
        for variant in ("lstm", "gru", "transformer"):
            if smoke and precision and variant != "lstm":
                continue  # smoke: one tiny bf16 attempt is enough to prove the path
            key = f"{variant}/{label}"
            fit_rates: list[float] = []
            raw_rates: list[float] = []
            try:
                sides = {"fit": lambda: fit_rates.append(
                    fit_throughput(variant, data, cfg, accelerator, precision))}
                if variant != "transformer":
                    raw = raw_epoch(variant, data, cfg, device, precision)
                    sides["raw"] = lambda: raw_rates.append(raw())
                timeit_interleaved(sides, cfg["repeats"], warmup=0 if smoke else 1)
            except Exception as exc:  # e.g. bf16 RNN kernels missing on this device
                results[key] = {"error": f"{type(exc).__name__}: {exc}"[:300]}
                continue
            n = cfg["repeats"]
            entry = {"fit_samples_per_s": fit_rates[-n:]}
            if raw_rates:
                entry["raw_samples_per_s"] = raw_rates[-n:]
                entry["ratios"] = ratios(fit_rates[-n:], raw_rates[-n:])
                entry["ratio"] = spread(entry["ratios"])["median"]
            results[key] = entry
    compared = {k: v["ratio"] for k, v in results.items() if "ratio" in v}
    worst = min(compared, key=compared.get)
    return compared[worst], {"results": results, "worst": worst}


def _worker(rank: int, cfg: dict, accelerator: str, barrier, queue) -> None:
    quiet()
    data = dataset(cfg["n_train"], seed=rank)
    barrier.wait()  # imports and data are ready everywhere: time only the training
    start = time.time()
    fit_throughput("lstm", data, cfg, accelerator, None)
    queue.put((rank, start, time.time()))


def processes(n: int, cfg: dict, accelerator: str) -> float:
    """Samples per second of ``n`` concurrent training processes on one device, all together."""
    ctx = mp.get_context("spawn")
    barrier, queue = ctx.Barrier(n), ctx.Queue()
    procs = [ctx.Process(target=_worker, args=(r, cfg, accelerator, barrier, queue)) for r in range(n)]
    for p in procs:
        p.start()
    spans = [queue.get(timeout=600) for _ in procs]
    for p in procs:
        p.join()
        if p.exitcode:
            raise RuntimeError(f"a training process exited with {p.exitcode}")
    wall = max(end for _, _, end in spans) - min(start for _, start, _ in spans)
    return n * cfg["n_train"] * cfg["epochs"] / wall


def measure(smoke: bool) -> bool:
    """Both GPU benchmarks (on the CPU at tiny sizes when ``smoke``); print and save their lines."""
    quiet()
    gpu = torch.cuda.is_available() and not smoke
    accelerator, device = ("gpu", torch.device("cuda")) if gpu else ("cpu", torch.device("cpu"))
    cfg = dict(SMOKE if smoke else FULL)
    if not gpu:
        cfg["threads"] = 1
        torch.set_num_threads(1)
    where = torch.cuda.get_device_name(0) if gpu else "cpu"
    ok = []
    worst, raw = fit_vs_raw(cfg, accelerator, device, smoke)
    errors = [k for k, v in raw["results"].items() if "error" in v]
    note = f"on {where}; worst {raw['worst']}" + (f"; unsupported: {', '.join(errors)}" if errors else "")
    ok.append(report("gpu_fit_vs_raw", worst, ">=", 0.9, note, {"config": cfg, **raw}, smoke))

    n = cfg["procs"]
    single, many = [], []
    timeit_interleaved({"1": lambda: single.append(processes(1, cfg, accelerator)),
                        str(n): lambda: many.append(processes(n, cfg, accelerator))},
                       cfg["repeats"], warmup=0)
    per = ratios(many, single)
    s = spread(per)
    note = f"{n} processes vs 1 on {where}" + ("; smoke on CPU: no target applies" if not gpu else "")
    ok.append(report(f"gpu_processes_{n}_vs_1", s["median"], ">=", 2.5, note,
                     {"config": cfg, "single_samples_per_s": single, "many_samples_per_s": many,
                      "ratios": per, "spread": s}, smoke))
    return all(ok)


def main() -> None:
    args = parser(__doc__.splitlines()[0]).parse_args()
    finish(measure(args.smoke), args.smoke)


if __name__ == "__main__":
    main()
