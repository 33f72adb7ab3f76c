"""Time series into forecasting artifacts: chronological splits z-scored with training
statistics, windows of past steps paired with the next ``horizon`` steps of the target channel."""

from __future__ import annotations

from typing import Any

import numpy as np

from datamodules import scaling
from datamodules.artifact import Prepared, Split
from datamodules.errors import DataError


def make_windows(scaled: np.ndarray, start: int, stop: int, window: int, horizon: int,
                 target: int = 0) -> Split:
    """Windows of all channels whose forecast targets (channel ``target``) lie entirely in
    [start, stop); inputs may look back before ``start``."""
    first = max(start, window)
    targets = range(first, stop - horizon + 1)
    x = [scaled[t - window: t].astype(np.float32) for t in targets]
    y = (np.stack([scaled[t: t + horizon, target] for t in targets]).astype(np.float32) if x
         else np.zeros((0, horizon)))
    return Split(x, y, np.array(list(targets), dtype=np.int64))  # ids: first target step


def series_splits(name: str, values: np.ndarray, p: dict[str, Any], target: int = 0,
                  channels: list[str] | None = None) -> Prepared:
    """Chronological train/val/test windows of a (T,) or (T, C) series, each channel z-scored
    with training statistics; the forecast is of channel ``target``."""
    values = values.reshape(len(values), -1)
    window, horizon, season = p["window"], p["horizon"], p.get("season", 1)
    if season > window:
        raise DataError(f"{name}: season={season} must not exceed window={window}")
    n = len(values)
    train_end = int(n * (1 - p["val_fraction"] - p["test_fraction"]))
    val_end = int(n * (1 - p["test_fraction"]))
    if min(train_end - window, val_end - train_end, n - val_end) < horizon + 1:
        raise DataError(
            f"{name}: {n} values cannot hold window={window} plus horizon={horizon} in every "
            f"split (train, val and test hold {train_end}, {val_end - train_end} and "
            f"{n - val_end} steps); use a horizon of at most "
            f"{max(min(val_end - train_end, n - val_end) - 1, 0)} and a window of at most "
            f"{max(train_end - horizon - 1, 0)}")
    mean, std = values[:train_end].mean(axis=0), values[:train_end].std(axis=0)
    if std[target] == 0:
        raise DataError(f"{name}: the target is constant in the training split; nothing to forecast")
    std = np.where(std == 0, 1.0, std)  # a constant input channel stays 0 after scaling
    scaler = {"mean": mean.tolist(), "std": std.tolist()}
    scaled = scaling.apply(values, scaler)
    splits = {
        "train": make_windows(scaled, 0, train_end, window, horizon, target),
        "val": make_windows(scaled, train_end, val_end, window, horizon, target),
        "test": make_windows(scaled, val_end, n, window, horizon, target),
    }
    # MASE's denominator as Hyndman & Koehler (2006) define it: the in-sample MAE of the
    # (seasonal) one-step naive forecast on the training part, in the series' own units
    train_target = values[:train_end, target]
    naive_mae = float(np.abs(train_target[season:] - train_target[:-season]).mean())
    meta = {"horizon": horizon, "window": window, "input_dim": values.shape[1], "vocab_size": 0,
            "target_channel": target, "season": season,
            **({"mase_scale": naive_mae} if naive_mae > 0 else {})}
    extras = {"scaler": scaler}
    if channels:
        extras["channels"] = channels
    return Prepared(splits, meta, extras)
