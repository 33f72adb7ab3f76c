"""Bad input gets one clear line, the valid choices and exit 2, before anything trains."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

RNNBENCH = str(Path(sys.executable).parent / "rnnbench")


def _cli(*args, home: Path, without_tools: bool = False,
         env_extra: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    env = {**os.environ, "RNNBENCH_HOME": str(home), "COLUMNS": "200", **(env_extra or {})}
    env.pop("MLFLOW_TRACKING_URI", None)
    if without_tools:  # as on a machine without espeak-ng: only the virtualenv on PATH
        env["PATH"] = str(Path(sys.executable).parent)
    return subprocess.run([RNNBENCH, *args], capture_output=True, text=True, env=env, timeout=120)


@pytest.mark.parametrize("args,message", [
    (["run", "--variants", "lstm,lsmt"], "unknown variant 'lsmt'; valid: rnn, lstm, gru, birnn, bilstm, bigru, transformer"),
    (["run", "--datasets", "imdb"], "unknown dataset 'imdb'; valid: japanese-vowels, rotten-tomatoes, sunspots, electricity, seq-mnist, adding, copy-memory, spoken-digits, shakespeare-char"),
    (["run", "--preset", "huge"], "unknown preset 'huge'; valid: paper, quick, standard"),
    (["run", "--preset", "/no/such/preset.toml"], "preset file not found: /no/such/preset.toml"),
    (["sweep", "--dataset", "sunspots", "--variant", "mamba"], "unknown variant 'mamba'"),
    (["prepare", "cifar"], "unknown dataset 'cifar'; valid: japanese-vowels"),
    (["run", "--datasets", "shakespeare-char", "--variants", "bilstm"],
     "no selected variant can train on 'shakespeare-char' (language-model)"),
])
def test_bad_names_fail_fast_with_one_line_naming_the_valid_choices(tmp_path, args, message):
    proc = _cli(*args, home=tmp_path)
    assert proc.returncode == 2, proc.stdout + proc.stderr
    out = proc.stdout + proc.stderr
    assert message in out.replace("\n", " ")
    assert "Traceback" not in out
    assert not (tmp_path / "mlflow.db").exists(), "nothing may start before input is validated"


def test_a_gpu_preset_is_refused_on_a_machine_without_a_gpu(tmp_path):
    os.environ["CUDA_VISIBLE_DEVICES"] = ""  # as on CI, also when the tests run on a GPU box
    try:
        proc = _cli("run", "--preset", "paper", home=tmp_path)
    finally:
        del os.environ["CUDA_VISIBLE_DEVICES"]
    assert proc.returncode == 2
    assert "asks for gpus_per_trial=1.0 but this machine has no GPU" in proc.stdout.replace("\n", " ")


def test_non_positive_size_in_a_preset_is_refused(tmp_path):
    preset = tmp_path / "mine.toml"
    preset.write_text('[budget]\nnum_samples = 0\n')
    proc = _cli("run", "--preset", str(preset), home=tmp_path)
    assert proc.returncode == 2
    assert "mine.toml: budget.num_samples: Input should be greater than 0 (got 0)" in proc.stdout
    preset.write_text('[space]\nhidden_size = { choice = [32, -4] }\n')
    proc = _cli("run", "--preset", str(preset), home=tmp_path)
    assert proc.returncode == 2 and "hidden_size: must be positive, got -4" in proc.stdout


def test_list_shows_every_dataset_variant_and_preset(tmp_path):
    proc = _cli("list", home=tmp_path)
    assert proc.returncode == 0
    from datamodules.builtin import DATASETS

    for name in (*DATASETS, "rnn lstm gru birnn bilstm bigru transformer mlp cnn-lstm cnn-gru mingru minlstm seq2seq seq2seq-attn",
                 "quick"):
        assert name in proc.stdout


def test_prepare_writes_artifacts_and_reuses_them(tmp_path):
    from datamodules.builtin import DATASETS

    names = [name for name, spec in DATASETS.items() if not spec.versions]
    first = _cli("prepare", *names, home=tmp_path)
    assert first.returncode == 0, first.stdout + first.stderr
    assert first.stdout.count("prepared:") == len(names)
    assert "58 group(s) of duplicate texts (117 rows) each kept in one split" in first.stdout
    again = _cli("prepare", "sunspots", home=tmp_path)
    assert again.returncode == 0 and "reused" in again.stdout
    assert "Traceback" not in first.stdout + first.stderr


def test_without_espeak_ng_prepare_all_says_how_to_install_it_before_any_work(tmp_path):
    proc = _cli("prepare", "--all", home=tmp_path, without_tools=True)
    assert proc.returncode == 2
    assert "espeak-ng, which is not installed; install it with `sudo apt-get install espeak-ng`" \
        in proc.stdout.replace("\n", " ")
    assert "Traceback" not in proc.stdout + proc.stderr
    assert not (tmp_path / "data").exists()
    quick = _cli("run", "--datasets", "spoken-digits", home=tmp_path, without_tools=True)
    assert quick.returncode == 2 and "apt-get install espeak-ng" in quick.stdout.replace("\n", " ")


def test_prepare_from_a_bad_file_says_what_is_wrong_in_one_line_then_a_good_one_registers(tmp_path):
    bad = tmp_path / "load.csv"
    bad.write_text("time,load\n2024-01-01,1.5\n2024-01-02,abc\n")
    proc = _cli("prepare", "--from", str(bad), "--kind", "timeseries", "--name", "site",
                "--target", "load", "--time-column", "time", home=tmp_path)
    assert proc.returncode == 2
    out = proc.stdout + proc.stderr
    assert f"error: {bad}: row 3, column 'load': 'abc' is not a number" in out.replace("\n", "")
    assert "Traceback" not in out and "DataError" not in out
    wrong_kind = _cli("prepare", "--from", str(bad), "--kind", "text", "--name", "site",
                      "--target", "load", home=tmp_path)
    assert wrong_kind.returncode == 2 and "--target does not apply to --kind text" in wrong_kind.stdout
    rows = "".join(f"{d},{(d * 7) % 24}\n" for d in range(300))
    bad.write_text("step,load\n" + rows)
    good = _cli("prepare", "--from", str(bad), "--kind", "timeseries", "--name", "site",
                "--target", "load", "--time-column", "step", "--window", "24", "--horizon", "4",
                home=tmp_path)
    assert good.returncode == 0, good.stdout + good.stderr
    assert "Registered site" in good.stdout
    listed = _cli("list", home=tmp_path)
    assert "your datasets" in listed.stdout and "site" in listed.stdout


def _imported(stderr: str) -> set[str]:
    """Top-level packages a ``python -X importtime`` run imported."""
    names = set()
    for line in stderr.splitlines():
        if line.startswith("import time:") and "|" in line:
            names.add(line.rsplit("|", 1)[1].strip().split(".")[0])
    return names


@pytest.mark.parametrize("args", [
    ["run", "--variants", "nosuch"],
    ["run", "--datasets", "imdb"],
    ["list"],
    ["--help"],
])
def test_answers_that_need_no_training_import_no_training_library(tmp_path, args):
    env = {**os.environ, "RNNBENCH_HOME": str(tmp_path), "COLUMNS": "200"}
    env.pop("MLFLOW_TRACKING_URI", None)
    proc = subprocess.run([sys.executable, "-X", "importtime", RNNBENCH, *args], capture_output=True,
                          text=True, env=env, timeout=120)
    assert proc.returncode in (0, 2), proc.stdout + proc.stderr[-2000:]
    heavy = _imported(proc.stderr) & {"ray", "torch", "sklearn", "mlflow", "prefect", "pytorch_lightning"}
    assert not heavy, f"{args} imported {sorted(heavy)}"


def test_a_bad_user_file_is_refused_before_prefect_or_ray_start(tmp_path):
    gaps = tmp_path / "gaps.csv"
    gaps.write_text("time,load\n2024-01-01,1.5\n2024-01-02,\n2024-01-03,2.0\n")
    env = {**os.environ, "RNNBENCH_HOME": str(tmp_path / "home"), "COLUMNS": "200"}
    proc = subprocess.run([sys.executable, "-X", "importtime", RNNBENCH, "prepare", "--from", str(gaps),
                           "--kind", "timeseries", "--name", "gaps", "--target", "load",
                           "--time-column", "time"], capture_output=True, text=True, env=env, timeout=120)
    assert proc.returncode == 2
    assert "1 missing, NaN or infinite value(s), first at row 3, column 'load'" in proc.stdout
    assert not _imported(proc.stderr) & {"ray", "prefect", "torch", "mlflow"}


@pytest.mark.parametrize("columns", ["80", None])
def test_list_never_truncates_the_names_a_user_copies(tmp_path, columns):
    env = {**os.environ, "RNNBENCH_HOME": str(tmp_path)}
    env.pop("COLUMNS", None)
    if columns:
        env["COLUMNS"] = columns
    proc = subprocess.run([RNNBENCH, "list"], capture_output=True, text=True, env=env, timeout=120)
    assert proc.returncode == 0
    from datamodules.builtin import DATASETS

    for name in (*DATASETS, "quick", "standard", "paper"):
        assert any(cell.strip() == name for line in proc.stdout.splitlines() for cell in line.split("│")), name
    assert "…" not in "".join(line.split("│")[1] for line in proc.stdout.splitlines() if line.count("│") > 2)


def test_an_unreachable_tracking_server_gets_one_line_and_its_own_exit_code(tmp_path):
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    proc = _cli("run", "--tracking-uri", f"http://127.0.0.1:{port}", home=tmp_path)
    assert proc.returncode == 69, proc.stdout + proc.stderr
    assert f"error: the MLflow tracking server at http://127.0.0.1:{port} does not answer" \
        in proc.stdout.replace("\n", " ")
    assert "KILLED" not in proc.stdout and "Traceback" not in proc.stdout + proc.stderr


def test_serve_without_a_prefect_server_says_so_in_one_line_and_exits_69(tmp_path):
    import socket

    env = {k: v for k, v in os.environ.items() if not k.startswith("PREFECT_API")}
    proc = subprocess.run([RNNBENCH, "serve"], capture_output=True, text=True, timeout=120,
                          env={**env, "RNNBENCH_HOME": str(tmp_path), "COLUMNS": "200"})
    assert proc.returncode == 69, proc.stdout + proc.stderr
    assert "rnnbench serve needs a Prefect server" in proc.stdout and "PREFECT_API_URL=" in proc.stdout
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    proc = _cli("serve", home=tmp_path, env_extra={"PREFECT_API_URL": f"http://127.0.0.1:{port}/api"})
    assert proc.returncode == 69, proc.stdout + proc.stderr
    assert f"no Prefect API answers at http://127.0.0.1:{port}/api" in proc.stdout.replace("\n", " ")
    assert "Traceback" not in proc.stdout + proc.stderr


def test_deploy_without_a_prefect_server_says_so_in_one_line_and_exits_69(tmp_path):
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    proc = _cli("deploy", "--pool", "team", home=tmp_path,
                env_extra={"PREFECT_API_URL": f"http://127.0.0.1:{port}/api"})
    assert proc.returncode == 69, proc.stdout + proc.stderr
    assert f"no Prefect API answers at http://127.0.0.1:{port}/api" in proc.stdout.replace("\n", " ")
    assert "Traceback" not in proc.stdout + proc.stderr
