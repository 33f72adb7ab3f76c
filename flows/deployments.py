"""What ``rnnbench serve`` offers in the Prefect UI: one deployment per flow, with its form
(the flow's typed parameters), description, tags and, for the benchmark, an example nightly
schedule created inactive; and the serving process itself.

Who owns what: the code owns a deployment's parameters, description, tags and entrypoint, and
``serve`` sends them on every start. Its schedules and whether it is paused belong to the UI
once the deployment exists: a restart reads them from the server and sends them back
unchanged, and shutting down pauses nothing (Prefect's ``serve`` pauses every schedule on
shutdown by default, and re-sends ``paused=False`` and the code's schedules on every start).
"""

from __future__ import annotations

import asyncio
import signal
from dataclasses import dataclass, field
from typing import Any, Callable, Optional

DEPLOYMENT = "rnnbench"  # every flow's deployment has this name: benchmark/rnnbench, ...
TAGS = ["rnnbench"]
NIGHTLY = "nightly"  # the example schedule's slug
NIGHTLY_CRON = "0 2 * * *"  # 02:00 UTC


@dataclass(frozen=True)
class Offer:
    """One flow as the UI shows it."""

    flow: str  # the flow's name, as in flows.pipeline
    description: str
    tags: list[str] = field(default_factory=list)
    nightly: Optional[dict[str, Any]] = None  # an example schedule's parameters, or none


OFFERS = (
    Offer("benchmark", "Prepare each dataset, sweep each variant with Ray Tune, and build the "
                       "leaderboards (Artifacts tab; every number is in MLflow). Choose a shipped "
                       "preset, or give preset_path to a TOML file on the serving machine.",
          ["benchmark"], nightly={"preset": "quick"}),
    Offer("sweep", "One Ray Tune sweep: one dataset, one variant (a built-in one as variant, "
                   "one your preset declares as extra_variant).", ["sweep"]),
    Offer("prepare_dataset", "Prepare built-in or registered datasets into the state folder "
                             "(reused when unchanged).", ["data"]),
    Offer("import_dataset", "Register your own data (timeseries, text, audio or sequences) "
                            "from a file or folder in the serving machine's import folder "
                            "(RNNBENCH_IMPORT_ROOT, default $RNNBENCH_HOME/import; nothing "
                            "outside it is read) under a name the benchmark and sweep flows "
                            "then accept.", ["data"]),
)


def _flow(name: str):
    from flows import pipeline

    return {"benchmark": pipeline.benchmark, "sweep": pipeline.sweep,
            "prepare_dataset": pipeline.prepare_dataset,
            "import_dataset": pipeline.import_dataset}[name]


async def _existing(client, flow: str):
    from prefect.exceptions import ObjectNotFound

    try:
        return await client.read_deployment_by_name(f"{flow}/{DEPLOYMENT}")
    except ObjectNotFound:
        return None


async def build() -> list:
    """The RunnerDeployments to serve, reconciled with what the Prefect API already holds."""
    from prefect import get_client
    from prefect.deployments.runner import EntrypointType
    from prefect.schedules import Cron

    out = []
    async with get_client() as client:
        for offer in OFFERS:
            existing = await _existing(client, offer.flow)
            kwargs: dict[str, Any] = {}
            if existing is None and offer.nightly is not None:
                kwargs["schedule"] = Cron(NIGHTLY_CRON, timezone="UTC", active=False,
                                          parameters=offer.nightly, slug=NIGHTLY)
            deployment = await _flow(offer.flow).ato_deployment(
                DEPLOYMENT, description=offer.description, tags=TAGS + offer.tags,
                paused=existing.paused if existing is not None else False,
                entrypoint_type=EntrypointType.MODULE_PATH, **kwargs)
            if existing is not None:
                # not sent at all, so the API leaves the deployment's schedules alone (an empty
                # list would replace a user's own schedules, which have no slug, with nothing)
                deployment.model_fields_set.discard("schedules")
            out.append(deployment)
    return out


def serve(limit: int, on_ready: Callable[[list], None]) -> None:
    """Register the deployments, then run their flow runs, at most ``limit`` at a time, until
    Ctrl-C or SIGTERM: what ``prefect.serve`` does, with ``on_ready`` called once the
    deployments are registered and without pausing anything on the way out."""
    from prefect.exceptions import TerminationSignal
    from prefect.runner import Runner

    runner = Runner(name="rnnbench-serve", limit=limit, pause_on_shutdown=False)
    served = asyncio.run(build())
    for deployment in served:
        runner.add_deployment(deployment)
    on_ready(served)

    def graceful(signum, frame) -> None:
        """Ctrl-C stops like SIGTERM: the runner cancels its flow runs (they mark their MLflow
        runs KILLED and stop Ray) and waits for them. Left to asyncio, Ctrl-C cancelled the
        runner's own shutdown and left the flow runs' processes running."""
        runner.handle_sigterm()

    previous = signal.signal(signal.SIGINT, graceful)
    try:
        asyncio.run(runner.start())
    except TerminationSignal:  # SIGTERM: handled by the runner above, ending serve normally
        pass
    finally:
        signal.signal(signal.SIGINT, previous)


def deploy(pool: str) -> list:
    """Register the same deployments with the work pool ``pool``, for its workers to run (the
    team's path: a Prefect server and ``prefect worker start --pool``) instead of ``serve``.
    The pool must exist; what the UI owns is kept as ``serve`` keeps it."""
    from prefect.deployments.runner import adeploy

    async def go() -> list:
        deployments = await build()
        await adeploy(*deployments, work_pool_name=pool, build=False, push=False,
                      print_next_steps_message=False, ignore_warnings=True)
        return deployments

    return asyncio.run(go())
