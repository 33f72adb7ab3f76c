"""The local service stack (infra/local: PostgreSQL, MLflow and Prefect with basic auth), started
once per session by its own scripts on loopback addresses and stopped at the end: a benchmark
started through its deployment as the UI's Run button starts it lands in the PostgreSQL-backed
stores, both APIs refuse a request without credentials, and a real browser (Debian's Chromium
and chromedriver) shows the runs and task states. With RNNBENCH_SCREENSHOTS=DIR, the browser
check saves its two screenshots there (docs/ holds the README's)."""

from __future__ import annotations

import asyncio
import base64
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from tests.conftest import TINY_PRESET
from tests.integration.test_serve import _clean_env, _free_port, _stop_group

pytestmark = pytest.mark.integration
REPO = Path(__file__).resolve().parents[2]
LOCAL = REPO / "infra" / "local"
HOSTS = {"PG": "127.0.0.8", "MLFLOW": "127.0.0.9", "PREFECT": "127.0.0.10", "RAY": "127.0.0.11"}
CHROMIUM, CHROMEDRIVER = Path("/usr/bin/chromium"), Path("/usr/bin/chromedriver")


def _read_env(path: Path) -> dict[str, str]:
    return dict(line.split("=", 1) for line in path.read_text().splitlines() if "=" in line)


@pytest.fixture(scope="session")
def stack():
    """The stack's client settings (client.env) plus its home and PostgreSQL address."""
    missing = [p for p in ("/usr/lib/postgresql/15/bin/initdb", CHROMIUM, CHROMEDRIVER) if not Path(p).exists()]
    if missing:
        pytest.fail(f"missing {', '.join(map(str, missing))}: .ci/run installs them "
                    "(apt-get install postgresql chromium chromium-driver)")
    home = Path(tempfile.mkdtemp(prefix="rnnbench-service-"))  # under /tmp: postgres reaches it
    env = _clean_env()
    env.update(RNNBENCH_SERVICE_HOME=str(home), RNNBENCH_BIN=str(Path(sys.executable).parent))
    for name, host in HOSTS.items():
        env[f"RNNBENCH_{name}_HOST"], env[f"RNNBENCH_{name}_PORT"] = host, str(_free_port(host))
    try:
        started = subprocess.run([str(LOCAL / "start.sh")], env=env, capture_output=True, text=True,
                                 timeout=300)
        assert started.returncode == 0, f"start.sh failed:\n{started.stdout}\n{started.stderr}"
        client = _read_env(home / "client.env")
        yield {**client, "home": home, "env": env, "secrets": _read_env(home / "secrets.env")}
    finally:
        stopped = subprocess.run([str(LOCAL / "stop.sh")], env=env, capture_output=True, text=True,
                                 timeout=120)
        left = subprocess.run(["pgrep", "-f", str(home)], capture_output=True, text=True).stdout
        shutil.rmtree(home, ignore_errors=True)
        assert stopped.returncode == 0, f"stop.sh failed:\n{stopped.stdout}\n{stopped.stderr}"
        assert not left, f"processes left after stop.sh: {left}"


def _basic(user_pass: str) -> str:
    return "Basic " + base64.b64encode(user_pass.encode()).decode()


def _mlflow_auth(stack) -> str:
    return _basic(f"{stack['MLFLOW_TRACKING_USERNAME']}:{stack['MLFLOW_TRACKING_PASSWORD']}")


def _http(url: str, body: dict | None = None, auth: str | None = None) -> tuple[int, bytes]:
    data = None if body is None else json.dumps(body).encode()
    req = urllib.request.Request(url, data=data, headers={"Content-Type": "application/json"})
    if auth:
        req.add_header("Authorization", auth)
    try:
        with urllib.request.urlopen(req, timeout=30) as resp:
            return resp.status, resp.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()


def _mlflow(stack, path: str, body: dict | None = None):
    status, data = _http(f"{stack['MLFLOW_TRACKING_URI']}/{path}", body, _mlflow_auth(stack))
    assert status == 200, f"{path}: {status} {data[:500]!r}"
    return json.loads(data) if path.startswith("api/2.0/mlflow/") else data


def test_both_apis_refuse_requests_without_credentials_and_accept_the_stacks(stack):
    search = f"{stack['MLFLOW_TRACKING_URI']}/api/2.0/mlflow/experiments/search?max_results=1"
    assert _http(search)[0] == 401
    assert _http(search, auth=_basic(f"{stack['MLFLOW_TRACKING_USERNAME']}:wrong"))[0] == 401
    assert _http(search, auth=_mlflow_auth(stack))[0] == 200
    flows = f"{stack['PREFECT_API_URL']}/flows/filter"
    assert _http(flows, {})[0] == 401
    assert _http(flows, {}, auth=_basic("admin:wrong"))[0] == 401
    assert _http(flows, {}, auth=_basic(stack["PREFECT_API_AUTH_STRING"]))[0] == 200


def _prefect(stack):
    from prefect.settings import PREFECT_API_AUTH_STRING, PREFECT_API_URL, temporary_settings

    return temporary_settings({PREFECT_API_URL: stack["PREFECT_API_URL"],
                               PREFECT_API_AUTH_STRING: stack["PREFECT_API_AUTH_STRING"]})


