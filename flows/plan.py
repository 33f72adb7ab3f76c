"""One plan for every run: the preset, the settings and the (dataset, variant) pairs, as typed
models, built and checked by ``make_plan`` before any MLflow run is opened. The CLI and every
flow call it, so a flow started from the Prefect UI gets exactly the checks the CLI gets.

A preset's TOML schema is the ``Preset`` model: an unknown key or a wrong type is named in one
line. Nothing here imports torch, Ray, MLflow or Prefect.
"""

from __future__ import annotations

import enum
import hashlib
import math
import os
import tomllib
from pathlib import Path
from typing import Any, Literal, Mapping, Optional, Union

from pydantic import (BaseModel, ConfigDict, Field, NonNegativeFloat, PositiveFloat, PositiveInt,
                      ValidationError, field_validator, model_validator)

from datamodules.errors import DataError
from flows.settings import Settings
from modules import tasks, variants
from modules.tasks import Task
from modules.variants import Variant, VariantError

PRESET_DIR = Path(__file__).parent / "presets"
SAMPLERS = ("choice", "uniform", "loguniform", "randint")
POSITIVE_HPARAMS = ("hidden_size", "num_layers", "batch_size", "lr", "nhead", "ff_mult", "ff_size",
                    "embed_size")


class PlanError(ValueError):
    """A plan that cannot run; the message names the bad value and the valid choices."""


class ServiceUnavailable(PlanError):
    """A service the plan needs (the tracking server) does not answer."""


def available_presets() -> list[str]:
    return sorted(p.stem for p in PRESET_DIR.glob("*.toml"))


# The names a Prefect UI form offers as choices (a user's preset file goes in preset_path,
# a user's own variant is declared in the preset's [custom_variants]).
PresetName = enum.Enum("PresetName", {name: name for name in available_presets()}, type=str)
VariantName = enum.Enum("VariantName", {name: name for name in variants.BUILTIN}, type=str)

Sampler = Union[bool, int, float, str, dict[str, list]]


def _check_sampler(key: str, value: Any) -> Any:
    if isinstance(value, dict):
        if len(value) != 1 or next(iter(value)) not in SAMPLERS:
            raise ValueError(f"{key}: expected one of {', '.join(SAMPLERS)} "
                             f"(e.g. {{choice = [32, 64]}}), got {value}")
        kind, values = next(iter(value.items()))
        if not isinstance(values, list) or not values or (kind != "choice" and len(values) != 2):
            raise ValueError(f"{key}: {kind} needs " + ("a non-empty list" if kind == "choice" else "[low, high]"))
    else:
        values = [value]
    if key in POSITIVE_HPARAMS:
        bad = [v for v in values if isinstance(v, bool) or not isinstance(v, (int, float)) or v <= 0]
        if bad:
            raise ValueError(f"{key}: must be positive, got {bad[0]}")
    return value


def _check_space(space: dict[str, Any]) -> dict[str, Any]:
    for key, value in space.items():
        _check_sampler(key, value)
    return space


