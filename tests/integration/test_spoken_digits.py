"""Every built-in dataset prepares offline, spoken-digits included: espeak-ng (installed by
.ci/run with apt) speaks the digits, and the clips go through the same audio path as a user's."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import TINY_PRESET

pytestmark = pytest.mark.system
BIN = Path(sys.executable).parent


def _cli(*args, home: Path) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PREFECT_", "MLFLOW_"))}
    env.update(RNNBENCH_HOME=str(home), COLUMNS="200")
    return subprocess.run([str(BIN / "rnnbench"), *args], capture_output=True, text=True, env=env,
                          timeout=1200)


@pytest.fixture(scope="module")
def home(tmp_path_factory) -> Path:
    home = tmp_path_factory.mktemp("all")
    proc = _cli("prepare", "--all", home=home)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    from datamodules.builtin import DATASETS

    assert proc.stdout.count("prepared:") == len(DATASETS)
    assert "Traceback" not in proc.stdout + proc.stderr
    return home


def _manifest(home: Path, name: str) -> tuple[Path, dict]:
    (artifact,) = (home / "data" / name).iterdir()
    return artifact, json.loads((artifact / "manifest.json").read_text())


def test_spoken_digits_hold_out_whole_accents(home):
    from datamodules.artifact import load_split, read_extra
    from datamodules.audio import ACCENTS

    artifact, m = _manifest(home, "spoken-digits")
    assert m["modality"] == "synthetic speech" and m["num_classes"] == 10 and m["input_dim"] == 40
    assert m["tools"]["espeak-ng"].startswith("eSpeak NG text-to-speech")
    assert sum(s["n"] for s in m["splits"].values()) == 7 * 14 * 3 * 10
    assert m["sample_rates"] == {"22050": 2940}  # espeak-ng's rate, resampled to 16 kHz
    clips = read_extra(artifact, "clips")  # "<digit>/<accent>+<variant>_<take>.wav"
    accents = {s: {clips[i].split("/")[1].split("+")[0] for i in load_split(artifact, s).ids}
               for s in ("train", "val", "test")}
    assert not (accents["train"] & accents["test"]) and not (accents["train"] & accents["val"])
    assert not (accents["val"] & accents["test"])
    # the same accents as spoken-digit-strings, as the README says
    assert {s: sorted(a) for s, a in accents.items()} == m["groups"] == {
        "train": sorted(set(ACCENTS) - {"en-029", "en-gb"}), "val": ["en-029"], "test": ["en-gb"]}
    assert _manifest(home, "spoken-digit-strings")[1]["groups"] == m["groups"]
    assert [m["splits"][s]["n"] for s in ("train", "val", "test")] == [5 * 420, 420, 420]


def test_a_second_prepare_all_reuses_every_artifact(home):
    proc = _cli("prepare", "--all", home=home)
    assert proc.returncode == 0 and "prepared:" not in proc.stdout
    from datamodules.builtin import DATASETS

    assert proc.stdout.count("reused:") == len(DATASETS)


def test_a_sweep_trains_on_synthetic_speech_end_to_end(home):
    proc = _cli("run", "--preset", TINY_PRESET, "--datasets", "spoken-digits", "--variants", "gru",
                home=home)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert "spoken-digits (synthetic speech)" in proc.stdout and "Traceback" not in proc.stdout
    (report,) = (home / "reports").glob("*/leaderboard.md")  # also in MLflow and Prefect
    assert "### spoken-digits (synthetic speech)" in report.read_text()
