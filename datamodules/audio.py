"""Raw audio to frame sequences: a folder of ``<label>/<clip>.wav|flac|ogg`` decoded with
soundfile, resampled with librosa (soxr), and turned into log-mel or MFCC frames by librosa.

Also synthesizes ``spoken-digits`` with espeak-ng into that same folder layout, and
``spoken-digit-strings`` (whole digit strings, transcribed rather than classified).
"""

from __future__ import annotations

import itertools
import re
import shutil
import subprocess
import tempfile
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np

from datamodules.artifact import Prepared, Split
from datamodules.errors import DataError
from datamodules.splits import grouped_indices, labelled_splits, standardize

AUDIO_EXTENSIONS = (".wav", ".flac", ".ogg")
FEATURES = ("logmel", "mfcc")


def scan_audio_folder(root: Path) -> list[tuple[Path, str]]:
    """Every audio clip under ``root/<label>/`` with its label, in a fixed (sorted) order."""
    root = Path(root)
    if not root.is_dir():
        raise DataError(f"{root}: not a folder; audio data is a folder of <label>/<clip>.wav|flac|ogg")
    clips = [(path, label_dir.name)
             for label_dir in sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))
             for path in sorted(label_dir.iterdir())
             if path.is_file() and path.suffix.lower() in AUDIO_EXTENSIONS]
    if not clips:
        raise DataError(f"{root}: no audio clips found; expected <label>/<clip> files ending in "
                        f"{', '.join(AUDIO_EXTENSIONS)}")
    return clips


def decode(path: Path, sample_rate: int) -> tuple[np.ndarray, int]:
    """Mono float32 samples at ``sample_rate`` and the file's own rate. Corrupt, empty or
    silent-length files raise DataError naming the file."""
    import librosa
    import soundfile

    try:
        samples, rate = soundfile.read(path, dtype="float32", always_2d=True)
    except (soundfile.LibsndfileError, RuntimeError, TypeError, ValueError) as exc:
        raise DataError(f"{path}: cannot decode audio ({exc})") from None
    if samples.shape[0] == 0:
        raise DataError(f"{path}: zero-length audio (no samples)")
    mono = samples.mean(axis=1)
    if not np.isfinite(mono).all():
        raise DataError(f"{path}: NaN or infinite sample values")
    if rate != sample_rate:  # mixed rates are resampled, never rejected
        mono = librosa.resample(mono, orig_sr=rate, target_sr=sample_rate, res_type="soxr_hq")
    return mono.astype(np.float32), int(rate)


def featurize(samples: np.ndarray, p: dict[str, Any]) -> np.ndarray:
    """(frames, features) float32: 25 ms windows every 10 ms, log-mel or MFCC."""
    import librosa

    sr = p["sample_rate"]
    n_fft, hop = int(0.025 * sr), int(0.010 * sr)
    if len(samples) < n_fft:  # a clip shorter than one window still gives one frame
        samples = np.pad(samples, (0, n_fft - len(samples)))
    mel = librosa.feature.melspectrogram(y=samples, sr=sr, n_fft=n_fft, hop_length=hop,
                                         n_mels=p["n_mels"], center=False)
    logmel = librosa.power_to_db(mel, ref=1.0, top_db=None)
    feats = logmel if p["features"] == "logmel" else librosa.feature.mfcc(S=logmel, n_mfcc=p["n_mfcc"])
    return np.ascontiguousarray(feats.T, dtype=np.float32)


def _clip_group(path: Path, pattern: str | None) -> str | None:
    if not pattern:
        return None
    match = re.search(pattern, path.stem)
    if match is None:
        raise DataError(f"{path}: file name does not match group_pattern {pattern!r}")
    return match.group(1) if match.groups() else match.group(0)


def clip_frames(paths: list[Path], p: dict[str, Any]) -> tuple[list[np.ndarray], Counter, list[str]]:
    """Each clip's frames (cut to ``max_frames``, or refused, as ``on_long`` says), the files'
    own sample rates, and the names of the clips that were cut."""
    with ThreadPoolExecutor(max_workers=4) as pool:  # soundfile and soxr release the GIL
        decoded = list(pool.map(lambda path: decode(path, p["sample_rate"]), paths))
    rates = Counter(rate for _, rate in decoded)
    x, truncated = [], []
    for path, (samples, _) in zip(paths, decoded):
        frames = featurize(samples, p)
        if len(frames) > p["max_frames"]:
            if p["on_long"] == "error":
                raise DataError(f"{path}: {len(frames)} frames, longer than max_frames="
                                f"{p['max_frames']} (pass on_long=truncate to cut it)")
            truncated.append(path.name)
            frames = frames[: p["max_frames"]]
        x.append(frames)
    return x, rates, truncated


