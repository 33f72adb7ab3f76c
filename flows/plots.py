"""A benchmark's pictures and its one-page report, drawn from the MLflow tracking store alone:
per dataset, the test score against parameter count, each variant's best-trial validation
curve, the best validation score against compute spent, and the trial curves of one sweep
with ASHA's early stops; then one self-contained HTML page (leaderboards as tables, every
figure embedded). Used by the benchmark flow and by ``rnnbench report``. A figure that cannot be
drawn is a warning line, never a failed benchmark.
"""

from __future__ import annotations

import base64
import html
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

from flows import gradients, leaderboard, tracking

PAGE = "report.html"
EPOCH_SECONDS = ("time/train_epoch_s", "time/val_epoch_s")  # flows.trial.EpochTimes logs them per epoch
# file prefix -> what the figure shows (its caption in the report)
FIGURES = {
    "size": "test score against parameter count",
    "curves": "validation curve of each variant's best trial",
    "compute": "best validation score against compute spent (time to quality)",
    "asha": "trial curves of one sweep (the best ranked where ASHA stopped a trial), early stops marked",
}


@dataclass
class Trial:
    run_id: str
    trial_id: str
    start_ms: int
    seconds: float  # the trial run's wall time, start to end (start-up included)
    stopped_early: bool
    curve: list[tuple[int, float]] = field(default_factory=list)  # (epoch from 1, value)
    epoch_seconds: dict[int, float] = field(default_factory=dict)  # epoch from 1 -> training + validation s


@dataclass
class Sweep:
    label: str  # the leaderboard's variant label (lstm, or lstm@50k when size-matched)
    run_id: str
    max_epochs: int
    best_trial_id: str
    trials: list[Trial]


def _usable(row: pd.Series) -> bool:
    return not str(row["variant"]).startswith("(") and isinstance(row.get("run_id"), str) \
        and not str(row.get("note") or "").startswith("failed")


def sweeps(tracking_uri: str, board: pd.DataFrame) -> dict[str, Sweep]:
    """Each ranked variant's sweep with its trials and their curves of the selection metric:
    two requests per sweep (the run, its children) and one per trial (its history)."""
    from concurrent.futures import ThreadPoolExecutor

    c = tracking.client(tracking_uri)
    metric = board.attrs["metric"]

    def trial(child) -> Trial:
        end = child.info.end_time or child.info.start_time
        out = Trial(child.info.run_id, child.data.tags.get("rnnbench.trial_id", ""), child.info.start_time,
                    max(0.0, (end - child.info.start_time) / 1000),
                    child.data.tags.get("rnnbench.stopped_early") == "true")
        history = sorted(c.get_metric_history(child.info.run_id, metric), key=lambda m: m.step)
        out.curve = [(m.step + 1, m.value) for m in history]
        for key in EPOCH_SECONDS:
            if key in child.data.metrics:  # runs before these timings existed have none
                for m in c.get_metric_history(child.info.run_id, key):
                    out.epoch_seconds[m.step + 1] = out.epoch_seconds.get(m.step + 1, 0.0) + m.value
        return out

    out: dict[str, Sweep] = {}
    for _, row in board.iterrows():
        if not _usable(row):
            continue
        run = c.get_run(row["run_id"])
        children = [r for r in tracking.children(tracking_uri, run.info.experiment_id, run.info.run_id)
                    if r.data.tags.get(tracking.ROLE) == "trial"]  # seed repeats are not the search
        with ThreadPoolExecutor(max_workers=4) as pool:  # histories: up to 3 requests per trial
            trials = sorted(pool.map(trial, children), key=lambda t: t.start_ms)
        out[str(row["variant"])] = Sweep(str(row["variant"]), run.info.run_id,
                                         int(run.data.params.get("max_epochs", 0)),
                                         run.data.tags.get("rnnbench.best_trial_id", ""), trials)
    return out


def _best(values: list[float], mode: str) -> float:
    return max(values) if mode == "max" else min(values)


