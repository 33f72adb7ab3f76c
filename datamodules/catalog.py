"""The registry API: every dataset by name (the built-in table, toy datasets added at run time
with ``register_dataset``, the user's recorded by ``register``), the checks before a run, and
``prepare``: a named dataset into an artifact keyed on its raw files' checksums and parameters.
"""

from __future__ import annotations

import hashlib
import platform
from pathlib import Path
from typing import Any

from datamodules.artifact import MANIFEST, cache_key, read_manifest, sha256_file, write_artifact
from datamodules.builtin import DATASETS
from datamodules.errors import DataError
from datamodules.specs import VENDORED, DatasetSpec
from datamodules.userdata import make_spec, record, user_specs


def available(data_root: Path | None = None) -> dict[str, DatasetSpec]:
    """The built-in datasets, plus the user's registered ones when ``data_root`` is given."""
    if data_root is None:
        return dict(DATASETS)
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


def register_dataset(spec: DatasetSpec) -> DatasetSpec:
    """Add ``spec`` to the built-in table for the rest of this process (e.g. a toy dataset
    defined in a test); a name already taken is refused."""
    if spec.name in DATASETS:
        raise DataError(f"dataset {spec.name!r} is already defined; choose another name "
                        f"(taken: {', '.join(DATASETS)})")
    DATASETS[spec.name] = spec
    return spec


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


def register(name: str, kind: str, source: Path, options: dict[str, Any] | None,
             data_root: Path) -> tuple[Path, dict, bool]:
    """Prepare the user's data and, only once that succeeded, record it under ``name``."""
    spec = make_spec(name, kind, source, options)
    artifact_dir, manifest, reused = prepare(name, data_root, spec=spec)
    record(data_root, spec, manifest)
    return artifact_dir, manifest, reused
