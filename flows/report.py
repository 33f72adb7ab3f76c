"""``rnnbench report``: a benchmark run's leaderboards rebuilt from the MLflow tracking store
alone (``flows.leaderboard.build``; no local state), and two benchmark runs side by side per
dataset and variant with the difference, B - A: with its 95% Welch interval where both rows
carry per-seed scores (``flows.stats``), otherwise the plain difference, and the table says
which. Reads MLflow only.
"""

from __future__ import annotations

import math

import pandas as pd

from flows import leaderboard, stats, tracking

ROLE = "benchmark"
DELTA = "B - A"  # the column of differences; its interval is DELTA + leaderboard.CI


class ReportError(ValueError):
    """A run or experiment that is not there, or not a benchmark run: one line."""


def benchmark_run(tracking_uri: str, experiment: str, run_id: str | None = None):
    """The benchmark run ``run_id`` of ``experiment``, or its newest finished one (else newest)."""
    c = tracking.client(tracking_uri)
    exp = c.get_experiment_by_name(experiment)
    if exp is None:
        names = sorted(e.name for e in c.search_experiments())
        raise ReportError(f"no experiment {experiment!r} in {tracking_uri}; experiments: "
                          f"{', '.join(names) or 'none'}")
    if run_id:
        run = _run(tracking_uri, run_id)
        if run.info.experiment_id != exp.experiment_id:
            raise ReportError(f"run {run_id} is not in experiment {experiment!r}")
        return run
    runs = c.search_runs([exp.experiment_id], f"tags.`{tracking.ROLE}` = '{ROLE}'",
                         order_by=["attributes.start_time DESC"], max_results=200)
    if not runs:
        raise ReportError(f"experiment {experiment!r} has no benchmark runs (rnnbench run makes one)")
    return next((r for r in runs if r.info.status == "FINISHED"), runs[0])


def _run(tracking_uri: str, run_id: str):
    from mlflow.exceptions import MlflowException

    try:
        run = tracking.client(tracking_uri).get_run(run_id)
    except MlflowException:
        raise ReportError(f"no run {run_id} in {tracking_uri}") from None
    if run.data.tags.get(tracking.ROLE) != ROLE:
        raise ReportError(f"run {run_id} is not a benchmark run (its {tracking.ROLE} is "
                          f"{run.data.tags.get(tracking.ROLE, 'unset')!r})")
    return run


def rebuild(tracking_uri: str, run) -> tuple[dict[str, pd.DataFrame], dict[str, str]]:
    """The run's leaderboards and each dataset's modality, from the tracking store."""
    exp_id, run_id = run.info.experiment_id, run.info.run_id
    boards = leaderboard.build(tracking_uri, exp_id, run_id)
    modalities = {r.data.tags["dataset"]: r.data.tags.get("modality", "")
                  for r in tracking.children(tracking_uri, exp_id, run_id)
                  if r.data.tags.get(tracking.ROLE) == "sweep"}
    return boards, modalities


def compare(tracking_uri: str, run_a: str, run_b: str) -> dict[str, pd.DataFrame]:
    """Per dataset in either run, a row per variant and metric (the selection metric and the
    matching test metric): its value in A and in B, and B - A, with its 95% Welch interval
    where both sides have seed repeats. ``attrs["headlines"]`` says how the differences were
    computed."""
    a, b = (rebuild(tracking_uri, _run(tracking_uri, r))[0] for r in (run_a, run_b))
    client = tracking.client(tracking_uri)
    seeds: dict[str, dict[str, list[float]]] = {}

    def scores(run_id) -> dict[str, list[float]]:
        if not isinstance(run_id, str):
            return {}
        if run_id not in seeds:
            seeds[run_id] = stats.seed_scores(client.get_run(run_id).data.metrics)
        return seeds[run_id]

    out = {}
    for dataset in sorted(set(a) | set(b)):
        ba, bb = a.get(dataset), b.get(dataset)
        metric = (bb if bb is not None else ba).attrs["metric"]
        columns = [metric, "test/" + metric.split("/", 1)[1]]
        ra, rb = _rows(ba), _rows(bb)
        rows, with_interval, plain = [], 0, 0
        for variant in [*rb, *(v for v in ra if v not in rb)]:
            ea, eb = ra.get(variant), rb.get(variant)
            for col in columns:
                va, vb = _value(ea, col), _value(eb, col)
                row = {"variant": variant, "metric": col, "A": va, "B": vb, DELTA: None, DELTA + leaderboard.CI: None,
                       "note": "only in A" if eb is None else ("only in B" if ea is None else None)}
                rows.append(row)
                if va is None or vb is None:
                    continue
                sa, sb = scores(ea.get("run_id")).get(col, []), scores(eb.get("run_id")).get(col, [])
                if len(sa) >= 2 and len(sb) >= 2:
                    row[DELTA], row[DELTA + leaderboard.CI] = stats.difference(sa, sb)
                    with_interval += 1
                else:
                    row[DELTA] = vb - va
                    plain += 1
        board = pd.DataFrame(rows)
        mode = (bb if bb is not None else ba).attrs["mode"]
        lines = [f"A = run {run_a}, B = run {run_b}; {'higher' if mode == 'max' else 'lower'} is better."]
        if with_interval:
            lines.append("± is the 95% Welch interval of the difference in means over the seeds of "
                         "both runs" + (f"; {plain} difference(s) without seed repeats on both sides are "
                                        "plain differences." if plain else "."))
        elif plain:
            lines.append("Plain differences, no intervals: these runs have no seed repeats, so "
                         "the difference cannot be told from noise here.")
        board.attrs.update({"metric": metric, "mode": mode,
                            "headlines": lines})
        out[dataset] = board
    return out


def _rows(board: pd.DataFrame | None) -> dict[str, dict]:
    if board is None:
        return {}
    return {str(r["variant"]): r.to_dict() for _, r in board.iterrows()
            if not str(r.get("note") or "").startswith("failed")}


def _value(row: dict | None, column: str) -> float | None:
    if row is None:
        return None
    value = row.get(column)
    return None if value is None or (isinstance(value, float) and math.isnan(value)) else float(value)
