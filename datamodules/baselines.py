"""The trivial baseline each prepared artifact is compared with (majority class, mean target,
unigram frequencies, memoryless recall, (seasonal) naive forecast), scored on its test split.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from datamodules.artifact import load_split, read_extra, read_manifest


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
