"""The ``rnnbench`` command: run, sweep, prepare, list, ui.

Every name and size is checked before anything trains; a bad one gets one line naming it and
the valid choices, and exit code 2. Ctrl-C marks runs KILLED; the same command then resumes.
"""

from __future__ import annotations

import logging
import os
import shlex
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Optional

import typer

from flows.settings import Settings, apply_environment, load_settings

app = typer.Typer(no_args_is_help=True, add_completion=False, pretty_exceptions_enable=False,
                  help="Fair, tuned bake-offs of RNN variants against a Transformer baseline.")

EXIT_BAD_INPUT = 2
EXIT_INTERRUPTED = 130


def _console():
    from flows.progress import console

    return console


def _fail(message: str) -> None:
    _console().print(f"[bold red]error:[/] {message}", highlight=False)
    raise typer.Exit(EXIT_BAD_INPUT)


def _split(value: Optional[str]) -> Optional[list[str]]:
    if value is None:
        return None
    return [v.strip() for v in value.split(",") if v.strip()]


def _terminate(signum, frame) -> None:
    raise KeyboardInterrupt  # a kill (SIGTERM) cleans up like Ctrl-C: runs KILLED, servers stopped


def _setup(tracking_uri=None, experiment=None, ray_address=None) -> Settings:
    signal.signal(signal.SIGTERM, _terminate)
    settings = load_settings(tracking_uri, experiment, ray_address)
    apply_environment(settings)
    from flows.quiet import silence

    silence()
    return settings


def _validated(settings: Settings, preset: str, datasets: Optional[list[str]],
               variants: Optional[list[str]]):
    from datamodules.catalog import available, check_ready
    from datamodules.errors import DataError
    from flows.presets import PresetError, check_resources, load_preset, plan, select
    from modules.registry import VariantError, resolve_variant

    try:
        specs = available(settings.data_root)
        p = load_preset(preset, specs)
        check_resources(p, settings.ray_address)
        ds, vs = select(p, datasets, variants, specs)
        for d, spec in check_ready(ds, settings.data_root).items():
            spec.params(p.dataset_params.get(d))
        for v in vs:
            resolve_variant(v, p.custom_variants)
        plan(ds, vs, specs)
    except (PresetError, DataError, VariantError) as exc:
        _fail(str(exc))
    return p, ds, vs


def _ui_commands(settings: Settings) -> list[str]:
    mlflow_cmd = (f"mlflow ui --backend-store-uri {shlex.quote(settings.tracking_uri)} "
                  f"--host 127.0.0.1 --port 5000")
    prefect_cmd = (f"PREFECT_HOME={shlex.quote(str(settings.prefect_home))} "
                   f"prefect server start --host 127.0.0.1 --port 4200")
    return [mlflow_cmd, prefect_cmd]


def _print_results(result: dict, settings: Settings) -> None:
    from datamodules.catalog import available
    from flows.leaderboard import to_rich

    console = _console()
    console.print()
    specs = available(settings.data_root)
    for dataset, board in result["boards"].items():
        console.print(to_rich(dataset, board, specs[dataset].modality))
        winner = board.iloc[0]
        if not str(winner["variant"]).startswith("("):
            console.print(f"  best {winner['variant']}: {winner['best hyperparameters']}", soft_wrap=True)
        console.print()
    console.print(f"Leaderboards (CSV, Markdown): [bold]{result['reports']}[/]")
    console.print(f"MLflow experiment [bold]{settings.experiment}[/], benchmark run "
                  f"[bold]{result['run_id']}[/]")
    venv_bin = Path(sys.executable).parent
    console.print("Open both UIs on these results (Ctrl-C stops them):")
    console.print(f"  {venv_bin / 'rnnbench'} ui")
    console.print("or each by itself:")
    for cmd in _ui_commands(settings):
        console.print(f"  {cmd}", soft_wrap=True)


class _ConsoleNoise(logging.Filter):
    """Ctrl-C is a user's decision and bad data the user's to fix, not crashes: rnnbench says
    what happened in one line, so Prefect's tracebacks for them stay out of the terminal (they
    still reach the Prefect API and its UI)."""

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        if "aborted by an interrupt signal" in message:
            return False
        from datamodules.errors import DataError

        error = record.exc_info[1] if record.exc_info else None
        return not (isinstance(error, DataError) or "DataError" in message)


