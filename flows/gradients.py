"""Vanishing gradients made visible. For a dataset whose spec asks for it (the long-memory
tasks), each sweep's best model records how much every input step still moves its loss
(``SequenceModule.input_gradient_norms`` on validation sequences) as a metric history on the
sweep run, and the benchmark plots every variant's curve on one figure per dataset, logged
beside the leaderboards. Neither step may fail a benchmark: an error becomes a warning line.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import TYPE_CHECKING

import pandas as pd

from flows import tracking
from flows.render import console

if TYPE_CHECKING:
    from flows.training import PreparedData
    from modules.sequence import SequenceModule

METRIC = "val/input_grad_norm"  # sweep-run metric history; its step is the input step t
EXAMPLES = 256  # validation sequences averaged over: one batch, a second or two on a CPU


def warn(message: str) -> None:
    console.print(f"  [yellow]![/] {message}", highlight=False, soft_wrap=True)


def record(tracking_uri: str, run_id: str, module: "SequenceModule", dataset: "PreparedData") -> None:
    """The per-step input-gradient norms of ``module`` on the first ``EXAMPLES`` validation
    sequences, logged on ``run_id``; a failure is a warning, never an error."""
    try:
        from datamodules.datamodule import SequenceDataset, collate

        split = dataset.splits["val"]
        n = min(EXAMPLES, len(split.x))
        x, lengths, y = collate([SequenceDataset(split.x[:n], split.y[:n])[i] for i in range(n)])
        norms = module.input_gradient_norms(x, lengths, y)
        tracking.log_history(tracking_uri, run_id, METRIC, norms.tolist())
    except Exception as exc:
        warn(f"input gradients not recorded on run {run_id}: {type(exc).__name__}: {exc}")


def curves(tracking_uri: str, board: pd.DataFrame) -> dict[str, list[float]]:
    """Each finished variant's recorded norms, step by step, from the sweep runs on ``board``."""
    c = tracking.client(tracking_uri)
    out: dict[str, list[float]] = {}
    for _, row in board.iterrows():
        run_id = row.get("run_id")
        if str(row["variant"]).startswith("(") or not isinstance(run_id, str) \
                or str(row.get("note") or "").startswith("failed"):
            continue
        history = sorted(c.get_metric_history(run_id, METRIC), key=lambda m: m.step)
        if history:
            values = [math.nan] * (history[-1].step + 1)
            for point in history:
                values[point.step] = point.value
            out[str(row["variant"])] = values
    return out


def figure(dataset: str, lines: dict[str, list[float]], path: Path) -> Path:
    """One line per variant: step on x, norm on a log y axis; written as a PNG at ``path``."""
    from matplotlib.figure import Figure  # no pyplot: no global state, safe beside other threads

    fig = Figure(figsize=(8, 4.5), dpi=120, layout="constrained")
    ax = fig.add_subplot()
    for variant, values in lines.items():
        ax.plot(range(len(values)), values, label=variant, linewidth=1.6)
    ax.set_yscale("log")
    ax.set_xlabel("input step t")
    ax.set_ylabel("‖∂ loss / ∂ input step t‖")
    ax.set_title(f"{dataset}: how much each input step still moves the loss\n"
                 f"(best model of each variant, mean over {EXAMPLES} validation sequences)",
                 fontsize=10)
    ax.grid(True, which="major", alpha=0.3)
    ax.legend(title="variant", fontsize=9, loc="best", framealpha=0.9)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)
    return path


def summary(dataset: str, lines: dict[str, list[float]], run_id: str, artifact: str) -> str:
    """Markdown: where the figure is, and each variant's first-to-last step ratio."""
    rows = "\n".join(f"| {v} | {vals[0]:.3g} | {vals[-1]:.3g} | {vals[0] / vals[-1]:.3g} |"
                     for v, vals in lines.items() if vals[-1])
    return (f"## {dataset}: input-gradient norms per step\n\n"
            f"Figure `{artifact}` on MLflow run {run_id}. The smaller the first step's norm "
            f"against the last step's, the less the model can still learn from the start of "
            f"the sequence.\n\n| variant | first step | last step | first / last |\n"
            f"|---|---|---|---|\n{rows}\n")


def publish(tracking_uri: str, run_id: str, boards: dict[str, pd.DataFrame], datasets: list[str],
            out_dir: Path) -> dict[str, Path]:
    """For each of ``datasets`` on ``boards``: the figure, logged on the benchmark run under
    ``leaderboard/`` and as a Prefect markdown artifact. Returns the figures written; a
    dataset whose figure fails gets a warning line instead."""
    from prefect.artifacts import create_markdown_artifact

    from flows.pipeline import artifact_key

    written: dict[str, Path] = {}
    for dataset in datasets:
        if dataset not in boards:
            continue
        try:
            lines = curves(tracking_uri, boards[dataset])
            if not lines:
                warn(f"{dataset}: no input gradients recorded, no figure")
                continue
            path = figure(dataset, lines, out_dir / f"input_gradients-{dataset}.png")
            tracking.log_files(tracking_uri, run_id, [path], "leaderboard")
            create_markdown_artifact(summary(dataset, lines, run_id, f"leaderboard/{path.name}"),
                                     key=artifact_key("input-gradients", dataset),
                                     description=f"input-gradient norms on {dataset}, MLflow run {run_id}")
            written[dataset] = path
        except Exception as exc:
            warn(f"{dataset}: input-gradient figure not made: {type(exc).__name__}: {exc}")
    return written
