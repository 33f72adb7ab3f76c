"""spoken-digit-strings end to end: espeak-ng (installed by .ci/run with apt) reads digit
strings, every variant that can transcribe trains on a tiny slice through a sweep to a
leaderboard row, and the registered model transcribes a new audio file with ``rnnbench
predict`` in a fresh process started outside the repository."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = [pytest.mark.system, pytest.mark.slow]
BIN = Path(sys.executable).parent
ROOT = Path(__file__).resolve().parents[2]
SLICE = {"strings_per_voice": 1}  # 98 clips: 70 train (5 accents), 14 val, 14 test

PRESET = """
description = "every transcriber on a tiny slice: 1 trial of 1 epoch, tiny widths"
[budget]
num_samples = 1
max_epochs = 1
max_concurrent_trials = 2
cpus_per_trial = 1
[space]
hidden_size = 8
num_layers = 1
dropout = 0.0
lr = 0.01
batch_size = 16
[dataset_params.spoken-digit-strings]
strings_per_voice = 1
[variant_space.transformer]
nhead = 2
ff_mult = 2
[variant_space.cnn-lstm]
kernel = 4
stride = 3
channels = 8
[variant_space.gru]
beam = 4
[variant_space.seq2seq-attn]
attention = "luong"
"""




def test_digit_strings_are_read_by_voices_whose_accents_stay_in_one_split(state_home):
    from datamodules.artifact import load_split, read_extra
    from datamodules.catalog import prepare
    from flows.settings import load_settings

    # into the session's state folder: the benchmark below reuses it
    artifact, m, _ = prepare("spoken-digit-strings", load_settings(home=state_home).data_root, SLICE)
    assert m["task"] == "transcription" and m["num_classes"] == 10 and m["input_dim"] == 40
    assert {s: p["n"] for s, p in m["splits"].items()} == {"train": 70, "val": 14, "test": 14}
    accents = {s: set(m["groups"][s]) for s in ("train", "val", "test")}
    assert len(accents["train"]) == 5 and not accents["train"] & (accents["val"] | accents["test"])
    clips = read_extra(artifact, "clips")  # "<accent>+<variant>_<take>.wav"
    for split in ("train", "val", "test"):
        part = load_split(artifact, split)
        assert {clips[i].split("+")[0] for i in part.ids} == accents[split]
        lengths = (part.y >= 0).sum(axis=1)
        assert lengths.min() >= 3 and lengths.max() <= 7 and part.y.shape[1] == 7
        assert all(len(x) >= m["frames_per_label"] * n for x, n in zip(part.x, lengths))


def test_every_transcriber_reaches_the_leaderboard_and_serves_from_an_audio_file(prefect_harness, tmp_path):
    from mlflow.tracking import MlflowClient

    from flows.pipeline import benchmark
    from modules.tasks import get
    from modules.variants import BUILTIN, VARIANTS  # the shipped ones: other tests register toys

    preset = tmp_path / "transcribe.toml"
    preset.write_text(PRESET)
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    result = benchmark(preset_path=str(preset), datasets=["spoken-digit-strings"], variants=list(BUILTIN),
                       experiment="transcription", tracking_uri=uri)
    able = [v for v in BUILTIN if not VARIANTS[v].incompatibility(get("transcription"))]
    assert len(able) == len(BUILTIN) - 1  # the mlp, skipped with a note
    assert {"seq2seq", "seq2seq-attn"} <= set(able)  # the decoders transcribe without CTC
    board = result["boards"]["spoken-digit-strings"].set_index("variant")
    assert set(able) < set(board.index) and "(most frequent label x most frequent length)" in board.index
    assert board.loc[able, "val/der"].notna().all() and board.loc[able, "test/string_acc"].notna().all()
    assert (board.loc[able, "params"] > 0).all()
    runs = MlflowClient(uri).search_runs([result["experiment_id"]])
    assert {r.info.status for r in runs} == {"FINISHED"}
    (bench,) = [r for r in runs if r.data.tags.get("rnnbench.role") == "benchmark"]
    assert "mlp skipped: mlp maps the whole input at once" in bench.data.tags["rnnbench.skipped"]

    # a new clip, in the held-out test accent, transcribed from the audio file itself
    clip = tmp_path / "clip.wav"
    subprocess.run([shutil.which("espeak-ng"), "-v", "en-gb+m3", "-w", str(clip), "three one four one"],
                   check=True, capture_output=True)
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PREFECT_", "MLFLOW_"))}
    env.update(RNNBENCH_HOME=str(tmp_path / "home"), PYTHONPATH=str(ROOT))  # this checkout, run from elsewhere
    # the champion, and the attention decoder's own logged model
    (attn,) = [r for r in runs if r.data.tags.get("rnnbench.role") == "sweep"
               and r.data.tags.get("variant") == "seq2seq-attn"]
    for which in (["--dataset", "spoken-digit-strings"], ["--model-uri", f"runs:/{attn.info.run_id}/model"]):
        proc = subprocess.run([str(BIN / "rnnbench"), "predict", *which, "--input", str(clip), "--tracking-uri",
                               uri], capture_output=True, text=True, env=env, cwd=elsewhere, timeout=300)
        assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
        (line,) = proc.stdout.strip().splitlines()
        assert re.fullmatch(r"[0-9]*", json.loads(line)["transcript"])
