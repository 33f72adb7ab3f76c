"""Prepared-dataset artifacts: ragged arrays as .npy files plus manifest.json.

An artifact lives in ``<data_root>/<name>/<cache_key>/``; it is written into a
temporary sibling folder and renamed into place, so a reader never sees half of one.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

SPLITS = ("train", "val", "test")
MANIFEST = "manifest.json"
# Bump when the on-disk layout or a preparer's output changes, so old caches are not reused.
# 2: forecasting manifests carry mase_scale; 3: text duplicates found after Unicode
# normalisation, spoken-digits split by whole accents
FORMAT_VERSION = 3


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def cache_key(name: str, source_checksums: dict[str, str], params: dict[str, Any]) -> str:
    """Key of an artifact: what it was made from and how, never when."""
    blob = json.dumps(
        {"name": name, "format": FORMAT_VERSION, "sources": source_checksums, "params": params},
        sort_keys=True,
    )
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


@dataclass
class Split:
    """One split of ragged sequences: ``x[i]`` is (T_i, F) floats or (T_i,) token ids."""

    x: list[np.ndarray]
    y: np.ndarray
    ids: np.ndarray | None = None  # where each example came from in the raw source (provenance)

    @property
    def lengths(self) -> np.ndarray:
        return np.array([len(s) for s in self.x], dtype=np.int64)


@dataclass
class Prepared:
    """What a preparer hands to the artifact writer."""

    splits: dict[str, Split]
    meta: dict[str, Any]  # task, modality, num_classes / horizon, input_dim, vocab_size, ...
    extras: dict[str, Any] = field(default_factory=dict)  # JSON side files: vocab, scaler, labels
    warnings: list[str] = field(default_factory=list)  # e.g. truncated sequences; kept in the manifest


def _flatten(split: Split) -> tuple[np.ndarray, np.ndarray]:
    lengths = split.lengths
    flat = np.concatenate(split.x, axis=0) if split.x else np.zeros((0,))
    return flat, lengths


def write_artifact(target: Path, prepared: Prepared, manifest_base: dict[str, Any]) -> dict:
    """Write ``prepared`` atomically into ``target`` and return its manifest."""
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.tmp-", dir=target.parent))
    try:
        digest = hashlib.sha256()
        shapes: dict[str, Any] = {}
        for split_name in SPLITS:
            split = prepared.splits[split_name]
            flat, lengths = _flatten(split)
            arrays = {"x": flat, "lengths": lengths, "y": np.asarray(split.y)}
            if split.ids is not None:
                arrays["ids"] = np.asarray(split.ids, dtype=np.int64)
            for key, arr in arrays.items():
                fname = f"{split_name}_{key}.npy"
                np.save(tmp / fname, np.ascontiguousarray(arr), allow_pickle=False)
                digest.update(fname.encode())
                digest.update((tmp / fname).read_bytes())
            shapes[split_name] = {
                "n": int(len(lengths)),
                "length_min": int(lengths.min()) if len(lengths) else 0,
                "length_max": int(lengths.max()) if len(lengths) else 0,
                "length_mean": round(float(lengths.mean()), 3) if len(lengths) else 0.0,
            }
            if "num_classes" in prepared.meta:
                labels = np.asarray(split.y, dtype=np.int64).ravel()  # per-step too
                counts = np.bincount(labels[labels >= 0],  # label sequences are padded with -1
                                     minlength=prepared.meta["num_classes"])
                shapes[split_name]["class_counts"] = counts.tolist()
        for key, value in sorted(prepared.extras.items()):
            text = json.dumps(value, sort_keys=True, indent=1)
            (tmp / f"{key}.json").write_text(text)
            digest.update(f"{key}.json".encode())
            digest.update(text.encode())
        manifest = {
            **manifest_base,
            **prepared.meta,
            "format_version": FORMAT_VERSION,
            "splits": shapes,
            "extras": sorted(prepared.extras),
            "warnings": list(prepared.warnings),
            "content_hash": digest.hexdigest(),
        }
        (tmp / MANIFEST).write_text(json.dumps(manifest, sort_keys=True, indent=1))
        if target.exists():  # a concurrent writer got there first: theirs is identical
            shutil.rmtree(tmp)
        else:
            os.replace(tmp, target)
        return manifest
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def read_manifest(artifact_dir: Path) -> dict:
    return json.loads((Path(artifact_dir) / MANIFEST).read_text())


def read_extra(artifact_dir: Path, key: str) -> Any:
    return json.loads((Path(artifact_dir) / f"{key}.json").read_text())


def load_split(artifact_dir: Path, split: str) -> Split:
    """Read one split back as ragged sequences (views into one array, no copies)."""
    d = Path(artifact_dir)
    flat = np.load(d / f"{split}_x.npy", allow_pickle=False)
    lengths = np.load(d / f"{split}_lengths.npy", allow_pickle=False)
    y = np.load(d / f"{split}_y.npy", allow_pickle=False)
    offsets = np.concatenate([[0], np.cumsum(lengths)])
    x = [flat[offsets[i]: offsets[i + 1]] for i in range(len(lengths))]
    ids_path = d / f"{split}_ids.npy"
    ids = np.load(ids_path, allow_pickle=False) if ids_path.is_file() else None
    return Split(x=x, y=y, ids=ids)