class Budget(BaseModel):
    """The same for every variant of a run."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    num_samples: PositiveInt = 4  # trials per (dataset, variant)
    max_epochs: PositiveInt = 5
    grace_period: PositiveInt = 1  # ASHA: epochs before a trial may be stopped early
    reduction_factor: int = Field(2, ge=2)  # ASHA: keep 1/reduction_factor at each rung
    max_concurrent_trials: PositiveInt = 2
    cpus_per_trial: PositiveFloat = 1
    gpus_per_trial: NonNegativeFloat = 0
    seed: int = 0
    deterministic: bool = False  # bit-for-bit repeatable training (slower)
    # sweeps of a benchmark running side by side, each its own Tune experiment; None: as many
    # as keep the cluster's CPUs (or GPUs) busy, plus one starting up
    max_concurrent_sweeps: Optional[PositiveInt] = None
    precision: Literal["32", "bf16-mixed"] = "32"  # bf16-mixed: on GPUs that support it
    # > 1: each trial trains data-parallel (DDP) on this many Ray Train workers, each holding
    # cpus_per_trial CPUs and gpus_per_trial GPUs (per worker, then)
    workers_per_trial: PositiveInt = 1
    # size matching (modules.sizing): one sweep per target parameter count, each variant's width
    # (and a second knob where width's steps are too coarse) solved to land within 5% of it on
    # the dataset, instead of searching hidden_size; empty: the search space's hidden_size
    size_targets: list[PositiveInt] = []
    # seed repeats: after its sweep, each variant's best configuration is retrained from scratch
    # on this many seeds and scored on the test split (flows.sweep.run_finals); 0 or 1: off
    seeds: int = 0

    @field_validator("seeds")
    @classmethod
    def _seeds(cls, value: int) -> int:
        if value < 0:
            raise ValueError(f"must be 0 or 1 (no seed repeats) or the number of seeds to retrain "
                             f"the best configuration on (2 or more), got {value}")
        return value

    @property
    def final_seeds(self) -> int:
        """How many retrains of the best configuration each sweep ends with (0: none)."""
        return self.seeds if self.seeds >= 2 else 0

    @model_validator(mode="after")
    def _ddp_gpus(self) -> "Budget":
        gpus = self.gpus_per_trial
        if self.workers_per_trial > 1 and gpus and gpus != int(gpus):
            raise ValueError(
                f"workers_per_trial={self.workers_per_trial} with gpus_per_trial={gpus:g}: two "
                "data-parallel workers of one trial would share a GPU, which NCCL refuses "
                "('Duplicate GPU'); give each worker whole GPUs (gpus_per_trial = 1) or train "
                "each trial on one worker (workers_per_trial = 1) to pack trials onto a GPU")
        return self


class Preset(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    description: str = ""
    datasets: Optional[list[str]] = None
    variants: Optional[list[str]] = None
    budget: Budget = Budget()
    space: dict[str, Sampler] = {}
    variant_space: dict[str, dict[str, Sampler]] = {}
    dataset_space: dict[str, dict[str, Sampler]] = {}
    dataset_params: dict[str, dict[str, Any]] = {}
    custom_variants: dict[str, Union[str, dict[str, Any]]] = {}
    # not in the file: where it came from
    name: str = Field("", exclude=True)
    source: str = Field("", exclude=True)

    @field_validator("space")
    @classmethod
    def _shared_space(cls, value: dict[str, Any]) -> dict[str, Any]:
        return _check_space(value)

    @field_validator("variant_space", "dataset_space")
    @classmethod
    def _spaces(cls, value: dict[str, dict[str, Any]]) -> dict[str, dict[str, Any]]:
        for sub in value.values():
            _check_space(sub)
        return value

    def space_for(self, dataset: str, variant: str) -> dict[str, Any]:
        """The variant's search space on this dataset: shared < dataset < variant."""
        return {**self.space, **self.dataset_space.get(dataset, {}),
                **self.variant_space.get(variant, {})}

    def fingerprint(self) -> str:
        return hashlib.sha256(self.source.encode()).hexdigest()[:12]


_MODELS = {(): Preset, ("budget",): Budget}


def _one_line(where: str, exc: ValidationError) -> str:
    err = exc.errors()[0]
    loc = tuple(str(p) for p in err["loc"])
    if err["type"] == "extra_forbidden":
        model = _MODELS.get(loc[:-1])
        valid = f"; valid: {', '.join(k for k, f in model.model_fields.items() if not f.exclude)}" if model else ""
        return f"{where}: unknown key {'.'.join(loc)!r}{valid}"
    message = err["msg"].removeprefix("Value error, ")
    shown = f" (got {err['input']!r})" if err["type"] != "value_error" else ""
    return f"{where}: {'.'.join(loc)}: {message}{shown}"


def load_preset(name: str | None = "quick", path: str | Path | None = None) -> Preset:
    """A shipped preset by name, or a TOML file by path; every problem named in one line."""
    if path is None and name and Path(name).suffix == ".toml":
        path = name  # the CLI's --preset takes either
    if path is not None:
        file = Path(path).expanduser()
        if not file.is_file():
            raise PlanError(f"preset file not found: {file}")
    else:
        name = getattr(name, "value", name) or "quick"
        file = PRESET_DIR / f"{name}.toml"
        if not file.is_file():
            raise PlanError(f"unknown preset {name!r}; valid: {', '.join(available_presets())} "
                            "or a path to a .toml file")
    source = file.read_text()
    try:
        raw = tomllib.loads(source)
    except tomllib.TOMLDecodeError as exc:
        raise PlanError(f"{file}: not valid TOML ({exc})") from None
    try:
        preset = Preset.model_validate(raw)
    except ValidationError as exc:
        raise PlanError(_one_line(str(file) if path is not None else file.name, exc)) from None
    return preset.model_copy(update={"name": file.stem, "source": source})


class Pair(BaseModel):
    model_config = ConfigDict(frozen=True)

    dataset: str
    variant: str


