"""The user's own datasets: how each kind of file is read and checked, and the registry
(``<data_root>/registry.json``) that makes a registered name usable like a built-in one
(``catalog.register`` prepares the data, then ``record`` writes the entry).

A registered dataset is a snapshot: its artifact stays usable when the source file later
changes, breaks or disappears; registering the same name again replaces it only on success.
"""

from __future__ import annotations

import json
import logging
import os
import re
import tempfile
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from datamodules import calendar
from datamodules.artifact import Prepared, Split
from datamodules.audio import AUDIO_EXTENSIONS, build_audio
from datamodules.builtin import DATASETS
from datamodules.errors import DataError
from datamodules.loaders import decode_text, read_table, require_columns
from datamodules.series import panel_splits, series_splits
from datamodules.specs import DatasetSpec
from datamodules.splits import (check_classes, duplicate_counts, duplicate_keys, labelled_splits,
                               standardize, stratified_indices)
from datamodules.text import TOKEN_PATTERN, WORD_PATTERN, Tokenizer, build_vocab, language_model_splits

log = logging.getLogger("rnnbench.data")

REGISTRY = "registry.json"
NAME = re.compile(r"^[a-z0-9][a-z0-9._-]{0,63}$")
KINDS = ("timeseries", "text", "audio", "sequences")
_SPLIT = {"val_fraction": 0.1, "test_fraction": 0.2, "seed": 17}
DEFAULTS: dict[str, dict[str, Any]] = {
    "timeseries": {"target": "", "time_column": "", "window": 48, "horizon": 12, "season": 1,
                   "val_fraction": 0.15, "test_fraction": 0.15, "on_missing": "error",
                   "id_column": "", "calendar": "", "resample": ""},
    "text": {"text_column": "text", "label_column": "label", "max_len": 64, "on_long": "truncate",
             "max_vocab": 20000, "min_freq": 2, "encoding": "utf-8", **_SPLIT},
    "text-lm": {"level": "char", "seq_len": 128, "max_vocab": 20000, "min_freq": 1,
                "encoding": "utf-8", "val_fraction": 0.05, "test_fraction": 0.05},
    "audio": {"sample_rate": 16000, "features": "logmel", "n_mels": 40, "n_mfcc": 20,
              "max_frames": 1000, "on_long": "truncate", "group_pattern": "", **_SPLIT},
    "sequences": {"task": "auto", "max_len": 1000, "on_long": "truncate", **_SPLIT},
}
CHOICES = {"on_missing": ("error", "interpolate"), "on_long": ("truncate", "error"),
           "level": ("char", "word"), "task": ("auto", "classification", "regression"),
           "features": ("logmel", "mfcc")}


def _option(key: str) -> str:
    return "--" + key.replace("_", "-")


def _check_choices(p: dict[str, Any]) -> None:
    for key, valid in CHOICES.items():
        if key in p and p[key] not in valid:
            raise DataError(f"{_option(key)} must be one of {', '.join(valid)}; got {p[key]!r}")
    for key in ("val_fraction", "test_fraction"):
        if key in p and not 0 < p[key] < 0.5:
            raise DataError(f"{_option(key)} must be between 0 and 0.5, got {p[key]}")


def _too_long(n: int, p: dict[str, Any], limit_key: str, where: str, truncated: list[str]) -> bool:
    """True when an example must be cut to ``p[limit_key]``; raises when on_long=error."""
    if n <= p[limit_key]:
        return False
    if p["on_long"] == "error":
        raise DataError(f"{where}: length {n} exceeds {_option(limit_key)} {p[limit_key]} "
                        "(pass --on-long truncate to cut it)")
    truncated.append(where)
    return True


def _truncation_warning(truncated: list[str], limit: int) -> list[str]:
    if not truncated:
        return []
    message = (f"{len(truncated)} example(s) longer than {limit} were truncated "
               f"(first: {truncated[0]})")
    log.warning(message)
    return [message]


# ---------------------------------------------------------------- time series

