"""``rnnbench serve`` against a real Prefect server (SQLite, on a loopback address other than
127.0.0.1): flow runs created through the API as the UI's Run button does, one at a time, the
forms' types, a user's schedules and pause surviving a restart, and Ctrl-C (idle, and while a
benchmark trains) leaving runs KILLED and no process behind."""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import subprocess
import sys
import time
from contextlib import contextmanager
from pathlib import Path

import pytest

from tests.conftest import TINY_PRESET

pytestmark = pytest.mark.integration
REPO = Path(__file__).resolve().parents[2]
HOST = "127.0.0.7"


def _free_port(host: str) -> int:
    with socket.socket() as s:
        s.bind((host, 0))
        return s.getsockname()[1]


def _clean_env() -> dict[str, str]:
    drop = ("PREFECT_", "MLFLOW_", "RNNBENCH_", "RAY_ADDRESS")
    env = {k: v for k, v in os.environ.items() if not k.startswith(drop)}
    env["PYTHONPATH"] = str(REPO)  # this checkout, whatever an editable install points at
    return env


def _stat(pid: int) -> tuple[int, int, str] | None:
    """(parent pid, session id, state) of a live process, None for a gone or zombie one."""
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = text[text.rindex(")") + 2:].split()
    state, ppid, sid = fields[0], int(fields[1]), int(fields[3])
    return None if state in ("Z", "X") else (ppid, sid, state)


def _processes() -> dict[int, tuple[int, int, str]]:
    out = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit() and (info := _stat(int(entry))) is not None:
            out[int(entry)] = info
    return out


def _family(root: int) -> set[int]:
    """Every live descendant of ``root`` and every process in its session."""
    procs = _processes()
    found = {pid for pid, (_, sid, _) in procs.items() if sid == root and pid != root}
    frontier = [root]
    while frontier:
        parent = frontier.pop()
        kids = [pid for pid, (ppid, _, _) in procs.items() if ppid == parent]
        found.update(kids)
        frontier.extend(kids)
    return found


def _wait_http(url: str, proc: subprocess.Popen, log: Path, timeout: float = 120) -> None:
    import urllib.request

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"server exited ({proc.returncode}):\n{log.read_text()[-3000:]}")
        try:
            with urllib.request.urlopen(url, timeout=2):
                return
        except OSError:
            time.sleep(0.5)
    raise TimeoutError(f"{url} did not answer in {timeout}s:\n{log.read_text()[-3000:]}")


def _stop_group(proc: subprocess.Popen, sig: int = signal.SIGTERM, timeout: float = 30) -> None:
    """Signal the process group; SIGKILL what is left after ``timeout``."""
    if proc.poll() is None:
        try:
            os.killpg(proc.pid, sig)
            proc.wait(timeout=timeout)
        except (ProcessLookupError, subprocess.TimeoutExpired):
            pass
    for pid in _family(proc.pid) | ({proc.pid} if proc.poll() is None else set()):
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    if proc.poll() is None:
        proc.wait(timeout=10)


@pytest.fixture(scope="module")
def prefect_api(tmp_path_factory):
    with prefect_server(HOST, tmp_path_factory.mktemp("prefect-server")) as api:
        yield api


@contextmanager
def prefect_server(host: str, root: Path):
    """A Prefect server on SQLite under ``root``, on ``host`` and a free port: its API URL."""
    root.mkdir(parents=True, exist_ok=True)
    env = _clean_env()
    env.update(PREFECT_HOME=str(root / "home"), PREFECT_SERVER_ANALYTICS_ENABLED="false",
               PREFECT_API_DATABASE_CONNECTION_URL=f"sqlite+aiosqlite:///{root / 'prefect.db'}")
    port = _free_port(host)
    log = root / "server.log"
    with open(log, "w") as fh:
        proc = subprocess.Popen([str(Path(sys.executable).parent / "prefect"), "server", "start",
                                 "--host", host, "--port", str(port)], stdout=fh,
                                stderr=subprocess.STDOUT, env=env, start_new_session=True)
    try:
        _wait_http(f"http://{host}:{port}/api/health", proc, log)
        yield f"http://{host}:{port}/api"
    finally:
        _stop_group(proc)


