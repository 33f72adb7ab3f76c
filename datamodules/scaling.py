"""Z-scoring with a stored scaler ({"mean": [...], "std": [...]}, one entry per channel): the
same arithmetic when an artifact is prepared and when a served model scales new input.

Imports only the standard library and numpy, so it can ship inside a logged model.
"""

from __future__ import annotations

from typing import Any

import numpy as np


def apply(x: Any, scaler: dict[str, Any]) -> np.ndarray:
    """``(x - mean) / std`` per channel (last axis), as float32.

    The arithmetic runs in float32 when ``x`` is float32 and in float64 otherwise, which is
    exactly what preparation did for frames (float32) and raw series (float64)."""
    x = np.asarray(x)
    dtype = np.float32 if x.dtype == np.float32 else np.float64
    x = x.astype(dtype, copy=False)
    mean = np.asarray(scaler["mean"], dtype=dtype)
    std = np.asarray(scaler["std"], dtype=dtype)
    return ((x - mean) / std).astype(np.float32, copy=False)


def invert(y: Any, scaler: dict[str, Any], channel: int = 0) -> np.ndarray:
    """Scaled values of one channel (e.g. a forecast of the target channel) back in raw units."""
    # plain floats, so float32 forecasts stay float32
    return np.asarray(y) * float(scaler["std"][channel]) + float(scaler["mean"][channel])