def build_timeseries(files: dict[str, Path], p: dict[str, Any]) -> Prepared:
    """A CSV/Parquet with an optional time column and numeric value columns; forecast ``target``.
    With ``id_column``: long format, many related series (one per id) for one global model."""
    (path,) = files.values()
    frame = read_table(path)
    time_col, id_col = p.get("time_column", ""), p.get("id_column", "")
    features = calendar.parse(p.get("calendar", ""))
    if not p["target"]:
        raise DataError(f"{path}: name the column to forecast with --target; columns are "
                        f"{list(frame.columns)}")
    if (features or p.get("resample")) and not time_col:
        raise DataError(f"{path}: --calendar and --resample read the time column: pass --time-column")
    require_columns(frame, [p["target"]] + [c for c in (time_col, id_col) if c], path)
    if id_col and frame[id_col].isna().any():
        row = int(np.flatnonzero(frame[id_col].isna())[0])
        raise DataError(f"{path}: row {row + 2}: column {id_col!r} (the series id) is empty")
    groups = ([(str(k), g) for k, g in frame.groupby(id_col, sort=True)] if id_col
              else [("", frame)])
    notes: dict[str, list[str]] = {}
    series, freqs = [], {}
    for key, part in groups:
        where = f"{path}: series {key!r}" if id_col else str(path)
        values, columns, times, freq = _series_values(part.drop(columns=[id_col]) if id_col else part,
                                                      where, p, notes, key)
        if times is not None and features:
            values = np.concatenate([values, calendar.channels(times, features, freq, p["horizon"])], axis=1)
        series.append((key, values))
        freqs[key] = freq
    if time_col and not p.get("resample"):
        known = {k: f for k, f in freqs.items() if f}
        if len(set(known.values())) > 1:
            (a, fa), (b, fb) = list(known.items())[0], next(
                kv for kv in known.items() if kv[1] != next(iter(known.values())))
            raise DataError(f"{path}: series step at different frequencies ({a!r} every {fa}, "
                            f"{b!r} every {fb}); pass --resample FREQ to bring them to one")
    freq = p.get("resample") or next((f for f in freqs.values() if f), "")
    if features and not freq:
        raise DataError(f"{path}: cannot tell the time column's frequency (too few rows); "
                        "pass --resample FREQ")
    cal = 4 * len(features)
    names = columns + (calendar.names(features) if features else [])
    target = columns.index(p["target"])
    if id_col:
        prepared = panel_splits(str(path), series, p, target, names, calendar=cal)
    else:
        prepared = series_splits(str(path), series[0][1], p, target, names, calendar=cal)
    if features:
        prepared.meta.update({"calendar": features, "freq": freq})
        prepared.extras["calendar"] = {"features": features, "freq": freq,
                                       "time_column": time_col, "horizon": p["horizon"]}
    elif freq:
        prepared.meta["freq"] = freq
    for message in _summarise(notes, bool(id_col)):
        log.warning(message)
        prepared.warnings.append(message)
    return prepared


def _summarise(notes: dict[str, list[str]], many: bool) -> list[str]:
    """One warning per kind of note, naming the first few series it concerns."""
    out = []
    for message, keys in notes.items():
        if many:
            shown = ", ".join(repr(k) for k in keys[:5]) + (f" and {len(keys) - 5} more" if len(keys) > 5 else "")
            message = f"{message} (series {shown})"
        out.append(message)
    return out


def _frequency(times: pd.DatetimeIndex, where: str, col: str) -> str:
    """The time column's step as a pandas frequency; one clear error at the first uneven gap."""
    if len(times) < 3:
        return ""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # pandas 3 announces infer_freq returning an offset
        found = pd.infer_freq(times)
    if found is not None:
        return getattr(found, "freqstr", found)
    diffs = times[1:] - times[:-1]
    step = pd.Series(diffs).mode().iloc[0]
    first = int(np.flatnonzero(diffs != step)[0])
    if step % pd.Timedelta(days=1) == pd.Timedelta(0):
        hint = f"{step.days}D"  # "1D" reads better than pandas' "24h"
    else:
        try:
            hint = pd.tseries.frequencies.to_offset(step).freqstr
        except ValueError:
            hint = "1h"
    raise DataError(f"{where}: the time column {col!r} is not evenly spaced: {times[first]} is "
                    f"followed by {times[first + 1]} (a step of {diffs[first]}) where most steps "
                    f"are {step}; pass --resample FREQ (e.g. --resample {hint}) to resample to "
                    "that frequency (values averaged within each step, empty steps treated as "
                    "missing: see --on-missing)")


