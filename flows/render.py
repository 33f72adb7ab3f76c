"""What the CLI prints: leaderboards, prepared datasets, the catalogue and one-line errors.

Imports rich and nothing heavy, so ``rnnbench list`` and a one-line error answer at once.
Names and commands a user copies are never truncated, at any terminal width.
"""

from __future__ import annotations

import shlex
import sys
from pathlib import Path
from typing import Any, Iterable

from rich.console import Console
from rich.table import Table

console = Console(stderr=False, highlight=False)


def error(message: str) -> None:
    from flows.settings import redact

    console.print(f"[bold red]error:[/] {redact(message)}", highlight=False, soft_wrap=True)


def ui_commands(settings) -> list[str]:
    mlflow_cmd = (f"mlflow ui --backend-store-uri {shlex.quote(settings.tracking_uri)} "
                  f"--host 127.0.0.1 --port 5000")
    prefect_cmd = (f"PREFECT_HOME={shlex.quote(str(settings.prefect_home))} "
                   f"prefect server start --host 127.0.0.1 --port 4200")
    return [mlflow_cmd, prefect_cmd]


def leaderboards(boards: dict, modalities: dict[str, str], registered: dict | None = None) -> None:
    """Each dataset's leaderboard, the variant chosen on validation and, after a benchmark,
    the registered champion."""
    from flows.leaderboard import score_text, to_rich, winner
    from flows.registry import CHAMPION, champion_uri

    for dataset, board in boards.items():
        console.print(to_rich(dataset, board, modalities.get(dataset, ""), width=console.width))
        chosen = winner(board)
        if chosen is not None:
            metric = board.attrs["metric"]
            console.print(f"  chosen on {metric}: {chosen['variant']} ({score_text(board, chosen, metric)}); "
                          f"{chosen['best hyperparameters']}", soft_wrap=True)
        aliases = (registered or {}).get(dataset, {})
        if CHAMPION in aliases:
            console.print(f"  registered: {champion_uri(dataset)} (version {aliases[CHAMPION]}); "
                          f"rnnbench predict --dataset {dataset} --input FILE", soft_wrap=True)
        console.print()


def comparison(boards: dict) -> None:
    """Two benchmark runs side by side, one table per dataset (``flows.report.compare``)."""
    from flows.leaderboard import cell, display_columns

    for dataset, board in boards.items():
        cols = display_columns(board)
        table = Table(title=dataset, title_justify="left", header_style="bold",
                      caption="\n".join(board.attrs.get("headlines", [])), caption_justify="left")
        for col in cols:
            table.add_column(col, no_wrap=col != "note", justify="left" if col in ("variant", "metric", "note") else "right")
        for _, row in board.iterrows():
            table.add_row(*(cell(board, row, c) for c in cols),
                          style="dim" if str(row["variant"]).startswith("(") else None)
        console.print(table)
        console.print()


def results(result: dict[str, Any], settings) -> None:
    console.print()
    leaderboards(result["boards"], result.get("modalities", {}), result.get("registered"))
    for dataset, variant, reason in result.get("failures", []):
        console.print(f"[red]failed:[/] {dataset} · {variant}: {reason}", soft_wrap=True)
    console.print(f"Reports (CSV, Markdown, figures, one HTML page): [bold]{result['reports']}[/]", soft_wrap=True)
    console.print(f"MLflow experiment [bold]{settings.experiment}[/], benchmark run "
                  f"[bold]{result['run_id']}[/]")
    from flows.settings import redact

    if settings.tracking_uri.startswith(("http://", "https://")):  # a server: its own UI
        base = redact(settings.tracking_uri).rstrip("/")
        console.print(f"MLflow UI: {base}/#/experiments/{result['experiment_id']}/runs/{result['run_id']}",
                      soft_wrap=True)
        return
    venv_bin = Path(sys.executable).parent
    console.print("Open both UIs on these results (Ctrl-C stops them):")
    console.print(f"  {venv_bin / 'rnnbench'} ui", soft_wrap=True)
    console.print("or each by itself:")
    for cmd in ui_commands(settings):
        console.print(f"  {cmd}", soft_wrap=True)


def prepared(results: dict[str, dict]) -> None:
    for name, result in results.items():
        m = result["manifest"]
        counts = ", ".join(f"{s} {v['n']}" for s, v in m["splits"].items())
        state = "reused" if result["reused"] else "prepared"
        console.print(f"[green]✓[/] {name:<16} {state}: {counts}; hash {m['content_hash'][:12]}  "
                      f"{result['artifact_dir']}", highlight=False, soft_wrap=True)
        if m.get("duplicate_groups"):
            console.print(f"  {m['duplicate_groups']} group(s) of duplicate texts ({m['duplicate_rows']} "
                          "rows) each kept in one split", highlight=False, soft_wrap=True)
        for warning in m.get("warnings", []):
            console.print(f"  [yellow]warning:[/] {warning}", highlight=False, soft_wrap=True)


def _table(title: str, columns: Iterable[str], rows: list[tuple[str, ...]], whole: int = 1) -> Table:
    """A table whose first ``whole`` columns (names a user copies) always keep their full
    width; the other columns wrap instead."""
    table = Table(title=title, title_justify="left")
    for i, col in enumerate(columns):
        if i < whole:
            table.add_column(col, no_wrap=True, min_width=max(len(r[i]) for r in rows))
        else:
            table.add_column(col, overflow="fold")
    for row in rows:
        table.add_row(*row)
    return table


def catalogue(builtin: dict, yours: dict, variants: Iterable[str], presets: list[tuple[str, str]]) -> None:
    for title, group in (("datasets", builtin), ("your datasets", yours)):
        if not group:
            continue
        rows = [(spec.name, spec.modality, spec.task, spec.description,
                 " ".join(f"{k}={v}" for k, v in spec.defaults.items())) for spec in group.values()]
        console.print(_table(title, ("name", "modality", "task", "description", "parameters"), rows,
                             whole=3), crop=False)
    console.print("variants: " + " ".join(variants), soft_wrap=True)
    console.print(_table("presets", ("name", "description"), presets), crop=False)
