"""Leaderboards rebuilt from MLflow alone: one per dataset, variants ranked on the validation
metric they were selected on (ties broken by validation loss; test scores are shown, never
used to choose), the trivial baseline as a reference row, and failed sweeps named with their
reason. Where the sweeps carry per-seed final scores (layout in ``flows.stats``), rows show the
mean over seeds with its 95% interval, are ranked on the validation mean, and are marked tied
with the winner or not by the test ``flows.stats`` names. Reads MLflow only: no Ray, Lightning
or torch.
"""

from __future__ import annotations

import math
from pathlib import Path

import pandas as pd
from rich.table import Table

from flows import stats, tracking
from modules import tasks
from modules.sizing import size_label

INTEGER_COLUMNS = ("params", "trials")
# a dataset of many series: modules.metrics.per_series_scores's aggregates (named here so the
# leaderboard imports no torch)
SERIES_AGGREGATES = ("series_mae", "series_mase", "beats_naive")
BEATS_NAIVE = "test/beats_naive"  # the share of series on which a row beats the naive forecast
UNEQUAL = "rnnbench.unequal_spaces"  # benchmark-run tag: variants whose search space differs
CI = " ±95%"  # suffix of a column holding the half width of the interval of the column it names
SEEDS, VERSUS = "n", "vs winner"  # columns of a board with seed repeats
NO_SEEDS = "no seed repeats: its sweep's best trial alone, not compared"


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
        # a dataset of many series adds its per-series aggregates (own units, each series alike)
        reported = [*task.reported, *(k for k in SERIES_AGGREGATES if any(
            f"test/{k}" in r.data.metrics for r in sweeps if r.data.tags["dataset"] == dataset))]
        rows, failed, seeds = [], [], {}
        for run in (r for r in sweeps if r.data.tags["dataset"] == dataset):
            m = run.data.metrics
            best = {k[5:]: v for k, v in run.data.params.items() if k.startswith("best.")}
            # a size-matched sweep is its variant at one target (lstm@50k): one row per target
            label = size_label(run.data.tags["variant"], int(run.data.tags.get(tracking.SIZE_TARGET, 0)))
            row = {"variant": label, f"val/{name}": m.get(f"val/{name}")}
            row.update({f"test/{k}": m.get(f"test/{k}") for k in reported})
            row.update({"params": int(m.get("n_params", 0)),
                        "time (s)": round(m.get("train_time_s", 0.0), 1),
                        "trials": int(m.get("trials", 0)), "note": None,
                        "best hyperparameters": _compact(best), "run_id": run.info.run_id,
                        "val/loss": m.get("val/loss")})
            lost = int(m.get("trials_failed", 0))
            if lost and run.info.status != "FAILED":  # fewer trials than its budget
                row["note"] = (f"{lost} of {row['trials']} trials failed: not an equal comparison")
            lost_seeds = int(m.get("seeds_failed", 0))
            if lost_seeds and run.info.status != "FAILED":  # fewer seed repeats than its budget
                note = f"{lost_seeds} of {int(m.get('seeds', 0))} seeds failed: not an equal comparison"
                row["note"] = f"{row['note']}; {note}" if row["note"] else note
            if run.info.status == "FAILED":
                row["note"] = "failed: " + run.data.tags.get("rnnbench.error", "see the sweep run")[:200]
                failed.append(row)
            else:
                rows.append(row)
                seeds[row["variant"]] = stats.seed_scores(m)
        metric = f"val/{name}"
        seeded = any(metric in s for s in seeds.values())
        if seeded:
            _use_seeds(rows, seeds, metric, reported)
        sign = -1 if task.mode == "max" else 1
        # with seed repeats, the variants retrained on seeds are compared first, on their means
        rows.sort(key=lambda r: (seeded and not r.get(SEEDS), r[metric] is None, sign * (r[metric] or 0),
                                 r["val/loss"] if r["val/loss"] is not None else float("inf")))
        verdict = None
        if seeded:
            verdict = stats.compare({r["variant"]: seeds[r["variant"]][metric] for r in rows if r.get(SEEDS)},
                                    task.mode, metric, winner=rows[0]["variant"])
            for row in rows:
                if row.get(SEEDS):
                    row[VERSUS] = verdict.comparisons[row["variant"]].label()
        base_name = f"({bench.data.tags.get(baseline_tag(dataset), 'baseline')})"
        base = {"variant": base_name,
                metric: bench.data.metrics.get(baseline_metric_name(dataset, metric))}
        base.update({f"test/{k}": bench.data.metrics.get(baseline_metric_name(dataset, f"test/{k}"))
                     for k in reported})
        if base[metric] is not None:
            for row in rows:
                if row[metric] is None or not task.better(row[metric], base[metric]):
                    loses = f"does not beat {base_name[1:-1]} on validation"
                    row["note"] = f"{row['note']}; {loses}" if row["note"] else loses
        board = pd.DataFrame([*rows, *failed, base]).drop(columns=["val/loss"])
        if seeded:  # each interval beside its mean, the seed columns after the scores
            scores = [c for c in [metric, *(f"test/{k}" for k in reported)] if c in board.columns]
            front = ["variant", *(c for s in scores for c in (s, s + CI) if c in board.columns), SEEDS, VERSUS]
            board = board[[*front, *(c for c in board.columns if c not in front)]]
        unequal = [f"Not equal: {note}." for note in bench.data.tags.get(UNEQUAL, "").split("; ")
                   if note and note.split(" ", 1)[0] in {r["variant"].split("@")[0] for r in rows}]
        board.attrs.update({"metric": metric, "mode": task.mode, "baseline": base_name,
                            "headlines": [*headlines(rows, base, metric, task.mode, verdict), *unequal]})
        boards[dataset] = board
    return boards


