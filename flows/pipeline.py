"""Prefect flows: ``prepare_dataset``, ``sweep`` (one dataset, one variant) and ``benchmark``.

Flows take typed parameters (the Prefect UI renders them as a form), validate every name and
size before any work starts, and leave no MLflow run RUNNING and no Ray instance behind.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any, Optional

from prefect import flow, task
from prefect.artifacts import create_markdown_artifact, create_table_artifact
from prefect.cache_policies import NO_CACHE

from datamodules import baselines, catalog, userdata
from datamodules.errors import DataError
from flows import leaderboard, progress, tracking
from flows.presets import Preset, check_resources, load_preset, plan, select
from flows.settings import Settings, load_settings
from flows.sweep import SweepRequest, run_sweep, stop_ray


def _prepare_cache_key(context, parameters) -> Optional[str]:
    """Prefect's cache key for a preparation: the artifact's own key, once it exists on disk."""
    target, _ = catalog.artifact_location(parameters["name"], Path(parameters["data_root"]),
                                          parameters.get("params"))
    return f"prepare-{parameters['name']}-{target.name}" if target.is_dir() else None


def _retry_unless_bad_data(task, task_run, state) -> bool:
    """A passing fault (a full disk, a killed worker) is worth one retry; bad data is not."""
    try:
        state.result()
    except DataError:
        return False
    except BaseException:
        return True
    return False


@task(name="prepare", retries=1, retry_delay_seconds=1, cache_key_fn=_prepare_cache_key,
      retry_condition_fn=_retry_unless_bad_data, persist_result=True, result_serializer="json")
def prepare_task(name: str, data_root: str, params: Optional[dict] = None) -> dict:
    """Load, validate, split and featurize one dataset into a content-hashed artifact."""
    artifact_dir, manifest, reused = catalog.prepare(name, Path(data_root), params)
    return {"artifact_dir": str(artifact_dir), "manifest": manifest, "reused": reused}


def _manifest_markdown(manifest: dict, artifact_dir: str) -> str:
    splits = manifest["splits"]
    rows = "\n".join(f"| {s} | {v['n']} | {v['length_min']}-{v['length_max']} | {v['length_mean']} |"
                     for s, v in splits.items())
    return (f"## {manifest['dataset']} ({manifest['modality']}, {manifest['task']})\n\n"
            f"artifact `{artifact_dir}`, content hash `{manifest['content_hash'][:16]}`\n\n"
            f"| split | sequences | length | mean length |\n|---|---|---|---|\n{rows}\n")


def _publish_manifest(name: str, result: dict) -> None:
    create_markdown_artifact(_manifest_markdown(result["manifest"], result["artifact_dir"]),
                             key=f"dataset-{name}", description=f"prepared {name}")


@flow(name="prepare_dataset")
def prepare_dataset(datasets: list[str], home: Optional[str] = None) -> dict[str, dict]:
    """Prepare built-in or registered datasets into the state folder (reused when unchanged)."""
    settings = load_settings(home=home)
    catalog.check_ready(datasets, settings.data_root)
    out = {}
    for name in datasets:
        result = prepare_task(name, str(settings.data_root))
        _publish_manifest(name, result)
        out[name] = result
    return out


@task(name="import", retries=0, cache_policy=NO_CACHE)
def import_task(name: str, kind: str, source: str, options: dict, data_root: str) -> dict:
    """Read, check, split and featurize the user's file or folder; register it on success."""
    artifact_dir, manifest, reused = catalog.register(name, kind, Path(source), options,
                                                       Path(data_root))
    return {"artifact_dir": str(artifact_dir), "manifest": manifest, "reused": reused}


@flow(name="import_dataset")
def import_dataset(source: str, kind: str, name: str, options: Optional[dict[str, Any]] = None,
                   home: Optional[str] = None) -> dict[str, dict]:
    """Register your own data (timeseries, text, audio or sequences) under ``name``; afterwards
    the benchmark and sweep flows take it by that name like a built-in dataset."""
    settings = load_settings(home=home)
    userdata.make_spec(name, kind, Path(source), options)  # options checked before any work
    result = import_task(name, kind, source, options or {}, str(settings.data_root))
    _publish_manifest(name, result)
    return {name: result}


def _run_key(preset: Preset, datasets: list[str], variants: list[str], settings: Settings,
             scope: str) -> str:
    blob = json.dumps([scope, preset.fingerprint(), datasets, variants, settings.experiment])
    return hashlib.sha256(blob.encode()).hexdigest()[:12]


@task(name="tune-sweep", cache_policy=NO_CACHE)
def sweep_task(request: SweepRequest) -> dict:
    """Ray Tune over one variant on one dataset; the best trial scored on the test split."""
    return run_sweep(request)


