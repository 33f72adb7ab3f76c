"""Shared fixtures: an isolated state folder per session and Prefect's test harness."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

TESTS = Path(__file__).parent
TINY_PRESET = str(TESTS / "presets" / "tiny.toml")


@pytest.fixture(scope="session")
def state_home(tmp_path_factory) -> Path:
    """RNNBENCH_HOME for the session, exported before Prefect or Ray are imported."""
    from flows.settings import apply_environment, load_settings

    home = tmp_path_factory.mktemp("rnnbench-home")
    os.environ["RNNBENCH_HOME"] = str(home)
    os.environ.pop("MLFLOW_TRACKING_URI", None)
    apply_environment(load_settings(home=home))
    return home


@pytest.fixture(scope="session")
def prefect_harness(state_home):
    from prefect.testing.utilities import prefect_test_harness

    with prefect_test_harness(server_startup_timeout=120):
        yield


@pytest.fixture(scope="session")
def data_root(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("data")


@pytest.fixture(scope="session")
def prepared(data_root):
    """The built-in datasets that need no outside tool (spoken-digits needs espeak-ng, see
    tests/system), prepared once per session: name -> (artifact dir, manifest)."""
    from datamodules.builtin import DATASETS
    from datamodules.catalog import prepare

    return {name: prepare(name, data_root)[:2] for name, spec in DATASETS.items() if not spec.versions}


def predict_elsewhere(uri: str, runs: dict[str, str], raw: list, cwd: Path,
                      column: str | None = None) -> dict[str, list]:
    """Each run's logged model (``runs:/<run>/model``) predicting ``{"sequence": raw}`` in a
    fresh process in ``cwd`` with no rnnbench checkout on its path (this one, or the one an
    editable install points at, which differ in a git worktree): the model brings its own code.
    Returns, per key of ``runs``, the predictions as lists (``column`` alone where given)."""
    import json
    import subprocess
    import sys

    pick = f"[{column!r}]" if column else ""
    script = f"""
import os, sys
sys.path = [p for p in sys.path
            if p not in ('', '.') and not os.path.isfile(os.path.join(p, 'modules', 'variants.py'))]
import json, mlflow, pandas as pd
try:
    import modules; raise SystemExit('modules is importable: the test would prove nothing')
except ImportError:
    pass
mlflow.set_tracking_uri({uri!r})
raw = json.loads(sys.stdin.read())
out = {{v: mlflow.pyfunc.load_model(f'runs:/{{run}}/model').predict(pd.DataFrame({{'sequence': raw}})){pick}.to_numpy().tolist()
       for v, run in {runs!r}.items()}}
print(json.dumps(out))
"""
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    proc = subprocess.run([sys.executable, "-c", script], input=json.dumps(raw), capture_output=True,
                          text=True, cwd=cwd, env=env, timeout=300)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-3000:]
    return json.loads(proc.stdout.strip().splitlines()[-1])