class Plan(BaseModel):
    """What a run will do, checked: everything a sweep needs is resolved here."""

    model_config = ConfigDict(frozen=True, arbitrary_types_allowed=True)

    preset: Preset
    settings: Settings
    datasets: list[str]
    variants: list[str]
    pairs: list[Pair]
    skipped: list[str] = []
    dataset_tasks: dict[str, str] = {}
    modalities: dict[str, str] = {}

    @property
    def custom(self) -> dict[str, Variant]:
        """The preset's own variants (checked importable when the plan was made)."""
        return {name: variants.custom_variant(name, declared)
                for name, declared in self.preset.custom_variants.items()}

    def variant(self, name: str) -> Variant:
        return variants.resolve(name, self.custom)

    def task(self, dataset: str) -> Task:
        return tasks.get(self.dataset_tasks[dataset])

    def variants_for(self, dataset: str) -> list[str]:
        return [p.variant for p in self.pairs if p.dataset == dataset]

    def packages(self) -> tuple[str, ...]:
        """The top-level packages of the user's own variants and tasks: a cluster's workers
        get them with rnnbench's own (they are not installed there)."""
        found = []
        for name in self.variants:
            variant = self.variant(name)
            for module in ((None if variant.builtin else variant.module), type(variant).__module__):
                found.append(module)
        found += [tasks.module_of(self.task(d)) for d in self.datasets]
        tops = (m.split(".")[0] for m in found if m)
        return tuple(t for t in dict.fromkeys(tops) if t not in ("modules", "flows", "datamodules"))

    def unequal_spaces(self) -> list[str]:
        """Where a variant's search space differs from the one the other variants share on a
        dataset (the preset's ``[variant_space.X]``): a comparison a reader must know is not
        like for like."""
        notes = []
        for variant in self.variants:
            own = self.preset.variant_space.get(variant, {})
            if not own or not any(p.variant == variant for p in self.pairs):
                continue
            shown = ", ".join(f"{k}={_sampler_text(v)}" for k, v in own.items())
            notes.append(f"{variant} searches its own {shown} (the other variants use the shared space)")
        return notes


def _sampler_text(value: Any) -> str:
    if isinstance(value, dict):
        (kind, arg), = value.items()
        return f"{kind}{arg}"
    return str(value)


def _check_names(kind: str, names: list[str], valid: list[str]) -> list[str]:
    if not names:
        raise PlanError(f"no {kind}s selected; valid: {', '.join(valid)}")
    for name in names:
        if name not in valid:
            raise PlanError(f"unknown {kind} {name!r}; valid: {', '.join(valid)}")
    return list(dict.fromkeys(names))


def _custom_variants(preset: Preset) -> dict[str, Variant]:
    out = {}
    for name, declared in preset.custom_variants.items():
        try:
            variant = variants.custom_variant(name, declared)
            variant.factory()  # importable here, before any trial
        except VariantError as exc:
            raise PlanError(str(exc)) from None
        out[name] = variant
    return out


def check_resources(preset: Preset, ray_address: str | None) -> None:
    """A preset that needs GPUs is refused up front on a machine without one (Ray would wait
    for them forever); on a cluster (``ray_address``) Ray knows its own resources."""
    b = preset.budget
    if not ray_address and b.cpus_per_trial * b.workers_per_trial > (os.cpu_count() or 1):
        each = f"{b.workers_per_trial} workers x " if b.workers_per_trial > 1 else ""
        raise PlanError(
            f"preset {preset.name!r} asks for {each}cpus_per_trial={b.cpus_per_trial:g} but "
            f"this machine has {os.cpu_count()} CPUs; lower it in a copy of the preset")
    if preset.budget.gpus_per_trial > 0 and not ray_address:
        import torch

        if not torch.cuda.is_available():
            raise PlanError(
                f"preset {preset.name!r} asks for gpus_per_trial={preset.budget.gpus_per_trial} "
                "but this machine has no GPU; run it on a GPU machine or a Ray cluster "
                "(--ray-address), or copy it with gpus_per_trial = 0")
        if b.gpus_per_trial * b.workers_per_trial > torch.cuda.device_count():
            raise PlanError(
                f"preset {preset.name!r} trains each trial on {b.workers_per_trial} workers x "
                f"gpus_per_trial={b.gpus_per_trial:g}, but this machine has "
                f"{torch.cuda.device_count()} GPUs; lower workers_per_trial in a copy of the preset")


