"""Leaderboards rebuilt from MLflow alone: one per dataset, variants ranked on the test metric,
with the trivial baseline as a reference row and failed sweeps named with their reason.
Reads MLflow only: no Ray, Lightning or torch.
"""

from __future__ import annotations

import math
from pathlib import Path

import pandas as pd
from rich.table import Table

from flows import tracking
from modules import tasks

INTEGER_COLUMNS = ("params", "trials")


def baseline_metric_name(dataset: str, metric: str) -> str:
    return f"baseline/{dataset}/{metric}"


def baseline_tag(dataset: str) -> str:
    return f"rnnbench.baseline.{dataset}"


def build(tracking_uri: str, experiment_id: str, benchmark_run_id: str) -> dict[str, pd.DataFrame]:
    """Rows from the sweep runs below the benchmark run (FINISHED ones ranked, FAILED ones after
    them with their reason), baseline rows from the benchmark run's metrics."""
    c = tracking.client(tracking_uri)
    bench = c.get_run(benchmark_run_id)
    sweeps = [r for r in tracking.children(tracking_uri, experiment_id, benchmark_run_id)
              if r.data.tags.get(tracking.ROLE) == "sweep" and r.info.status in ("FINISHED", "FAILED")]
    task_names = {r.data.tags["dataset"]: r.data.tags.get("rnnbench.task") for r in sweeps}
    boards: dict[str, pd.DataFrame] = {}
    for dataset in sorted({r.data.tags["dataset"] for r in sweeps}):
        task = tasks.get(task_names[dataset])
        name = task.monitor
        rows, failed = [], []
        for run in (r for r in sweeps if r.data.tags["dataset"] == dataset):
            m = run.data.metrics
            best = {k[5:]: v for k, v in run.data.params.items() if k.startswith("best.")}
            row = {"variant": run.data.tags["variant"]}
            row.update({f"test/{k}": m.get(f"test/{k}") for k in task.reported})
            row.update({f"val/{name}": m.get(f"val/{name}"), "params": int(m.get("n_params", 0)),
                        "time (s)": round(m.get("train_time_s", 0.0), 1),
                        "trials": int(m.get("trials", 0)),
                        "best hyperparameters": _compact(best), "run_id": run.info.run_id})
            if run.info.status == "FAILED":
                row["note"] = "failed: " + run.data.tags.get("rnnbench.error", "see the sweep run")[:200]
                failed.append(row)
            else:
                rows.append(row)
        key = f"test/{name}"
        rows.sort(key=lambda r: (r[key] is None, -(r[key] or 0) if task.mode == "max" else (r[key] or 0)))
        base = {"variant": f"({bench.data.tags.get(baseline_tag(dataset), 'baseline')})"}
        base.update({f"test/{k}": bench.data.metrics.get(baseline_metric_name(dataset, f"test/{k}"))
                     for k in task.reported})
        boards[dataset] = pd.DataFrame([*rows, *failed, base])
    return boards


def _compact(hparams: dict[str, str]) -> str:
    parts = []
    for key in sorted(hparams):
        value = hparams[key]
        try:
            number = float(value)
            value = f"{number:.3g}" if not number.is_integer() else str(int(number))
        except ValueError:
            pass
        parts.append(f"{key}={value}")
    return " ".join(parts)


def _fmt(value, column: str = "") -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return ""
    if column in INTEGER_COLUMNS:
        return f"{int(value):,}"
    if column == "time (s)":
        return f"{value:.1f}"
    if isinstance(value, float):
        return f"{value:.4f}" if abs(value) < 10 else f"{value:.2f}"
    return str(value)


def display_columns(board: pd.DataFrame) -> list[str]:
    return [c for c in board.columns if c != "run_id" and not (c == "note" and board[c].isna().all())]


def to_markdown(dataset: str, board: pd.DataFrame, modality: str = "") -> str:
    cols = display_columns(board)
    lines = [f"### {dataset}" + (f" ({modality})" if modality else ""), "", "| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    for _, row in board.iterrows():
        lines.append("| " + " | ".join(_fmt(row[c], c) for c in cols) + " |")
    return "\n".join(lines) + "\n"


def to_rich(dataset: str, board: pd.DataFrame, modality: str = "") -> Table:
    cols = [c for c in display_columns(board) if c != "best hyperparameters"]
    title = f"{dataset}" + (f" ({modality})" if modality else "")
    table = Table(title=title, title_justify="left", header_style="bold")
    for col in cols:
        table.add_column(col, justify="left" if col == "variant" else "right")
    for i, (_, row) in enumerate(board.iterrows()):
        failed = isinstance(row.get("note"), str)
        style = "dim" if str(row["variant"]).startswith("(") else (
            "red" if failed else ("bold green" if i == 0 else None))
        table.add_row(*(_fmt(row[c], c) for c in cols), style=style)
    return table


def write(boards: dict[str, pd.DataFrame], out_dir: Path,
          modalities: dict[str, str] | None = None) -> list[Path]:
    """CSV and Markdown per dataset plus one combined Markdown file; returns the paths."""
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = []
    for dataset, board in boards.items():
        csv = out_dir / f"leaderboard_{dataset}.csv"
        board.to_csv(csv, index=False)
        paths.append(csv)
    md = out_dir / "leaderboard.md"
    md.write_text("# rnnbench leaderboard\n\n" + "\n".join(
        to_markdown(d, b, (modalities or {}).get(d, "")) for d, b in boards.items()))
    paths.append(md)
    return paths
