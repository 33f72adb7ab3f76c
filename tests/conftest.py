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