def start_prefect_api() -> None:
    """Start Prefect's temporary API (when no PREFECT_API_URL is set) in a session of its own.

    Ctrl-C in a terminal signals the whole foreground process group; a temporary API that
    died with it left Prefect retrying to record the interruption, and the command hung.
    """
    if os.environ.get("PREFECT_API_URL"):
        return
    from prefect.server.api import server as prefect_server

    popen = subprocess.Popen

    def detached(*args, **kwargs):
        kwargs.setdefault("start_new_session", True)
        return popen(*args, **kwargs)

    prefect_server.subprocess.Popen = detached
    try:
        prefect_server.SubprocessASGIServer().start()  # the instance Prefect's client reuses
    finally:
        prefect_server.subprocess.Popen = popen
    from prefect.logging.handlers import APILogHandler

    for handler in logging.getLogger().handlers:  # the console; the API handler keeps it all
        if not isinstance(handler, APILogHandler):
            handler.addFilter(_ConsoleNoise())


def _run_flow(fn, settings: Settings, **kwargs) -> None:
    console = _console()
    start_prefect_api()
    try:
        result = fn(**kwargs)
    except KeyboardInterrupt:
        console.print("\n[yellow]interrupted:[/] runs marked KILLED, Ray stopped. "
                      "Run the same command again to resume.")
        raise typer.Exit(EXIT_INTERRUPTED)
    _print_results(result, settings)


@app.command()
def run(
    preset: str = typer.Option("quick", help="preset name or path to a .toml file"),
    datasets: Optional[str] = typer.Option(None, help="comma-separated dataset names"),
    variants: Optional[str] = typer.Option(None, help="comma-separated variant names"),
    tracking_uri: Optional[str] = typer.Option(None, help="MLflow tracking URI"),
    ray_address: Optional[str] = typer.Option(None, help="address of a running Ray cluster"),
    experiment: Optional[str] = typer.Option(None, help="MLflow experiment (default rnnbench)"),
) -> None:
    """Run the benchmark flow: prepare datasets, sweep every variant, print leaderboards."""
    settings = _setup(tracking_uri, experiment, ray_address)
    p, ds, vs = _validated(settings, preset, _split(datasets), _split(variants))
    b = p.budget
    _console().print(f"rnnbench [bold]{p.name}[/]: {len(ds)} dataset(s) x {len(vs)} variant(s), "
                     f"{b.num_samples} trials of at most {b.max_epochs} epochs each; state in {settings.home}")
    from flows.pipeline import benchmark

    _run_flow(benchmark, settings, preset=preset, datasets=ds, variants=vs,
              experiment=settings.experiment, tracking_uri=settings.tracking_uri,
              ray_address=settings.ray_address, show_progress=True)


@app.command()
def sweep(
    dataset: str = typer.Option(..., help="dataset name"),
    variant: str = typer.Option(..., help="variant name"),
    preset: str = typer.Option("quick", help="preset name or path to a .toml file"),
    tracking_uri: Optional[str] = typer.Option(None, help="MLflow tracking URI"),
    ray_address: Optional[str] = typer.Option(None, help="address of a running Ray cluster"),
    experiment: Optional[str] = typer.Option(None, help="MLflow experiment (default rnnbench)"),
) -> None:
    """Run one sweep (one dataset, one variant)."""
    settings = _setup(tracking_uri, experiment, ray_address)
    _validated(settings, preset, [dataset], [variant])
    from flows.pipeline import sweep as sweep_flow

    _run_flow(sweep_flow, settings, dataset=dataset, variant=variant, preset=preset,
              experiment=settings.experiment, tracking_uri=settings.tracking_uri,
              ray_address=settings.ray_address, show_progress=True)