class Served:
    """One ``rnnbench serve`` process, its log, and every process it started."""

    def __init__(self, api: str, home: Path, log: Path, env: dict[str, str] | None = None):
        extra, env = env or {}, _clean_env()
        env.update(PREFECT_API_URL=api, RNNBENCH_HOME=str(home), **extra)
        self.log = log
        with open(log, "w") as fh:
            self.proc = subprocess.Popen([sys.executable, "-m", "flows.cli", "serve"], cwd=REPO,
                                         stdout=fh, stderr=subprocess.STDOUT, env=env,
                                         start_new_session=True)  # as a terminal's job
        self.seen: set[int] = set()

    def text(self) -> str:
        return self.log.read_text()

    def wait_ready(self, timeout: float = 120) -> None:
        deadline = time.monotonic() + timeout
        while "Ctrl-C stops." not in self.text():
            assert self.proc.poll() is None, f"serve exited ({self.proc.returncode}):\n{self.text()[-3000:]}"
            assert time.monotonic() < deadline, f"serve not ready in {timeout}s:\n{self.text()[-3000:]}"
            time.sleep(0.5)

    def watch(self) -> None:
        self.seen |= _family(self.proc.pid)

    def ctrl_c(self) -> int:
        """SIGINT to the whole process group, as Ctrl-C in a terminal sends it."""
        self.watch()
        os.killpg(self.proc.pid, signal.SIGINT)
        return self.proc.wait(timeout=60)

    def left(self, grace: float = 15) -> set[int]:
        deadline = time.monotonic() + grace
        while True:
            alive = {pid for pid in self.seen | {self.proc.pid} if _stat(pid) is not None}
            if not alive or time.monotonic() > deadline:
                return alive
            time.sleep(0.5)

    def close(self) -> None:
        _stop_group(self.proc, signal.SIGKILL, timeout=5)


@contextmanager
def _serving(api: str, home: Path, log: Path, env: dict[str, str] | None = None):
    served = Served(api, home, log, env)
    try:
        served.wait_ready()
        yield served
    finally:
        served.close()


async def _deployments(api: str) -> dict:
    from prefect.client.orchestration import PrefectClient

    async with PrefectClient(api) as client:
        return {d.entrypoint.rsplit(".", 1)[-1]: d for d in await client.read_deployments()}


async def _run_two(api: str, deployments: dict, served: Served, timeout: float = 240):
    """A benchmark run and a prepare_dataset run created at once, the way the UI's Run button
    creates them; both waited for. Returns them and the benchmark run's artifact keys."""
    from prefect.client.orchestration import PrefectClient

    async with PrefectClient(api) as client:
        bench = await client.create_flow_run_from_deployment(deployments["benchmark"].id, parameters={
            "preset_path": TINY_PRESET, "variants": ["lstm"], "num_samples": 1})
        prep = await client.create_flow_run_from_deployment(
            deployments["prepare_dataset"].id, parameters={"datasets": ["sunspots"]})
        deadline = time.monotonic() + timeout
        while True:
            bench, prep = [await client.read_flow_run(r.id) for r in (bench, prep)]
            if bench.state.is_final() and prep.state.is_final():
                break
            assert time.monotonic() < deadline, f"flow runs not final in {timeout}s:\n{served.text()[-3000:]}"
            served.watch()
            await asyncio.sleep(1)
        artifacts = await client.read_artifacts()
        return bench, prep, {a.key for a in artifacts if a.flow_run_id == bench.id}


async def _start(api: str, deployment_id, parameters: dict):
    from prefect.client.orchestration import PrefectClient

    async with PrefectClient(api) as client:
        return (await client.create_flow_run_from_deployment(deployment_id, parameters=parameters)).id


async def _state(api: str, flow_run_id):
    from prefect.client.orchestration import PrefectClient

    async with PrefectClient(api) as client:
        return (await client.read_flow_run(flow_run_id)).state


async def _set_in_the_ui(api: str, deployments: dict) -> None:
    """What a user does in the UI: switch the example schedule on, add a schedule of their
    own (the UI gives it no slug), pause a deployment."""
    from prefect.client.orchestration import PrefectClient
    from prefect.client.schemas.schedules import CronSchedule

    bench = deployments["benchmark"]
    async with PrefectClient(api) as client:
        await client.update_deployment_schedule(bench.id, bench.schedules[0].id, active=True)
        await client.create_deployment_schedules(bench.id, [(CronSchedule(cron="30 3 * * 6"), False)])
        await client.pause_deployment(deployments["sweep"].id)


