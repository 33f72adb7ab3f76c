"""Splits and training-only normalization shared by the built-in and the user's datasets."""

from __future__ import annotations

import unicodedata
from collections import Counter
from typing import Any, Sequence

import numpy as np

from datamodules import scaling
from datamodules.artifact import Split
from datamodules.errors import DataError


def standardize(splits: dict[str, Split]) -> dict[str, list[float]]:
    """Per-channel z-scoring with statistics of the training split only."""
    frames = np.concatenate(splits["train"].x, axis=0)
    mean, std = frames.mean(axis=0), frames.std(axis=0) + 1e-8
    scaler = {"mean": mean.tolist(), "std": std.tolist()}
    for split in splits.values():
        split.x = [scaling.apply(s, scaler) for s in split.x]
    return scaler


def check_classes(labels: Sequence[str], where: str) -> list[str]:
    """The sorted class names; at least two classes, each with at least two examples."""
    counts = Counter(labels)
    if len(counts) < 2:
        only = next(iter(counts), None)
        raise DataError(f"{where}: a single class ({only!r}); classification needs at least two")
    rare = sorted((c, n) for c, n in counts.items() if n < 2)
    if rare:
        shown = ", ".join(f"{c!r} ({n})" for c, n in rare[:5])
        raise DataError(f"{where}: class(es) with fewer than 2 examples: {shown}; every class "
                        "needs at least 2 so that training and evaluation both see it")
    return sorted(counts, key=lambda s: (len(s), s))


def stratified_indices(y: np.ndarray, p: dict[str, Any]) -> tuple[np.ndarray, ...]:
    """Train/val/test row indices with each class spread in proportion (at least one example of
    every class stays in training), deterministic for a seed."""
    rng = np.random.default_rng(p["seed"])
    parts: list[list[int]] = [[], [], []]
    for cls in np.unique(y):
        rows = rng.permutation(np.flatnonzero(y == cls))
        n_test = min(int(round(len(rows) * p["test_fraction"])), len(rows) - 1)
        n_val = min(int(round(len(rows) * p["val_fraction"])), len(rows) - 1 - n_test)
        parts[2] += rows[:n_test].tolist()
        parts[1] += rows[n_test: n_test + n_val].tolist()
        parts[0] += rows[n_test + n_val:].tolist()
    return tuple(np.sort(np.array(part, dtype=np.int64)) for part in parts)


def grouped_indices(groups: Sequence[str], p: dict[str, Any]) -> tuple[np.ndarray, ...]:
    """Train/val/test row indices with every group (speaker, voice) in exactly one split.

    Whole groups are dealt out, at least one to each split (sklearn's GroupShuffleSplit leaves
    a split empty when there are only a few groups)."""
    groups = np.asarray(groups)
    names = np.unique(groups)
    if len(names) < 3:
        raise DataError(f"only {len(names)} group(s) found; a group-disjoint split needs at "
                        "least 3 (one each for train, val and test)")
    order = np.random.default_rng(p["seed"]).permutation(names)
    n_test = max(1, int(round(len(names) * p["test_fraction"])))
    n_val = max(1, int(round(len(names) * p["val_fraction"])))
    n_test, n_val = min(n_test, len(names) - 2), min(n_val, len(names) - 1 - min(n_test, len(names) - 2))
    parts = (order[n_test + n_val:], order[n_test: n_test + n_val], order[:n_test])
    return tuple(np.flatnonzero(np.isin(groups, part)) for part in parts)


# How two texts are told to be duplicates, recorded in the manifest beside the counts.
DUPLICATE_RULE = ("equal after Unicode NFKC, casefolding, punctuation and symbols dropped and "
                  "whitespace collapsed")


def normalised_text(text: str) -> str:
    """``text`` as duplicates are compared: NFKC (full-width letters, ligatures and other
    compatibility forms become their plain letters), casefolded (so "STRASSE" equals "straße"),
    every punctuation mark, symbol, separator and control character (Unicode categories P, S,
    Z, Cc) a space, invisible format characters (Cf, e.g. zero-width spaces) dropped, and runs of
    whitespace collapsed. Letters of every script and their accents are kept, so "résumé" and
    "resume" or two texts in Cyrillic stay distinct."""
    folded = unicodedata.normalize("NFKC", unicodedata.normalize("NFKC", str(text)).casefold())
    kept = "".join("" if cat == "Cf" else " " if cat[0] in "PSZ" or cat == "Cc" else ch
                   for ch, cat in ((ch, unicodedata.category(ch)) for ch in folded))
    return " ".join(kept.split())


def duplicate_keys(texts: Sequence[str]) -> np.ndarray:
    """One id per distinct ``normalised_text``: rows with the same id are duplicates and must
    not sit on both sides of a split."""
    ids: dict[str, int] = {}
    return np.array([ids.setdefault(normalised_text(t), len(ids)) for t in texts], dtype=np.int64)


def duplicate_counts(keys: np.ndarray) -> dict[str, Any]:
    """How many groups of duplicates there are, how many rows they hold, and the rule that
    found them (for the manifest)."""
    counts = np.bincount(keys)
    return {"duplicate_groups": int((counts > 1).sum()), "duplicate_rows": int(counts[counts > 1].sum()),
            "duplicate_rule": DUPLICATE_RULE}


def stratified_group_indices(y: np.ndarray, keys: np.ndarray, p: dict[str, Any]) -> tuple[np.ndarray, ...]:
    """``stratified_indices`` over whole groups of equal ``keys`` (each group stratified by its
    first row's label), so every group lands in exactly one split."""
    _, first = np.unique(keys, return_index=True)
    parts = stratified_indices(y[first], p)
    if any(len(part) == 0 for part in parts):
        raise DataError(f"only {len(first)} distinct texts among {len(keys)} rows once duplicates "
                        f"({DUPLICATE_RULE}) are merged: too few for a "
                        "train, validation and test split")
    return tuple(np.flatnonzero(np.isin(keys, keys[first[part]])) for part in parts)


def labelled_splits(x: list[np.ndarray], labels: Sequence[str], p: dict[str, Any],
                    groups: Sequence[str] | None = None, where: str = "data",
                    same_split: np.ndarray | None = None) -> tuple[dict[str, Split], list[str]]:
    """Classification splits of ``x`` by string ``labels``: stratified, group-disjoint
    (``groups``: speakers), or stratified with rows of equal ``same_split`` key (duplicates)
    kept together."""
    classes = check_classes(labels, where)
    index = {c: i for i, c in enumerate(classes)}
    y = np.array([index[c] for c in labels], dtype=np.int64)
    if groups is not None:
        parts = grouped_indices(groups, p)
    elif same_split is not None:
        parts = stratified_group_indices(y, same_split, p)
    else:
        parts = stratified_indices(y, p)
    splits = {name: Split([x[i] for i in ids], y[ids], ids)
              for name, ids in zip(("train", "val", "test"), parts)}
    return splits, classes