def _series_values(frame: pd.DataFrame, where: str, p: dict[str, Any], notes: dict[str, list[str]],
                   key: str) -> tuple[np.ndarray, list[str], pd.DatetimeIndex | None, str]:
    """One series' checked numeric values (T, C), its column names, its times and frequency."""
    time_col = p.get("time_column", "")
    times, freq = None, ""
    if time_col:
        parsed = pd.to_datetime(frame[time_col], errors="coerce")
        if parsed.isna().any():
            row = int(np.flatnonzero(parsed.isna())[0])
            raise DataError(f"{where}: row {frame.index[row] + 2}, column {time_col!r}: "
                            f"{frame[time_col].iloc[row]!r} is not a date/time")
        dup = parsed.duplicated()
        if dup.any():
            row = int(np.flatnonzero(dup)[0])
            raise DataError(f"{where}: row {frame.index[row] + 2}: time {parsed.iloc[row]} appears twice")
        if not parsed.is_monotonic_increasing:
            notes.setdefault(f"rows not in time order were sorted by {time_col!r}", []).append(key)
        order = np.argsort(parsed.to_numpy(), kind="stable")
        frame = frame.iloc[order].drop(columns=time_col)
        times = pd.DatetimeIndex(parsed.to_numpy()[order])
    columns = [str(c) for c in frame.columns]
    values = np.empty((len(frame), len(columns)), dtype=np.float64)
    for j, col in enumerate(frame.columns):
        numeric = pd.to_numeric(frame[col], errors="coerce")
        bad = numeric.isna() & frame[col].notna()
        if bad.any():
            row = int(np.flatnonzero(bad.to_numpy())[0])
            hint = ""
            if not time_col and pd.to_datetime(frame[col], errors="coerce").notna().all():
                hint = f"; it holds dates: pass --time-column {col}"
            raise DataError(f"{where}: row {frame.index[row] + 2}, column {col!r}: "
                            f"{frame[col].iloc[row]!r} is not a number{hint}")
        values[:, j] = numeric.to_numpy(np.float64)
    rows = [f"row {i + 2}" for i in frame.index]
    if times is not None:
        if p.get("resample"):
            try:
                offset = pd.tseries.frequencies.to_offset(p["resample"])
            except ValueError:
                raise DataError(f"--resample {p['resample']!r} is not a pandas frequency "
                                "(e.g. 30min, 1h, 1D, W, MS)") from None
            resampled = pd.DataFrame(values, index=times).resample(offset).mean()
            if len(resampled) != len(values) or not resampled.index.equals(times):
                notes.setdefault(f"resampled to {p['resample']}", []).append(key)
            values, times = resampled.to_numpy(np.float64), pd.DatetimeIndex(resampled.index)
            rows = [f"time {t}" for t in times]
            freq = offset.freqstr
        else:
            freq = _frequency(times, where, time_col)
    missing = ~np.isfinite(values)
    if missing.any():
        row, col = (int(i) for i in np.argwhere(missing)[0])
        what = f"{int(missing.sum())} missing, NaN or infinite value(s)"
        if p["on_missing"] == "error":
            raise DataError(f"{where}: {what}, first at {rows[row]}, column "
                            f"{columns[col]!r}; pass --on-missing interpolate to fill them linearly")
        filled = pd.DataFrame(np.where(missing, np.nan, values)).interpolate(
            method="linear", limit_direction="both")
        values = filled.to_numpy(np.float64)
        if not np.isfinite(values).all():
            raise DataError(f"{where}: a column has no finite values to interpolate from")
        # one series: the count, as before; many: one line naming the series
        notes.setdefault(f"{what} filled by linear interpolation" if not key
                         else "missing values filled by linear interpolation", []).append(key)
    return values, columns, times, freq


# ---------------------------------------------------------------- text

def build_text_classification(files: dict[str, Path], p: dict[str, Any]) -> Prepared:
    """A CSV or JSON Lines file with a text column and a label column; word tokens."""
    (path,) = files.values()
    frame = read_table(path, p["encoding"])
    require_columns(frame, [p["text_column"], p["label_column"]], path)
    for col in (p["text_column"], p["label_column"]):
        empty = frame[col].isna() | (frame[col].astype(str).str.strip() == "")
        if empty.any():
            row = int(np.flatnonzero(empty.to_numpy())[0])
            raise DataError(f"{path}: row {row + 2}: column {col!r} is empty")
    labels = frame[p["label_column"]].astype(str).tolist()
    check_classes(labels, str(path))
    tokenizer = {"pattern": TOKEN_PATTERN, "lowercase": True, "max_len": p["max_len"]}
    words = Tokenizer(tokenizer).tokens
    tokens, truncated = [], []
    for row, text in enumerate(frame[p["text_column"]].astype(str)):
        toks = words(text)
        if _too_long(len(toks), p, "max_len", f"{path}: row {row + 2}", truncated):
            toks = toks[: p["max_len"]]
        tokens.append(toks)
    # duplicates (exact, or equal once normalised: splits.normalised_text) stay in one split
    keys = duplicate_keys(frame[p["text_column"]].astype(str).tolist())
    splits, classes = labelled_splits(tokens, labels, p, where=str(path), same_split=keys)
    vocab = build_vocab(splits["train"].x, p["min_freq"], p["max_vocab"])
    to_ids = Tokenizer(tokenizer, vocab).ids
    for split in splits.values():
        split.x = [to_ids(toks) for toks in split.x]
    meta = {"num_classes": len(classes), "input_dim": 0, "vocab_size": len(vocab),
            **duplicate_counts(keys)}
    return Prepared(splits, meta, {"labels": classes, "vocab": vocab, "tokenizer": tokenizer},
                    warnings=_truncation_warning(truncated, p["max_len"]))