def best_trial(sweep: Sweep, mode: str) -> Trial | None:
    """The trial the sweep chose (its tag), else the one whose curve reached the best value."""
    chosen = [t for t in sweep.trials if t.trial_id and t.trial_id == sweep.best_trial_id and t.curve]
    if chosen:
        return chosen[0]
    scored = [t for t in sweep.trials if t.curve]
    if not scored:
        return None
    sign = -1 if mode == "max" else 1
    return min(scored, key=lambda t: sign * _best([v for _, v in t.curve], mode))


def time_to_quality(sweep: Sweep, mode: str) -> list[tuple[float, float]]:
    """(training seconds spent, best validation score so far) after each epoch of each trial,
    trials taken in the order they started: compute, not wall-clock (trials run side by side).
    A trial without per-epoch timings counts its run's wall time, one point at its end."""
    points, spent, best = [], 0.0, None
    for trial in sweep.trials:
        timed = bool(trial.curve) and all(e in trial.epoch_seconds for e, _ in trial.curve)
        steps = [(trial.epoch_seconds[e], v) for e, v in trial.curve] if timed else (
            [(trial.seconds, _best([v for _, v in trial.curve], mode))] if trial.curve else [])
        if not trial.curve:
            spent += sum(trial.epoch_seconds.values()) or trial.seconds
        for seconds, value in steps:
            spent += seconds
            best = value if best is None else _best([best, value], mode)
            points.append((spent, best))
    return points


def _figure():
    from matplotlib.figure import Figure  # no pyplot: no global state, safe beside other threads

    fig = Figure(figsize=(8, 4.5), dpi=120, layout="constrained")
    return fig, fig.add_subplot()


def _integer_epochs(ax) -> None:
    from matplotlib.ticker import MaxNLocator

    ax.xaxis.set_major_locator(MaxNLocator(integer=True))


def _save(fig, ax, path: Path, legend: bool = True) -> Path:
    ax.grid(True, which="major", alpha=0.3)
    if legend and ax.get_legend_handles_labels()[0]:
        ax.legend(fontsize=8, loc="best", framealpha=0.9)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)
    return path


def size_figure(dataset: str, board: pd.DataFrame, path: Path) -> Path | None:
    """One labelled point per variant: the test metric matching the selection metric (the mean
    over seeds with its 95% interval where there are seeds) against its parameter count."""
    column = "test/" + board.attrs["metric"].split("/", 1)[1]
    rows = [r for _, r in board.iterrows() if _usable(r) and column in board.columns
            and not pd.isna(r[column]) and r.get("params")]
    if not rows:
        return None
    seeded = leaderboard.SEEDS in board.columns and column + leaderboard.CI in board.columns
    fig, ax = _figure()
    for row in rows:
        half = row.get(column + leaderboard.CI) if seeded else None
        half = None if half is None or pd.isna(half) else float(half)
        ax.errorbar([row["params"]], [row[column]], yerr=None if half is None else [[half], [half]],
                    fmt="o", capsize=4, markersize=6)
        ax.annotate(str(row["variant"]), (row["params"], row[column]), textcoords="offset points",
                    xytext=(5, 5), fontsize=8)
    from matplotlib.ticker import FuncFormatter

    ax.set_xscale("log")
    ax.margins(x=0.15, y=0.1)  # room for the labels of the outermost points
    count = FuncFormatter(lambda x, _: f"{x:,.0f}")
    ax.xaxis.set_major_formatter(count)
    ax.xaxis.set_minor_formatter(count)
    ax.tick_params(axis="x", which="both", labelsize=7)
    ax.set_xlabel("parameters")
    ax.set_ylabel(column + (" (mean ± 95% interval over seeds)" if seeded else ""))
    ax.set_title(f"{dataset}: {column} against model size "
                 f"({'higher' if board.attrs['mode'] == 'max' else 'lower'} is better; "
                 "chosen on validation)", fontsize=10)
    return _save(fig, ax, path, legend=False)


