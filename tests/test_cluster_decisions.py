"""The cluster path's decisions, on CPU and without a cluster: what each Ray worker gets in
its runtime environment, which device and precision a trial trains with, how many sweeps run
side by side, and what a plan refuses before joining a cluster. (The loopback cluster itself
is tests/integration/test_cluster.py.)"""

from __future__ import annotations

import threading
import time
from pathlib import Path

import pytest

from flows import storage, sweep, tune_threads
from flows.plan import Budget, PlanError, make_plan
from flows.settings import load_settings
from flows.trial import precision_for

REPO = Path(__file__).resolve().parents[1]


def test_a_local_run_ships_no_code_and_keeps_ray_auth_off(tmp_path, monkeypatch):
    monkeypatch.setenv("MLFLOW_TRACKING_PASSWORD", "s3cret")
    env = sweep.runtime_env(load_settings(home=tmp_path))
    assert "py_modules" not in env  # the workers share this machine's disk
    assert env["env_vars"]["RAY_AUTH_MODE"] in ("disabled", "token")
    assert env["env_vars"]["MLFLOW_TRACKING_PASSWORD"] == "s3cret"
    # a trial that asked for no GPU must not see the node's GPUs (Ray 2.60 stopped hiding them)
    assert env["env_vars"]["RAY_ACCEL_ENV_VAR_OVERRIDE_ON_ZERO"] == "1"


def test_a_cluster_run_ships_rnnbench_and_the_users_packages_and_forces_no_auth_mode(tmp_path, monkeypatch):
    monkeypatch.delenv("MLFLOW_TRACKING_TOKEN", raising=False)
    settings = load_settings(home=tmp_path, ray_address="10.0.0.1:6379", storage=str(tmp_path / "shared"))
    env = sweep.runtime_env(settings, packages=("tests",))
    shipped = {Path(p).name for p in env["py_modules"]}
    assert shipped == {"flows", "modules", "datamodules", "tests"}
    assert all(Path(p).parent == REPO for p in env["py_modules"])
    assert "RAY_AUTH_MODE" not in env["env_vars"], "a cluster keeps its own auth settings"
    assert "MLFLOW_TRACKING_TOKEN" not in env["env_vars"], "only credentials that are set travel"
    assert "__pycache__" in env["excludes"]


def test_an_installed_package_is_the_nodes_to_have_not_shipped(tmp_path):
    settings = load_settings(home=tmp_path, ray_address="10.0.0.1:6379", storage=str(tmp_path))
    env = sweep.runtime_env(settings, packages=("numpy",))
    assert not any(Path(p).name == "numpy" for p in env["py_modules"])


def test_storage_is_a_folder_or_a_uri(tmp_path):
    assert load_settings(home=tmp_path).tune_root == str(tmp_path.resolve() / "ray")
    assert load_settings(home=tmp_path, storage="s3://bucket/x").tune_root == "s3://bucket/x"
    relative = load_settings(home=tmp_path, storage="shared/tune").tune_root
    assert Path(relative).is_absolute(), "every Ray process must read the same folder"
    folder = tmp_path / "store" / "run" / "exp"
    (folder / "trial").mkdir(parents=True)
    (folder / "trial" / "result.json").write_text("{}")
    assert storage.exists(str(folder)) and storage.listing(str(folder)) == ["trial/result.json"]
    storage.delete(str(folder))
    assert not storage.exists(str(folder))
    storage.delete(str(folder))  # nothing there: nothing happens


@pytest.mark.parametrize("wanted, accelerator, expected", [
    ("32", "cpu", "32"), ("bf16-mixed", "cpu", "32"), ("32", "gpu", "32")])
def test_precision_is_bf16_only_on_a_gpu_that_supports_it(wanted, accelerator, expected):
    assert precision_for(wanted, accelerator) == expected


def test_sweeps_side_by_side_fill_the_trial_slots_plus_one():
    node = [{"CPU": 16.0, "GPU": 4.0}]
    assert sweep.sweep_slots(Budget(cpus_per_trial=1, max_concurrent_trials=4), node) == 5
    assert sweep.sweep_slots(Budget(cpus_per_trial=2, max_concurrent_trials=2), node) == 5
    # GPU trials are counted in GPUs: 0.25 per trial packs 16 trials on 4 GPUs
    assert sweep.sweep_slots(Budget(gpus_per_trial=0.25, max_concurrent_trials=4), node) == 5
    assert sweep.sweep_slots(Budget(max_concurrent_sweeps=1), node) == 1
    assert sweep.sweep_slots(Budget(cpus_per_trial=1, max_concurrent_trials=2), [{"CPU": 2.0}]) == 2
    # slots are counted node by node: a 1.5-CPU trial fits once on each 2-CPU node
    assert sweep.sweep_slots(Budget(cpus_per_trial=1.5, max_concurrent_trials=1),
                             [{"CPU": 2.0}, {"CPU": 2.0}]) == 3


