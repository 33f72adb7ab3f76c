"""What happens to a flow run of ``rnnbench serve`` after it starts, against a real Prefect
server (SQLite, on loopback 127.0.0.12): a deployment's run compared with its previous one in
an artifact; a failed run sending one notification through the configured block (to a webhook
receiver on 127.0.0.13); and a run cancelled from the UI ending with its MLflow runs KILLED and
its processes gone."""

from __future__ import annotations

import asyncio
import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from tests.conftest import TINY_PRESET
from tests.integration.test_serve import _deployments, _serving, _start, _stat, prefect_server

pytestmark = pytest.mark.integration
HOST = "127.0.0.12"
RECEIVER = "127.0.0.13"
BLOCK = "rnnbench-test"
SMALL = {"preset_path": TINY_PRESET, "variants": ["lstm"], "num_samples": 1, "max_epochs": 1}


class Receiver(ThreadingHTTPServer):
    """A webhook endpoint: every POST's JSON body, in order."""

    def __init__(self):
        posts = self.posts = []

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):
                posts.append(json.loads(self.rfile.read(int(self.headers["Content-Length"]))))
                self.send_response(200)
                self.end_headers()

            def log_message(self, *args):
                pass

        super().__init__((RECEIVER, 0), Handler)
        self.url = f"http://{RECEIVER}:{self.server_address[1]}/hook"


@pytest.fixture(scope="module")
def receiver():
    server = Receiver()
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield server
    finally:
        server.shutdown()
        server.server_close()


@pytest.fixture(scope="module")
def served(tmp_path_factory, receiver):
    """A Prefect server, a notification block posting to the receiver, and ``rnnbench serve``
    told to notify through it."""
    from prefect.blocks.notifications import CustomWebhookNotificationBlock
    from prefect.settings import PREFECT_API_URL, temporary_settings

    root = tmp_path_factory.mktemp("serve-runs")
    with prefect_server(HOST, root / "prefect") as api:
        with temporary_settings({PREFECT_API_URL: api}):
            CustomWebhookNotificationBlock(
                name="rnnbench", url=receiver.url,
                json_data={"subject": "{{subject}}", "body": "{{body}}"}).save(BLOCK)
        with _serving(api, root / "state", root / "serve.log",
                      {"RNNBENCH_NOTIFY_BLOCK": f"custom-webhook/{BLOCK}",
                       "PREFECT_RUNNER_POLL_FREQUENCY": "2"}) as serving:  # queued runs start sooner
            serving.api, serving.home = api, root / "state"
            yield serving