def curves_figure(dataset: str, board: pd.DataFrame, found: dict[str, Sweep], path: Path) -> Path | None:
    metric, mode = board.attrs["metric"], board.attrs["mode"]
    lines = {label: t for label, s in found.items() if (t := best_trial(s, mode)) is not None}
    if not lines:
        return None
    fig, ax = _figure()
    for label, trial in lines.items():
        ax.plot([e for e, _ in trial.curve], [v for _, v in trial.curve], marker=".", label=label, linewidth=1.6)
    _integer_epochs(ax)
    ax.set_xlabel("epoch")
    ax.set_ylabel(metric)
    ax.set_title(f"{dataset}: {metric} per epoch of each variant's best trial", fontsize=10)
    return _save(fig, ax, path)


def compute_figure(dataset: str, board: pd.DataFrame, found: dict[str, Sweep], path: Path) -> Path | None:
    metric, mode = board.attrs["metric"], board.attrs["mode"]
    lines = {label: p for label, s in found.items() if (p := time_to_quality(s, mode))}
    if not lines:
        return None
    fig, ax = _figure()
    for label, points in lines.items():
        ax.step([x for x, _ in points], [y for _, y in points], where="post", label=label,
                linewidth=1.6, marker="o", markersize=3)
    ax.set_xlabel("training seconds spent (summed over the sweep's trials in the order they started)")
    ax.set_ylabel(f"best {metric} so far")
    ax.set_title(f"{dataset}: time to quality (each point: an epoch of a trial ended)", fontsize=10)
    return _save(fig, ax, path)


def _stopped(sweep: Sweep, trial: Trial) -> bool:
    """Ended before the epoch cap: ASHA stopped it (its tag, else its curve is short)."""
    return trial.stopped_early or bool(sweep.max_epochs and trial.curve and trial.curve[-1][0] < sweep.max_epochs)


def asha_figure(dataset: str, board: pd.DataFrame, found: dict[str, Sweep], path: Path) -> Path | None:
    """The trial curves of one sweep: the highest ranked one in which ASHA stopped a trial (else
    the first ranked one); a trial that ended before the epoch cap gets an x at its last epoch."""
    metric, mode = board.attrs["metric"], board.attrs["mode"]
    ranked = [s for s in found.values() if any(t.curve for t in s.trials)]  # found is in board order
    sweep = next((s for s in ranked if any(_stopped(s, t) for t in s.trials if t.curve)), None) \
        or next(iter(ranked), None)
    if sweep is None:
        return None
    best = best_trial(sweep, mode)
    fig, ax = _figure()
    stopped = 0
    for i, trial in enumerate(t for t in sweep.trials if t.curve):
        x, y = [e for e, _ in trial.curve], [v for _, v in trial.curve]
        is_best = best is not None and trial.run_id == best.run_id
        ax.plot(x, y, linewidth=2.4 if is_best else 1.0, alpha=1.0 if is_best else 0.7,
                color="black" if is_best else None, label="best trial" if is_best else None)
        if _stopped(sweep, trial):
            ax.plot([x[-1]], [y[-1]], "x", color="red", markersize=9, markeredgewidth=2,
                    label=None if stopped else "stopped early by ASHA")
            stopped += 1
    if sweep.max_epochs:
        ax.axvline(sweep.max_epochs, color="grey", linestyle=":", linewidth=1)
    _integer_epochs(ax)
    ax.set_xlabel("epoch" + (f" (cap {sweep.max_epochs})" if sweep.max_epochs else ""))
    ax.set_ylabel(metric)
    place = next(i for i, label in enumerate(found) if label == sweep.label) + 1
    ax.set_title(f"{dataset}: the {len(sweep.trials)} trials of the {sweep.label} sweep (ranked {place}), "
                 f"{stopped} stopped early by ASHA", fontsize=10)
    return _save(fig, ax, path)