def test_data_parallel_trials_run_only_as_many_as_the_cluster_places_whole():
    two_workers = [{"CPU": 0.0}, {"CPU": 1.0}, {"CPU": 1.0}]  # the loopback test's cluster
    ddp = Budget(workers_per_trial=2, cpus_per_trial=1, max_concurrent_trials=2)
    assert sweep.trials_at_once(ddp, two_workers) == 1
    assert sweep.sweep_slots(ddp, two_workers) == 1  # no sweep waiting on a worker group
    big = [{"CPU": 8.0, "GPU": 4.0}] * 4  # 16 GPUs: 4 trials of 2 GPU workers each... per node 2
    gpu_ddp = Budget(workers_per_trial=2, gpus_per_trial=1, cpus_per_trial=2, max_concurrent_trials=3)
    assert sweep.trials_at_once(gpu_ddp, big) == 3
    assert sweep.sweep_slots(gpu_ddp, big) == 3  # 16 workers = 8 trials, 3 per sweep
    assert sweep.trials_at_once(Budget(max_concurrent_trials=3), two_workers) == 3  # not DDP: as set


def test_data_parallel_workers_sharing_a_gpu_are_refused_when_the_preset_is_read():
    with pytest.raises(ValueError, match="Duplicate GPU"):
        Budget(workers_per_trial=2, gpus_per_trial=0.5)
    Budget(workers_per_trial=1, gpus_per_trial=0.5)  # one worker: trials may share a GPU
    Budget(workers_per_trial=2, gpus_per_trial=1)


def test_the_autoscalers_node_types_count_as_nodes(monkeypatch):
    from flows.plan import PlanError, check_placement

    preset = make_plan(load_settings(), "quick", check_machine=False).preset
    wants = preset.model_copy(update={"budget": Budget(gpus_per_trial=4, cpus_per_trial=8)})
    running = [{"CPU": 0.0}, {"CPU": 8.0}]  # no GPU node is up yet
    with pytest.raises(PlanError, match=r"gpus_per_trial=4, but the largest node .* has 2 .*autoscaled, up to 4"):
        check_placement(wants, running, [({"CPU": 8.0, "GPU": 2.0}, 4)], "head:6379")
    check_placement(wants, running, [({"CPU": 32.0, "GPU": 4.0}, 2)], "head:6379")  # it can add one
    ddp = preset.model_copy(update={"budget": Budget(workers_per_trial=3, cpus_per_trial=1)})
    with pytest.raises(PlanError, match="can place 2 such workers"):
        check_placement(ddp, [{"CPU": 0.0}, {"CPU": 1.0}, {"CPU": 1.5}], [], "head:6379")
    check_placement(ddp, [{"CPU": 0.0}, {"CPU": 1.0}], [({"CPU": 1.0}, -1)], "head:6379")


def test_a_cluster_run_needs_shared_storage_before_it_joins(state_home, tmp_path):
    settings = load_settings(home=state_home, ray_address="127.0.0.9:6379",
                             tracking_uri="http://127.0.0.9:1")
    with pytest.raises(PlanError, match="--storage"):
        from flows.plan import check_cluster

        plan = make_plan(settings, "quick", check_machine=False)
        check_cluster(plan)


def test_a_trial_larger_than_every_node_is_refused(state_home, tmp_path, monkeypatch):
    from flows import plan as plan_module

    settings = load_settings(home=state_home, ray_address="127.0.0.9:6379", storage=str(tmp_path),
                             tracking_uri="http://127.0.0.9:1")
    plan = make_plan(settings, "quick", check_machine=False)
    monkeypatch.setattr(sweep, "start_ray", lambda settings, packages=(): None)
    monkeypatch.setattr(sweep, "cluster_nodes", lambda: [{"CPU": 0.0}, {"CPU": 8.0, "GPU": 1.0}])
    monkeypatch.setattr(sweep, "node_types", lambda: [])
    wants_gpus = plan.model_copy(update={"preset": plan.preset.model_copy(
        update={"budget": Budget(gpus_per_trial=2)})})
    with pytest.raises(PlanError, match=r"gpus_per_trial=2, but the largest node .* has 1"):
        plan_module.check_cluster(wants_gpus)
    fits = plan.model_copy(update={"preset": plan.preset.model_copy(
        update={"budget": Budget(gpus_per_trial=0.25, cpus_per_trial=8)})})
    plan_module.check_cluster(fits)


def test_interrupting_sweeps_stops_one_running_in_a_thread_and_one_about_to_start():
    """Tune's loop ends when its run's event is set; Tune sets it only from its main-thread
    SIGINT handler. interrupt_sweeps sets every running one, and any started after it."""
    seen = {}

    def fake_tune_run(name):
        tune_threads.forget_interrupt()
        event = tune_threads._setup_signal_catching()  # what tune.run calls first
        while not event.is_set():
            time.sleep(0.01)
        seen[name] = tune_threads.this_sweep_interrupted()

    tune_threads.allow_sweeps()
    first = threading.Thread(target=fake_tune_run, args=("running",), daemon=True)
    first.start()
    time.sleep(0.1)
    tune_threads.interrupt_sweeps()
    late = threading.Thread(target=fake_tune_run, args=("late",), daemon=True)
    late.start()
    first.join(5)
    late.join(5)
    tune_threads.allow_sweeps()
    assert seen == {"running": True, "late": True}
