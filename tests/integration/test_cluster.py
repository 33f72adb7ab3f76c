"""rnnbench on a real multi-node Ray cluster, on one machine, with nothing shared but what a
real cluster shares.

A head node (no CPUs: it runs no trials) and two worker nodes of one CPU each are started
with the README's own `ray start` lines, each node on its own loopback address (127.0.0.2 to
127.0.0.4; `ray start` rewrites 127.0.0.1 to the machine's outbound address), with Ray's token
authentication on and the token in a temporary file. Each worker node runs in a mount
namespace of its own where rnnbench's checkout (the folder `flows`, `modules` and
`datamodules` are imported from) and the driver's state folder are covered by empty tmpfs
mounts, proven before Ray starts there. Shared, as on a real cluster: the storage folder
(standing in for NFS or a bucket) and an MLflow server on 127.0.0.5.

These tests need root (mount namespaces), as CI runs them; where the kernel refuses a
namespace they fail with the reason.
"""

from __future__ import annotations

import csv
import os
import re
import secrets
import shlex
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
from mlflow.tracking import MlflowClient

import datamodules
import flows
import modules

pytestmark = pytest.mark.integration
BIN = Path(sys.executable).parent
REPO = Path(__file__).resolve().parents[2]
HIDE_SCRIPT = Path(__file__).with_name("hidden_node.sh")
HEAD_IP, WORKER_IPS, MLFLOW_IP = "127.0.0.2", ("127.0.0.3", "127.0.0.4"), "127.0.0.5"
SECRET = f"rnnbench-test-secret-{secrets.token_hex(8)}"

PRESET = """
description = "a cluster test"
datasets = ["japanese-vowels"]
variants = [{variants}]
[budget]
num_samples = {samples}
max_epochs = {epochs}
grace_period = {epochs}
max_concurrent_trials = {concurrent}
cpus_per_trial = {cpus}
[space]
hidden_size = {{ choice = [8, 16] }}
num_layers = 1
dropout = 0.0
lr = {{ loguniform = [5e-3, 1e-2] }}
weight_decay = 0.0
batch_size = 32
grad_clip = 1.0
[custom_variants]
nanvariant = "tests.integration.clustertoys:NaNAtWidth8"
"""


def _free_port(ip: str) -> int:
    with socket.socket() as s:
        s.bind((ip, 0))
        return s.getsockname()[1]


def readme_commands() -> dict[str, str]:
    """The README's cluster lines, by what they start: head, worker, mlflow, run."""
    text = (REPO / "README.md").read_text()
    block = text.split("<!-- cluster-commands:", 1)[1].split("```bash", 1)[1].split("```", 1)[0]
    lines = [line for line in block.splitlines() if line and not line.startswith("#")]
    found = {}
    for line in lines:
        if line.startswith("ray start --head"):
            found["head"] = line
        elif line.startswith("ray start --address"):
            found["worker"] = line
        elif line.startswith("export "):
            found["env"] = line
        elif line.startswith("rnnbench run"):
            found["run"] = line
    return found


