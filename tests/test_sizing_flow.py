"""A size-matched sweep end to end: one sweep per target, every trial's network within 5% of
its target (a searched merge sized per configuration), target and count on the sweep run, and
a leaderboard row per variant and target showing the actual count."""

from __future__ import annotations

import pytest
from mlflow.tracking import MlflowClient

from tests.conftest import TINY_PRESET

pytestmark = pytest.mark.slow


def test_a_size_matched_sweep_lands_every_trial_within_5_percent(prefect_harness, tmp_path):
    from flows.pipeline import sweep

    text = open(TINY_PRESET).read().replace("seed = 0", "seed = 0\nsize_targets = [3000, 6000]")
    text = text.replace("max_epochs = 2", "max_epochs = 1")
    preset = tmp_path / "sized.toml"
    preset.write_text(text + '\n[variant_space.bigru]\nmerge = { choice = ["concat", "sum"] }\n')
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    result = sweep(dataset="japanese-vowels", variant="bigru", preset_path=str(preset),
                   experiment="sized", tracking_uri=uri)
    client = MlflowClient(uri)
    runs = client.search_runs([client.get_experiment_by_name("sized").experiment_id])
    sweeps = [r for r in runs if r.data.tags.get("rnnbench.role") == "sweep"]
    trials = [r for r in runs if r.data.tags.get("rnnbench.role") == "trial"]
    assert sorted(int(r.data.params["size_target"]) for r in sweeps) == [3000, 6000]
    assert len(trials) == 4 and {r.info.status for r in runs} == {"FINISHED"}
    for run in sweeps:
        target = int(run.data.params["size_target"])
        assert abs(run.data.metrics["n_params"] / target - 1) <= 0.05
        assert abs(run.data.metrics["size_error"]) <= 0.05
    by_sweep = {r.info.run_id: int(r.data.params["size_target"]) for r in sweeps}
    for trial in trials:  # each drew its own merge; its width was solved for it
        target = by_sweep[trial.data.tags["mlflow.parentRunId"]]
        assert abs(int(trial.data.params["n_params"]) / target - 1) <= 0.05
    board = result["boards"]["japanese-vowels"].set_index("variant")
    assert abs(board.loc["bigru@3k", "params"] / 3000 - 1) <= 0.05
    assert abs(board.loc["bigru@6k", "params"] / 6000 - 1) <= 0.05