def draw(tracking_uri: str, boards: dict[str, pd.DataFrame], out_dir: Path) -> dict[str, list[Path]]:
    """Every figure of every dataset as ``<kind>-<dataset>.png`` under ``out_dir`` (and the
    input-gradient figure where its curves were recorded and it is not there yet). A figure that
    has no data or fails is a warning line."""
    written: dict[str, list[Path]] = {}
    for dataset, board in boards.items():
        paths = written.setdefault(dataset, [])
        try:
            found = sweeps(tracking_uri, board)
        except Exception as exc:
            gradients.warn(f"{dataset}: trial curves not read, no curve figures: {type(exc).__name__}: {exc}")
            found = None
        makers = {"size": lambda p: size_figure(dataset, board, p)}
        if found is not None:
            makers.update({"curves": lambda p: curves_figure(dataset, board, found, p),
                           "compute": lambda p: compute_figure(dataset, board, found, p),
                           "asha": lambda p: asha_figure(dataset, board, found, p)})
        for kind, make in makers.items():
            try:
                path = make(out_dir / f"{kind}-{dataset}.png")
                if path is None:
                    gradients.warn(f"{dataset}: no data for the {FIGURES[kind]} figure")
                else:
                    paths.append(path)
            except Exception as exc:
                gradients.warn(f"{dataset}: {FIGURES[kind]} figure not made: {type(exc).__name__}: {exc}")
        grad = out_dir / f"input_gradients-{dataset}.png"
        try:
            if not grad.exists() and (lines := gradients.curves(tracking_uri, board)):
                gradients.figure(dataset, lines, grad)
        except Exception as exc:
            gradients.warn(f"{dataset}: input-gradient figure not made: {type(exc).__name__}: {exc}")
        if grad.exists():
            paths.append(grad)
    return written


def caption(path: Path) -> str:
    kind = path.name.split("-", 1)[0]
    return FIGURES.get(kind, "input-gradient norms per step" if kind == "input_gradients" else kind)


def _table(board: pd.DataFrame) -> str:
    cols = leaderboard.display_columns(board)
    head = "".join(f"<th>{html.escape(c)}</th>" for c in cols)
    chosen = leaderboard.winner(board)
    rows = []
    for i, (_, row) in enumerate(board.iterrows()):
        cls = "baseline" if str(row["variant"]).startswith("(") else (
            "failed" if str(row.get("note") or "").startswith("failed") else (
                "winner" if chosen is not None and i == 0 else ""))
        cells = "".join(f"<td>{html.escape(leaderboard.cell(board, row, c))}</td>" for c in cols)
        rows.append(f'<tr class="{cls}">{cells}</tr>')
    return f"<table><thead><tr>{head}</tr></thead><tbody>{''.join(rows)}</tbody></table>"


STYLE = """body{font-family:system-ui,sans-serif;margin:2em auto;max-width:1100px;color:#222}
table{border-collapse:collapse;font-size:.85em;margin:.5em 0}th,td{border:1px solid #ccc;padding:3px 6px}
td{text-align:right}td:first-child,td:last-child{text-align:left}th{background:#f3f3f3}
tr.winner{background:#e6f4e6;font-weight:bold}tr.baseline{color:#777}tr.failed{color:#b00}
figure{margin:1em 0}img{max-width:100%}figcaption{font-size:.85em;color:#555}.lead{font-weight:bold}"""