def test_serve_refuses_a_notification_block_that_does_not_exist_in_one_line(served, tmp_path):
    import subprocess
    import sys

    from tests.integration.test_serve import REPO, _clean_env

    env = {**_clean_env(), "PREFECT_API_URL": served.api, "RNNBENCH_HOME": str(tmp_path),
           "RNNBENCH_NOTIFY_BLOCK": "custom-webhook/nobody", "COLUMNS": "200"}
    proc = subprocess.run([sys.executable, "-m", "flows.cli", "serve"], cwd=REPO, env=env,
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert "RNNBENCH_NOTIFY_BLOCK='custom-webhook/nobody'" in proc.stdout.replace("\n", " ")
    assert "Traceback" not in proc.stdout + proc.stderr


def _mlflow(served):
    from mlflow.tracking import MlflowClient

    return MlflowClient(f"sqlite:///{served.home / 'mlflow.db'}")


async def _artifacts(api: str, flow_run_id) -> dict:
    from prefect.client.orchestration import PrefectClient

    async with PrefectClient(api) as client:
        return {a.key: a for a in await client.read_artifacts() if a.flow_run_id == flow_run_id}


def test_a_deployment_run_is_compared_with_the_previous_run_of_its_deployment(served):
    deployments = asyncio.run(_deployments(served.api))
    first = asyncio.run(_start(served.api, deployments["benchmark"].id, SMALL))
    second = asyncio.run(_start(served.api, deployments["benchmark"].id, SMALL))
    for run in (first, second):
        state = asyncio.run(_wait_final(served.api, run, timeout=300))
        assert state.is_completed(), f"{state}\n{served.text()[-3000:]}"
    assert "previous" in asyncio.run(_artifacts(served.api, first))["comparison"].data
    text = asyncio.run(_artifacts(served.api, second))["comparison"].data
    (a, b) = [r for r in _mlflow(served).search_runs(
        [e.experiment_id for e in _mlflow(served).search_experiments()],
        "tags.`rnnbench.role` = 'benchmark'", order_by=["attributes.start_time ASC"])]
    assert f"A = previous run {a.info.run_id}, B = this run {b.info.run_id}" in text
    assert "### japanese-vowels" in text and "| lstm | val/acc |" in text and "B - A" in text
    assert a.data.tags["rnnbench.deployment_id"] == str(deployments["benchmark"].id)


def test_a_failed_benchmark_run_sends_one_notification_naming_it(served, receiver):
    deployments = asyncio.run(_deployments(served.api))
    before = len(receiver.posts)
    run = asyncio.run(_start(served.api, deployments["benchmark"].id,
                             {**SMALL, "datasets": ["no-such-dataset"]}))
    state = asyncio.run(_wait_final(served.api, run, timeout=120))
    assert state.is_failed(), state
    deadline = time.monotonic() + 15
    while len(receiver.posts) == before:
        assert time.monotonic() < deadline, f"no notification:\n{served.text()[-3000:]}"
        time.sleep(0.5)
    time.sleep(2)  # a second one would have come by now
    (post,) = receiver.posts[before:]
    assert str(run) in post["body"] and "no-such-dataset" in post["body"], post
    assert "failed" in post["subject"]


async def _cancel(api: str, flow_run_id) -> None:
    """What the UI's Cancel button does: propose Cancelling; the runner does the rest."""
    from prefect.client.orchestration import PrefectClient
    from prefect.states import Cancelling

    async with PrefectClient(api) as client:
        await client.set_flow_run_state(flow_run_id, Cancelling(), force=True)


async def _wait_final(api: str, flow_run_id, timeout: float):
    from prefect.client.orchestration import PrefectClient

    async with PrefectClient(api) as client:
        deadline = time.monotonic() + timeout
        while not (run := await client.read_flow_run(flow_run_id)).state.is_final():
            assert time.monotonic() < deadline, f"flow run not final in {timeout}s: {run.state}"
            await asyncio.sleep(0.5)
        return run.state


def test_cancelling_a_flow_run_in_the_ui_kills_its_runs_and_processes(served, receiver):
    client = _mlflow(served)
    deployments = asyncio.run(_deployments(served.api))
    posts = len(receiver.posts)
    long = asyncio.run(_start(served.api, deployments["benchmark"].id, {
        "preset_path": TINY_PRESET, "variants": ["lstm"], "max_epochs": 500}))
    deadline = time.monotonic() + 180
    while not (bench := [r for r in client.search_runs(
            [e.experiment_id for e in client.search_experiments()],
            f"tags.`rnnbench.flow_run_id` = '{long}'")]) or not [
            r for r in client.search_runs([bench[0].info.experiment_id], "attributes.status = 'RUNNING' "
                                          "and tags.`rnnbench.role` = 'trial'")]:
        assert time.monotonic() < deadline, f"no trial started:\n{served.text()[-3000:]}"
        served.watch()
        time.sleep(1)
    served.watch()
    flow_processes = served.seen - {served.proc.pid}
    assert flow_processes, "the flow run ran in child processes of serve"

    started = time.monotonic()
    asyncio.run(_cancel(served.api, long))
    state = asyncio.run(_wait_final(served.api, long, timeout=60))
    assert state.is_cancelled(), f"{state}\n{served.text()[-3000:]}"
    deadline = time.monotonic() + 20
    while left := {pid for pid in flow_processes if _stat(pid) is not None}:
        assert time.monotonic() < deadline, f"processes left after the cancel: {left}"
        time.sleep(0.5)
    took = time.monotonic() - started
    print(f"cancel -> Cancelled, processes gone: {took:.1f}s")
    assert served.proc.poll() is None, "serve itself keeps serving"

    (killed,) = bench
    family = [r for r in client.search_runs([killed.info.experiment_id])
              if r.info.start_time >= killed.info.start_time]
    assert sorted({r.data.tags["rnnbench.role"] for r in family}) == ["benchmark", "sweep", "trial"]
    assert {r.info.status for r in family} == {"KILLED"}, \
        [(r.data.tags["rnnbench.role"], r.info.status) for r in family]
    # within seconds: Prefect's runner waits 30 s after its SIGTERM before it kills outright
    assert took < 25, f"cancel took {took:.0f}s"
    assert len(receiver.posts) == posts, "a cancel is no failure: nothing is sent"
