"""Calendar features from timestamps: cyclic (sin, cos) encodings of the hour of day, the day of
week and the month, the same arithmetic when an artifact is prepared and when a served model
reads raw timestamps. Imports only numpy and pandas, so it can ship inside a logged model.

Each window step carries two blocks: the calendar of its own time, and the calendar of the time
``horizon`` steps later. The last ``horizon`` steps of a window thus hold the calendar of the
forecast steps, which the forecasting head reads beside the encoder's summary.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np
import pandas as pd

from datamodules.errors import DataError

# name -> (position in its cycle as a fraction in [0, 1), what the cycle is)
FEATURES = {
    "hour": (lambda t: (t.hour + t.minute / 60 + t.second / 3600) / 24, "hour of day"),
    "dow": (lambda t: t.dayofweek / 7, "day of week (Monday 0)"),
    "month": (lambda t: (t.month - 1) / 12, "month of year (January 0)"),
}


def parse(spec: str | Sequence[str] | None) -> list[str]:
    """``"hour,dow"`` -> ["hour", "dow"], each known, in the order given, no repeats."""
    if not spec:
        return []
    names = [s.strip() for s in (spec.split(",") if isinstance(spec, str) else spec) if s.strip()]
    unknown = [n for n in names if n not in FEATURES]
    if unknown or len(set(names)) != len(names):
        raise DataError(f"--calendar takes a comma-separated list of {', '.join(FEATURES)} "
                        f"(each once); got {spec!r}")
    return names


def encode(times, features: Sequence[str]) -> np.ndarray:
    """(T, 2 * len(features)): sin and cos of each feature's phase, feature by feature."""
    t = pd.DatetimeIndex(times)
    cols = []
    for name in features:
        phase = 2 * np.pi * np.asarray(FEATURES[name][0](t), dtype=np.float64)
        cols += [np.sin(phase), np.cos(phase)]
    return np.stack(cols, axis=-1) if cols else np.zeros((len(t), 0))


def channels(times, features: Sequence[str], freq: str, horizon: int) -> np.ndarray:
    """(T, 4 * len(features)): each step's own calendar, then that of ``horizon`` steps later."""
    t = pd.DatetimeIndex(times)
    later = t + int(horizon) * pd.tseries.frequencies.to_offset(freq)
    return np.concatenate([encode(t, features), encode(later, features)], axis=-1)


def names(features: Sequence[str]) -> list[str]:
    """Channel names in the order ``channels`` lays them out."""
    own = [f"{n}_{f}" for n in features for f in ("sin", "cos")]
    return own + [f"{c}_at_horizon" for c in own]
