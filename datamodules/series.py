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


def _bounds(n: int, p: dict[str, Any]) -> tuple[int, int]:
    """Where the training and validation parts of ``n`` steps end (chronological)."""
    return int(n * (1 - p["val_fraction"] - p["test_fraction"])), int(n * (1 - p["test_fraction"]))


def _fits(n: int, p: dict[str, Any]) -> bool:
    train_end, val_end = _bounds(n, p)
    return min(train_end - p["window"], val_end - train_end, n - val_end) >= p["horizon"] + 1


def _check_shape(name: str, p: dict[str, Any], calendar: int) -> None:
    if p.get("season", 1) > p["window"]:
        raise DataError(f"{name}: season={p.get('season', 1)} must not exceed window={p['window']}")
    if calendar and p["horizon"] > p["window"]:  # the head reads the forecast steps' calendar there
        raise DataError(f"{name}: with --calendar the horizon ({p['horizon']}) must not exceed "
                        f"the window ({p['window']})")


def series_splits(name: str, values: np.ndarray, p: dict[str, Any], target: int = 0,
                  channels: list[str] | None = None, calendar: int = 0) -> Prepared:
    """Chronological train/val/test windows of a (T,) or (T, C) series, each channel z-scored
    with training statistics; the forecast is of channel ``target``. The last ``calendar``
    channels (cyclic calendar encodings) are kept as they are."""
    values = values.reshape(len(values), -1)
    window, horizon, season = p["window"], p["horizon"], p.get("season", 1)
    _check_shape(name, p, calendar)
    n = len(values)
    train_end, val_end = _bounds(n, p)
    if not _fits(n, p):
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
    mean, std = _keep_calendar(mean, std, calendar)
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
            **({"mase_scale": naive_mae} if naive_mae > 0 else {}),
            **({"calendar_channels": calendar} if calendar else {})}
    extras = {"scaler": scaler}
    if channels:
        extras["channels"] = channels
    return Prepared(splits, meta, extras)


def _keep_calendar(mean: np.ndarray, std: np.ndarray, calendar: int) -> tuple[np.ndarray, np.ndarray]:
    """Calendar channels are sin/cos already: scaled by nothing, here or in window norm."""
    if calendar:
        mean, std = mean.astype(np.float64).copy(), std.astype(np.float64).copy()
        mean[-calendar:], std[-calendar:] = 0.0, 1.0
    return mean, std


def shortest(p: dict[str, Any]) -> int:
    """The fewest steps a series needs for a window and horizon in every split."""
    n = p["window"] + p["horizon"]
    while not _fits(n, p):
        n += 1
    return n


def panel_splits(name: str, series: list[tuple[str, np.ndarray]], p: dict[str, Any],
                 target: int = 0, channels: list[str] | None = None, calendar: int = 0) -> Prepared:
    """Many related series (``(key, (T_i, C) values)`` each) into one artifact for one global
    model: every series split chronologically on its own and z-scored with its own training
    statistics, so the loss weighs a series of thousands like a series of tens and the served
    model maps each forecast back to its series' units. Windows never cross two series; ids are
    (series index, first target step). A series too short for a window and horizon in every
    split, or constant in its training part, is skipped and named in the warnings."""
    window, horizon, season = p["window"], p["horizon"], p.get("season", 1)
    _check_shape(name, p, calendar)
    parts: dict[str, list] = {"train": [], "val": [], "test": []}
    kept: list[str] = []
    means, stds, scales = [], [], []
    short, constant = [], []
    for key, values in series:
        values = values.reshape(len(values), -1)
        n = len(values)
        if not _fits(n, p):
            short.append(f"{key} ({n} steps)")
            continue
        train_end, val_end = _bounds(n, p)
        mean, std = values[:train_end].mean(axis=0), values[:train_end].std(axis=0)
        if std[target] == 0:
            constant.append(str(key))
            continue
        mean, std = _keep_calendar(mean, np.where(std == 0, 1.0, std), calendar)
        scaled = scaling.apply(values, {"mean": mean, "std": std})
        index = len(kept)
        for split, (start, stop) in zip(parts, ((0, train_end), (train_end, val_end), (val_end, n))):
            windows = make_windows(scaled, start, stop, window, horizon, target)
            windows.ids = np.stack([np.full(len(windows.ids), index), windows.ids], axis=1)
            parts[split].append(windows)
        train_target = values[:train_end, target]
        naive_mae = float(np.abs(train_target[season:] - train_target[:-season]).mean())
        kept.append(str(key))
        means.append(mean.tolist())
        stds.append(std.tolist())
        scales.append(naive_mae if naive_mae > 0 else None)
    warnings = []
    if short:
        warnings.append(f"{len(short)} series too short for window={window} plus horizon={horizon} "
                        f"in every split (each needs at least {shortest(p)} steps), skipped: "
                        + ", ".join(short))
    if constant:
        warnings.append(f"{len(constant)} series constant in their training part, skipped: "
                        + ", ".join(constant))
    if not kept:
        raise DataError(f"{name}: no series can be used; " + "; ".join(warnings))
    splits = {}
    for split, pieces in parts.items():
        x = [w for piece in pieces for w in piece.x]
        y = np.concatenate([piece.y for piece in pieces]).astype(np.float32)
        ids = np.concatenate([piece.ids for piece in pieces]).astype(np.int64)
        splits[split] = Split(x, y, ids)
    meta = {"horizon": horizon, "window": window, "input_dim": int(series[0][1].reshape(
                len(series[0][1]), -1).shape[1]), "vocab_size": 0, "target_channel": target,
            "season": season, "n_series": len(kept),
            "series_skipped": short + [f"{key} (constant)" for key in constant],
            **({"calendar_channels": calendar} if calendar else {})}
    # per series: its scaler and MASE's in-sample seasonal naive MAE (Hyndman & Koehler)
    extras = {"series": {"names": kept, "mean": means, "std": stds, "mase_scale": scales}}
    if channels:
        extras["channels"] = channels
    return Prepared(splits, meta, extras, warnings=warnings)
