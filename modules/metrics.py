"""Metrics torchmetrics lacks, written as torchmetrics objects so Lightning computes, syncs and
resets them like the rest."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torchmetrics import Metric


class BitsPerStep(Metric):
    """Mean cross-entropy in bits over the counted steps (targets equal to ``ignore_index`` are
    padding); per character for a character language model."""

    higher_is_better = False
    full_state_update = False

    def __init__(self, ignore_index: int = -100, **kwargs):
        super().__init__(**kwargs)
        self.ignore_index = ignore_index
        self.add_state("bits", default=torch.tensor(0.0, dtype=torch.float64), dist_reduce_fx="sum")
        self.add_state("count", default=torch.tensor(0, dtype=torch.int64), dist_reduce_fx="sum")

    def update(self, logits: torch.Tensor, target: torch.Tensor) -> None:
        nats = F.cross_entropy(logits.float(), target, ignore_index=self.ignore_index, reduction="sum")
        self.bits += nats.double() / math.log(2)
        self.count += (target != self.ignore_index).sum()

    def compute(self) -> torch.Tensor:
        return (self.bits / self.count.clamp(min=1)).float()


class NaiveRelativeMAE(Metric):
    """Relative MAE: the forecasts' MAE divided by the naive forecast's MAE on the same windows
    and steps (below 1 beats it there). Not MASE, whose denominator is fixed in-sample."""

    higher_is_better = False
    full_state_update = False

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.add_state("abs_err", default=torch.tensor(0.0, dtype=torch.float64), dist_reduce_fx="sum")
        self.add_state("naive_err", default=torch.tensor(0.0, dtype=torch.float64), dist_reduce_fx="sum")

    def update(self, preds: torch.Tensor, target: torch.Tensor, naive: torch.Tensor) -> None:
        self.abs_err += (preds - target).abs().sum().double()
        self.naive_err += (naive - target).abs().sum().double()

    def compute(self) -> torch.Tensor:
        return (self.abs_err / self.naive_err).float()


class MeanAbsoluteScaledError(Metric):
    """MASE (Hyndman & Koehler 2006): the MAE divided by ``scale``, the in-sample MAE of the
    (seasonal) one-step naive forecast on the training part. Below 1: better than that naive
    forecast was on the data the model learned from. NaN when the dataset has no scale."""

    higher_is_better = False
    full_state_update = False

    def __init__(self, scale: float | None, **kwargs):
        super().__init__(**kwargs)
        self.scale = float(scale) if scale else float("nan")
        self.add_state("abs_err", default=torch.tensor(0.0, dtype=torch.float64), dist_reduce_fx="sum")
        self.add_state("count", default=torch.tensor(0, dtype=torch.int64), dist_reduce_fx="sum")

    def update(self, preds: torch.Tensor, target: torch.Tensor) -> None:
        self.abs_err += (preds - target).abs().sum().double()
        self.count += target.numel()

    def compute(self) -> torch.Tensor:
        return (self.abs_err / self.count.clamp(min=1) / self.scale).float()


def per_series_scores(forecast, target, naive, series, std, mase_scale) -> tuple[list[dict], dict]:
    """Forecasts of many series scored per series in each one's own units, and aggregated.

    ``forecast``, ``target``, ``naive``: (N, horizon) in the series' scaled units; ``series``:
    (N,) the series index of each window; ``std``: each series' target scale; ``mase_scale``:
    each series' in-sample seasonal naive MAE (None where it has none). Returns one row per
    series with windows (mae, naive_mae, mase, rel_mae, beats_naive) and the aggregates: the mean
    MAE and mean MASE over series and the share of series where the forecast's MAE is below
    the naive forecast's on the same windows."""
    import numpy as np

    rows = []
    for s in np.unique(series):
        pick = series == s
        scale = float(std[s])
        mae = float(np.abs(forecast[pick] - target[pick]).mean()) * scale
        naive_mae = float(np.abs(naive[pick] - target[pick]).mean()) * scale
        denom = mase_scale[s]
        rows.append({"series": int(s), "windows": int(pick.sum()), "mae": mae, "naive_mae": naive_mae,
                     "mase": mae / denom if denom else float("nan"),
                     "rel_mae": mae / naive_mae if naive_mae > 0 else float("nan"),
                     "beats_naive": bool(mae < naive_mae)})
    mases = [r["mase"] for r in rows if r["mase"] == r["mase"]]
    aggregates = {"series_mae": float(np.mean([r["mae"] for r in rows])) if rows else float("nan"),
                  "series_mase": float(np.mean(mases)) if mases else float("nan"),
                  "beats_naive": float(np.mean([r["beats_naive"] for r in rows])) if rows else float("nan")}
    return rows, aggregates