def _use_seeds(rows: list[dict], seeds: dict[str, dict[str, list[float]]], metric: str,
               reported: list[str]) -> None:
    """Each row retrained on seeds shows its means over them with their intervals, and ties on
    validation are broken by its mean validation loss; a row without is said to have none."""
    for row in rows:
        found = seeds[row["variant"]]
        if metric not in found:
            row["note"] = f"{row['note']}; {NO_SEEDS}" if row["note"] else NO_SEEDS
            continue
        for column in [metric, *(f"test/{k}" for k in reported)]:
            if column in found:
                summary = stats.summarize(found[column])
                row[column], row[column + CI] = summary.mean, summary.half_width
        row[SEEDS] = len(found[metric])
        if "val/loss" in found:
            row["val/loss"] = stats.summarize(found["val/loss"]).mean


def headlines(rows: list[dict], base: dict, metric: str, mode: str,
              verdict: stats.Verdict | None = None) -> list[str]:
    """What a reader must know before reading the rows: how they were chosen, ties, the test
    that marks variants tied with the winner, and when nothing beats the trivial baseline."""
    chosen_on = f"the mean over seeds of {metric}" if verdict is not None else metric
    lines = [f"Ranked and chosen on {chosen_on} ({'higher' if mode == 'max' else 'lower'} is better; "
             "ties by validation loss); test scores are reported, never used to choose."]
    scored = [r for r in rows if r[metric] is not None]
    if scored:
        top = [r["variant"] for r in scored if r[metric] == scored[0][metric]]
        if len(top) > 1:
            lines.append(f"{', '.join(top)} tie on {metric} {scored[0][metric]:.4g}: indistinguishable "
                         "on validation (ordered by validation loss).")
    if verdict is not None:
        lines.append(verdict.description)
        if verdict.tied:
            lines.append(f"Not distinguishable from the winner {verdict.winner} on {metric}: "
                         f"{', '.join(verdict.tied)}.")
    if base[metric] is not None and scored and all("does not beat" in (r["note"] or "") for r in scored):
        lines.append(f"No variant beats {base['variant'][1:-1]} on validation: none has learned "
                     "anything this baseline does not already know.")
    shares = [r for r in scored if r.get(BEATS_NAIVE) is not None and r[BEATS_NAIVE] == r[BEATS_NAIVE]]
    if shares and all(r[BEATS_NAIVE] <= 0.5 for r in shares):  # many series: a mean can hide this
        best = max(shares, key=lambda r: r[BEATS_NAIVE])
        lines.append(f"No variant beats {base['variant'][1:-1]} on most series: the best, "
                     f"{best['variant']}, beats it on {best[BEATS_NAIVE]:.0%} of them (test).")
    return lines


def winner(board: pd.DataFrame) -> pd.Series | None:
    """The row chosen on validation, if any variant has a validation score."""
    first = board.iloc[0]
    if str(first["variant"]).startswith("(") or pd.isna(first[board.attrs["metric"]]) \
            or str(first.get("note") or "").startswith("failed"):
        return None
    return first