def check_cluster(plan: "Plan") -> None:
    """On a cluster (``--ray-address``): checkpoints must go where every node writes, the
    cluster must let this process in, and some node must be able to hold one trial; all
    refused in seconds rather than after the first trial, or never (Ray waits for resources
    that no node has)."""
    settings = plan.settings
    if settings.storage_is_default:
        raise PlanError(
            f"--ray-address {settings.ray_address} runs trials on other machines, which cannot "
            f"write checkpoints to this machine's {settings.tune_root}; pass --storage with a "
            "folder every node mounts (e.g. /mnt/shared/rnnbench) or a bucket (s3://bucket/rnnbench)")
    from flows.sweep import RayAuthError, cluster_nodes, node_types, start_ray

    try:
        start_ray(settings, plan.packages())
    except RayAuthError as exc:
        raise ServiceUnavailable(str(exc)) from None
    except ConnectionError as exc:
        raise ServiceUnavailable(f"cannot join the Ray cluster at {settings.ray_address} ({exc}); "
                                 "is `ray start --head` running there?") from None
    check_placement(plan.preset, cluster_nodes(), node_types(), settings.ray_address)


def check_placement(preset: Preset, nodes: list[dict[str, float]],
                    types: list[tuple[dict[str, float], int]], where: str) -> None:
    """Some node (or node type the autoscaler may add) must hold one trial's worker, and the
    cluster at its largest must hold all ``workers_per_trial`` of a data-parallel trial at
    once; otherwise Ray would wait for resources that never come."""
    budget = preset.budget
    wanted = {"CPU": budget.cpus_per_trial, "GPU": budget.gpus_per_trial}
    shapes = [*nodes, *(shape for shape, _ in types)]
    seen = ", ".join([*(_node_text(n) for n in nodes),
                      *(f"{_node_text(t)} (autoscaled, up to {'any' if n < 0 else n})" for t, n in types)])
    per = " per worker" if budget.workers_per_trial > 1 else ""
    for resource, amount in wanted.items():
        most = max((n.get(resource, 0.0) for n in shapes), default=0.0)
        if amount > 0 and amount > most:
            raise PlanError(
                f"preset {preset.name!r} asks for {resource.lower()}s_per_trial={amount:g}{per}, "
                f"but the largest node of the Ray cluster at {where} has {most:g} "
                f"(nodes and autoscaling node types: {seen or 'none'}); "
                f"lower {resource.lower()}s_per_trial in a copy of the preset or add such a node")
    if budget.workers_per_trial > 1:
        def holds(shape: dict[str, float]) -> int:
            return int(min(shape.get(r, 0.0) // a for r, a in wanted.items() if a > 0))

        room = sum(holds(n) for n in nodes) + sum(
            10**6 if count < 0 else holds(shape) * count for shape, count in types)
        if room < budget.workers_per_trial:
            raise PlanError(
                f"preset {preset.name!r} trains each trial on workers_per_trial="
                f"{budget.workers_per_trial} workers of {_node_text(wanted)}, but the Ray cluster at "
                f"{where} can place {room} such workers at once ({seen or 'no nodes'}); lower "
                "workers_per_trial in a copy of the preset or add nodes")


def _node_text(resources: dict[str, float]) -> str:
    return f"{resources.get('CPU', 0):g} CPU/{resources.get('GPU', 0):g} GPU"


def check_services(settings: Settings, timeout_s: float = 5.0) -> None:
    """The tracking store the run will write to, reachable from every process that writes: a
    local file cannot be reached from a cluster's other nodes, and a server that does not
    answer is named now rather than after minutes of MLflow's retries."""
    uri = settings.tracking_uri
    scheme = uri.split(":", 1)[0] if "://" in uri or uri.startswith("sqlite:") else "file"
    if settings.ray_address and scheme in ("sqlite", "file"):
        raise PlanError(
            f"--ray-address {settings.ray_address} runs trials on other machines, which cannot "
            f"write to the local tracking store {uri}; start an MLflow server (e.g. `mlflow server "
            "--backend-store-uri postgresql://... --host 0.0.0.0 --port 5000`) and pass "
            "--tracking-uri http://HOST:5000")
    if scheme in ("http", "https"):
        import urllib.error
        import urllib.request

        try:
            with urllib.request.urlopen(f"{uri.rstrip('/')}/health", timeout=timeout_s):
                pass
        except urllib.error.HTTPError:
            pass  # it answered (an auth proxy may refuse /health): reachable
        except (OSError, ValueError) as exc:
            raise ServiceUnavailable(
                f"the MLflow tracking server at {uri} does not answer ({getattr(exc, 'reason', exc)}); "
                "start it (e.g. `mlflow server --host 127.0.0.1 --port 5000`) or leave out "
                "--tracking-uri to use the local store") from None


def make_plan(settings: Settings, preset: str | None = "quick", preset_path: str | Path | None = None,
              datasets: list[str] | None = None, variants_: list[str] | None = None,
              check_machine: bool = True) -> Plan:
    """The one validation every run goes through; raises PlanError naming what is wrong.
    ``check_machine=False`` skips what depends on this machine, outside programs and GPUs (to
    check a preset on a machine that will not run it)."""
    from datamodules import catalog
    from datamodules.builtin import DATASETS

    p = load_preset(preset, preset_path)
    custom = _custom_variants(p)
    try:
        specs = catalog.available(settings.data_root)
    except DataError as exc:
        raise PlanError(str(exc)) from None
    ds = _check_names("dataset", list(datasets or p.datasets or list(DATASETS)), list(specs))
    valid_variants = variants.names(custom)
    vs = _check_names("variant", [getattr(v, "value", v) for v in (variants_ or p.variants or variants.BUILTIN)],
                      valid_variants)
    for name, table in (("dataset_space", p.dataset_space), ("dataset_params", p.dataset_params)):
        for dataset in table:
            if dataset not in specs:
                raise PlanError(f"{name}.{dataset}: unknown dataset {dataset!r}; valid: {', '.join(specs)}")
    for variant in p.variant_space:
        if variant not in valid_variants:
            raise PlanError(f"variant_space.{variant}: unknown variant {variant!r}; valid: {', '.join(valid_variants)}")
    try:
        ready = catalog.check_ready(ds, settings.data_root) if check_machine else {d: specs[d] for d in ds}
        for name, spec in ready.items():
            spec.params(p.dataset_params.get(name))
    except DataError as exc:
        raise PlanError(str(exc)) from None
    pairs, skipped, dataset_tasks = [], [], {}
    for dataset in ds:
        try:
            task = tasks.get(specs[dataset].task)
        except tasks.TaskError as exc:
            raise PlanError(f"dataset {dataset!r}: {exc}") from None
        dataset_tasks[dataset] = task.name
        for name in vs:
            variant = variants.resolve(name, custom)
            reason = variant.incompatibility(task)
            if reason:
                skipped.append(f"{dataset} · {name} skipped: {reason}")
                continue
            space = p.space_for(dataset, name)
            params = specs[dataset].params(p.dataset_params.get(dataset))
            problem = variant.check_space(space, task, params) or task.option_problem(
                {k: variants.listed_values(space[k]) or [] for k in task.hyperparameters if k in space},
                params)
            if problem:
                raise PlanError(f"preset {p.name!r}, {dataset}: {problem}")
            pairs.append(Pair(dataset=dataset, variant=name))
        if not any(pair.dataset == dataset for pair in pairs):
            able = [v for v in valid_variants if not variants.resolve(v, custom).incompatibility(task)]
            raise PlanError(f"no selected variant can train on {dataset!r} ({task.name}); "
                            f"choose from {', '.join(able)}")
    if p.budget.size_targets:
        _check_sizing(p, pairs, custom, dataset_tasks)
    plan = Plan(preset=p, settings=settings, datasets=ds, variants=vs, pairs=pairs, skipped=skipped,
                dataset_tasks=dataset_tasks, modalities={d: specs[d].modality for d in ds})
    if check_machine:
        check_resources(p, settings.ray_address)
        check_services(settings)
        if settings.ray_address:
            check_cluster(plan)
    return plan


def _check_sizing(p: Preset, pairs: list[Pair], custom: dict[str, Variant], dataset_tasks: dict[str, str]) -> None:
    """Size targets every pair can be sized to: its searched structural keys listable, and no
    target below its smallest network on any dataset of its task (the exact check, on the
    prepared dataset, comes before its sweeps start)."""
    from modules import sizing

    floors = {}
    for pair in pairs:
        variant, task = variants.resolve(pair.variant, custom), tasks.get(dataset_tasks[pair.dataset])
        space = p.space_for(pair.dataset, pair.variant)
        try:
            sizing.varying_options(variant, space)
        except sizing.SizingError as exc:
            raise PlanError(f"preset {p.name!r}, {pair.dataset}: {exc}") from None
        key = (pair.variant, task.name, repr(sorted(space.items())))
        if key not in floors:
            floors[key] = sizing.smallest(variant, task, space)
        if floors[key] is None:
            continue
        least, knobs = floors[key]
        low = [t for t in p.budget.size_targets if t < least * (1 - sizing.TOLERANCE)]
        if low:
            shown = f"{variant.sizing.width}={knobs[variant.sizing.width]}"
            raise PlanError(f"preset {p.name!r}: size target {low[0]:,} is below the smallest {pair.variant} "
                            f"network on any {task.name} dataset ({least:,} parameters at {shown}); "
                            f"size_targets must be at least {math.ceil(least * (1 - sizing.TOLERANCE)):,}")


def search_space(space: Mapping[str, Any]) -> dict[str, Any]:
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
