"""The team's path, against a real Prefect server (SQLite, on loopback 127.0.0.14): a process
work pool, ``rnnbench deploy --pool`` registering the same deployments ``rnnbench serve``
offers, and a process worker running one of them, created through the API as the UI's Run
button creates it."""

from __future__ import annotations

import asyncio
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.integration.test_serve import (REPO, _clean_env, _deployments, _family, _start, _stat,
                                          _state, _stop_group, prefect_server)

pytestmark = pytest.mark.integration
HOST = "127.0.0.14"
POOL = "rnnbench-test"


def test_a_process_worker_runs_the_deployments_from_a_work_pool(tmp_path):
    from flows.deployments import OFFERS

    prefect = str(Path(sys.executable).parent / "prefect")
    with prefect_server(HOST, tmp_path / "prefect") as api:
        env = {**_clean_env(), "PREFECT_API_URL": api, "RNNBENCH_HOME": str(tmp_path / "state"),
               "PREFECT_WORKER_QUERY_SECONDS": "2"}  # the worker picks the run up sooner
        subprocess.run([prefect, "work-pool", "create", POOL, "--type", "process"], env=env,
                       check=True, capture_output=True, timeout=120)
        deployed = subprocess.run([sys.executable, "-m", "flows.cli", "deploy", "--pool", POOL],
                                  cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
        assert deployed.returncode == 0, deployed.stdout + deployed.stderr
        assert f"prefect worker start --pool {POOL}" in deployed.stdout

        deployments = asyncio.run(_deployments(api))
        assert set(deployments) == {o.flow for o in OFFERS}
        for offer in OFFERS:
            d = deployments[offer.flow]
            assert d.work_pool_name == POOL and d.description == offer.description
            assert set(offer.tags) <= set(d.tags)
        (nightly,) = deployments["benchmark"].schedules
        assert nightly.active is False, "the example schedule starts inactive here too"

        log = tmp_path / "worker.log"
        with open(log, "w") as fh:
            worker = subprocess.Popen([prefect, "worker", "start", "--pool", POOL, "--limit", "1"],
                                      cwd=REPO, env=env, stdout=fh, stderr=subprocess.STDOUT,
                                      start_new_session=True)
        try:
            run = asyncio.run(_start(api, deployments["prepare_dataset"].id,
                                     {"datasets": ["sunspots"]}))
            seen: set[int] = set()
            deadline = time.monotonic() + 240
            while not (state := asyncio.run(_state(api, run))).is_final():
                assert time.monotonic() < deadline, f"not final in 240s:\n{log.read_text()[-3000:]}"
                seen |= _family(worker.pid)
                time.sleep(1)
            assert state.is_completed(), f"{state}\n{log.read_text()[-3000:]}"
            assert (tmp_path / "state" / "data").is_dir(), "the run used the worker's RNNBENCH_HOME"
        finally:
            _stop_group(worker)
        assert not {pid for pid in seen if _stat(pid) is not None}, "processes left"