def test_serve_runs_deployments_from_the_api_keeps_what_the_ui_set_and_stops_cleanly(
        prefect_api, tmp_path):
    from mlflow.tracking import MlflowClient

    from modules.variants import BUILTIN

    home = tmp_path / "state"
    with _serving(prefect_api, home, tmp_path / "serve1.log") as served:
        out = served.text()
        assert f"Prefect UI: {prefect_api.removesuffix('/api')}/deployments" in out
        deployments = asyncio.run(_deployments(prefect_api))
        assert set(deployments) == {"benchmark", "sweep", "prepare_dataset", "import_dataset"}

        # the UI's forms: presets and variants as choices, datasets as a list, budgets as numbers
        bench = deployments["benchmark"]
        schema = bench.parameter_openapi_schema
        props, defs = schema["properties"], schema["definitions"]
        assert set(defs["PresetName"]["enum"]) == {"quick", "standard", "paper"}
        assert defs["VariantName"]["enum"] == list(BUILTIN)
        assert props["preset"]["$ref"] == "#/definitions/PresetName"
        assert {"type": "array", "items": {"$ref": "#/definitions/VariantName"}} in props["variants"]["anyOf"]
        assert {"type": "array", "items": {"type": "string"}} in props["datasets"]["anyOf"]
        assert {"type": "integer", "exclusiveMinimum": 0} in props["num_samples"]["anyOf"]
        sweep_props = deployments["sweep"].parameter_openapi_schema["properties"]
        assert {"$ref": "#/definitions/VariantName"} in sweep_props["variant"]["anyOf"]
        assert deployments["prepare_dataset"].parameter_openapi_schema["properties"]["datasets"]["type"] == "array"
        assert bench.enforce_parameter_schema and "rnnbench" in bench.tags and bench.description
        (nightly,) = bench.schedules
        assert nightly.slug == "nightly" and nightly.active is False, "the example starts inactive"
        assert nightly.schedule.cron == "0 2 * * *"

        run, prep, artifact_keys = asyncio.run(_run_two(prefect_api, deployments, served))
        assert run.state.is_completed(), f"{run.state}\n{served.text()[-3000:]}"
        assert prep.state.is_completed(), f"{prep.state}\n{served.text()[-3000:]}"
        assert prep.start_time >= run.end_time or run.start_time >= prep.end_time, \
            "one flow run at a time: the second waited for the first"
        assert {"leaderboard", "leaderboard-japanese-vowels"} <= artifact_keys
        assert served.seen, "the flow run ran in a child process of serve"

        asyncio.run(_set_in_the_ui(prefect_api, deployments))
        assert served.ctrl_c() == 0
        assert not served.left(), f"processes left after Ctrl-C: {served.left()}"
        out = served.text()
        assert "rnnbench serve stopped." in out and "Traceback" not in out

    client = MlflowClient(f"sqlite:///{home / 'mlflow.db'}")
    (exp,) = [e for e in client.search_experiments() if e.name == "rnnbench"]
    runs = client.search_runs([exp.experiment_id])
    (benchmark,) = [r for r in runs if r.data.tags["rnnbench.role"] == "benchmark"]
    assert benchmark.data.tags["rnnbench.trigger"] == "deployment"
    assert benchmark.data.tags["rnnbench.flow_run_id"] == str(run.id)
    assert benchmark.data.params["budget.num_samples"] == "1", "the form's budget reached the run"
    assert {r.info.status for r in runs} == {"FINISHED"}
    assert sorted(r.data.tags["rnnbench.role"] for r in runs) == ["benchmark", "sweep", "trial"]

    # a restart re-registers the deployments and leaves what the user set alone
    with _serving(prefect_api, home, tmp_path / "serve2.log") as served:
        after = asyncio.run(_deployments(prefect_api))
        schedules = {(s.slug, s.active, s.schedule.cron) for s in after["benchmark"].schedules}
        assert schedules == {("nightly", True, "0 2 * * *"), (None, False, "30 3 * * 6")}
        assert after["sweep"].paused is True and after["benchmark"].paused is False

        # Ctrl-C while a benchmark trains: its runs end KILLED, the flow run Cancelled, and
        # no process is left
        long = asyncio.run(_start(prefect_api, after["benchmark"].id, {
            "preset_path": TINY_PRESET, "variants": ["lstm"], "max_epochs": 500}))
        deadline = time.monotonic() + 120
        while not [r for r in client.search_runs([exp.experiment_id], "attributes.status = 'RUNNING'")
                   if r.data.tags["rnnbench.role"] == "sweep"]:
            assert time.monotonic() < deadline, f"no sweep started:\n{served.text()[-3000:]}"
            served.watch()
            time.sleep(1)
        time.sleep(3)
        assert served.ctrl_c() == 0
        assert not served.left(), f"processes left after Ctrl-C: {served.left()}"
        out = served.text()
        assert "rnnbench serve stopped." in out and "Traceback" not in out, out[-3000:]
        assert asyncio.run(_state(prefect_api, long)).is_cancelled()
    (killed,) = [r for r in client.search_runs([exp.experiment_id])
                 if r.data.tags.get("rnnbench.flow_run_id") == str(long)]
    family = [r for r in client.search_runs([exp.experiment_id]) if r.info.start_time >= killed.info.start_time]
    assert {r.info.status for r in family} == {"KILLED"} and len(family) >= 2
