"""The ``rnnbench`` command: run, sweep, prepare, predict, report, list, ui, serve, config, gc.

Commands only: the plan is checked by ``flows.plan.make_plan`` (a bad name or size gets one
line, the valid choices and exit code 2, before Prefect, Ray, MLflow or torch is imported);
process setup lives in ``flows.runtime``, what is printed in ``flows.render``. Ctrl-C marks runs
KILLED; the same command then resumes.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Optional

import typer

from flows import runtime
from flows.runtime import EXIT_BAD_INPUT, EXIT_FAILED, EXIT_UNAVAILABLE

app = typer.Typer(no_args_is_help=True, add_completion=False, pretty_exceptions_enable=False,
                  help="Fair, tuned bake-offs of RNN variants against a Transformer baseline.")


def _fail(message: str, code: int = EXIT_BAD_INPUT) -> None:
    from flows.render import error

    error(message)
    raise typer.Exit(code)


def _split(value: Optional[str]) -> Optional[list[str]]:
    if value is None:
        return None
    return [v.strip() for v in value.split(",") if v.strip()]


def _plan(settings, preset: str, datasets, variants):
    from flows.plan import PlanError, make_plan

    try:
        return make_plan(settings, preset, None, datasets, variants)
    except PlanError as exc:
        _fail(str(exc), runtime.exit_code(exc))


def _sized(targets: list[int]) -> str:
    """", each variant sized to 10k, 50k parameters (one sweep per target)" or nothing."""
    if not targets:
        return ""
    from modules.sizing import size_label

    shown = ", ".join(size_label("", t)[1:] for t in targets)
    return f", each variant sized to {shown} parameters (one sweep per target)"


def _benchmark_args(plan, preset: str, resume: Optional[str]) -> dict:
    """The flow's parameters for a checked plan: built-in variants by name, a preset's own
    variants as extra_variants, a preset file as preset_path."""
    from modules.variants import BUILTIN

    is_file = Path(preset).suffix == ".toml"
    return dict(**({"preset_path": preset} if is_file else {"preset": preset}),
                datasets=plan.datasets, variants=[v for v in plan.variants if v in BUILTIN],
                extra_variants=[v for v in plan.variants if v not in BUILTIN] or None,
                experiment=plan.settings.experiment, tracking_uri=_shown_uri(plan.settings),
                ray_address=plan.settings.ray_address, storage=plan.settings.storage,
                home=str(plan.settings.home), resume=resume,
                show_progress=True)


def _shown_uri(settings) -> Optional[str]:
    """The tracking URI as a flow parameter, which Prefect records and shows in its UI: none
    when it holds a password (the flow reads it from MLFLOW_TRACKING_URI, which the CLI set)."""
    from flows.settings import has_secret

    return None if has_secret(settings.tracking_uri) else settings.tracking_uri


def _run_benchmark(flow_fn, settings, **kwargs) -> None:
    from flows import render
    from flows.pipeline import IncompleteBenchmark

    try:
        result = runtime.run_flow(flow_fn, **kwargs)
    except IncompleteBenchmark as exc:
        render.results(exc.result, settings)
        render.error(str(exc))
        raise typer.Exit(EXIT_FAILED) from None
    render.results(result, settings)


@app.command()
def run(
    preset: str = typer.Option("quick", help="preset name or path to a .toml file"),
    datasets: Optional[str] = typer.Option(None, help="comma-separated dataset names"),
    variants: Optional[str] = typer.Option(None, help="comma-separated variant names"),
    tracking_uri: Optional[str] = typer.Option(None, help="MLflow tracking URI"),
    ray_address: Optional[str] = typer.Option(None, help="address of a running Ray cluster"),
    storage: Optional[str] = typer.Option(
        None, help="Tune's state and checkpoints: a folder every Ray node mounts, or s3://... "
                   "(default $RNNBENCH_HOME/ray; required with --ray-address)"),
    experiment: Optional[str] = typer.Option(None, help="MLflow experiment (default rnnbench)"),
    resume: Optional[str] = typer.Option(None, help="continue this unfinished benchmark run id"),
) -> None:
    """Run the benchmark flow: prepare datasets, sweep every variant, print leaderboards."""
    settings = runtime.setup(tracking_uri, experiment, ray_address, storage)
    plan = _plan(settings, preset, _split(datasets), _split(variants))
    from flows.render import console

    b = plan.preset.budget
    console.print(f"rnnbench [bold]{plan.preset.name}[/]: {len(plan.datasets)} dataset(s) x "
                  f"{len(plan.variants)} variant(s), {b.num_samples} trials of at most {b.max_epochs} "
                  f"epochs each{_sized(b.size_targets)}"
                  f"{f', the best of each retrained on {b.final_seeds} seeds' if b.final_seeds else ''}"
                  f"; state in {settings.home}", soft_wrap=True)
    from flows.pipeline import benchmark

    _run_benchmark(benchmark, settings, **_benchmark_args(plan, preset, resume))


@app.command()
def sweep(
    dataset: str = typer.Option(..., help="dataset name"),
    variant: str = typer.Option(..., help="variant name"),
    preset: str = typer.Option("quick", help="preset name or path to a .toml file"),
    tracking_uri: Optional[str] = typer.Option(None, help="MLflow tracking URI"),
    ray_address: Optional[str] = typer.Option(None, help="address of a running Ray cluster"),
    storage: Optional[str] = typer.Option(
        None, help="Tune's state and checkpoints: a folder every Ray node mounts, or s3://... "
                   "(default $RNNBENCH_HOME/ray; required with --ray-address)"),
    experiment: Optional[str] = typer.Option(None, help="MLflow experiment (default rnnbench)"),
    resume: Optional[str] = typer.Option(None, help="continue this unfinished run id"),
) -> None:
    """Run one sweep (one dataset, one variant)."""
    settings = runtime.setup(tracking_uri, experiment, ray_address, storage)
    plan = _plan(settings, preset, [dataset], [variant])
    from flows.pipeline import sweep as sweep_flow

    which = {k: v for k, v in _benchmark_args(plan, preset, resume).items() if k.startswith("preset")}
    from modules.variants import BUILTIN

    chosen = {"variant": variant} if variant in BUILTIN else {"extra_variant": variant}
    _run_benchmark(sweep_flow, settings, dataset=dataset, **chosen, **which,
                   experiment=settings.experiment,
                   tracking_uri=_shown_uri(settings), ray_address=settings.ray_address,
                   storage=settings.storage, home=str(settings.home), resume=resume,
                   show_progress=True)


@app.command()
def prepare(
    names: Optional[list[str]] = typer.Argument(None, help="dataset names (built-in or registered)"),
    all_: bool = typer.Option(False, "--all", help="prepare every built-in dataset"),
    from_: Optional[Path] = typer.Option(None, "--from", help="your own file or folder to register",
                                         rich_help_panel="Your own data"),
    kind: Optional[str] = typer.Option(None, help="timeseries | text | audio | sequences",
                                       rich_help_panel="Your own data"),
    name: Optional[str] = typer.Option(None, help="the name to register it under",
                                       rich_help_panel="Your own data"),
    target: Optional[str] = typer.Option(None, help="timeseries: the column to forecast",
                                         rich_help_panel="Format options"),
    time_column: Optional[str] = typer.Option(None, help="timeseries: column to sort rows by",
                                              rich_help_panel="Format options"),
    id_column: Optional[str] = typer.Option(
        None, help="timeseries: column naming the series in a long-format file of many series "
                   "(one global model; short series reported and skipped)",
        rich_help_panel="Format options"),
    calendar: Optional[str] = typer.Option(
        None, help="timeseries: calendar inputs from the time column, any of hour,dow,month "
                   "(sin/cos; off by default)", rich_help_panel="Format options"),
    resample: Optional[str] = typer.Option(
        None, help="timeseries: resample an unevenly spaced time column to this pandas "
                   "frequency (e.g. 1h, 1D, MS), averaging within each step",
        rich_help_panel="Format options"),
    window: Optional[int] = typer.Option(None, help="timeseries: input steps (48)",
                                         rich_help_panel="Format options"),
    horizon: Optional[int] = typer.Option(None, help="timeseries: steps to forecast (12)",
                                          rich_help_panel="Format options"),
    season: Optional[int] = typer.Option(None, help="timeseries: seasonal-naive lag (1)",
                                         rich_help_panel="Format options"),
    on_missing: Optional[str] = typer.Option(None, help="timeseries: error | interpolate",
                                             rich_help_panel="Format options"),
    text_column: Optional[str] = typer.Option(None, help="text: column of text (text)",
                                              rich_help_panel="Format options"),
    label_column: Optional[str] = typer.Option(None, help="text: column of labels (label)",
                                               rich_help_panel="Format options"),
    level: Optional[str] = typer.Option(None, help=".txt language model: char | word",
                                        rich_help_panel="Format options"),
    seq_len: Optional[int] = typer.Option(None, help=".txt language model: window (128)",
                                          rich_help_panel="Format options"),
    encoding: Optional[str] = typer.Option(None, help="text: file encoding (utf-8)",
                                           rich_help_panel="Format options"),
    max_len: Optional[int] = typer.Option(None, help="text/sequences: longest kept sequence",
                                          rich_help_panel="Format options"),
    max_frames: Optional[int] = typer.Option(None, help="audio: longest kept clip, 10 ms frames",
                                             rich_help_panel="Format options"),
    on_long: Optional[str] = typer.Option(None, help="longer sequences: truncate | error",
                                          rich_help_panel="Format options"),
    features: Optional[str] = typer.Option(None, help="audio: logmel | mfcc",
                                           rich_help_panel="Format options"),
    sample_rate: Optional[int] = typer.Option(None, help="audio: resample to this rate (16000)",
                                              rich_help_panel="Format options"),
    group_pattern: Optional[str] = typer.Option(
        None, help="audio: regex whose first group in a file name is the speaker, kept in one split",
        rich_help_panel="Format options"),
    task: Optional[str] = typer.Option(None, help="sequences: auto | classification | regression",
                                       rich_help_panel="Format options"),
) -> None:
    """Prepare datasets into the local state folder (reused when inputs are unchanged), or
    register your own with --from PATH --kind KIND --name NAME."""
    from datamodules import catalog
    from datamodules.builtin import DATASETS
    from datamodules.errors import DataError
    from flows import render

    settings = runtime.setup()
    options = {k: v for k, v in dict(
        target=target, time_column=time_column, id_column=id_column, calendar=calendar,
        resample=resample, window=window, horizon=horizon, season=season,
        on_missing=on_missing, text_column=text_column, label_column=label_column, level=level,
        seq_len=seq_len, encoding=encoding, max_len=max_len, max_frames=max_frames,
        on_long=on_long, features=features, sample_rate=sample_rate, group_pattern=group_pattern,
        task=task).items() if v is not None}
    if from_ is not None:
        if names or all_:
            _fail("--from registers one dataset; leave out dataset names and --all")
        if not kind or not name:
            _fail("--from needs --kind (timeseries, text, audio or sequences) and --name")
        try:
            # read, checked and prepared before Prefect starts, so bad data is refused in
            # seconds; the flow below then finds the artifact and records the registration
            artifact_dir, manifest, reused = catalog.register(name, kind, from_, options,
                                                               settings.data_root)
        except DataError as exc:
            _fail(str(exc))
        from flows.pipeline import import_dataset

        runtime.run_flow(import_dataset, source=str(from_), kind=kind, name=name, options=options,
                         home=str(settings.home))
        render.prepared({name: {"artifact_dir": str(artifact_dir), "manifest": manifest,
                                "reused": reused}})
        render.console.print(f"Registered [bold]{name}[/]; use it with "
                             f"[bold]rnnbench run --datasets {name}[/]", highlight=False, soft_wrap=True)
        return
    if kind or name or options:
        _fail("--kind, --name and format options go with --from PATH")
    try:
        specs = catalog.available(settings.data_root)
        chosen = list(DATASETS) if all_ else list(names or [])
        if not chosen:
            _fail(f"name at least one dataset or pass --all; valid: {', '.join(specs)}")
        catalog.check_ready(chosen, settings.data_root)
    except DataError as exc:
        _fail(str(exc))
    from flows.pipeline import prepare_dataset

    render.prepared(runtime.run_flow(prepare_dataset, datasets=chosen, home=str(settings.home)))


@app.command()
def predict(
    input_: Path = typer.Option(..., "--input", help="a .csv, .jsonl, .txt (one text per line) or "
                                                     "audio (.wav .flac .ogg) file"),
    dataset: Optional[str] = typer.Option(None, help="predict with models:/rnnbench-NAME@champion"),
    model_uri: Optional[str] = typer.Option(None, help="any model URI instead (models:/..., runs:/...)"),
    tracking_uri: Optional[str] = typer.Option(None, help="MLflow tracking URI"),
) -> None:
    """Predict with a registered model: one JSON line per input on stdout."""
    from flows import predict as p

    settings = runtime.setup(tracking_uri)
    try:
        fmt = p.input_format(input_)  # before the registry is asked or any model loaded
        uri = p.model_uri(settings.tracking_uri, dataset, model_uri)
        model, spec = p.load(uri)
        predictions = p.predict(model, p.read(input_, fmt, spec), uri)
    except p.PredictError as exc:
        _fail(str(exc))
    for line in p.lines(predictions):
        print(line)


@app.command()
def report(
    experiment: Optional[str] = typer.Option(None, help="MLflow experiment (default rnnbench)"),
    run: Optional[str] = typer.Option(None, "--run", help="benchmark run id (default: the newest finished)"),
    compare: Optional[tuple[str, str]] = typer.Option(
        None, metavar="RUN_A RUN_B", help="two benchmark runs side by side, with B - A"),
    out: Optional[Path] = typer.Option(None, help="also write the tables (CSV, Markdown), figures (PNG) "
                                                  "and one HTML page here"),
    tracking_uri: Optional[str] = typer.Option(None, help="MLflow tracking URI"),
) -> None:
    """Leaderboards rebuilt from the MLflow tracking store alone, or two runs compared."""
    from flows import leaderboard, render
    from flows import report as r
    from flows.settings import redact

    settings = runtime.setup(tracking_uri, experiment)
    if compare and run:
        _fail("--compare takes its two runs itself; leave out --run")
    try:
        if compare:
            boards, modalities = r.compare(settings.tracking_uri, *compare), {}
            render.comparison(boards)
        else:
            bench = r.benchmark_run(settings.tracking_uri, settings.experiment, run)
            boards, modalities = r.rebuild(settings.tracking_uri, bench)
            if not boards:
                _fail(f"benchmark run {bench.info.run_id} has no finished or failed sweeps to report")
            render.console.print(f"Benchmark run [bold]{bench.info.run_id}[/] ({bench.info.status}) of "
                                 f"experiment {settings.experiment}, from {redact(settings.tracking_uri)}",
                                 soft_wrap=True)
            render.console.print()
            render.leaderboards(boards, modalities)
    except r.ReportError as exc:
        _fail(str(exc))
    if out is not None:
        paths = leaderboard.write(boards, out, modalities)
        if not compare:
            from flows import plots

            paths += plots.write(settings.tracking_uri, bench, boards, out, modalities)[0]
        render.console.print(f"Written: {', '.join(str(p) for p in paths)}", soft_wrap=True)


@app.command("list")
def list_() -> None:
    """The datasets, variants and presets rnnbench knows."""
    from datamodules import catalog
    from datamodules.builtin import DATASETS
    from flows import render
    from flows.plan import available_presets, load_preset
    from modules.variants import VARIANTS

    settings = runtime.setup()
    specs = catalog.available(settings.data_root)
    render.catalogue(DATASETS, {k: v for k, v in specs.items() if k not in DATASETS},
                     VARIANTS, [(name, load_preset(name).description) for name in available_presets()])


def _wait_http(url: str, timeout: float) -> bool:
    import urllib.request

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(url, timeout=2):
                return True
        except OSError:
            time.sleep(0.5)
    return False


def _answers(url: str, timeout: float) -> bool:
    """Whether a server answers at ``url`` at all (a refusal, e.g. an auth proxy's 401, is an
    answer)."""
    import urllib.error
    import urllib.parse
    import urllib.request

    parts = urllib.parse.urlsplit(url)  # urllib takes no user:password@ (a 401 is an answer anyway)
    url = parts._replace(netloc=parts.netloc.rpartition("@")[2]).geturl()
    deadline = time.monotonic() + timeout
    while True:
        try:
            with urllib.request.urlopen(url, timeout=2):
                return True
        except urllib.error.HTTPError:
            return True
        except (OSError, ValueError):
            if time.monotonic() >= deadline:
                return False
            time.sleep(0.5)


@app.command()
def ui(
    mlflow_port: int = typer.Option(5000, help="port for the MLflow UI"),
    prefect_port: int = typer.Option(4200, help="port for the Prefect UI"),
    host: str = typer.Option("127.0.0.1", help="address the local UIs listen on (0.0.0.0: "
                                               "every interface; mind who can reach it)"),
) -> None:
    """Start the MLflow UI and a Prefect server over the local state; a tracking server or
    Prefect API that is configured (MLFLOW_TRACKING_URI, PREFECT_API_URL, rnnbench.toml) is
    shown instead of started."""
    settings = runtime.setup()
    for port in (mlflow_port, prefect_port):
        if not 0 < port < 65536:
            _fail(f"port must be between 1 and 65535, got {port}")
    from flows.render import console
    from flows.settings import redact

    remote = {}
    if settings.tracking_uri.startswith(("http://", "https://")):
        remote["MLflow"] = settings.tracking_uri.rstrip("/")
    if settings.prefect_api_url:
        remote["Prefect"] = (os.environ.get("PREFECT_UI_URL")
                             or settings.prefect_api_url.rstrip("/").removesuffix("/api"))
    for name, url in remote.items():
        ok = _answers(url, 5)
        console.print(f"{name} UI: {redact(url)}" + ("" if ok else "  [red](not answering)[/]"),
                      soft_wrap=True)
    bin_dir = Path(sys.executable).parent
    env = {**os.environ, "PREFECT_HOME": str(settings.prefect_home)}
    env.pop("PREFECT_API_URL", None)
    commands = {
        "MLflow": [str(bin_dir / "mlflow"), "ui", "--backend-store-uri", settings.tracking_uri,
                   "--host", host, "--port", str(mlflow_port)],
        "Prefect": [str(bin_dir / "prefect"), "server", "start", "--host", host,
                    "--port", str(prefect_port)],
    }
    local = {name: cmd for name, cmd in commands.items() if name not in remote}
    if not local:
        return
    procs = [subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
             for cmd in local.values()]
    reach = "127.0.0.1" if host in ("0.0.0.0", "::", "") else host
    try:
        ports = {"MLflow": mlflow_port, "Prefect": prefect_port}
        for name in local:
            url = f"http://{reach}:{ports[name]}"
            ok = _wait_http(url, 60)
            console.print(f"{name} UI: {url}" + ("" if ok else "  [red](not answering yet)[/]"))
        console.print("Ctrl-C stops " + ("both." if len(procs) > 1 else "it."))
        while all(p.poll() is None for p in procs):
            time.sleep(1)
        _fail("a UI server exited; is the port already in use?")
    except KeyboardInterrupt:
        pass
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        for proc in procs:
            try:
                proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                proc.kill()


@app.command()
def config(
    tracking_uri: Optional[str] = typer.Option(None, help="MLflow tracking URI"),
    ray_address: Optional[str] = typer.Option(None, help="address of a running Ray cluster"),
    storage: Optional[str] = typer.Option(None, help="Tune's state and checkpoints"),
    experiment: Optional[str] = typer.Option(None, help="MLflow experiment"),
) -> None:
    """The effective settings and where each came from: an option, an environment variable,
    rnnbench.toml ($RNNBENCH_CONFIG or ./rnnbench.toml) or the default. Credentials masked."""
    from flows.settings import CONFIG_ENV, CONFIG_FILE, ConfigError, describe, load_settings

    try:
        settings = load_settings(tracking_uri, experiment, ray_address, storage=storage)
    except ConfigError as exc:
        _fail(str(exc))
    rows = [("setting", "value", "from")] + [
        (name, value, "option" if source == "argument" else source)
        for name, value, source in describe(settings)]
    widths = [max(len(r[i]) for r in rows) for i in range(2)]
    for name, value, source in rows:
        print(f"{name:<{widths[0]}}  {value:<{widths[1]}}  {source}")
    print(f"\n{CONFIG_FILE}: " + (str(settings.config_file) if settings.config_file else
                                  f"none (looked for ${CONFIG_ENV}, then ./{CONFIG_FILE})"))


@app.command()
def gc(
    older_than: float = typer.Option(..., "--older-than", metavar="DAYS", min=0,
                                     help="remove the state of runs that ended this many days ago"),
    dry_run: bool = typer.Option(False, "--dry-run", help="only say what would be removed"),
    tracking_uri: Optional[str] = typer.Option(None, help="MLflow tracking URI"),
    storage: Optional[str] = typer.Option(None, help="Tune's state and checkpoints"),
) -> None:
    """Remove the local state (Tune experiments and checkpoints, reports, half-written
    prepared artifacts) of runs that ended (FINISHED, FAILED, KILLED) more than DAYS ago.
    MLflow's runs, metrics and models are never touched; a running run keeps everything."""
    from flows import cleanup
    from flows.plan import PlanError, check_services
    from flows.render import console

    settings = runtime.setup(tracking_uri, storage=storage)
    try:  # a tracking server that does not answer cannot say which runs ended
        check_services(settings.model_copy(update={"ray_address": None}))
    except PlanError as exc:
        _fail(str(exc), runtime.exit_code(exc))
    removed, kept = cleanup.find(settings, older_than)
    verb = "would remove" if dry_run else "removing"
    for item in removed:
        console.print(f"{verb} {item.what} {item.location} ({cleanup.human(item.size)}; {item.why})",
                      soft_wrap=True, highlight=False)
    if not dry_run:
        cleanup.remove(removed)
    total = cleanup.human(sum(i.size for i in removed))
    console.print(f"{'Would free' if dry_run else 'Freed'} {total} in {len(removed)} folder(s); "
                  f"kept {len(kept)} folder(s) of running, recent or unknown runs. MLflow's "
                  "records are untouched.",
                  highlight=False, soft_wrap=True)