def _open_benchmark_run(settings: Settings, experiment_id: str, run_key: str, preset: Preset,
                        datasets: list[str], variants: list[str], role: str) -> tuple[str, bool]:
    """An unfinished run of the same command is resumed; otherwise a new run starts."""
    uri = settings.tracking_uri
    previous = tracking.find_child(uri, experiment_id, None,
                                   {tracking.ROLE: role, "rnnbench.run_key": run_key})
    if previous is not None and previous.info.status != "FINISHED":
        tracking.client(uri).update_run(previous.info.run_id, status="RUNNING")
        return previous.info.run_id, True
    tags = {tracking.ROLE: role, "preset": preset.name, "rnnbench.run_key": run_key,
            "datasets": ",".join(datasets), "variants": ",".join(variants)}
    params = {"preset": preset.name, "datasets": ",".join(datasets), "variants": ",".join(variants),
              **{f"budget.{k}": v for k, v in vars(preset.budget).items()},
              **tracking.provenance(preset.budget.seed)}
    run_id = tracking.create_run(uri, experiment_id, f"{role}-{preset.name}", tags, params)
    tracking.log_json(uri, run_id, {"source": preset.source}, "preset.json")
    return run_id, False


def _run(settings: Settings, preset: Preset, datasets: list[str], variants: list[str],
         role: str, show_progress: bool) -> dict[str, Any]:
    uri = settings.tracking_uri
    experiment_id = tracking.ensure_experiment(uri, settings.experiment, settings.artifact_root)
    run_key = _run_key(preset, datasets, variants, settings, role)
    run_id, resumed = _open_benchmark_run(settings, experiment_id, run_key, preset, datasets,
                                          variants, role)
    status = "FAILED"
    summaries: list[dict] = []
    specs = catalog.available(settings.data_root)
    pairs, skipped = plan(datasets, variants, specs)
    if skipped:
        tracking.set_tags(uri, run_id, {"rnnbench.skipped": "; ".join(skipped)[:4000]})
    try:
        with progress.display(len(pairs), enabled=show_progress) as shown:
            for note in skipped:
                if shown is not None:
                    shown.progress.console.print(f"  [yellow]-[/] {note}")
            for dataset in datasets:
                prepared = prepare_task(dataset, str(settings.data_root),
                                        preset.dataset_params.get(dataset))
                artifact_dir = Path(prepared["artifact_dir"])
                baseline = baselines.baseline_scores(artifact_dir)
                tracking.log_metrics(uri, run_id, {leaderboard.baseline_metric_name(dataset, k): v
                                                   for k, v in baseline.items()})
                tracking.set_tags(uri, run_id, {leaderboard.baseline_tag(dataset):
                                                baselines.baseline_name(prepared["manifest"])})
                for variant in (v for d, v in pairs if d == dataset):
                    request = SweepRequest(
                        dataset=dataset, variant=variant, artifact_dir=artifact_dir, preset=preset,
                        settings=settings, experiment_id=experiment_id, run_key=run_key,
                        parent_run_id=run_id, tags={"preset": preset.name})
                    summaries.append(sweep_task(request))
        boards = leaderboard.build(uri, experiment_id, run_id)
        out_dir = settings.reports_root / run_id
        paths = leaderboard.write(boards, out_dir, {d: specs[d].modality for d in boards})
        tracking.log_files(uri, run_id, paths, "leaderboard")
        for dataset, board in boards.items():
            table = board.drop(columns=["run_id"]).astype(object).where(board.notna(), None)
            create_table_artifact(table.to_dict(orient="records"), key=f"leaderboard-{dataset}",
                                  description=f"rnnbench leaderboard for {dataset}, MLflow run {run_id}")
        create_markdown_artifact((out_dir / "leaderboard.md").read_text(), key="leaderboard",
                                 description=f"MLflow experiment {settings.experiment}, run {run_id}")
        status = "FINISHED"
        return {"run_id": run_id, "experiment_id": experiment_id, "resumed": resumed,
                "boards": boards, "reports": str(out_dir), "sweeps": summaries}
    except KeyboardInterrupt:
        status = "KILLED"
        raise
    finally:
        tracking.close_descendants(uri, experiment_id, run_id, status)
        tracking.finish(uri, run_id, status)
        stop_ray()


@flow(name="benchmark")
def benchmark(preset: str = "quick", datasets: Optional[list[str]] = None,
              variants: Optional[list[str]] = None, experiment: Optional[str] = None,
              tracking_uri: Optional[str] = None, ray_address: Optional[str] = None,
              show_progress: bool = False) -> dict[str, Any]:
    """Prepare each dataset, sweep each variant with Ray Tune, and build the leaderboards."""
    settings = load_settings(tracking_uri, experiment, ray_address)
    specs = catalog.available(settings.data_root)
    p = load_preset(preset, specs)
    ds, vs = select(p, datasets, variants, specs)
    catalog.check_ready(ds, settings.data_root)
    check_resources(p, settings.ray_address)
    return _run(settings, p, ds, vs, "benchmark", show_progress)


@flow(name="sweep")
def sweep(dataset: str, variant: str, preset: str = "quick", experiment: Optional[str] = None,
          tracking_uri: Optional[str] = None, ray_address: Optional[str] = None,
          show_progress: bool = False) -> dict[str, Any]:
    """One Ray Tune sweep (one dataset, one variant), recorded under its own parent run."""
    settings = load_settings(tracking_uri, experiment, ray_address)
    specs = catalog.available(settings.data_root)
    p = load_preset(preset, specs)
    ds, vs = select(p, [dataset], [variant], specs)
    catalog.check_ready(ds, settings.data_root)
    check_resources(p, settings.ray_address)
    return _run(settings, p, ds, vs, "benchmark", show_progress)