def build_text_lm(files: dict[str, Path], p: dict[str, Any]) -> Prepared:
    """A plain .txt file: a character- or word-level language model on contiguous stretches."""
    (path,) = files.values()
    text = decode_text(path, p["encoding"])
    return language_model_splits(text, p, str(path), {
        "level": p["level"], "max_len": p["seq_len"],
        **({"pattern": WORD_PATTERN, "lowercase": True} if p["level"] == "word" else {})})


# ---------------------------------------------------------------- generic sequences

RAGGED_NPZ = ("np.savez(path, X=np.concatenate(seqs), lengths=[len(s) for s in seqs], y=y)")


def _load_npz(path: Path) -> dict[str, np.ndarray]:
    """The file's arrays, never unpickled: an array of Python objects could run code on load."""
    try:
        with np.load(path, allow_pickle=False) as npz:
            return {key: npz[key] for key in npz.files}
    except ValueError as exc:
        if "allow_pickle" in str(exc):
            raise DataError(f"{path}: holds Python objects (a list of arrays saved as an object "
                            "array), which rnnbench does not unpickle since loading them could run "
                            f"code; save variable-length sequences as {RAGGED_NPZ}") from None
        raise DataError(f"{path}: cannot read as .npz ({exc})") from None


def sequence_task(path: Path) -> str:
    """classification for integer, boolean or string labels; regression for float targets."""
    y = _load_npz(path).get("y")
    if y is None:
        raise DataError(f"{path}: no 'y' array")
    return "regression" if y.dtype.kind == "f" else "classification"


def build_sequences(files: dict[str, Path], p: dict[str, Any]) -> Prepared:
    """An .npz with X as (N, T, F) or (N, T) padded [+ lengths], or as the sequences concatenated
    along time, (sum T_i, F), with their ``lengths``; and y (N,) or (N, k)."""
    (path,) = files.values()
    try:
        data = _load_npz(path)
    except (OSError, EOFError) as exc:
        raise DataError(f"{path}: cannot read as .npz ({exc})") from None
    missing = [k for k in ("X", "y") if k not in data]
    if missing:
        raise DataError(f"{path}: missing array(s) {missing}; the file has {sorted(data)} "
                        "(expected X, y and optionally lengths)")
    X, y = data["X"], data["y"]
    lengths = data.get("lengths")
    if X.ndim not in (2, 3):
        raise DataError(f"{path}: X has shape {X.shape}; expected (N, T, F) or (N, T) padded, or "
                        f"(sum of lengths, F) concatenated: {RAGGED_NPZ}")
    concatenated = (len(X) != len(y) and X.ndim == 2 and lengths is not None
                    and len(lengths) == len(y) and int(np.sum(lengths)) == len(X))
    if concatenated:  # ragged sequences one after another, cut by their lengths
        seqs = np.split(X, np.cumsum(lengths)[:-1])
        lengths = None
    else:
        seqs = list(X)
    if len(seqs) == 0:
        raise DataError(f"{path}: X holds no sequences")
    if len(y) != len(seqs):
        raise DataError(f"{path}: X holds {len(seqs)} sequences but y has {len(y)} entries "
                        f"(for sequences of different lengths: {RAGGED_NPZ})")
    if lengths is not None:
        if len(lengths) != len(seqs) or (lengths < 1).any() or any(
                n > len(s) for n, s in zip(lengths, seqs)):
            raise DataError(f"{path}: lengths must hold one value per sequence, each between 1 "
                            "and that sequence's padded length")
        seqs = [s[: int(n)] for s, n in zip(seqs, lengths)]
    x, truncated = [], []
    for i, s in enumerate(seqs):
        try:
            s = s.astype(np.float32).reshape(len(s), -1)
        except (TypeError, ValueError):
            raise DataError(f"{path}: sequence {i} holds {s.dtype} values; expected numbers") from None
        if len(s) == 0:
            raise DataError(f"{path}: sequence {i} is empty")
        if not np.isfinite(s).all():
            step = int(np.argwhere(~np.isfinite(s))[0][0])
            raise DataError(f"{path}: sequence {i}, step {step}: NaN or infinite value")
        if s.shape[1] != (x[0].shape[1] if x else s.shape[1]):
            raise DataError(f"{path}: sequence {i} has {s.shape[1]} features, sequence 0 has {x[0].shape[1]}")
        if _too_long(len(s), p, "max_len", f"{path}: sequence {i}", truncated):
            s = s[: p["max_len"]]
        x.append(s)
    task = p["task"] if p["task"] != "auto" else ("regression" if y.dtype.kind == "f" else "classification")
    splits, meta, extras = _SEQUENCE_TARGETS[task](x, y, p, path)
    extras["scaler"] = standardize(splits)
    return Prepared(splits, meta, extras, warnings=_truncation_warning(truncated, p["max_len"]))