def build_audio(root: Path, p: dict[str, Any]) -> Prepared:
    """Classify clips by their folder's label; voices/speakers disjoint when ``group_pattern``
    names them in the file names (first regex group)."""
    if p["features"] not in FEATURES:
        raise DataError(f"features must be one of {FEATURES}, got {p['features']!r}")
    if p["on_long"] not in ("truncate", "error"):
        raise DataError(f"on_long must be 'truncate' or 'error', got {p['on_long']!r}")
    clips = scan_audio_folder(root)
    groups = [_clip_group(path, p.get("group_pattern")) for path, _ in clips]
    labels = [label for _, label in clips]
    x, rates, truncated = clip_frames([path for path, _ in clips], p)
    splits, classes = labelled_splits(x, labels, p, groups=groups if groups[0] is not None else None,
                                      where=str(root))
    scaler = standardize(splits)
    meta = {"num_classes": len(classes), "input_dim": int(x[0].shape[1]), "vocab_size": 0,
            "sample_rates": {str(k): v for k, v in sorted(rates.items())},
            "truncated": len(truncated)}
    if groups[0] is not None:
        meta["groups"] = {name: len({groups[i] for i in split.ids}) for name, split in splits.items()}
    clip_names = [str(path.relative_to(root)) for path, _ in clips]
    extras = {"labels": classes, "scaler": scaler, "clips": clip_names,
              "featurizer": {k: p[k] for k in ("sample_rate", "features", "n_mels", "n_mfcc")}}
    return Prepared(splits, meta, extras, warnings=(
        [f"{len(truncated)} clip(s) longer than max_frames={p['max_frames']} were truncated, "
         f"e.g. {truncated[0]}"] if truncated else []))


# ---------------------------------------------------------------- spoken-digits (synthetic)

DIGITS = ("zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine")
ACCENTS = ("en-us", "en-gb", "en-gb-scotland", "en-gb-x-rp", "en-029", "en-gb-x-gbclan",
           "en-gb-x-gbcwmd")
VOICE_VARIANTS = ("m1", "m2", "m3", "m4", "m5", "m6", "m7", "f1", "f2", "f3", "f4", "f5",
                  "croak", "klatt")
ESPEAK_INSTALL = ("spoken-digits is synthesized with espeak-ng, which is not installed; "
                  "install it with `sudo apt-get install espeak-ng` (Debian/Ubuntu), "
                  "`sudo dnf install espeak-ng` (Fedora) or `brew install espeak-ng` (macOS)")


def _espeak() -> str:
    exe = shutil.which("espeak-ng")
    if exe is None:
        raise DataError(ESPEAK_INSTALL)
    return exe


def espeak_version() -> str:
    """espeak-ng's version line; its output differs between versions, so it keys the cache."""
    exe = _espeak()
    out = subprocess.run([exe, "--version"], capture_output=True, text=True, check=True).stdout
    return out.split("Data at:")[0].strip()


def synthesize_digits(folder: Path, p: dict[str, Any]) -> None:
    """``takes`` clips of each digit per voice (accent x variant), each take with its own
    speaking rate and pitch drawn from ``seed``; written as ``<digit>/<voice>_<take>.wav``."""
    exe = _espeak()
    rng = np.random.default_rng(p["seed"])
    jobs = []
    for accent, variant in itertools.product(ACCENTS, VOICE_VARIANTS):
        voice = f"{accent}+{variant}"
        for take in range(p["takes"]):
            rate, pitch = int(rng.integers(120, 201)), int(rng.integers(20, 81))
            for digit in DIGITS:
                out = folder / digit / f"{voice}_{take}.wav"
                jobs.append([exe, "-v", voice, "-s", str(rate), "-p", str(pitch), "-w", str(out), digit])
    for digit in DIGITS:
        (folder / digit).mkdir(parents=True, exist_ok=True)
    _speak_all(jobs)


def _speak_all(jobs: list[list[str]]) -> None:
    def speak(cmd: list[str]) -> None:
        done = subprocess.run(cmd, capture_output=True, text=True)
        if done.returncode != 0:
            raise DataError(f"espeak-ng failed for {' '.join(cmd[1:])}: {done.stderr.strip()}")

    with ThreadPoolExecutor(max_workers=4) as pool:
        list(pool.map(speak, jobs))


# A synthetic clip is "<accent>+<variant>_<take>.wav": its accent is the group held out whole,
# so the test split measures recognition of an accent never heard in training (the 14 voice
# variants are heard in every split, in other accents).
ACCENT_OF_CLIP = r"^([^+]+)\+"


