"""Presets: budgets, datasets, variants and search spaces as editable TOML, validated up front.

A preset is data; ``search_space`` turns its sampler tables into Ray Tune domains.
"""

from __future__ import annotations

import hashlib
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from datamodules.builtin import DATASETS
from datamodules.specs import DatasetSpec
from modules.registry import VARIANTS

PRESET_DIR = Path(__file__).parent / "presets"
SAMPLERS = ("choice", "uniform", "loguniform", "randint")
BUDGET_KEYS = {
    "num_samples": int, "max_epochs": int, "grace_period": int, "reduction_factor": int,
    "max_concurrent_trials": int, "cpus_per_trial": float, "gpus_per_trial": float, "seed": int,
}
POSITIVE_HPARAMS = ("hidden_size", "num_layers", "batch_size", "lr", "nhead", "ff_mult")
TOP_KEYS = {"description", "datasets", "variants", "budget", "space", "variant_space",
            "dataset_space", "dataset_params", "custom_variants"}


class PresetError(ValueError):
    pass


@dataclass
class Budget:
    num_samples: int = 4
    max_epochs: int = 5
    grace_period: int = 1
    reduction_factor: int = 2
    max_concurrent_trials: int = 2
    cpus_per_trial: float = 1
    gpus_per_trial: float = 0
    seed: int = 0


@dataclass
class Preset:
    name: str
    description: str
    datasets: list[str]
    variants: list[str]
    budget: Budget
    space: dict[str, Any]
    variant_space: dict[str, dict[str, Any]] = field(default_factory=dict)
    dataset_space: dict[str, dict[str, Any]] = field(default_factory=dict)
    dataset_params: dict[str, dict[str, Any]] = field(default_factory=dict)
    custom_variants: dict[str, str] = field(default_factory=dict)
    source: str = ""

    @property
    def all_variants(self) -> list[str]:
        return [*VARIANTS, *self.custom_variants]

    def space_for(self, dataset: str, variant: str) -> dict[str, Any]:
        """The variant's search space on this dataset: shared < dataset < variant."""
        return {**self.space, **self.dataset_space.get(dataset, {}),
                **self.variant_space.get(variant, {})}

    def fingerprint(self) -> str:
        return hashlib.sha256(self.source.encode()).hexdigest()[:12]


def available_presets() -> list[str]:
    return sorted(p.stem for p in PRESET_DIR.glob("*.toml"))


def _check_sampler(where: str, key: str, value: Any) -> None:
    if isinstance(value, dict):
        if len(value) != 1 or next(iter(value)) not in SAMPLERS:
            raise PresetError(f"{where}.{key}: expected one of {SAMPLERS} (e.g. {{choice = [32, 64]}}), "
                              f"got {value}")
        kind, values = next(iter(value.items()))
        if not isinstance(values, list) or not values or (kind != "choice" and len(values) != 2):
            raise PresetError(f"{where}.{key}: {kind} needs " +
                              ("a non-empty list" if kind == "choice" else "[low, high]"))
    else:
        values = [value]
    if key in POSITIVE_HPARAMS:
        bad = [v for v in values if not isinstance(v, (int, float)) or v <= 0]
        if bad:
            raise PresetError(f"{where}.{key}: must be positive, got {bad[0]}")