async def _run_benchmark(timeout: float, serve_log: Path):
    """A tiny benchmark started as the UI's Run button starts it, waited for; the flow run,
    its task runs and its artifacts."""
    from prefect import get_client
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterId

    async with get_client() as client:
        deployment = await client.read_deployment_by_name("benchmark/rnnbench")
        run = await client.create_flow_run_from_deployment(deployment.id, parameters={
            "preset_path": TINY_PRESET, "variants": ["lstm"], "num_samples": 1})
        deadline = time.monotonic() + timeout
        while not (run := await client.read_flow_run(run.id)).state.is_final():
            assert time.monotonic() < deadline, f"flow run not final in {timeout}s:\n{serve_log.read_text()[-3000:]}"
            await asyncio.sleep(2)
        tasks = await client.read_task_runs(flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=[run.id])))
        artifacts = [a for a in await client.read_artifacts() if a.flow_run_id == run.id]
        return run, tasks, artifacts


def _serve(stack, home: Path, log: Path) -> subprocess.Popen:
    env = _clean_env()
    # client.env: the servers, their credentials, the Ray head and Tune's storage
    env.update({k: v for k, v in stack.items() if k.startswith(("MLFLOW_", "PREFECT_", "RAY_", "RNNBENCH_STORAGE"))})
    env["RNNBENCH_HOME"] = str(home)
    with open(log, "w") as fh:
        proc = subprocess.Popen([sys.executable, "-m", "flows.cli", "serve"], cwd=REPO, env=env,
                                stdout=fh, stderr=subprocess.STDOUT, start_new_session=True)
    deadline = time.monotonic() + 120
    while "Ctrl-C stops." not in log.read_text():
        if proc.poll() is not None or time.monotonic() > deadline:
            _stop_group(proc)
            pytest.fail(f"rnnbench serve not ready:\n{log.read_text()[-3000:]}")
        time.sleep(0.5)
    return proc


def test_benchmark_deployment_lands_in_postgres_backed_mlflow_and_prefect_and_the_uis_list_it(
        stack, tmp_path):
    log = tmp_path / "serve.log"
    served = _serve(stack, tmp_path / "state", log)
    try:
        with _prefect(stack):
            run, tasks, artifacts = asyncio.run(_run_benchmark(360, log))
        os.killpg(served.pid, signal.SIGINT)  # Ctrl-C: serve stops quietly
        assert served.wait(timeout=60) == 0
    finally:
        _stop_group(served)
    out = log.read_text()
    assert "Traceback" not in out, out[-3000:]

    # Prefect: the flow run completed, with its task runs and the leaderboard artifacts
    assert run.state.is_completed(), f"{run.state}\n{out[-3000:]}"
    assert {t.state.type.value for t in tasks} == {"COMPLETED"}
    assert {t.name.rsplit("-", 1)[0] for t in tasks} == {"prepare", "tune-sweep"}
    assert {"leaderboard", "leaderboard-japanese-vowels"} <= {a.key for a in artifacts}

    # MLflow, through its REST API with the admin's credentials: benchmark > sweep > trial
    exp = _mlflow(stack, "api/2.0/mlflow/experiments/get-by-name?experiment_name=rnnbench")
    exp_id = exp["experiment"]["experiment_id"]
    runs = _mlflow(stack, "api/2.0/mlflow/runs/search", {"experiment_ids": [exp_id]})["runs"]
    tags = {r["info"]["run_id"]: {t["key"]: t["value"] for t in r["data"]["tags"]} for r in runs}
    by_role = {}
    for r in runs:
        by_role.setdefault(tags[r["info"]["run_id"]]["rnnbench.role"], []).append(r)
    (bench,), (sweep,), trials = by_role["benchmark"], by_role["sweep"], by_role["trial"]
    assert set(by_role) == {"benchmark", "sweep", "trial"} and trials
    assert {r["info"]["status"] for r in runs} == {"FINISHED"}
    bench_id, sweep_id = bench["info"]["run_id"], sweep["info"]["run_id"]
    assert tags[bench_id]["rnnbench.trigger"] == "deployment"
    assert tags[bench_id]["rnnbench.flow_run_id"] == str(run.id)
    assert tags[sweep_id]["mlflow.parentRunId"] == bench_id
    assert {tags[t["info"]["run_id"]]["mlflow.parentRunId"] for t in trials} == {sweep_id}
    metrics = lambda r: {m["key"] for m in r["data"].get("metrics", [])}  # noqa: E731
    assert {"val/loss", "val/acc"} <= metrics(trials[0])
    # the trials ran on the stack's Ray head, their Tune state in its storage
    assert {tags[t["info"]["run_id"]]["rnnbench.node_ip"] for t in trials} == {HOSTS["RAY"]}
    assert any(Path(stack["RNNBENCH_STORAGE"]).iterdir()), "nothing in the stack's Tune storage"
    assert {"test/acc", "test/loss"} <= metrics(sweep)

    # the logged model, its files served by the tracking server's artifact proxy
    models = _mlflow(stack, "api/2.0/mlflow/logged-models/search", {"experiment_ids": [exp_id]})["models"]
    (model,) = [m["info"] for m in models if m["info"]["source_run_id"] == sweep_id]
    assert model["status"] == "LOGGED_MODEL_READY"
    assert model["artifact_uri"].startswith("mlflow-artifacts:/")
    mlmodel = _mlflow(stack, "api/2.0/mlflow-artifacts/artifacts/"
                      + model["artifact_uri"].removeprefix("mlflow-artifacts:/") + "/MLmodel")
    assert b"python_function" in mlmodel

    # the leaderboard artifact on the benchmark run
    listed = _mlflow(stack, f"api/2.0/mlflow/artifacts/list?run_id={bench_id}&path=leaderboard")
    assert "leaderboard/leaderboard.md" in {f["path"] for f in listed["files"]}
    board = _mlflow(stack, f"get-artifact?path=leaderboard/leaderboard.md&run_uuid={bench_id}")
    assert b"lstm" in board

    # and the store is PostgreSQL's: the runs are rows of the stack's mlflow database
    import psycopg2

    env, secrets = stack["env"], stack["secrets"]
    with psycopg2.connect(host=env["RNNBENCH_PG_HOST"], port=env["RNNBENCH_PG_PORT"], dbname="mlflow",
                          user="rnnbench", password=secrets["RNNBENCH_PG_PASSWORD"]) as conn:
        with conn.cursor() as cur:
            cur.execute("SELECT run_uuid FROM runs WHERE experiment_id = %s", (int(exp_id),))
            assert {row[0] for row in cur.fetchall()} == set(tags)

    _browse(stack, run, tasks, exp_id, bench, sweep, trials)


