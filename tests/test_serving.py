"""A logged model predicts from raw input what the in-memory model predicts, for every task:
classification, forecasting, regression, per-step labels (token ids) and a language model."""

from __future__ import annotations

import io
import types

import numpy as np
import pandas as pd
import pytest
import torch

from datamodules.scaling import invert
from flows.serving import write_model_files
from flows.training import PreparedData, build_module
from modules.tasks import TASKS
from modules.variants import VARIANTS

HP = {"hidden_size": 8, "num_layers": 1, "dropout": 0.0, "lr": 0.01, "batch_size": 8}


def _served(tmp_path, module, dataset):
    from flows.pyfunc_model import SequenceModel

    task = TASKS[dataset.manifest["task"]]
    artifacts = write_model_files(module, VARIANTS["gru"], task, HP, dataset, tmp_path)
    model = SequenceModel()
    model.load_context(types.SimpleNamespace(artifacts=artifacts))
    return model


def _raw(dataset, seqs):
    scaler = dataset.extras.get("scaler")
    if scaler is None:
        return [s.tolist() for s in seqs]
    std, mean = np.asarray(scaler["std"]), np.asarray(scaler["mean"])
    return [(s.astype(np.float64) * std + mean).tolist() for s in seqs]


@pytest.mark.parametrize("name", ["japanese-vowels", "sunspots", "adding", "copy-memory", "shakespeare-char"])
def test_a_logged_model_predicts_what_the_in_memory_model_predicts(prepared, tmp_path, name):
    artifact, manifest = prepared[name]
    dataset = PreparedData.load(artifact)
    task = TASKS[manifest["task"]]
    torch.manual_seed(0)
    module = build_module(VARIANTS["gru"], task, task.resolved(HP), dataset.data).eval()
    model = _served(tmp_path, module, dataset)
    test = dataset.splits["test"]
    seqs = test.x[:5]
    with torch.no_grad():
        lengths = torch.tensor([len(s) for s in seqs])
        padded = torch.nn.utils.rnn.pad_sequence([torch.as_tensor(s) for s in seqs], batch_first=True)
        out = module(padded, lengths)
    if name == "shakespeare-char":  # raw text in, next characters out
        vocab = dataset.extras["vocab"]
        texts = ["".join(vocab[i] for i in s) for s in seqs]
        served = model.predict(None, pd.DataFrame({"text": texts}))["prediction"].tolist()
        assert served == ["".join(vocab[i] for i in row) for row in out.argmax(-1).tolist()]
        return
    served = model.predict(None, pd.DataFrame({"sequence": _raw(dataset, seqs)}))
    if name == "japanese-vowels":
        labels = dataset.extras["labels"]
        assert served["label"].tolist() == [labels[i] for i in out.argmax(-1).tolist()]
    elif name == "sunspots":  # forecasts in sunspot numbers
        expected = invert(out.numpy(), dataset.extras["scaler"], manifest["target_channel"])
        np.testing.assert_allclose(served.to_numpy(), expected, rtol=1e-4, atol=1e-3)
        assert list(served.columns) == [f"t+{i}" for i in range(1, manifest["horizon"] + 1)]
    elif name == "adding":
        np.testing.assert_allclose(served["prediction"].to_numpy(), out[:, 0].numpy(), rtol=1e-4, atol=1e-5)
    else:  # copy-memory: token ids in, a label per step out
        labels = dataset.extras["labels"]
        assert served["prediction"].tolist() == [" ".join(labels[i] for i in row)
                                                 for row in out.argmax(-1).tolist()]


KINDS = ["japanese-vowels", "rotten-tomatoes", "sunspots", "store-sales", "store-sales+calendar",
         "adding", "copy-memory", "shakespeare-char"]


@pytest.fixture(scope="module")
def logged(prepared, data_root, tmp_path_factory):
    """One untrained gru per kind of input, logged as a sweep logs its model: name -> (tracking
    URI, model URI, the network, its dataset)."""
    import mlflow

    from datamodules.catalog import prepare
    from flows.serving import log_model

    root = tmp_path_factory.mktemp("logged")
    uri = f"sqlite:///{root / 'mlflow.db'}"
    client = mlflow.MlflowClient(uri)
    experiment = client.create_experiment("serving", (root / "artifacts").as_uri())
    models = {}
    for name in KINDS:
        if name == "store-sales+calendar":
            artifact = prepare("store-sales", data_root, {"calendar": "dow"})[0]
        else:
            artifact = prepared[name][0]
        dataset = PreparedData.load(artifact)
        task = TASKS[dataset.manifest["task"]]
        torch.manual_seed(0)
        module = build_module(VARIANTS["gru"], task, task.resolved(HP), dataset.data).eval()
        run_id = client.create_run(experiment).info.run_id
        model_uri = log_model(uri, run_id, module, VARIANTS["gru"], task, HP, dataset, root / name)
        client.set_terminated(run_id)
        models[name] = (uri, model_uri, module, dataset)
    return models