def load_preset(name_or_path: str, specs: dict[str, DatasetSpec] | None = None) -> Preset:
    """A shipped preset by name, or a TOML file by path; every problem named before any work.
    ``specs``: the datasets it may name (default: the built-in ones)."""
    path = Path(name_or_path)
    if not path.suffix:
        path = PRESET_DIR / f"{name_or_path}.toml"
        if not path.is_file():
            raise PresetError(f"unknown preset {name_or_path!r}; valid: {', '.join(available_presets())} "
                              "or a path to a .toml file")
    elif not path.is_file():
        raise PresetError(f"preset file not found: {path}")
    source = path.read_text()
    try:
        raw = tomllib.loads(source)
    except tomllib.TOMLDecodeError as exc:
        raise PresetError(f"{path}: not valid TOML ({exc})") from None
    unknown = sorted(set(raw) - TOP_KEYS)
    if unknown:
        raise PresetError(f"{path}: unknown key(s) {unknown}; valid: {sorted(TOP_KEYS)}")
    budget_raw = raw.get("budget", {})
    for key, value in budget_raw.items():
        if key not in BUDGET_KEYS:
            raise PresetError(f"{path}: unknown budget key {key!r}; valid: {sorted(BUDGET_KEYS)}")
        if not isinstance(value, (int, float)) or (value <= 0 and key not in ("gpus_per_trial", "seed")):
            raise PresetError(f"{path}: budget.{key} must be a positive number, got {value!r}")
    custom = dict(raw.get("custom_variants", {}))
    preset = Preset(
        name=path.stem, description=raw.get("description", ""),
        datasets=list(raw.get("datasets", list(DATASETS))),
        variants=list(raw.get("variants", list(VARIANTS))),
        budget=Budget(**{k: BUDGET_KEYS[k](v) for k, v in budget_raw.items()}),
        space=dict(raw.get("space", {})), variant_space=dict(raw.get("variant_space", {})),
        dataset_space=dict(raw.get("dataset_space", {})),
        dataset_params=dict(raw.get("dataset_params", {})), custom_variants=custom, source=source,
    )
    for key, value in preset.space.items():
        _check_sampler(f"{path.name}: space", key, value)
    for group, table in (("variant_space", preset.variant_space), ("dataset_space", preset.dataset_space)):
        for owner, sub in table.items():
            for key, value in sub.items():
                _check_sampler(f"{path.name}: {group}.{owner}", key, value)
    select(preset, preset.datasets, preset.variants, specs)
    return preset


def _check_names(kind: str, names: list[str], valid: list[str]) -> list[str]:
    if not names:
        raise PresetError(f"no {kind}s selected; valid: {', '.join(valid)}")
    for name in names:
        if name not in valid:
            raise PresetError(f"unknown {kind} {name!r}; valid: {', '.join(valid)}")
    return list(dict.fromkeys(names))


def select(preset: Preset, datasets: list[str] | None = None, variants: list[str] | None = None,
           specs: dict[str, DatasetSpec] | None = None) -> tuple[list[str], list[str]]:
    """The datasets and variants to run, checked against the registries."""
    ds = _check_names("dataset", list(datasets or preset.datasets), list(specs or DATASETS))
    vs = _check_names("variant", list(variants or preset.variants), preset.all_variants)
    return ds, vs


def plan(datasets: list[str], variants: list[str], specs: dict[str, DatasetSpec] | None = None
         ) -> tuple[list[tuple[str, str]], list[str]]:
    """The (dataset, variant) pairs to sweep, and why any asked-for pair is left out."""
    from modules.registry import incompatibility

    pairs, skipped = [], []
    for dataset in datasets:
        task = (specs or DATASETS)[dataset].task
        for variant in variants:
            reason = incompatibility(variant, task)
            if reason:
                skipped.append(f"{dataset} · {variant} skipped: {reason}")
            else:
                pairs.append((dataset, variant))
        if not any(d == dataset for d, _ in pairs):
            raise PresetError(f"no selected variant can train on {dataset!r} ({task}); "
                              "choose from rnn, lstm, gru, transformer")
    return pairs, skipped


def check_resources(preset: Preset, ray_address: str | None) -> None:
    """A preset that needs GPUs is refused up front on a machine without one (Ray would wait
    for them forever); on a cluster (``ray_address``) Ray knows its own resources."""
    if preset.budget.gpus_per_trial > 0 and not ray_address:
        import torch

        if not torch.cuda.is_available():
            raise PresetError(
                f"preset {preset.name!r} asks for gpus_per_trial={preset.budget.gpus_per_trial} "
                "but this machine has no GPU; run it on a GPU machine or a Ray cluster "
                "(--ray-address), or copy it with gpus_per_trial = 0")


def search_space(space: dict[str, Any]) -> dict[str, Any]:
    """Preset sampler tables to Ray Tune domains (constants pass through)."""
    from ray import tune

    make = {"choice": tune.choice, "uniform": lambda a: tune.uniform(*a),
            "loguniform": lambda a: tune.loguniform(*a), "randint": lambda a: tune.randint(*a)}
    out = {}
    for key, value in space.items():
        if isinstance(value, dict):
            kind, arg = next(iter(value.items()))
            out[key] = make[kind](arg)
        else:
            out[key] = value
    return out