def _text(driver) -> str:
    from selenium.webdriver.common.by import By

    return driver.find_element(By.TAG_NAME, "body").text


def _wait_text(driver, *needles: str, timeout: float = 90) -> None:
    from selenium.webdriver.support.ui import WebDriverWait

    try:
        WebDriverWait(driver, timeout).until(lambda d: all(n in _text(d) for n in needles))
    except Exception:
        missing = [n for n in needles if n not in _text(driver)]
        pytest.fail(f"{driver.current_url} does not show {missing} in {timeout}s:\n{_text(driver)[:2000]}")


def _click(driver, element) -> None:
    """A click as the page's own script receives it, whatever a toast covers."""
    driver.execute_script("arguments[0].click()", element)


def _browse(stack, run, tasks, exp_id: str, bench: dict, sweep: dict, trials: list) -> None:
    """Prefect's flow-run page (after its login form) and MLflow's experiment page (basic auth
    sent as a header), in headless Chromium; screenshots to RNNBENCH_SCREENSHOTS if set."""
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service
    from selenium.webdriver.common.by import By

    shots = os.environ.get("RNNBENCH_SCREENSHOTS")
    options = webdriver.ChromeOptions()
    options.binary_location = str(CHROMIUM)
    for arg in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--window-size=1280,1000"):
        options.add_argument(arg)
    driver = webdriver.Chrome(options=options, service=Service(str(CHROMEDRIVER)))
    try:
        ui = stack["PREFECT_API_URL"].removesuffix("/api")
        driver.get(f"{ui}/login?redirect=/runs/flow-run/{run.id}")
        _wait_text(driver, "Login")
        field = driver.find_element(By.CSS_SELECTOR, "input[type=password]")
        field.send_keys(stack["PREFECT_API_AUTH_STRING"])
        field.submit()
        _wait_text(driver, run.name, "Completed")
        tab = driver.find_element(By.CSS_SELECTOR, "li#task-runs")
        _click(driver, tab)
        driver.execute_script("arguments[0].scrollIntoView()", tab)  # the list renders when seen
        _wait_text(driver, *[t.name for t in tasks], f"{len(tasks)} Task runs", f"({len(tasks)} Completed)")
        for close in driver.find_elements(By.CSS_SELECTOR, ".p-toast__close-btn"):
            _click(driver, close)  # the UI's "something went wrong" toast: it reaches for the internet
        if shots:
            driver.save_screenshot(str(Path(shots) / "prefect-flow-run.png"))

        driver.execute_cdp_cmd("Network.enable", {})
        driver.execute_cdp_cmd("Network.setExtraHTTPHeaders", {"headers": {"Authorization": _mlflow_auth(stack)}})
        driver.get(f"{stack['MLFLOW_TRACKING_URI']}/#/experiments/{exp_id}/runs")
        names = [r["info"]["run_name"] for r in (bench, sweep, trials[0])]
        _wait_text(driver, names[0], f"{2 + len(trials)} matching runs")
        for parent, child in zip(names, names[1:]):  # unfold benchmark > sweep > trial
            row = driver.find_element(By.XPATH, f"//*[text()='{parent}']/ancestor::*[4]")
            _click(driver, row.find_element(By.CSS_SELECTOR, "button"))
            _wait_text(driver, child)
        if shots:
            driver.save_screenshot(str(Path(shots) / "mlflow-experiment.png"))
    finally:
        driver.quit()
