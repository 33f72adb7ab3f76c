"""Prefect flows: ``prepare_dataset``, ``import_dataset``, ``sweep`` (one dataset, one variant)
and ``benchmark``.

Every flow sets up its own state folder and services from its parameters (a run started from
the Prefect UI behaves like one started from the CLI), builds and checks its plan with
``flows.plan.make_plan`` before any MLflow run is opened, and leaves no MLflow run RUNNING and
no Ray instance behind. A benchmark ends by registering its models (``flows.registry``).
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import signal
import threading
from pathlib import Path
from typing import Any, Optional

from pydantic import PositiveInt, ValidationError
from prefect import flow, task
from prefect.artifacts import create_markdown_artifact, create_table_artifact
from prefect.cache_policies import NO_CACHE
from prefect.exceptions import TerminationSignal

from datamodules import catalog, userdata
from datamodules.errors import DataError
from flows import alerts, gradients, leaderboard, plots, progress, registry, tracking
from flows.plan import Budget, Plan, PlanError, PresetName, VariantName, make_plan
from flows.quiet import quiet_interrupts, silence
from flows.settings import Settings, apply_environment, load_settings
from flows.sweep import SweepRequest, run_sweep, start_ray, stop_ray, sweep_slots
from flows.tune_threads import allow_sweeps, interrupt_sweeps

TRIGGER = "rnnbench.trigger"
FLOW_RUN = "rnnbench.flow_run_id"
RUN_KEY = "rnnbench.run_key"
CODE = "rnnbench.code"


class IncompleteBenchmark(RuntimeError):
    """Some (dataset, variant) sweeps failed; the others finished and ``result`` holds them."""

    def __init__(self, result: dict[str, Any]):
        failed = ", ".join(f"{d}/{v}" for d, v, _ in result["failures"])
        super().__init__(f"{len(result['failures'])} sweep(s) failed: {failed}")
        self.result = result


def artifact_key(*parts: str) -> str:
    """A Prefect artifact key (lowercase letters, digits and dashes only) for any names; a name
    that had to change gets a short hash, so two names never share a key."""
    raw = "-".join(parts)
    slug = re.sub(r"-+", "-", re.sub(r"[^a-z0-9-]", "-", raw.lower())).strip("-")
    if slug == raw:
        return slug
    return f"{slug}-{hashlib.sha256(raw.encode()).hexdigest()[:6]}"


def _settings(home: Optional[str], tracking_uri: Optional[str] = None, experiment: Optional[str] = None,
              ray_address: Optional[str] = None, storage: Optional[str] = None) -> Settings:
    settings = load_settings(tracking_uri, experiment, ray_address, home, storage)
    apply_environment(settings)
    silence()  # the CLI did it already; a flow run started by ``rnnbench serve`` did not
    quiet_interrupts()
    return settings


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
                             key=artifact_key("dataset", name), description=f"prepared {name}")


@flow(name="prepare_dataset")
def prepare_dataset(datasets: list[str], home: Optional[str] = None) -> dict[str, dict]:
    """Prepare built-in or registered datasets into the state folder (reused when unchanged).

    Args:
        datasets: built-in or registered dataset names
        home: the state folder (default: the serving process's RNNBENCH_HOME)
    """
    settings = _settings(home)
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
    the benchmark and sweep flows take it by that name like a built-in dataset.

    Args:
        source: your file or folder; from the UI, a path in the serving machine's import folder
        kind: timeseries, text, audio or sequences
        name: the name to register it under
        options: format options, as `rnnbench prepare --from` takes them (e.g. {"target": "load"})
        home: the state folder (default: the serving process's RNNBENCH_HOME)
    """
    if _trigger()[0] in ("deployment", "schedule"):
        # a path typed into a form must not reach the rest of the server's disk; the folder is
        # the serving process's, read before the form's home could change it
        source = str(userdata.confine(source, load_settings().imports))
    settings = _settings(home)
    userdata.make_spec(name, kind, Path(source), options)  # options checked before any work
    result = import_task(name, kind, source, options or {}, str(settings.data_root))
    _publish_manifest(name, result)
    return {name: result}


@task(name="tune-sweep", cache_policy=NO_CACHE)
def sweep_task(request: SweepRequest) -> dict:
    """Ray Tune over one variant on one dataset; the best trial scored on the test split."""
    return run_sweep(request)


def _run_key(plan: Plan, role: str) -> str:
    """What "the same command" means: role, preset text, datasets, variants and experiment."""
    blob = json.dumps([role, plan.preset.fingerprint(), plan.datasets, plan.variants,
                       plan.settings.experiment])
    return hashlib.sha256(blob.encode()).hexdigest()[:12]


def _trigger() -> tuple[str, Optional[str], int]:
    """How this flow run was started (cli, python, deployment, schedule), its id and attempt."""
    from prefect.runtime import deployment, flow_run

    if "auto-scheduled" in (flow_run.tags or []):
        trigger = "schedule"
    elif deployment.id:
        trigger = "deployment"
    else:
        trigger = os.environ.get("RNNBENCH_TRIGGER", "python")
    return trigger, flow_run.id, int(flow_run.run_count or 1)


def _resumable(run, fingerprint: str) -> str | None:
    """Why ``run`` cannot be resumed, or None when it can."""
    if run.info.status == "FINISHED":
        return f"benchmark run {run.info.run_id} FINISHED; there is nothing to resume"
    if tracking.has_live_owner(run):
        return f"benchmark run {run.info.run_id} is being driven by another process right now"
    theirs = run.data.tags.get(CODE, "unknown")
    if theirs != fingerprint:
        return (f"benchmark run {run.info.run_id} was started by other code ({theirs}, this is "
                f"{fingerprint}); resuming it would mix results")
    return None


def _open_benchmark_run(plan: Plan, experiment_id: str, role: str, resume: Optional[str]
                        ) -> tuple[str, str]:
    """(run id, one line saying whether it resumed an unfinished run or started a new one).

    Resumed: the run named by ``resume``; the same Prefect flow run retried; or, for a run
    started by hand (CLI or Python), the newest unfinished run of the same command that no
    live process owns and that the same code started. Anything else starts a new run."""
    uri = plan.settings.tracking_uri
    fingerprint = tracking.code_fingerprint()
    trigger, flow_run_id, attempt = _trigger()
    client = tracking.client(uri)
    run_key = _run_key(plan, role)
    candidate, note = None, ""
    if resume:
        try:
            candidate = client.get_run(resume)
        except Exception:
            raise PlanError(f"--resume {resume}: no such MLflow run in {uri}") from None
        if candidate.info.experiment_id != experiment_id or candidate.data.tags.get(tracking.ROLE) != role:
            raise PlanError(f"--resume {resume}: not a {role} run of experiment {plan.settings.experiment!r}")
        reason = _resumable(candidate, fingerprint)
        if reason:
            raise PlanError(f"--resume {resume}: {reason}")
    elif attempt > 1 and flow_run_id:
        candidate = tracking.find_child(uri, experiment_id, None, {FLOW_RUN: str(flow_run_id)})
        note = " (Prefect retry of the same flow run)"
    elif trigger in ("cli", "python"):
        candidate = tracking.find_child(uri, experiment_id, None, {tracking.ROLE: role, RUN_KEY: run_key})
        if candidate is not None and _resumable(candidate, fingerprint):
            candidate = None
    if candidate is not None and (resume or not _resumable(candidate, fingerprint)):
        client.update_run(candidate.info.run_id, status="RUNNING")
        return candidate.info.run_id, f"resuming unfinished {role} run {candidate.info.run_id}{note}"
    p = plan.preset
    tags = {tracking.ROLE: role, "preset": p.name, RUN_KEY: run_key, CODE: fingerprint,
            TRIGGER: trigger, "datasets": ",".join(plan.datasets), "variants": ",".join(plan.variants)}
    if flow_run_id:
        tags[FLOW_RUN] = str(flow_run_id)
    if trigger in ("deployment", "schedule"):
        from prefect.runtime import deployment

        tags[alerts.DEPLOYMENT] = str(deployment.id)
    params = {"preset": p.name, "datasets": ",".join(plan.datasets), "variants": ",".join(plan.variants),
              **{f"budget.{k}": v for k, v in p.budget.model_dump().items()},
              **tracking.provenance(p.budget.seed, p.budget.deterministic)}
    run_id = tracking.create_run(uri, experiment_id, f"{role}-{p.name}", tags, params)
    tracking.log_json(uri, run_id, {"source": p.source}, "preset.json")
    return run_id, f"new {role} run {run_id}"


def _run(plan: Plan, role: str, resume: Optional[str], show_progress: bool) -> dict[str, Any]:
    settings = plan.settings
    uri = settings.tracking_uri
    experiment_id = tracking.ensure_experiment(uri, settings.experiment, settings.artifact_root)
    run_id, opened = _open_benchmark_run(plan, experiment_id, role, resume)
    if show_progress:
        progress.console.print(opened, highlight=False)
    status = "FAILED"
    summaries: list[dict] = []
    failures: list[tuple[str, str, str]] = []
    if plan.skipped:
        tracking.set_tags(uri, run_id, {"rnnbench.skipped": "; ".join(plan.skipped)[:4000]})
    if plan.unequal_spaces():  # the leaderboards print it too (they read it from this tag)
        tracking.set_tags(uri, run_id, {leaderboard.UNEQUAL: "; ".join(plan.unequal_spaces())[:4000]})
    try:
        sweeps = len(plan.pairs) * max(1, len(plan.preset.budget.size_targets))  # a sweep per size target
        with tracking.Heartbeat(uri, run_id), progress.display(sweeps, enabled=show_progress) as shown:
            for note in plan.skipped:
                if shown is not None:
                    shown.progress.console.print(f"  [yellow]-[/] {note}")
            for note in plan.unequal_spaces():
                if shown is not None:
                    shown.progress.console.print(f"  [yellow]![/] not equal: {note}")
            requests = []
            for dataset in plan.datasets:
                prepared = prepare_task(dataset, str(settings.data_root),
                                        plan.preset.dataset_params.get(dataset))
                artifact_dir = Path(prepared["artifact_dir"])
                _record_baseline(plan, dataset, artifact_dir, run_id)
                for variant in plan.variants_for(dataset):
                    for target in plan.preset.budget.size_targets or [None]:
                        requests.append(SweepRequest(
                            dataset=dataset, variant=plan.variant(variant), task=plan.task(dataset),
                            artifact_dir=artifact_dir, budget=plan.preset.budget,
                            space=sized_space(plan, dataset, variant, artifact_dir, target),
                            settings=settings, experiment_id=experiment_id, parent_run_id=run_id,
                            tags={"preset": plan.preset.name}, packages=plan.packages(),
                            size_target=target, input_gradients=_wants_gradients(plan, dataset)))
            _sweep_all(plan, requests, summaries, failures)
        boards = leaderboard.build(uri, experiment_id, run_id)
        out_dir = settings.reports_root / run_id
        paths = leaderboard.write(boards, out_dir, plan.modalities)
        tracking.log_files(uri, run_id, paths, "leaderboard")
        gradients.publish(uri, run_id, boards, [d for d in plan.datasets if _wants_gradients(plan, d)], out_dir)
        plots.publish(uri, tracking.client(uri).get_run(run_id), boards, out_dir, plan.modalities)
        registered = registry.register(uri, run_id, boards)
        for dataset, board in boards.items():
            table = board.drop(columns=["run_id"]).astype(object).where(board.notna(), None)
            create_table_artifact(table.to_dict(orient="records"), key=artifact_key("leaderboard", dataset),
                                  description=f"rnnbench leaderboard for {dataset}, MLflow run {run_id}. "
                                              + " ".join(board.attrs.get("headlines", [])))
        create_markdown_artifact((out_dir / "leaderboard.md").read_text(), key="leaderboard",
                                 description=f"MLflow experiment {settings.experiment}, run {run_id}")
        _compare_with_previous(uri, experiment_id, run_id)
        result = {"run_id": run_id, "experiment_id": experiment_id, "opened": opened,
                  "resumed": opened.startswith("resuming"), "boards": boards, "reports": str(out_dir),
                  "sweeps": summaries, "failures": failures, "modalities": plan.modalities,
                  "registered": registered}
        if failures:
            tracking.set_tags(uri, run_id, {"rnnbench.failed": "; ".join(f"{d}/{v}: {r}" for d, v, r in failures)[:4000]})
            raise IncompleteBenchmark(result)
        status = "FINISHED"
        return result
    except (KeyboardInterrupt, TerminationSignal):
        status = "KILLED"
        if not _cancelling():
            raise
    finally:
        tracking.close_descendants(uri, experiment_id, run_id, status)
        tracking.finish(uri, run_id, status)
        stop_ray()
    from prefect.states import Cancelled

    return Cancelled(message=f"Cancelled; MLflow run {run_id} and its sweeps and trials KILLED, "
                             "Ray stopped.")


def _cancelling() -> bool:
    """Whether this flow run was stopped because it was cancelled (the UI's Cancel button sets
    it Cancelling, then the runner sends SIGTERM). The flow then returns a Cancelled state:
    raising, it would end Crashed, as Prefect reads the stop as a cancel only when its own
    SIGTERM handler raised, and during a sweep that handler is rnnbench's (Tune saves its
    state and stops its trials)."""
    from prefect import get_client
    from prefect.runtime import flow_run

    if not flow_run.id:
        return False
    try:
        with get_client(sync_client=True) as client:
            state = client.read_flow_run(flow_run.id).state
    except Exception:
        return False
    return state is not None and state.is_cancelling()


def _compare_with_previous(uri: str, experiment_id: str, run_id: str) -> None:
    """A deployment's run: its comparison artifact and regression notice (``flows.alerts``),
    which never fail a benchmark that trained."""
    deployment_id = tracking.client(uri).get_run(run_id).data.tags.get(alerts.DEPLOYMENT)
    if not deployment_id:
        return
    try:
        alerts.compare_with_previous(uri, experiment_id, run_id, deployment_id)
    except Exception as exc:
        alerts.log.warning("comparison with the previous run not published: %s: %s",
                           type(exc).__name__, exc)


def _wants_gradients(plan: Plan, dataset: str) -> bool:
    return catalog.get_dataset(dataset, plan.settings.data_root).input_gradients


def sized_space(plan: Plan, dataset: str, variant: str, artifact_dir: Path, target: Optional[int]) -> dict[str, Any]:
    """The variant's search space on ``dataset``; with a size ``target``, its width (and second
    knob, where needed) fixed to the values that land within 5% of it on the prepared dataset,
    one set per configuration of the structural keys the space searches (looked up as each
    trial draws them). A target the variant cannot reach is refused before any sweep starts."""
    from ray import tune

    from datamodules.artifact import read_manifest
    from flows.training import PreparedData
    from modules import sizing

    space = plan.preset.space_for(dataset, variant)
    if not target:
        return space
    v, data = plan.variant(variant), PreparedData(read_manifest(artifact_dir), {}, {}).data
    try:
        varying, table = sizing.solve_space(v, plan.task(dataset), data, space, target)
    except sizing.SizingError as exc:
        raise PlanError(f"{dataset}: {exc}") from None
    knobs = dict.fromkeys(k for s in table.values() for k in s.values)
    sized = {k: val for k, val in space.items() if k not in knobs}
    for knob in knobs:
        values = {s.values[knob] for s in table.values()}
        sized[knob] = values.pop() if len(values) == 1 else tune.sample_from(
            sizing.SolvedKnob(knob, varying, {k: s.values for k, s in table.items()}))
    return sized


def _sweep_all(plan: Plan, requests: list[SweepRequest], summaries: list[dict],
               failures: list[tuple[str, str, str]]) -> None:
    """Run the sweeps, side by side as far as the Ray instance has room (``sweep_slots``),
    each a Prefect task in its own thread; one failing sweep does not stop the others."""
    start_ray(plan.settings, plan.packages())
    slots = min(sweep_slots(plan.preset.budget), len(requests))
    if slots <= 1:  # one after another, in this thread (Tune's own Ctrl-C handling)
        for request in requests:
            try:
                summaries.append(sweep_task(request))
            except Exception as exc:
                failures.append((request.dataset, request.variant.name, f"{type(exc).__name__}: {exc}"))
        return
    from prefect.futures import as_completed

    stopping = threading.Event()

    def on_interrupt(signum, frame):
        """First Ctrl-C (or SIGTERM): every sweep saves its state and stops, as one sweep
        does; a second one stops at once."""
        if stopping.is_set():
            raise KeyboardInterrupt
        stopping.set()
        interrupt_sweeps()

    main = threading.current_thread() is threading.main_thread()
    previous = signal.signal(signal.SIGINT, on_interrupt) if main else None
    allow_sweeps()
    pending, running = list(requests), {}
    try:
        while pending or running:
            while pending and len(running) < slots and not stopping.is_set():
                request = pending.pop(0)
                running[sweep_task.submit(request)] = request
            if not running:
                break
            done = next(iter(as_completed(list(running))))
            request = running.pop(done)
            try:
                summaries.append(done.result())
            except (KeyboardInterrupt, TerminationSignal):
                stopping.set()
                interrupt_sweeps()
            except Exception as exc:
                if not stopping.is_set():
                    failures.append((request.dataset, request.variant.name, f"{type(exc).__name__}: {exc}"))
    finally:
        if main:
            signal.signal(signal.SIGINT, previous)
    if stopping.is_set():
        raise KeyboardInterrupt


def _record_baseline(plan: Plan, dataset: str, artifact_dir: Path, run_id: str) -> None:
    """The task's trivial baseline, scored on val and test like the models, on the run."""
    from flows.training import PreparedData, score_baseline

    uri = plan.settings.tracking_uri
    data = PreparedData.load(artifact_dir)
    tracking.dataset_input(uri, run_id, data.manifest)  # before any sweep logs it, side by side
    task = plan.task(dataset)
    scores = score_baseline(task, data)
    tracking.log_metrics(uri, run_id, {leaderboard.baseline_metric_name(dataset, k): v
                                       for k, v in scores.items()})
    tracking.set_tags(uri, run_id, {leaderboard.baseline_tag(dataset): task.baseline_name(data.data)})


def _variant_names(variants: Optional[list], extra_variants: Optional[list[str]]) -> Optional[list[str]]:
    chosen = [getattr(v, "value", v) for v in (variants or [])] + list(extra_variants or [])
    return chosen or None


def _with_budget(plan: Plan, **overrides: Optional[int]) -> Plan:
    """The flow's budget parameters over the preset's, checked like the preset's own and
    written into the preset text the run logs (so its run key differs from the plain preset's)."""
    given = {k: v for k, v in overrides.items() if v is not None}
    if not given:
        return plan
    p = plan.preset
    try:
        budget = Budget.model_validate({**p.budget.model_dump(), **given})
    except ValidationError as exc:
        err = exc.errors()[0]
        raise PlanError(f"budget.{err['loc'][0]}: {err['msg']} (got {err['input']!r})") from None
    note = "".join(f"\n# flow parameter: budget.{k} = {v}" for k, v in given.items())
    return plan.model_copy(update={"preset": p.model_copy(update={"budget": budget,
                                                                   "source": p.source + note})})


# The flows' docstrings list their arguments Google-style: Prefect shows each line beside its
# field in the UI's form.
@flow(name="benchmark", on_failure=[alerts.on_failure])
def benchmark(preset: PresetName = PresetName.quick, preset_path: Optional[str] = None,
              datasets: Optional[list[str]] = None, variants: Optional[list[VariantName]] = None,
              extra_variants: Optional[list[str]] = None, num_samples: Optional[PositiveInt] = None,
              max_epochs: Optional[PositiveInt] = None, experiment: Optional[str] = None,
              tracking_uri: Optional[str] = None, ray_address: Optional[str] = None,
              storage: Optional[str] = None, home: Optional[str] = None,
              resume: Optional[str] = None, show_progress: bool = False) -> dict[str, Any]:
    """Prepare each dataset, sweep each variant with Ray Tune, and build the leaderboards.

    Args:
        preset: a shipped preset (its budget, search space, datasets and variants)
        preset_path: your own preset, a TOML file on the machine that runs the flow (instead of preset)
        datasets: built-in or registered dataset names (default: the preset's)
        variants: built-in variants to run (default: the preset's)
        extra_variants: variants your preset declares under [custom_variants]
        num_samples: trials per variant, over the preset's budget
        max_epochs: most epochs per trial, over the preset's budget
        experiment: MLflow experiment (default: the serving process's, else rnnbench)
        tracking_uri: MLflow tracking URI (default: the serving process's)
        ray_address: a Ray cluster (default: the serving process's, else a local Ray)
        storage: Tune's state and checkpoints: a folder every Ray node mounts, or s3://...
        home: the state folder (default: the serving process's RNNBENCH_HOME)
        resume: an unfinished benchmark run id to continue
        show_progress: a live progress display on the console (for the CLI)
    """
    settings = _settings(home, tracking_uri, experiment, ray_address, storage)
    plan = make_plan(settings, preset, preset_path, datasets, _variant_names(variants, extra_variants))
    plan = _with_budget(plan, num_samples=num_samples, max_epochs=max_epochs)
    return _run(plan, "benchmark", resume, show_progress)


@flow(name="sweep")
def sweep(dataset: str, variant: Optional[VariantName] = None, extra_variant: Optional[str] = None,
          preset: PresetName = PresetName.quick, preset_path: Optional[str] = None,
          num_samples: Optional[PositiveInt] = None, max_epochs: Optional[PositiveInt] = None,
          experiment: Optional[str] = None, tracking_uri: Optional[str] = None,
          ray_address: Optional[str] = None, storage: Optional[str] = None,
          home: Optional[str] = None, resume: Optional[str] = None,
          show_progress: bool = False) -> dict[str, Any]:
    """One Ray Tune sweep (one dataset, one variant), recorded under its own parent run.

    Args:
        dataset: a built-in or registered dataset name
        variant: a built-in variant (or leave empty and give extra_variant)
        extra_variant: a variant your preset declares under [custom_variants]
        preset: a shipped preset (its budget and search space)
        preset_path: your own preset, a TOML file on the machine that runs the flow (instead of preset)
        num_samples: trials, over the preset's budget
        max_epochs: most epochs per trial, over the preset's budget
        experiment: MLflow experiment (default: the serving process's, else rnnbench)
        tracking_uri: MLflow tracking URI (default: the serving process's)
        ray_address: a Ray cluster (default: the serving process's, else a local Ray)
        storage: Tune's state and checkpoints: a folder every Ray node mounts, or s3://...
        home: the state folder (default: the serving process's RNNBENCH_HOME)
        resume: an unfinished run id to continue
        show_progress: a live progress display on the console (for the CLI)
    """
    settings = _settings(home, tracking_uri, experiment, ray_address, storage)
    names = _variant_names([variant] if variant else None, [extra_variant] if extra_variant else None)
    if not names or len(names) != 1:
        raise PlanError("sweep: give exactly one of variant (a built-in variant) and "
                        "extra_variant (one your preset declares)")
    plan = make_plan(settings, preset, preset_path, [dataset], names)
    plan = _with_budget(plan, num_samples=num_samples, max_epochs=max_epochs)
    return _run(plan, "benchmark", resume, show_progress)
