"""Seed repeats end to end: after its sweep, each variant's best configuration is retrained on
the budget's seeds through a second Tuner, each retrain a FINISHED ``final`` run below the sweep
run, their scores on the sweep run under flows.stats's keys, and the leaderboard built on them."""

from __future__ import annotations

import pytest
from mlflow.tracking import MlflowClient

from flows import stats
from flows.leaderboard import CI, SEEDS, VERSUS
from flows.plan import Budget, PlanError, make_plan
from flows.settings import load_settings
from flows.sweep import final_seed

pytestmark = pytest.mark.slow

PRESET = """
description = "two variants, one trial of one epoch each, retrained on two seeds"
datasets = ["japanese-vowels"]
variants = ["lstm", "gru"]
[budget]
num_samples = 1
max_epochs = 1
max_concurrent_trials = 2
cpus_per_trial = 1
seeds = 2
[space]
hidden_size = 8
num_layers = 1
dropout = 0.0
lr = 1e-2
weight_decay = 0.0
batch_size = 32
grad_clip = 1.0
"""


def test_each_best_configuration_is_retrained_on_the_seeds_and_the_board_shows_their_means(
        prefect_harness, tmp_path, monkeypatch):
    import flows.sweep
    from flows.pipeline import benchmark
    from flows.trial import CONTEXT_KEY

    preset = tmp_path / "seeds.toml"
    preset.write_text(PRESET)
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    real = flows.sweep._tested

    def interrupted_once_the_retrains_trained(req, dataset, result):
        if result.config[CONTEXT_KEY].get("role") == "final":
            raise KeyboardInterrupt
        return real(req, dataset, result)

    monkeypatch.setattr(flows.sweep, "_tested", interrupted_once_the_retrains_trained)
    with pytest.raises(KeyboardInterrupt):
        benchmark(preset_path=str(preset), experiment="seeds", tracking_uri=uri)
    client = MlflowClient(uri)
    trained = {r.info.run_id: len(client.get_metric_history(r.info.run_id, "val/loss"))
               for r in client.search_runs([client.get_experiment_by_name("seeds").experiment_id],
                                           "tags.`rnnbench.role` = 'final'")}
    assert trained and set(trained.values()) == {1}, "the retrains had trained their one epoch"

    monkeypatch.setattr(flows.sweep, "_tested", real)
    result = benchmark(preset_path=str(preset), experiment="seeds", tracking_uri=uri)
    assert result["resumed"]
    runs = client.search_runs([result["experiment_id"]], max_results=1000)
    assert {r.info.status for r in runs} == {"FINISHED"}
    sweeps = [r for r in runs if r.data.tags.get("rnnbench.role") == "sweep"]
    assert sorted(s.data.tags["variant"] for s in sweeps) == ["gru", "lstm"]
    for sweep in sweeps:
        below = [r for r in runs if r.data.tags.get("mlflow.parentRunId") == sweep.info.run_id]
        finals = [r for r in below if r.data.tags["rnnbench.role"] == "final"]
        assert len(below) == 3 and len(finals) == 2, "one trial and two retrains per sweep"
        # the resumed sweep restored its retrains from Tune's state: none trained again
        assert {len(client.get_metric_history(f.info.run_id, "val/loss")) for f in finals} == {1}
        # from scratch on seeds no trial trained with, as many epochs as the best trial
        (trial,) = [r for r in below if r.data.tags["rnnbench.role"] == "trial"]
        assert trial.data.tags["rnnbench.seed"] == "0"
        assert sorted(f.data.tags["rnnbench.seed"] for f in finals) == [str(final_seed(0, k)) for k in (0, 1)]
        assert all(f.data.params["hidden_size"] == trial.data.params["hidden_size"] for f in finals)
        assert all(f.data.tags["rnnbench.epochs"] == "1" for f in finals)
        m = sweep.data.metrics
        assert (m["seeds"], m["seeds_failed"], m["final_epochs"]) == (2, 0, 1)
        found = stats.seed_scores(m)
        assert set(found) >= {"val/acc", "val/loss", "test/acc", "test/f1"}
        assert all(len(xs) == 2 for xs in found.values())
        # the sweep run's copies are each retrain's own scores, tested like the sweep's best model
        for final in finals:
            k = int(final.data.tags["rnnbench.final_index"])
            assert final.data.tags["rnnbench.best_epoch"] == "1"  # (of one: its last value)
            for key in ("val/acc", "val/loss", "test/acc"):
                stage, name = key.split("/")
                assert m[stats.seed_metric_name(stage, name, k)] == final.data.metrics[key]
    board = result["boards"]["japanese-vowels"]
    rows = board[board[SEEDS].notna()]
    assert sorted(rows["variant"]) == ["gru", "lstm"] and set(rows[SEEDS]) == {2}
    assert rows[f"val/acc{CI}"].notna().all() and rows[f"test/acc{CI}"].notna().all()
    assert rows[VERSUS].iloc[0] == "winner"
    assert any("Welch's t-test on 2 seeds per variant" in line for line in board.attrs["headlines"])
    sweep = next(s for s in sweeps if s.data.tags["variant"] == rows["variant"].iloc[0])
    assert rows["val/acc"].iloc[0] == pytest.approx(sum(stats.seed_scores(sweep.data.metrics)["val/acc"]) / 2)


@pytest.mark.parametrize("seeds,repeats", [(0, 0), (1, 0), (2, 2), (5, 5)])
def test_zero_or_one_seed_means_no_repeats(seeds, repeats):
    assert Budget(seeds=seeds).final_seeds == repeats


def test_a_negative_seed_count_is_refused_in_one_line(tmp_path):
    preset = tmp_path / "bad.toml"
    preset.write_text(PRESET.replace("seeds = 2", "seeds = -1"))
    with pytest.raises(PlanError) as refused:
        make_plan(load_settings(home=tmp_path), None, preset, check_machine=False)
    message = str(refused.value)
    assert "budget.seeds: must be 0 or 1 (no seed repeats) or the number of seeds" in message
    assert "got -1" in message and "\n" not in message