def accents_by_split(clip_names: list[str], splits: dict[str, Split]) -> dict[str, list[str]]:
    """The accents each split holds (for the manifest), read from the clip names."""
    return {name: sorted({_clip_group(Path(clip_names[i]), ACCENT_OF_CLIP) for i in split.ids})
            for name, split in splits.items()}


def build_spoken_digits(files: dict[str, Path], p: dict[str, Any]) -> Prepared:
    """Ten-way word recognition with whole accents held out between the splits."""
    with tempfile.TemporaryDirectory(prefix="rnnbench-spoken-digits-") as tmp:
        synthesize_digits(Path(tmp), p)
        prepared = build_audio(Path(tmp), {**p, "group_pattern": ACCENT_OF_CLIP})
    prepared.meta["groups"] = accents_by_split(prepared.extras["clips"], prepared.splits)
    prepared.meta["synthetic"] = "speech synthesized with espeak-ng"
    return prepared


# ---------------------------------------------------------------- spoken-digit-strings (synthetic)

LABEL_PAD = -1  # fills a label row past its string's end; a task reads labels >= 0 only


def synthesize_digit_strings(folder: Path, p: dict[str, Any]) -> list[tuple[Path, str, list[int]]]:
    """``strings_per_voice`` digit strings per voice (accent x variant), each of
    ``min_digits``..``max_digits`` digits read out as words ("three one four one"), with its own
    speaking rate and pitch, all drawn from ``seed``. Returns (clip, accent, digits) in order."""
    exe = _espeak()
    if not 1 <= p["min_digits"] <= p["max_digits"]:
        raise DataError(f"min_digits must be at least 1 and at most max_digits, got "
                        f"min_digits={p['min_digits']}, max_digits={p['max_digits']}")
    rng = np.random.default_rng(p["seed"])
    clips, jobs = [], []
    for accent, variant in itertools.product(ACCENTS, VOICE_VARIANTS):
        voice = f"{accent}+{variant}"
        for take in range(p["strings_per_voice"]):
            rate, pitch = int(rng.integers(120, 201)), int(rng.integers(20, 81))
            digits = rng.integers(0, 10, size=int(rng.integers(p["min_digits"], p["max_digits"] + 1))).tolist()
            out = folder / f"{voice}_{take}.wav"
            clips.append((out, accent, digits))
            jobs.append([exe, "-v", voice, "-s", str(rate), "-p", str(pitch), "-w", str(out),
                         " ".join(DIGITS[d] for d in digits)])
    _speak_all(jobs)
    return clips


def build_spoken_digit_strings(files: dict[str, Path], p: dict[str, Any]) -> Prepared:
    """Digit strings as label sequences: ``y`` holds each clip's digits (0-9) padded with
    ``LABEL_PAD`` to ``max_digits``; whole accents are held out between the splits. Every clip
    must have at least ``frames_per_label`` frames per digit, so that a model that shortens its
    input (a strided front end) can be checked against CTC's need of an output at least as long
    as the label before it trains."""
    with tempfile.TemporaryDirectory(prefix="rnnbench-spoken-digit-strings-") as tmp:
        clips = synthesize_digit_strings(Path(tmp), p)
        x, rates, _ = clip_frames([path for path, _, _ in clips], {**p, "on_long": "error"})
    for (path, _, digits), frames in zip(clips, x):
        if len(frames) < p["frames_per_label"] * len(digits):
            raise DataError(f"{path.name}: {len(frames)} frames for {len(digits)} digits, fewer than "
                            f"frames_per_label={p['frames_per_label']} per digit; lower frames_per_label")
    y = np.full((len(clips), p["max_digits"]), LABEL_PAD, dtype=np.int64)
    for row, (_, _, digits) in enumerate(clips):
        y[row, :len(digits)] = digits
    parts = grouped_indices([_clip_group(path, ACCENT_OF_CLIP) for path, _, _ in clips], p)
    splits = {name: Split([x[i] for i in ids], y[ids], ids)
              for name, ids in zip(("train", "val", "test"), parts)}
    scaler = standardize(splits)
    meta = {"num_classes": len(DIGITS), "input_dim": int(x[0].shape[1]), "vocab_size": 0,
            "max_label_length": int(p["max_digits"]), "frames_per_label": int(p["frames_per_label"]),
            "sample_rates": {str(k): v for k, v in sorted(rates.items())},
            "groups": accents_by_split([path.name for path, _, _ in clips], splits),
            "synthetic": "speech synthesized with espeak-ng"}
    extras = {"labels": [str(d) for d in range(len(DIGITS))], "scaler": scaler,
              "clips": [path.name for path, _, _ in clips],
              "featurizer": {k: p[k] for k in ("sample_rate", "features", "n_mels", "n_mfcc")}}
    return Prepared(splits, meta, extras)