def _class_targets(x: list[np.ndarray], y: np.ndarray, p: dict[str, Any], path: Path):
    if y.ndim != 1:
        raise DataError(f"{path}: y has shape {y.shape}; classification needs one label per sequence")
    splits, classes = labelled_splits(x, [str(v) for v in y], p, where=str(path))
    meta = {"num_classes": len(classes), "input_dim": int(x[0].shape[1]), "vocab_size": 0}
    return splits, meta, {"labels": classes}


def _regression_targets(x: list[np.ndarray], y: np.ndarray, p: dict[str, Any], path: Path):
    if y.dtype.kind not in "biuf" or not np.isfinite(y.astype(np.float64)).all():
        raise DataError(f"{path}: regression targets y must be finite numbers")
    targets = y.astype(np.float32).reshape(len(y), -1)
    parts = stratified_indices(np.zeros(len(y), dtype=np.int64), p)
    splits = {name: Split([x[i] for i in ids], targets[ids], ids)
              for name, ids in zip(("train", "val", "test"), parts)}
    return splits, {"outputs": int(targets.shape[1]), "input_dim": int(x[0].shape[1]), "vocab_size": 0}, {}


# the targets an .npz may hold, by the task they make (the --task choices besides auto)
_SEQUENCE_TARGETS = {"classification": _class_targets, "regression": _regression_targets}


# ---------------------------------------------------------------- specs and the registry

def _kind_of(kind: str, source: Path) -> tuple[str, str, str, Any]:
    """(defaults key, modality, task, builder) for a kind and its source."""
    suffix = source.suffix.lower()
    if kind == "timeseries":
        if suffix not in (".csv", ".parquet"):
            raise DataError(f"{source}: a time series is a .csv or .parquet file")
        return "timeseries", "timeseries", "forecasting", build_timeseries
    if kind == "text":
        if suffix == ".txt":
            return "text-lm", "text", "language-model", build_text_lm
        if suffix not in (".csv", ".jsonl"):
            raise DataError(f"{source}: text is a .csv or .jsonl file (labelled) or a .txt "
                            "file (language model)")
        return "text", "text", "classification", build_text_classification
    if kind == "audio":
        if not source.is_dir():
            raise DataError(f"{source}: audio is a folder of <label>/<clip> files "
                            f"({', '.join(AUDIO_EXTENSIONS)})")
        return "audio", "speech", "classification", lambda files, p: build_audio(source, p)
    if kind == "sequences":
        if suffix != ".npz":
            raise DataError(f"{source}: generic sequences are an .npz file with X and y")
        return "sequences", "sequences", "", build_sequences
    raise DataError(f"unknown kind {kind!r}; valid: {', '.join(KINDS)}")