@app.command()
def serve(
    tracking_uri: Optional[str] = typer.Option(None, help="MLflow tracking URI for every run"),
    ray_address: Optional[str] = typer.Option(None, help="address of a running Ray cluster"),
    storage: Optional[str] = typer.Option(
        None, help="Tune's state and checkpoints: a folder every Ray node mounts, or s3://..."),
    experiment: Optional[str] = typer.Option(None, help="MLflow experiment (default rnnbench)"),
    limit: int = typer.Option(1, min=1, help="flow runs at a time (1: two benchmarks never "
                                              "share the Ray slots)"),
) -> None:
    """Serve the benchmark, sweep, prepare_dataset and import_dataset flows as deployments of
    the Prefect server at PREFECT_API_URL: run them and their schedules from the Prefect UI.
    Runs use this command's state folder, tracking URI and Ray address. Ctrl-C stops."""
    os.environ.setdefault("PREFECT_LOGGING_LEVEL", "INFO")  # the runner's log is the service's
    settings = runtime.setup(tracking_uri, experiment, ray_address, storage, trigger=None)
    api = settings.prefect_api_url
    if not api:
        _fail("rnnbench serve needs a Prefect server for its deployments and schedules: start "
              "one (`rnnbench ui` serves one on http://127.0.0.1:4200) and set "
              "PREFECT_API_URL=http://127.0.0.1:4200/api", EXIT_UNAVAILABLE)
    if not _wait_http(f"{api.rstrip('/')}/health", 5):
        _fail(f"no Prefect API answers at {api} (PREFECT_API_URL); start it with `prefect "
              f"server start` or `rnnbench ui`", EXIT_UNAVAILABLE)
    from flows.plan import PlanError, check_services

    try:  # the tracking server, before any deployment is registered
        check_services(settings)
    except PlanError as exc:
        _fail(str(exc), runtime.exit_code(exc))
    settings.imports.mkdir(parents=True, exist_ok=True)  # the only folder a form's path may reach
    from flows import alerts

    if settings.notify_block:  # a misnamed block, now rather than at a failure
        try:
            alerts.load_block(settings.notify_block)
        except ValueError as exc:
            _fail(str(exc))
    # the flow runs are child processes: they read these back through load_settings
    os.environ["RNNBENCH_EXPERIMENT"] = settings.experiment
    if settings.ray_address:
        os.environ["RAY_ADDRESS"] = settings.ray_address
    from prefect.settings import PREFECT_UI_URL

    from flows import deployments
    from flows.render import console
    from flows.settings import redact

    def ready(served: list) -> None:
        names = ", ".join(f"{d.flow_name}/{d.name}" for d in served)
        ui_url = PREFECT_UI_URL.value() or api.rstrip("/").removesuffix("/api")
        console.print(f"Serving {names} (at most {limit} run(s) at a time); state in "
                      f"{settings.home}, MLflow at {redact(settings.tracking_uri)}", soft_wrap=True,
                      highlight=False)
        console.print(f"Prefect UI: {ui_url}/deployments", soft_wrap=True, highlight=False)
        console.print(f"import_dataset reads from {settings.imports}", soft_wrap=True,
                      highlight=False)
        console.print("Ctrl-C stops.", highlight=False)

    try:
        deployments.serve(limit, ready)
    except KeyboardInterrupt:  # Ctrl-C is how serve ends; its flow runs were stopped already
        pass
    console.print("rnnbench serve stopped.", highlight=False)


