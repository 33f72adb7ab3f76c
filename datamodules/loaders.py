"""Readers for the raw formats of the built-in datasets (vendored or the user's copy).

Each reader raises ``DataError`` naming the file and what is wrong with it.
"""

from __future__ import annotations

import bz2
import gzip
import io
from pathlib import Path

import numpy as np
import pandas as pd

from datamodules.errors import DataError


def _open_text(path: Path) -> io.TextIOBase:
    path = Path(path)
    if not path.is_file():
        raise DataError(f"data file not found: {path}")
    if path.suffix == ".gz":
        return io.TextIOWrapper(gzip.open(path, "rb"), encoding="utf-8")
    if path.suffix == ".bz2":
        return io.TextIOWrapper(bz2.open(path, "rb"), encoding="utf-8")
    return open(path, encoding="utf-8")


def read_ts(path: Path) -> tuple[list[np.ndarray], list[str]]:
    """Read a sktime/aeon ``.ts`` file: one multichannel series per line, label last.

    Returns the series as (T_i, channels) float32 arrays and the labels as strings.
    """
    series: list[np.ndarray] = []
    labels: list[str] = []
    in_data = False
    with _open_text(path) as fh:
        for lineno, raw in enumerate(fh, start=1):
            line = raw.strip()
            if not line or line.startswith("#"):
                continue
            if not in_data:
                if line.lower().startswith("@data"):
                    in_data = True
                continue
            *channels, label = line.split(":")
            if not channels:
                raise DataError(f"{path}:{lineno}: expected channels separated by ':' then a label")
            try:
                arr = np.array([[float(v) for v in ch.split(",")] for ch in channels],
                               dtype=np.float32).T
            except ValueError as exc:
                raise DataError(f"{path}:{lineno}: non-numeric value ({exc})") from None
            if not np.isfinite(arr).all():
                raise DataError(f"{path}:{lineno}: NaN or infinite value")
            series.append(arr)
            labels.append(label.strip())
    if not series:
        raise DataError(f"{path}: no series found (is there an @data line?)")
    return series, labels


def read_labelled_text(path: Path, text_col: str = "text", label_col: str = "category") -> pd.DataFrame:
    """Read a CSV of text snippets with a label column (compressed or not)."""
    try:
        with _open_text(path) as fh:
            frame = pd.read_csv(fh)
    except (pd.errors.EmptyDataError, pd.errors.ParserError, UnicodeDecodeError) as exc:
        raise DataError(f"{path}: cannot read as CSV ({exc})") from None
    missing = [c for c in (text_col, label_col) if c not in frame.columns]
    if missing:
        raise DataError(f"{path}: missing column(s) {missing}; columns are {list(frame.columns)}")
    return frame[[text_col, label_col]].rename(columns={text_col: "text", label_col: "label"})


def read_series(path: Path) -> np.ndarray:
    """Read a whitespace-separated numeric series (any shape, flattened in reading order)."""
    try:
        with _open_text(path) as fh:
            values = np.loadtxt(fh, dtype=np.float64).ravel()
    except ValueError as exc:
        raise DataError(f"{path}: non-numeric value ({exc})") from None
    if values.size == 0:
        raise DataError(f"{path}: empty series")
    if not np.isfinite(values).all():
        raise DataError(f"{path}: NaN or infinite value at index {int(np.argmin(np.isfinite(values)))}")
    return values


TABLE_SUFFIXES = (".csv", ".parquet", ".jsonl")


def decode_text(path: Path, encoding: str = "utf-8") -> str:
    """The whole file as text; a byte that is not ``encoding`` is named by line and offset."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"file not found: {path}")
    raw = path.read_bytes()
    if not raw.strip():
        raise DataError(f"{path}: the file is empty")
    try:
        return raw.decode(encoding)
    except LookupError:
        raise DataError(f"unknown encoding {encoding!r} (e.g. utf-8, latin-1, cp1252)") from None
    except UnicodeDecodeError as exc:
        line = raw[: exc.start].count(b"\n") + 1
        raise DataError(f"{path}:{line}: byte 0x{raw[exc.start]:02x} at offset {exc.start} is not "
                        f"valid {encoding}; re-save the file as UTF-8 or pass --encoding "
                        "(e.g. latin-1)") from None


def read_table(path: Path, encoding: str = "utf-8") -> pd.DataFrame:
    """A CSV, JSON Lines or Parquet file as a DataFrame; empty or unreadable files are named."""
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix not in TABLE_SUFFIXES:
        raise DataError(f"{path}: expected a {', '.join(TABLE_SUFFIXES)} file")
    try:
        if suffix == ".parquet":
            if not path.is_file():
                raise DataError(f"file not found: {path}")
            frame = pd.read_parquet(path)
        else:
            text = io.StringIO(decode_text(path, encoding))
            frame = pd.read_csv(text) if suffix == ".csv" else pd.read_json(text, lines=True)
    except (pd.errors.EmptyDataError, pd.errors.ParserError, ValueError, OSError) as exc:
        if isinstance(exc, DataError):
            raise
        raise DataError(f"{path}: cannot read as {suffix[1:]} ({str(exc).strip()})") from None
    if frame.empty:
        raise DataError(f"{path}: no rows")
    return frame


def require_columns(frame: pd.DataFrame, columns: list[str], path: Path) -> None:
    missing = [c for c in columns if c not in frame.columns]
    if missing:
        raise DataError(f"{path}: missing column(s) {missing}; the file has {list(frame.columns)}")