@pytest.mark.parametrize("name", KINDS)
def test_every_logged_model_carries_a_signature_and_an_input_example_it_predicts(logged, tmp_path, name):
    """Through MLflow (schema enforced), the logged input example gives what the in-memory
    pyfunc gives, and those are the network's own outputs on the same test examples."""
    import mlflow

    from flows.serving import input_example

    uri, model_uri, module, dataset = logged[name]
    mlflow.set_tracking_uri(uri)
    info = mlflow.models.get_model_info(model_uri)
    assert info.signature is not None and info.saved_input_example_info is not None
    example = input_example(dataset)
    assert set(info.signature.inputs.input_names()) == set(example.columns)
    loaded = mlflow.pyfunc.load_model(model_uri).predict(example)
    in_memory = _served(tmp_path / "direct", module, dataset).predict(None, example)
    pd.testing.assert_frame_equal(loaded.reset_index(drop=True), in_memory, check_dtype=False)
    seqs = dataset.splits["test"].x[:len(example)]
    with torch.no_grad():
        out = module(torch.nn.utils.rnn.pad_sequence([torch.as_tensor(s) for s in seqs], batch_first=True),
                     torch.tensor([len(s) for s in seqs]))
    if dataset.manifest["task"] == "classification" and "tokenizer" not in dataset.extras:
        labels = dataset.extras["labels"]  # the example is those test examples themselves
        assert in_memory["label"].tolist() == [labels[i] for i in out.argmax(-1).tolist()]


def test_every_kind_of_logged_model_loads_in_a_fresh_process_outside_the_repository(logged, tmp_path):
    """No PYTHONPATH, another working directory: the model's own logged code rebuilds it, and
    its predictions on its input example are the in-memory model's."""
    import json
    import os
    import subprocess
    import sys

    from flows.serving import input_example

    uris = {name: model_uri for name, (_, model_uri, _, _) in logged.items()}
    script = (
        "import json, sys, mlflow\n"
        "mlflow.set_tracking_uri(sys.argv[1])\n"
        "out = {}\n"
        "for name, uri in json.loads(sys.argv[2]).items():\n"
        "    model = mlflow.pyfunc.load_model(uri)\n"
        "    out[name] = model.predict(model.input_example).to_json(orient='split')\n"
        "print(json.dumps(out))\n")
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    proc = subprocess.run([sys.executable, "-c", script, next(iter(logged.values()))[0], json.dumps(uris)],
                          capture_output=True, text=True, cwd=tmp_path, env=env, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    printed = json.loads(proc.stdout.splitlines()[-1])
    for name, (_, _, module, dataset) in logged.items():
        fresh = pd.read_json(io.StringIO(printed[name]), orient="split", dtype=False)
        in_memory = _served(tmp_path / name, module, dataset).predict(None, input_example(dataset))
        pd.testing.assert_frame_equal(fresh, in_memory, check_dtype=False, check_exact=False, rtol=1e-5,
                                      obj=name)


def test_a_model_trained_on_audio_featurizes_clips_itself_as_preparation_did(tmp_path):
    """Clips in (paths or bytes), through MLflow: the same predictions as the prepared frames
    of those clips given to the in-memory network; the audio libraries are pinned."""
    import mlflow
    import soundfile

    from datamodules.catalog import register
    from flows.serving import log_model

    rate = 8000
    for label, pitch in (("low", 220), ("high", 880)):
        (tmp_path / "clips" / label).mkdir(parents=True)
        for k in range(8):
            t = np.arange(rate // 4 + 100 * k) / rate
            soundfile.write(tmp_path / "clips" / label / f"{label}{k}.wav",
                            (0.3 * np.sin(2 * np.pi * (pitch + 20 * k) * t)).astype(np.float32), rate)
    artifact = register("tones", "audio", tmp_path / "clips", {"sample_rate": rate}, tmp_path / "data")[0]
    dataset = PreparedData.load(artifact)
    task = TASKS[dataset.manifest["task"]]
    torch.manual_seed(0)
    module = build_module(VARIANTS["gru"], task, task.resolved(HP), dataset.data).eval()
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    client = mlflow.MlflowClient(uri)
    run_id = client.create_run(client.create_experiment("e", (tmp_path / "a").as_uri())).info.run_id
    model_uri = log_model(uri, run_id, module, VARIANTS["gru"], task, HP, dataset, tmp_path / "m")
    client.set_terminated(run_id)
    mlflow.set_tracking_uri(uri)
    clips = dataset.extras["clips"]
    test = dataset.splits["test"]
    paths = [str(tmp_path / "clips" / clips[i]) for i in test.ids]
    model = mlflow.pyfunc.load_model(model_uri)
    by_path = model.predict(pd.DataFrame({"audio": paths}))
    by_bytes = model.predict(pd.DataFrame({"audio": [open(p, "rb").read() for p in paths]}))
    with torch.no_grad():
        out = module(torch.nn.utils.rnn.pad_sequence([torch.as_tensor(s) for s in test.x], batch_first=True),
                     torch.tensor([len(s) for s in test.x]))
    labels = dataset.extras["labels"]
    assert by_path["label"].tolist() == [labels[i] for i in out.argmax(-1).tolist()]
    np.testing.assert_allclose(by_path["probability"], torch.softmax(out, -1).max(-1).values.numpy(), rtol=1e-5)
    pd.testing.assert_frame_equal(by_path, by_bytes)
    with open(mlflow.pyfunc.get_model_dependencies(model_uri)) as fh:
        pins = fh.read()
    assert "librosa==" in pins and "soundfile==" in pins
