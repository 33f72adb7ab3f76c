"""The CLI against real servers: an MLflow tracking server and a Prefect server, both started
here on 127.0.0.1 and stopped whatever happens."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
import urllib.request
from contextlib import contextmanager
from pathlib import Path

import pytest

from tests.conftest import TINY_PRESET

pytestmark = pytest.mark.integration
BIN = Path(sys.executable).parent


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _wait(url: str, proc: subprocess.Popen, log: Path, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"server exited ({proc.returncode}):\n{log.read_text()[-3000:]}")
        try:
            with urllib.request.urlopen(url, timeout=2) as resp:
                if resp.status == 200:
                    return
        except OSError:
            time.sleep(0.5)
    raise TimeoutError(f"{url} did not answer in {timeout}s:\n{log.read_text()[-3000:]}")


@contextmanager
def _server(cmd: list[str], health: str, log: Path, env: dict):
    with open(log, "w") as fh:
        proc = subprocess.Popen(cmd, stdout=fh, stderr=subprocess.STDOUT, env=env)
    try:
        _wait(health, proc, log)
        yield proc
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


@pytest.fixture(scope="module")
def servers(tmp_path_factory):
    root = tmp_path_factory.mktemp("servers")
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PREFECT_", "MLFLOW_"))}
    env["PREFECT_HOME"] = str(root / "prefect")
    env["PREFECT_SERVER_ANALYTICS_ENABLED"] = "false"
    m_port, p_port = _free_port(), _free_port()
    mlflow_cmd = [str(BIN / "mlflow"), "server", "--host", "127.0.0.1", "--port", str(m_port),
                  "--backend-store-uri", f"sqlite:///{root / 'mlflow.db'}",
                  "--artifacts-destination", str(root / "artifacts"), "--workers", "1"]
    prefect_cmd = [str(BIN / "prefect"), "server", "start", "--host", "127.0.0.1",
                   "--port", str(p_port)]
    with _server(mlflow_cmd, f"http://127.0.0.1:{m_port}/health", root / "mlflow.log", env), \
            _server(prefect_cmd, f"http://127.0.0.1:{p_port}/api/health", root / "prefect.log", env):
        yield {"mlflow": f"http://127.0.0.1:{m_port}", "prefect": f"http://127.0.0.1:{p_port}/api",
               "root": root, "env": env}


def test_benchmark_against_real_mlflow_and_prefect_servers(servers):
    env = {**servers["env"], "PREFECT_API_URL": servers["prefect"],
           "RNNBENCH_HOME": str(servers["root"] / "state")}
    proc = subprocess.run(
        [str(BIN / "rnnbench"), "run", "--preset", TINY_PRESET, "--variants", "gru",
         "--tracking-uri", servers["mlflow"], "--experiment", "integration"],
        capture_output=True, text=True, env=env, timeout=900)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert "Traceback" not in proc.stdout + proc.stderr
    assert "(majority class)" in proc.stdout

    import mlflow
    from mlflow.tracking import MlflowClient

    client = MlflowClient(servers["mlflow"])
    exp = client.get_experiment_by_name("integration")
    runs = client.search_runs([exp.experiment_id])
    roles = sorted(r.data.tags["rnnbench.role"] for r in runs)
    assert roles == ["benchmark", "sweep", "trial", "trial"]
    assert {r.info.status for r in runs} == {"FINISHED"}
    sweep = next(r for r in runs if r.data.tags["rnnbench.role"] == "sweep")
    mlflow.set_tracking_uri(servers["mlflow"])
    model = mlflow.pyfunc.load_model(f"runs:/{sweep.info.run_id}/model")
    out = model.predict({"sequence": [[[0.1] * 12] * 10]})
    assert out["label"].iloc[0] in [str(i) for i in range(1, 10)]

    request = urllib.request.Request(
        f"{servers['prefect']}/flow_runs/filter", data=json.dumps({}).encode(),
        headers={"Content-Type": "application/json"}, method="POST")
    with urllib.request.urlopen(request, timeout=30) as resp:
        flow_runs = json.load(resp)
    assert [r["state_type"] for r in flow_runs] == ["COMPLETED"]
    request = urllib.request.Request(
        f"{servers['prefect']}/artifacts/filter", data=json.dumps({}).encode(),
        headers={"Content-Type": "application/json"}, method="POST")
    with urllib.request.urlopen(request, timeout=30) as resp:
        keys = {a["key"] for a in json.load(resp)}
    assert {"leaderboard", "leaderboard-japanese-vowels"} <= keys


def test_ui_command_serves_both_uis_over_the_local_state_and_stops_them(tmp_path):
    import signal

    m_port, p_port = _free_port(), _free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PREFECT_", "MLFLOW_"))}
    env["RNNBENCH_HOME"] = str(tmp_path / "state")
    log = tmp_path / "ui.log"
    with open(log, "w") as fh:
        proc = subprocess.Popen([str(BIN / "rnnbench"), "ui", "--mlflow-port", str(m_port),
                                 "--prefect-port", str(p_port)], stdout=fh, stderr=subprocess.STDOUT,
                                env=env, start_new_session=True)
    try:
        _wait(f"http://127.0.0.1:{m_port}/health", proc, log)
        _wait(f"http://127.0.0.1:{p_port}/api/health", proc, log)
        deadline = time.monotonic() + 60
        while "Ctrl-C stops both" not in log.read_text() and time.monotonic() < deadline:
            time.sleep(0.5)
    finally:
        os.killpg(proc.pid, signal.SIGINT)  # what Ctrl-C in a terminal sends
        proc.wait(timeout=60)
    out = log.read_text()
    assert f"MLflow UI: http://127.0.0.1:{m_port}" in out and f"Prefect UI: http://127.0.0.1:{p_port}" in out
    assert "Traceback" not in out
    for port in (m_port, p_port):
        with socket.socket() as s:
            assert s.connect_ex(("127.0.0.1", port)) != 0, f"port {port} still served after Ctrl-C"