def confine(source: str | Path, root: Path) -> Path:
    """``source`` as an absolute path (a relative one read against ``root``), refused unless it
    and everything in it stays under ``root`` once symlinks and ``..`` are resolved: what a
    flow run started from a deployment may read. Nothing is opened, only listed."""
    root = Path(root).expanduser().resolve()
    given = Path(source).expanduser()
    resolved = (given if given.is_absolute() else root / given).resolve()
    rule = (f"a run started from a deployment reads only under the import folder {root} "
            "(RNNBENCH_IMPORT_ROOT, or import_root in rnnbench.toml, on the serving machine): "
            "copy your data there")
    if not resolved.is_relative_to(root):
        raise DataError(f"{source}: outside the import folder; {rule}")
    seen, folders = set(), [resolved] if resolved.is_dir() else []
    while folders:  # a folder source: no link inside may lead out either
        folder = folders.pop()
        if folder in seen:
            continue
        seen.add(folder)
        for entry in folder.iterdir():
            target = entry.resolve()
            if not target.is_relative_to(root):
                raise DataError(f"{source}: {entry} links outside the import folder; {rule}")
            if target.is_dir():
                folders.append(target)
    return resolved


def make_spec(name: str, kind: str, source: Path, options: dict[str, Any] | None = None,
              snapshot: Path | None = None, task: str | None = None) -> DatasetSpec:
    """A DatasetSpec for the user's file or folder; every option checked against the kind."""
    if not NAME.match(name):
        raise DataError(f"dataset name {name!r}: use lower-case letters, digits, '.', '_' or '-' "
                        "(at most 64, starting with a letter or digit)")
    if name in DATASETS:
        raise DataError(f"{name!r} is a built-in dataset; choose another --name")
    source = Path(source).expanduser().resolve()
    if not source.exists():
        raise DataError(f"{source}: no such file or folder")
    key, modality, kind_task, build = _kind_of(kind, source)
    options = {k: v for k, v in (options or {}).items() if v is not None}
    unknown = sorted(set(options) - set(DEFAULTS[key]))
    if unknown:
        valid = " ".join(_option(k) for k in DEFAULTS[key])
        raise DataError(f"{' '.join(_option(k) for k in unknown)} does not apply to --kind {kind} "
                        f"with a {source.suffix or 'folder'} source; valid: {valid}")
    defaults = {**DEFAULTS[key], **options}
    _check_choices(defaults)
    if kind == "sequences":
        kind_task = task or (defaults["task"] if defaults["task"] != "auto" else sequence_task(source))
    return DatasetSpec(
        name=name, modality=modality, task=kind_task,
        description=f"your {kind} data from {source}", folder=str(source.parent),
        files=(source.name,), build=build, defaults=defaults, source=source, snapshot=snapshot,
        kind=kind)


def registry_path(data_root: Path) -> Path:
    return Path(data_root) / REGISTRY


def load_registry(data_root: Path) -> dict[str, dict]:
    path = registry_path(data_root)
    if not path.is_file():
        return {}
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError as exc:
        raise DataError(f"{path}: the dataset registry is not valid JSON ({exc}); "
                        "fix or remove it and register your datasets again") from None


def user_specs(data_root: Path) -> dict[str, DatasetSpec]:
    """Every registered dataset, as specs whose defaults are the options it was registered with."""
    specs = {}
    for name, rec in load_registry(data_root).items():
        source = Path(rec["source"])
        build = _kind_of(rec["kind"], source)[3] if source.exists() else _source_gone(rec)
        specs[name] = DatasetSpec(
            name=name, modality=rec["modality"], task=rec["task"],
            description=rec.get("description", f"your {rec['kind']} data"),
            folder=str(source.parent), files=(source.name,), build=build,
            defaults=rec["params"], source=source,
            snapshot=Path(data_root) / name / rec["cache_key"], kind=rec["kind"])
    return specs


def _source_gone(rec: dict):
    def build(files, p):
        raise DataError(f"{rec['source']}: the source of this dataset is gone; only its registered "
                        f"parameters {rec['params']} can be used")
    return build


def _write_registry(data_root: Path, registry: dict[str, dict]) -> None:
    path = registry_path(data_root)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=".registry-", suffix=".json", dir=path.parent)
    with os.fdopen(fd, "w") as fh:
        json.dump(registry, fh, indent=1, sort_keys=True)
    os.replace(tmp, path)


def record(data_root: Path, spec: DatasetSpec, manifest: dict) -> None:
    """Record a user's dataset, just prepared from ``spec`` into the artifact ``manifest``
    describes, under its name (replacing an earlier entry of that name)."""
    registry = load_registry(data_root)
    registry[spec.name] = {"kind": spec.kind, "source": str(spec.source),
                           "params": manifest["params"], "modality": spec.modality,
                           "task": spec.task, "description": spec.description,
                           "cache_key": manifest["cache_key"],
                           "content_hash": manifest["content_hash"]}
    _write_registry(data_root, registry)