def _print_prepared(results: dict[str, dict]) -> None:
    console = _console()
    for name, result in results.items():
        m = result["manifest"]
        counts = ", ".join(f"{s} {v['n']}" for s, v in m["splits"].items())
        state = "reused" if result["reused"] else "prepared"
        console.print(f"[green]✓[/] {name:<16} {state}: {counts}; hash {m['content_hash'][:12]}  "
                      f"{result['artifact_dir']}", highlight=False)
        for warning in m.get("warnings", []):
            console.print(f"  [yellow]warning:[/] {warning}", highlight=False)


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
    from datamodules.builtin import DATASETS
    from datamodules.catalog import available
    from datamodules.errors import DataError

    settings = _setup()
    options = {k: v for k, v in dict(
        target=target, time_column=time_column, window=window, horizon=horizon, season=season,
        on_missing=on_missing, text_column=text_column, label_column=label_column, level=level,
        seq_len=seq_len, encoding=encoding, max_len=max_len, max_frames=max_frames,
        on_long=on_long, features=features, sample_rate=sample_rate, group_pattern=group_pattern,
        task=task).items() if v is not None}
    if from_ is not None:
        if names or all_:
            _fail("--from registers one dataset; leave out dataset names and --all")
        if not kind or not name:
            _fail("--from needs --kind (timeseries, text, audio or sequences) and --name")
        from datamodules.userdata import make_spec
        from flows.pipeline import import_dataset

        try:
            make_spec(name, kind, from_, options)  # every option checked before any work
        except DataError as exc:
            _fail(str(exc))
        start_prefect_api()
        try:
            results = import_dataset(str(from_), kind, name, options)
        except DataError as exc:
            _fail(str(exc))
        _print_prepared(results)
        _console().print(f"Registered [bold]{name}[/]; use it with "
                         f"[bold]rnnbench run --datasets {name}[/]", highlight=False)
        return
    if kind or name or options:
        _fail("--kind, --name and format options go with --from PATH")
    specs = available(settings.data_root)
    chosen = list(DATASETS) if all_ else list(names or [])
    if not chosen:
        _fail(f"name at least one dataset or pass --all; valid: {', '.join(specs)}")
    from datamodules.catalog import check_ready

    try:
        check_ready(chosen, settings.data_root)
    except DataError as exc:
        _fail(str(exc))
    from flows.pipeline import prepare_dataset

    start_prefect_api()
    try:
        results = prepare_dataset(chosen)
    except DataError as exc:
        _fail(str(exc))
    _print_prepared(results)


@app.command("list")
def list_() -> None:
    """The datasets, variants and presets rnnbench knows."""
    from rich.table import Table

    from datamodules.builtin import DATASETS
    from datamodules.catalog import available
    from flows.presets import available_presets, load_preset
    from modules.registry import VARIANTS

    settings = _setup()
    console = _console()
    specs = available(settings.data_root)
    for title, group in (("datasets", DATASETS),
                         ("your datasets", {k: v for k, v in specs.items() if k not in DATASETS})):
        if not group:
            continue
        table = Table(title=title, title_justify="left")
        for col in ("name", "modality", "task", "description", "parameters"):
            table.add_column(col)
        for spec in group.values():
            params = " ".join(f"{k}={v}" for k, v in spec.defaults.items())
            table.add_row(spec.name, spec.modality, spec.task, spec.description, params)
        console.print(table)
    console.print("variants: " + " ".join(VARIANTS))
    presets = Table(title="presets", title_justify="left")
    presets.add_column("name")
    presets.add_column("description")
    for name in available_presets():
        presets.add_row(name, load_preset(name, specs).description)
    console.print(presets)


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


@app.command()
def ui(
    mlflow_port: int = typer.Option(5000, help="port for the MLflow UI"),
    prefect_port: int = typer.Option(4200, help="port for the Prefect UI"),
) -> None:
    """Start the MLflow UI and a Prefect server on 127.0.0.1 over the local state."""
    settings = _setup()
    for port in (mlflow_port, prefect_port):
        if not 0 < port < 65536:
            _fail(f"port must be between 1 and 65535, got {port}")
    bin_dir = Path(sys.executable).parent
    env = {**os.environ, "PREFECT_HOME": str(settings.prefect_home)}
    env.pop("PREFECT_API_URL", None)
    procs = [
        subprocess.Popen([str(bin_dir / "mlflow"), "ui", "--backend-store-uri", settings.tracking_uri,
                          "--host", "127.0.0.1", "--port", str(mlflow_port)], env=env,
                         stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL),
        subprocess.Popen([str(bin_dir / "prefect"), "server", "start", "--host", "127.0.0.1",
                          "--port", str(prefect_port)], env=env,
                         stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL),
    ]
    console = _console()
    try:
        urls = {"MLflow": f"http://127.0.0.1:{mlflow_port}", "Prefect": f"http://127.0.0.1:{prefect_port}"}
        for name, url in urls.items():
            ok = _wait_http(url, 60)
            console.print(f"{name} UI: {url}" + ("" if ok else "  [red](not answering yet)[/]"))
        console.print("Ctrl-C stops both.")
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


if __name__ == "__main__":
    app()
