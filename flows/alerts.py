"""What a team watching a deployment hears about its benchmark runs: each deployment or
scheduled run compared with the previous run of the same deployment (a Prefect markdown
artifact, ``flows.report.compare``), and a notification through the Prefect notification block
named by ``RNNBENCH_NOTIFY_BLOCK`` when a run fails or clearly regresses.
"""

from __future__ import annotations

import logging
import math
import os
from typing import Optional

from flows import leaderboard, tracking
from flows.report import DELTA, compare

NOTIFY_BLOCK = "RNNBENCH_NOTIFY_BLOCK"  # "<block type slug>/<block name>", e.g. custom-webhook/team
DEPLOYMENT = "rnnbench.deployment_id"  # MLflow tag: the Prefect deployment that started the run
COMPARISON = "comparison"  # the artifact's key
# A clear regression, on a dataset's selection metric: worse, with its 95% interval excluding
# zero where both runs have seed repeats; otherwise worse by more than this share of the
# previous value (no interval to tell noise from change, so only a large drop counts).
REGRESSION = 0.10

log = logging.getLogger("rnnbench.alerts")


def previous_run(tracking_uri: str, experiment_id: str, run_id: str, deployment_id: str):
    """The newest FINISHED benchmark run started by the same deployment before ``run_id``."""
    c = tracking.client(tracking_uri)
    started = c.get_run(run_id).info.start_time
    runs = c.search_runs([experiment_id], f"tags.`{DEPLOYMENT}` = '{deployment_id}' and "
                                          f"tags.`{tracking.ROLE}` = 'benchmark' and "
                                          "attributes.status = 'FINISHED'",
                         order_by=["attributes.start_time DESC"], max_results=50)
    return next((r for r in runs if r.info.run_id != run_id and r.info.start_time < started), None)


def regressions(boards: dict) -> list[str]:
    """One line per dataset and variant whose selection metric clearly got worse (see
    ``REGRESSION``) in a comparison (``flows.report.compare``: A the previous run, B this one)."""
    out = []
    for dataset, board in boards.items():
        metric, sign = board.attrs["metric"], 1 if board.attrs["mode"] == "max" else -1
        for _, row in board[board["metric"] == metric].iterrows():
            if str(row["variant"]).startswith("("):  # the task's baseline, not a model
                continue
            delta, half = _number(row[DELTA]), _number(row.get(DELTA + leaderboard.CI))
            if delta is None or sign * delta >= 0:
                continue
            if half is not None:
                clear, why = abs(delta) > half, f"{delta:+.4g} ± {half:.2g}, 95% interval excludes 0"
            else:
                clear = abs(delta) > REGRESSION * abs(row["A"])
                why = f"{delta:+.4g}, more than {REGRESSION:.0%} of the previous value"
            if clear:
                out.append(f"{dataset}/{row['variant']}: {metric} {row['A']:.4g} -> {row['B']:.4g} ({why})")
    return out


def _number(value) -> Optional[float]:
    return None if value is None or (isinstance(value, float) and math.isnan(value)) else float(value)


def compare_with_previous(tracking_uri: str, experiment_id: str, run_id: str,
                          deployment_id: str) -> list[str]:
    """Publish the comparison artifact of a deployment's run; notify and return its clear
    regressions (none when there is no previous run)."""
    from prefect.artifacts import create_markdown_artifact

    previous = previous_run(tracking_uri, experiment_id, run_id, deployment_id)
    if previous is None:
        create_markdown_artifact("No previous finished run of this deployment to compare with.",
                                 key=COMPARISON, description=f"MLflow run {run_id}")
        return []
    boards = compare(tracking_uri, previous.info.run_id, run_id)
    found = regressions(boards)
    head = (f"## This run against the previous run of the deployment\n\nA = previous run "
            f"{previous.info.run_id}, B = this run {run_id}.\n\n"
            + ("**Clear regressions:**\n\n" + "\n".join(f"- {line}" for line in found) if found
               else "No clear regression.") + "\n\n")
    create_markdown_artifact(head + "\n".join(leaderboard.to_markdown(d, b) for d, b in boards.items()),
                             key=COMPARISON, description=f"MLflow runs {previous.info.run_id} -> {run_id}")
    if found:
        from prefect.runtime import flow_run

        notify(f"rnnbench: flow run {flow_run.name} regressed",
               f"Flow run {flow_run.name} ({flow_run.id}), MLflow run {run_id} against "
               f"{previous.info.run_id}:\n" + "\n".join(found))
    return found


def notify(subject: str, body: str) -> None:
    """Send through the block named by RNNBENCH_NOTIFY_BLOCK; nothing when it is unset. A
    notification that cannot be sent is logged, never fails the run."""
    name = os.environ.get(NOTIFY_BLOCK)
    if not name:
        return
    try:
        load_block(name).notify(body, subject)
    except Exception as exc:
        log.warning("notification through %s not sent: %s", name, exc)


def load_block(name: str):
    """The notification block ``name`` ("<block type slug>/<block name>"), or one line saying
    what is wrong."""
    from prefect.blocks.abstract import NotificationBlock
    from prefect.blocks.core import Block

    if name.count("/") != 1:
        raise ValueError(f"{NOTIFY_BLOCK}={name!r}: give '<block type slug>/<block name>', "
                         "e.g. custom-webhook/team")
    try:
        block = Block.load(name)
    except ValueError as exc:  # Prefect's "Unable to find block document named ..."
        raise ValueError(f"{NOTIFY_BLOCK}={name!r}: {exc}; create it in the Prefect UI "
                         "(Blocks) or name an existing one") from None
    if not isinstance(block, NotificationBlock):
        raise ValueError(f"{NOTIFY_BLOCK}={name!r} is a {type(block).__name__}, not a "
                         "notification block (e.g. custom-webhook, slack-webhook)")
    return block


def on_failure(flow, flow_run, state) -> None:
    """The benchmark flow's on_failure hook: one notification naming the run and the failure."""
    notify(f"rnnbench: flow run {flow_run.name} failed",
           f"Flow run {flow_run.name} ({flow_run.id}) of {flow.name} failed: {state.message}")