def score_text(board: pd.DataFrame, row: pd.Series, column: str) -> str:
    """A row's score as a sentence gives it: the value, or with seed repeats the mean over them
    and its 95% interval."""
    text = f"{row[column]:.4g}"
    if SEEDS in board.columns and not pd.isna(row.get(SEEDS)):
        half = row.get(column + CI)
        interval = f" ± {half:.2g}" if half is not None and not pd.isna(half) else ""
        text = f"mean {text}{interval} over {int(row[SEEDS])} seed{'s' if row[SEEDS] > 1 else ''}"
    return text


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
    if column in INTEGER_COLUMNS or column == SEEDS:
        return f"{int(value):,}"
    if column == "time (s)":
        return f"{value:.1f}"
    if isinstance(value, float):
        return f"{value:.4f}" if abs(value) < 10 else f"{value:.2f}"
    return str(value)


def display_columns(board: pd.DataFrame) -> list[str]:
    """The columns a table shows; an interval is shown in the cell of the mean it belongs to."""
    return [c for c in board.columns if c != "run_id" and not c.endswith(CI)
            and not (c == "note" and board[c].isna().all())]


def cell(board: pd.DataFrame, row: pd.Series, column: str) -> str:
    text = _fmt(row[column], column)
    half = row.get(column + CI) if column + CI in board.columns else None
    if text and half is not None and not pd.isna(half):
        text += f" ± {_fmt(half, column + CI)}"
    return text



def to_markdown(dataset: str, board: pd.DataFrame, modality: str = "") -> str:
    cols = display_columns(board)
    lines = [f"### {dataset}" + (f" ({modality})" if modality else ""), "",
             *(f"{line}  " for line in board.attrs.get("headlines", [])), "",
             "| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    for _, row in board.iterrows():
        lines.append("| " + " | ".join(cell(board, row, c) for c in cols) + " |")
    return "\n".join(lines) + "\n"


NOTE_WIDTH = 24  # a note folds onto more lines; numbers never do


def _width(board: pd.DataFrame, cols: list[str]) -> int:
    """Characters a table of ``cols`` needs without wrapping a number (3 per column for borders;
    a note counts at most NOTE_WIDTH, the rest of it folds)."""
    def need(c: str) -> int:
        longest = max(len(c), *(len(cell(board, row, c)) for _, row in board.iterrows()))
        return min(longest, NOTE_WIDTH) if c == "note" else longest
    return 1 + sum(3 + need(c) for c in cols)


def to_rich(dataset: str, board: pd.DataFrame, modality: str = "", width: int | None = None) -> Table:
    """The leaderboard for a terminal ``width`` columns wide: numbers are never folded; test
    metrics beyond what fits (the first one stays), then the trial count, time and size, are
    left to the CSV and Markdown reports (and said so)."""
    cols = [c for c in display_columns(board) if c != "best hyperparameters"]
    headlines = list(board.attrs.get("headlines", []))
    spare = [*reversed([c for c in cols if c.startswith("test/")][1:]),
             *(c for c in ("trials", "time (s)", "params") if c in cols)]
    while width and _width(board, cols) > width and spare:
        cols.remove(spare.pop(0))
    left_out = [c for c in display_columns(board) if c != "best hyperparameters" and c not in cols]
    if left_out:
        headlines.append(f"{', '.join(left_out)}: in the CSV and Markdown reports (a wider terminal shows them).")
    title = f"{dataset}" + (f" ({modality})" if modality else "")
    table = Table(title=title, title_justify="left", header_style="bold",
                  caption="\n".join(headlines), caption_justify="left")
    for col in cols:
        if col == "variant":  # the name a user copies never truncates; numbers wrap first
            table.add_column(col, no_wrap=True, min_width=int(board[col].astype(str).str.len().max()))
        elif col == "note":
            table.add_column(col, justify="left", overflow="fold")
        else:
            table.add_column(col, justify="right", no_wrap=True)
    chosen = winner(board)
    for i, (_, row) in enumerate(board.iterrows()):
        note = str(row.get("note") or "")
        tied = str(row.get(VERSUS) or "").startswith("tied")
        style = "dim" if str(row["variant"]).startswith("(") else (
            "red" if note.startswith("failed") else ("yellow" if note else (
                "bold green" if chosen is not None and i == 0 else ("green" if tied else None))))
        table.add_row(*(cell(board, row, c) for c in cols), style=style)
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