@app.command()
def deploy(
    pool: str = typer.Option(..., help="the Prefect work pool (create a process pool with "
                                       "`prefect work-pool create NAME --type process`)"),
) -> None:
    """Register the benchmark, sweep, prepare_dataset and import_dataset deployments with a
    work pool of the Prefect server at PREFECT_API_URL; its workers run them
    (`prefect worker start --pool NAME`, started where rnnbench is installed, with the
    environment its runs should use: RNNBENCH_HOME, MLFLOW_TRACKING_URI, RAY_ADDRESS, ...)."""
    api = os.environ.get("PREFECT_API_URL")
    if not api:
        _fail("rnnbench deploy needs a Prefect server: set PREFECT_API_URL (e.g. "
              "http://127.0.0.1:4200/api)", EXIT_UNAVAILABLE)
    if not _wait_http(f"{api.rstrip('/')}/health", 5):
        _fail(f"no Prefect API answers at {api} (PREFECT_API_URL); start it with `prefect "
              f"server start` or `rnnbench ui`", EXIT_UNAVAILABLE)
    from flows import deployments
    from flows.render import console

    try:
        done = deployments.deploy(pool)
    except ValueError as exc:  # Prefect's words for a missing pool
        _fail(f"{exc} (`prefect work-pool create {pool} --type process`)")
    console.print(f"Deployed {', '.join(f'{d.flow_name}/{d.name}' for d in done)} to work pool "
                  f"{pool!r}; start a worker: prefect worker start --pool {pool}",
                  soft_wrap=True, highlight=False)


if __name__ == "__main__":
    app()