class Cluster:
    """The nodes, the MLflow server and what the test's commands need to reach them."""

    def __init__(self, root: Path):
        self.root = root
        self.token = root / "ray-token"
        self.token.write_text(secrets.token_hex(32))
        self.shared = root / "shared"  # the only folder every node sees, besides Ray's own
        self.home = root / "driver-home"  # the driver's state: hidden from the worker nodes
        self.shared.mkdir()
        self.home.mkdir()
        self.port = _free_port(HEAD_IP)
        self.address = f"{HEAD_IP}:{self.port}"
        self.mlflow_port = _free_port(MLFLOW_IP)
        self.tracking_uri = f"http://{MLFLOW_IP}:{self.mlflow_port}"
        self.procs: dict[str, subprocess.Popen] = {}
        self.commands = readme_commands()
        base = {k: v for k, v in os.environ.items()
                if not k.startswith(("PREFECT_", "MLFLOW_", "RAY_", "RNNBENCH_"))}
        # the README's exports, with this test's token file (never ~/.ray/auth_token)
        exported = dict(item.split("=", 1) for item in shlex.split(self.commands["env"])[1:])
        exported["RAY_AUTH_TOKEN_PATH"] = str(self.token)
        self.env = {**base, **exported, "HOME": str(root / "user-home")}
        (root / "user-home").mkdir()

    def _line(self, kind: str, **values: str) -> list[str]:
        line = self.commands[kind].replace("HEAD_IP:6379", self.address).replace("--port 6379", f"--port {self.port}")
        for key, value in values.items():
            line = re.sub(rf"\b{key}\b", value, line)
        args = shlex.split(line)
        args[0] = str(BIN / args[0])
        return args

    def _start(self, name: str, args: list[str], ready: str, timeout: float = 120) -> None:
        log = self.root / f"{name}.log"
        with open(log, "w") as fh:
            proc = subprocess.Popen(args, stdout=fh, stderr=subprocess.STDOUT, env=self.env,
                                    start_new_session=True)
        self.procs[name] = proc
        deadline = time.monotonic() + timeout
        while ready not in log.read_text():
            if proc.poll() is not None:
                raise RuntimeError(f"{name} exited ({proc.returncode}):\n{log.read_text()[-3000:]}")
            if time.monotonic() > deadline:
                raise TimeoutError(f"{name} not ready in {timeout}s:\n{log.read_text()[-3000:]}")
            time.sleep(0.3)

    def start_head(self) -> None:
        self._start("head", [*self._line("head", HEAD_IP=HEAD_IP), "--block"], "Ray runtime started")

    def start_worker(self, index: int) -> None:
        """A worker node in its own mount namespace, rnnbench's code and state hidden there."""
        ip = WORKER_IPS[index]
        stash = self.root / f"venv-stash-{index}"
        stash.mkdir(exist_ok=True)
        roots = {Path(p).resolve().parent for pkg in (flows, modules, datamodules) for p in pkg.__path__}
        assert roots == {REPO}, f"rnnbench imported from {roots}, expected {REPO}"
        hidden = ["unshare", "-m", "--propagation", "private", "bash", str(HIDE_SCRIPT),
                  str(REPO), sys.prefix, str(stash), str(self.home), "--"]
        # --block keeps the node a child of this test, so it is stopped whatever happens
        self._start(f"worker{index}", [*hidden, *self._line("worker", HEAD_IP=HEAD_IP, WORKER_IP=ip, CPUS="1", GPUS="0"),
                                       "--block"], "Ray runtime started")
        log = (self.root / f"worker{index}.log").read_text()
        assert "rnnbench hidden on this node" in log, log

    def start_mlflow(self) -> None:
        db = self.root / "mlflow"
        db.mkdir(exist_ok=True)  # a restart keeps its store
        args = [str(BIN / "mlflow"), "server", "--host", MLFLOW_IP, "--port", str(self.mlflow_port),
                "--backend-store-uri", f"sqlite:///{db / 'mlflow.db'}",
                "--artifacts-destination", str(db / "artifacts"), "--workers", "1",
                "--allowed-hosts", f"{MLFLOW_IP}:{self.mlflow_port}"]
        self._start("mlflow", args, "Uvicorn running", timeout=120)

    def stop_all(self) -> None:
        """SIGTERM to every node and server (`ray start --block` stops its node's processes),
        SIGKILL to what is left after 15 s."""
        for proc in self.procs.values():
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGTERM)
        deadline = time.monotonic() + 15
        for proc in self.procs.values():
            try:
                proc.wait(timeout=max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
        self.procs.clear()

    def stop(self, name: str) -> None:
        proc = self.procs.pop(name)
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(timeout=30)

    def kill(self, name: str) -> None:
        """A node lost at once, as when its machine dies."""
        proc = self.procs.pop(name)
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()  # the node's raylet and its workers share its process group, or die with it

    def run_args(self, preset_path: Path) -> list[str]:
        """The README's ``rnnbench run`` line with this cluster's addresses and a test preset."""
        line = (self.commands["run"].replace("--preset standard", f"--preset {preset_path}")
                .replace("HEAD_IP:6379", self.address)
                .replace("http://MLFLOW_HOST:5000", self.tracking_uri)
                .replace("s3://BUCKET/rnnbench", str(self.shared)))
        args = shlex.split(line)
        assert args[:2] == ["rnnbench", "run"] and not re.search(r"[A-Z]{4,}_?[A-Z]*", line), line
        return [str(BIN / "rnnbench"), *args[1:]]

    def run(self, preset: str, timeout: float = 900, env: dict | None = None):
        path = self.root / f"preset-{secrets.token_hex(4)}.toml"
        path.write_text(preset)
        full = {**self.driver_env, **(env or {})}
        return subprocess.run(self.run_args(path), env=full, capture_output=True, text=True,
                              timeout=timeout)

    @property
    def driver_env(self) -> dict[str, str]:
        return {**self.env, "RNNBENCH_HOME": str(self.home), "COLUMNS": "200"}

    def start(self, name: str, preset: str) -> tuple[Path, subprocess.Popen]:
        """``rnnbench run`` in the background with a preset named ``name`` (its runs are
        tagged ``preset=name``), in a session of its own."""
        path = self.root / f"{name}.toml"
        path.write_text(preset)
        proc = subprocess.Popen(self.run_args(path), env=self.driver_env, text=True,
                                stdout=subprocess.PIPE, stderr=subprocess.STDOUT, start_new_session=True)
        return path, proc

    def client(self) -> MlflowClient:
        return MlflowClient(self.tracking_uri)


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    root = tmp_path_factory.mktemp("cluster")
    c = Cluster(root)
    try:
        c.start_mlflow()
        c.start_head()
        for index in range(len(WORKER_IPS)):
            c.start_worker(index)
        yield c
    finally:
        c.stop_all()


def _runs_of(client: MlflowClient, bench_run_id: str) -> list:
    exp = client.get_experiment_by_name("rnnbench")
    everything = client.search_runs([exp.experiment_id], max_results=1000)
    sweeps = {r.info.run_id for r in everything if r.data.tags.get("mlflow.parentRunId") == bench_run_id}
    return [r for r in everything if r.info.run_id == bench_run_id or r.info.run_id in sweeps
            or r.data.tags.get("mlflow.parentRunId") in sweeps]


def _bench_id(out: str) -> str:
    return re.search(r"benchmark run ([0-9a-f]{32})", out).group(1)


def test_sweeps_run_side_by_side_on_worker_nodes_that_cannot_see_the_code_or_state(cluster):
    """Two sweeps side by side (one of a user's own variant that Ray must ship), trials on the
    hidden-disk worker nodes, a NaN trial FAILED with its reason while its sweep goes on, and
    no secret in the shared storage or the tracking store."""
    preset = PRESET.format(variants='"gru", "nanvariant"', samples=3, epochs=3, concurrent=1, cpus=1)
    secret_env = {"MLFLOW_TRACKING_USERNAME": "rnnbench", "MLFLOW_TRACKING_PASSWORD": SECRET}
    done = cluster.run(preset, env=secret_env)
    out = done.stdout + done.stderr
    assert done.returncode == 0, out[-4000:]
    assert "Traceback" not in out and SECRET not in out, out[-6000:]
    runs = _runs_of(cluster.client(), _bench_id(out))
    assert runs and not [r for r in runs if r.info.status == "RUNNING"]
    trials = [r for r in runs if r.data.tags.get("rnnbench.role") == "trial"]
    ids = [r.data.tags["rnnbench.trial_id"] for r in trials]
    assert len(ids) == len(set(ids)) == 6, "one MLflow run per trial"
    nodes = {r.data.tags["rnnbench.node_ip"] for r in trials}
    assert nodes == set(WORKER_IPS), f"trials ran on {nodes}; the head has no CPUs"
    assert {r.data.tags["rnnbench.device"] for r in trials} == {"cpu"}

    nan_trials = [r for r in trials if r.data.tags["variant"] == "nanvariant"]
    poisoned = [r for r in nan_trials if r.data.params.get("hidden_size") == "8"]
    healthy = [r for r in nan_trials if r.data.params.get("hidden_size") == "16"]
    assert poisoned and healthy, "the seeded search samples both widths"
    for run in poisoned:
        assert run.info.status == "FAILED"
        assert "NonFiniteLoss" in run.data.tags["rnnbench.error"] and "nan" in run.data.tags["rnnbench.error"]
    assert {r.info.status for r in healthy} == {"FINISHED"}
    board = {row["variant"]: row for row in
             csv.DictReader(open(next((cluster.home / "reports").glob(f"{_bench_id(out)}/leaderboard_japanese-vowels.csv"))))}
    assert f"{len(poisoned)} of 3 trials failed" in board["nanvariant"]["note"]
    assert "failed" not in (board["gru"]["note"] or "")

    for folder in (cluster.shared, cluster.root / "mlflow"):
        for path in folder.rglob("*"):
            if path.is_file():
                assert SECRET.encode() not in path.read_bytes(), f"the secret leaked into {path}"


def test_a_data_parallel_trial_spans_both_worker_nodes_and_keeps_one_run(cluster):
    """workers_per_trial=2 on CPU (gloo): each trial's two Ray Train workers run on the two
    hidden-disk nodes (one CPU each), rank 0 alone logs, and the best model comes back through
    the checkpoint Ray Train kept in the shared storage."""
    preset = PRESET.format(variants='"gru"', samples=2, epochs=2, concurrent=2, cpus=1).replace(
        "cpus_per_trial = 1", "cpus_per_trial = 1\nworkers_per_trial = 2")
    done = cluster.run(preset)
    out = done.stdout + done.stderr
    assert done.returncode == 0, out[-4000:]
    assert "Traceback" not in out, out[-6000:]
    runs = _runs_of(cluster.client(), _bench_id(out))
    assert runs and {r.info.status for r in runs} == {"FINISHED"}
    trials = [r for r in runs if r.data.tags.get("rnnbench.role") == "trial"]
    assert len(trials) == len({r.data.tags["rnnbench.trial_id"] for r in trials}) == 2, \
        "one MLflow run per data-parallel trial, whatever its number of workers"
    for trial in trials:
        assert trial.data.tags["rnnbench.workers"] == "2"
        assert sorted(trial.data.tags["rnnbench.node_ip"].split(",")) == sorted(WORKER_IPS), \
            f"the two workers ran on {trial.data.tags['rnnbench.node_ip']}"
        assert "val/acc" in trial.data.metrics and "system/cpu_utilization_percentage" in trial.data.metrics
        history = cluster.client().get_metric_history(trial.info.run_id, "val/acc")
        assert len(history) == len({m.step for m in history}), "rank 0 alone logs each epoch"
    sweep_run = next(r for r in runs if r.data.tags.get("rnnbench.role") == "sweep")
    assert sweep_run.data.metrics["test/acc"] > 0 and "best.hidden_size" in sweep_run.data.params
    kept = list((cluster.shared).rglob("train/train-*/checkpoint_*/checkpoint.ckpt"))
    assert kept, "Ray Train's checkpoints are in the shared storage"


def test_cluster_refusals_come_before_any_run(cluster):
    """Impossible resources, missing storage, a local tracking store and a missing token are
    each one line, before any MLflow run."""
    before = len(cluster.client().search_runs(
        [cluster.client().get_experiment_by_name("rnnbench").experiment_id], max_results=1000))
    big = PRESET.format(variants='"gru"', samples=1, epochs=1, concurrent=1, cpus=2)
    done = cluster.run(big, timeout=300)
    assert done.returncode == 2, done.stdout[-2000:] + done.stderr[-2000:]
    assert "cpus_per_trial=2" in done.stdout and "has 1" in done.stdout

    shared_gpu = PRESET.format(variants='"gru"', samples=1, epochs=1, concurrent=1, cpus=1).replace(
        "cpus_per_trial = 1", "cpus_per_trial = 1\nworkers_per_trial = 2\ngpus_per_trial = 0.5")
    done = cluster.run(shared_gpu, timeout=300)
    assert done.returncode == 2 and "Duplicate GPU" in done.stdout, done.stdout[-2000:]
    too_wide = PRESET.format(variants='"gru"', samples=1, epochs=1, concurrent=1, cpus=1).replace(
        "cpus_per_trial = 1", "cpus_per_trial = 1\nworkers_per_trial = 3")
    done = cluster.run(too_wide, timeout=300)
    assert done.returncode == 2 and "can place 2 such workers" in done.stdout, done.stdout[-2000:]

    small = PRESET.format(variants='"gru"', samples=1, epochs=1, concurrent=1, cpus=1)
    path = cluster.root / "small.toml"
    path.write_text(small)
    env = cluster.driver_env
    rnnbench = str(BIN / "rnnbench")
    no_storage = subprocess.run([rnnbench, "run", "--preset", str(path), "--ray-address", cluster.address,
                                 "--tracking-uri", cluster.tracking_uri], env=env,
                                capture_output=True, text=True, timeout=300)
    assert no_storage.returncode == 2 and "--storage" in no_storage.stdout, no_storage.stdout[-2000:]
    sqlite = subprocess.run([rnnbench, "run", "--preset", str(path), "--ray-address", cluster.address,
                             "--storage", str(cluster.shared)], env=env,
                            capture_output=True, text=True, timeout=300)
    assert sqlite.returncode == 2 and "start an MLflow server" in sqlite.stdout, sqlite.stdout[-2000:]
    no_token = {k: v for k, v in env.items() if not k.startswith("RAY_AUTH")}
    refused = subprocess.run([rnnbench, "run", "--preset", str(path), "--ray-address", cluster.address,
                              "--tracking-uri", cluster.tracking_uri, "--storage", str(cluster.shared)],
                             env=no_token, capture_output=True, text=True, timeout=300)
    assert refused.returncode == 69, refused.stdout[-2000:] + refused.stderr[-2000:]
    assert "refused this process's token: none was given" in refused.stdout
    assert "Traceback" not in refused.stdout + refused.stderr
    assert "gcs_client" not in refused.stdout + refused.stderr, "Ray's retry warnings stay out"
    after = len(cluster.client().search_runs(
        [cluster.client().get_experiment_by_name("rnnbench").experiment_id], max_results=1000))
    assert after == before


def _trial_runs(client: MlflowClient, preset_name: str) -> list:
    exp = client.get_experiment_by_name("rnnbench")
    if exp is None:
        return []
    return client.search_runs([exp.experiment_id], f"tags.`rnnbench.role` = 'trial' and tags.preset = '{preset_name}'",
                              max_results=1000)


def test_a_killed_driver_is_resumed_from_the_shared_storage_by_the_same_command(cluster):
    """The driver dies with SIGKILL mid-sweep (its heartbeat in MLflow goes stale, no local
    lock file is involved); the same command run again resumes the sweep from the shared
    storage: the finished trial is not retrained, one MLflow run per trial, the same trial
    count as an uninterrupted run."""
    # one trial at a time, each long enough that the second is still training 12 s after the
    # first has ended, however idle the machine
    epochs = 500
    preset = PRESET.format(variants='"gru"', samples=3, epochs=epochs, concurrent=1, cpus=1)
    path, proc = cluster.start("driverkill", preset)
    client = cluster.client()
    try:
        deadline = time.monotonic() + 300
        finished_at = None
        while time.monotonic() < deadline:
            assert proc.poll() is None, proc.stdout.read()[-3000:]
            runs = _trial_runs(client, "driverkill")
            # a trial's run gets its final status from the sweep's verdicts, at the sweep's
            # end: a trial has finished when its curve is complete
            if finished_at is None and any(len(client.get_metric_history(r.info.run_id, "val/loss")) >= epochs
                                           for r in runs):
                finished_at = time.monotonic()
            # past Tune's next periodic save of its state after that trial finished
            if finished_at is not None and time.monotonic() - finished_at > 12:
                break
            time.sleep(0.5)
        else:
            pytest.fail("no trial finished in time")
        proc.kill()  # the driver alone, as the OOM killer would
        proc.wait()
    finally:
        if proc.poll() is None:
            proc.kill()
    before = {r.data.tags["rnnbench.trial_id"]: r for r in _trial_runs(client, "driverkill")}
    history = {t: len(client.get_metric_history(r.info.run_id, "val/loss")) for t, r in before.items()}
    finished = {t for t, n in history.items() if n >= epochs}
    assert finished and len(finished) < 3, history
    history = {t: history[t] for t in finished}
    from flows import tracking

    time.sleep(tracking.STALE_AFTER_S + 1)  # the dead driver's heartbeat goes stale
    again = subprocess.run(cluster.run_args(path), env=cluster.driver_env, capture_output=True, text=True,
                           timeout=600)
    out = again.stdout + again.stderr
    assert again.returncode == 0, out[-4000:]
    assert "resuming unfinished benchmark run" in out
    after = _trial_runs(client, "driverkill")
    ids = [r.data.tags["rnnbench.trial_id"] for r in after]
    assert len(ids) == len(set(ids)) == 3 and set(before) <= set(ids)
    assert {r.info.status for r in after} == {"FINISHED"}
    assert {t: len(client.get_metric_history(r.info.run_id, "val/loss")) for t, r in
            ((r.data.tags["rnnbench.trial_id"], r) for r in after) if t in finished} == history


def test_training_goes_on_while_the_tracking_server_is_away_and_no_epoch_is_missing(cluster):
    """The MLflow server stops for 30 s mid-sweep: no trial fails or waits for it, and once it
    is back every trial run holds every epoch (filled from Tune's own results)."""
    epochs = 300
    preset = PRESET.format(variants='"gru"', samples=2, epochs=epochs, concurrent=2, cpus=1)
    _, proc = cluster.start("outage", preset)
    client = cluster.client()
    try:
        deadline = time.monotonic() + 300
        while time.monotonic() < deadline:
            assert proc.poll() is None, proc.stdout.read()[-3000:]
            runs = _trial_runs(client, "outage")
            if len(runs) == 2 and all(len(client.get_metric_history(r.info.run_id, "val/loss")) >= 2 for r in runs):
                break
            time.sleep(0.5)
        else:
            pytest.fail("the trials never logged two epochs")
        cluster.stop("mlflow")
        time.sleep(30)
        assert proc.poll() is None, "the run must not fail while the tracking server is away"
        cluster.start_mlflow()
        out, _ = proc.communicate(timeout=600)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
    assert proc.returncode == 0, out[-4000:]
    runs = _trial_runs(cluster.client(), "outage")
    assert {r.info.status for r in runs} == {"FINISHED"} and len(runs) == 2
    for run in runs:
        steps = sorted(m.step for m in cluster.client().get_metric_history(run.info.run_id, "val/loss"))
        assert steps == list(range(epochs)), f"{run.info.run_name}: {len(steps)} of {epochs} epochs"
    assert any(int(r.data.tags.get("rnnbench.backfilled_points", 0)) > 0 for r in runs), \
        "the outage fell while the trials trained, so some epochs had to be filled in"


def test_a_killed_worker_node_costs_its_trial_a_restart_from_its_checkpoint(cluster):
    """A worker node dies mid-sweep: its trial restarts from its last checkpoint on the node
    that is alive, the sweep completes, one MLflow run per trial, none RUNNING. (Last in this
    module: the cluster has one worker left afterwards.)"""
    epochs = 300  # still training when the node dies, however idle the machine
    preset = PRESET.format(variants='"gru"', samples=2, epochs=epochs, concurrent=2, cpus=1)
    _, proc = cluster.start("kill", preset)
    try:
        client = cluster.client()
        deadline = time.monotonic() + 300
        victim = None
        while victim is None and time.monotonic() < deadline:
            assert proc.poll() is None, proc.stdout.read()[-3000:]
            time.sleep(0.5)
            exp = client.get_experiment_by_name("rnnbench")
            if exp is None:
                continue
            for run in client.search_runs([exp.experiment_id], "attributes.status = 'RUNNING' and tags.`rnnbench.role` = 'trial' "
                                          f"and tags.`rnnbench.node_ip` = '{WORKER_IPS[1]}'"):
                history = client.get_metric_history(run.info.run_id, "val/loss")
                if len(history) >= 3 and run.data.tags.get("preset") == "kill":
                    victim = run
        assert victim is not None, "no trial reached its third epoch on the second worker"
        cluster.kill("worker1")
        out, _ = proc.communicate(timeout=600)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
    assert proc.returncode == 0, out[-4000:]
    runs = _runs_of(cluster.client(), _bench_id(out))
    assert not [r for r in runs if r.info.status != "FINISHED"]
    trials = [r for r in runs if r.data.tags.get("rnnbench.role") == "trial"]
    assert len(trials) == 2
    (moved,) = [r for r in trials if r.data.tags["rnnbench.trial_id"] == victim.data.tags["rnnbench.trial_id"]]
    assert moved.data.tags["rnnbench.node_ip"] == WORKER_IPS[0], "restarted on the live node"
    assert moved.data.tags["rnnbench.restarts"] == "1"
    steps = [m.step for m in cluster.client().get_metric_history(moved.info.run_id, "val/loss")]
    # restarted from a checkpoint, not from scratch: at most the epoch in flight is repeated
    assert len(steps) <= epochs + 1 and max(steps) >= epochs - 1
    assert len(steps) > 3, "the trial was still training when its node died"