def page(title: str, boards: dict[str, pd.DataFrame], figures: dict[str, list[Path]],
         modalities: dict[str, str] | None = None, intro: list[str] | None = None) -> str:
    """One HTML page holding everything: tables inline, figures as base64 PNG data URIs."""
    parts = [f"<!doctype html><html><head><meta charset='utf-8'><title>{html.escape(title)}</title>"
             f"<style>{STYLE}</style></head><body><h1>{html.escape(title)}</h1>"]
    parts += [f"<p>{html.escape(line)}</p>" for line in intro or []]
    for dataset, board in boards.items():
        modality = (modalities or {}).get(dataset, "")
        lines = board.attrs.get("headlines", [])
        parts.append(f"<h2 id='{html.escape(dataset)}'>{html.escape(dataset)}"
                     + (f" ({html.escape(modality)})" if modality else "") + "</h2>")
        parts += [f"<p class='{'lead' if i == 0 else ''}'>{html.escape(line)}</p>" for i, line in enumerate(lines)]
        parts.append(_table(board))
        for path in figures.get(dataset, []):
            data = base64.b64encode(path.read_bytes()).decode("ascii")
            parts.append(f"<figure><img alt='{html.escape(caption(path))}' src='data:image/png;base64,{data}'>"
                         f"<figcaption>{html.escape(dataset)}: {html.escape(caption(path))} "
                         f"({html.escape(path.name)})</figcaption></figure>")
    parts.append("</body></html>")
    return "\n".join(parts)


def write(tracking_uri: str, run, boards: dict[str, pd.DataFrame], out_dir: Path,
          modalities: dict[str, str] | None = None) -> tuple[list[Path], dict[str, list[Path]]]:
    """The figures and the HTML page of benchmark ``run`` under ``out_dir``: (every file written,
    the figures per dataset)."""
    figures = draw(tracking_uri, boards, out_dir)
    tags = run.data.tags
    intro = [f"MLflow benchmark run {run.info.run_id}, experiment id {run.info.experiment_id}"
             + (f", preset {tags['preset']}" if tags.get("preset") else "") + "."]
    target = out_dir / PAGE
    target.write_text(page("rnnbench report", boards, figures, modalities, intro), encoding="utf-8")
    return [*(p for ps in figures.values() for p in ps), target], figures


def summary(run_id: str, figures: dict[str, list[Path]], link: str | None) -> str:
    """Markdown for Prefect: where the page and each figure are on the MLflow run."""
    lines = [f"# rnnbench report, MLflow run {run_id}", "",
             f"The page `leaderboard/{PAGE}` on the run holds the leaderboards and every figure."
             + (f" [Open the run]({link})." if link else ""), ""]
    for dataset, paths in figures.items():
        lines.append(f"## {dataset}")
        lines += [f"- `leaderboard/{p.name}`: {caption(p)}" for p in paths] or ["- no figures"]
        lines.append("")
    return "\n".join(lines)


def run_link(tracking_uri: str, experiment_id: str, run_id: str) -> str | None:
    """The run's page in the MLflow UI, where the tracking store is a server."""
    from flows.settings import redact

    if not tracking_uri.startswith(("http://", "https://")):
        return None
    return f"{redact(tracking_uri).rstrip('/')}/#/experiments/{experiment_id}/runs/{run_id}"


def publish(tracking_uri: str, run, boards: dict[str, pd.DataFrame], out_dir: Path,
            modalities: dict[str, str] | None = None) -> list[Path]:
    """The benchmark's figures and page: written, logged on the run under ``leaderboard/``, and
    published as Prefect artifacts. Nothing here fails the benchmark."""
    from prefect.artifacts import create_link_artifact, create_markdown_artifact

    from flows.pipeline import artifact_key

    try:
        paths, figures = write(tracking_uri, run, boards, out_dir, modalities)
        tracking.log_files(tracking_uri, run.info.run_id, paths, "leaderboard")
        link = run_link(tracking_uri, run.info.experiment_id, run.info.run_id)
        create_markdown_artifact(summary(run.info.run_id, figures, link), key=artifact_key("report"),
                                 description=f"rnnbench figures and report, MLflow run {run.info.run_id}")
        if link:
            create_link_artifact(link, link_text=f"MLflow run {run.info.run_id}", key=artifact_key("mlflow-run"),
                                 description="the benchmark run in the MLflow UI: its leaderboard/ holds the report")
        return paths
    except Exception as exc:
        gradients.warn(f"report page not made: {type(exc).__name__}: {exc}")
        return []
