"""A deployment's run against its previous one (``flows.alerts``): what counts as a clear
regression, which run is "the previous one", and a notification block named wrongly refused in
one line. Constructed MLflow runs: nothing is trained here (the flow end to end, with a real
server and webhook receiver, is in tests/integration/test_serve_runs.py)."""

from __future__ import annotations

import pytest
from mlflow.tracking import MlflowClient

from flows import alerts, report
from tests.test_predict_report import _benchmark


@pytest.fixture(scope="module")
def tracking_store(tmp_path_factory):
    path = tmp_path_factory.mktemp("alerts")
    return f"sqlite:///{path / 'mlflow.db'}", path


@pytest.fixture
def store(tracking_store, request):
    """One MLflow database for the module (creating one takes seconds), an experiment per test."""
    uri, path = tracking_store
    client = MlflowClient(uri)
    return uri, client, client.create_experiment(request.node.name, (path / request.node.name).as_uri())


def test_a_drop_whose_interval_excludes_zero_is_a_clear_regression_and_noise_is_not(store):
    uri, client, exp = store
    before = _benchmark(client, exp, {"lstm": [0.85, 0.86, 0.87], "gru": [0.70, 0.71, 0.72],
                                      "rnn": [0.60, 0.70, 0.80]})
    after = _benchmark(client, exp, {"lstm": [0.78, 0.79, 0.80], "gru": [0.75, 0.76, 0.77],
                                     "rnn": [0.55, 0.65, 0.75]})
    (line,) = alerts.regressions(report.compare(uri, before, after))
    assert line.startswith("toy/lstm: val/acc 0.86 -> 0.79") and "95% interval excludes 0" in line
    # the same drops the other way round are improvements; gru's drop is then clear too
    assert [x.split(":")[0] for x in alerts.regressions(report.compare(uri, after, before))] == ["toy/gru"]


def test_without_seed_repeats_only_a_drop_larger_than_the_threshold_counts(store):
    uri, client, exp = store
    before = _benchmark(client, exp, {"lstm": [0.80], "gru": [0.70]})
    after = _benchmark(client, exp, {"lstm": [0.70], "gru": [0.68]})  # -12.5% and -2.9%
    (line,) = alerts.regressions(report.compare(uri, before, after))
    assert line.startswith("toy/lstm:") and f"more than {alerts.REGRESSION:.0%}" in line


def test_the_previous_run_is_the_newest_finished_one_of_the_same_deployment(store):
    uri, client, exp = store
    runs = [_benchmark(client, exp, {"lstm": [0.8]}) for _ in range(4)]
    for run, deployment in zip(runs, ["d1", "d1", "d2", "d1"]):
        client.set_tag(run, alerts.DEPLOYMENT, deployment)
    client.set_terminated(runs[1], "FAILED")
    assert alerts.previous_run(uri, exp, runs[3], "d1").info.run_id == runs[0]
    assert alerts.previous_run(uri, exp, runs[0], "d1") is None
    assert alerts.previous_run(uri, exp, runs[2], "d2") is None


def test_a_notification_block_named_without_its_type_is_refused_in_one_line():
    with pytest.raises(ValueError, match=r"RNNBENCH_NOTIFY_BLOCK='team': give '<block type slug>/<block name>'"):
        alerts.load_block("team")
