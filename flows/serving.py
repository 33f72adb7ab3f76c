"""Packaging a trained model for MLflow: weights, JSON side files, code and pinned requirements."""

from __future__ import annotations

import importlib.util
import json
import shutil
from importlib import metadata
from pathlib import Path
from typing import Any

import numpy as np
import torch

import datamodules
import modules
from flows.training import PreparedData
from modules import tasks
from modules.tasks import Task
from modules.variants import Variant

MODEL_CODE = Path(__file__).with_name("pyfunc_model.py")
MODEL_NAME = "model"


AUDIO_LIBRARIES = ("librosa", "soundfile")  # what a model trained on audio featurizes clips with


def requirements(audio: bool = False) -> list[str]:
    pins = []
    for dist in ("torch", "pytorch-lightning", "torchmetrics", "numpy", "pandas", "mlflow",
                 *(AUDIO_LIBRARIES if audio else ())):
        version = metadata.version(dist).split("+")[0]  # a local tag (+cpu) is not on PyPI
        pins.append(f"{dist}=={version}")
    return pins


def sample_text(module, vocab: list[str], prompt: str = "ROMEO.\n", length: int = 400,
                temperature: float = 0.8, seed: int = 0) -> str:
    """Characters drawn one at a time from a trained character language model."""
    index = {c: i for i, c in enumerate(vocab)}
    ids = [index.get(c, 1) for c in prompt]
    generator = torch.Generator().manual_seed(seed)
    module.eval()
    with torch.no_grad():
        for _ in range(length):
            context = torch.tensor([ids[-256:]])
            logits = module.net(context, torch.tensor([context.size(1)]))[0, -1]
            logits[:2] = float("-inf")  # never emit padding or <unk>
            probs = torch.softmax(logits / temperature, dim=-1)
            ids.append(int(torch.multinomial(probs, 1, generator=generator)))
    return "".join(vocab[i] for i in ids)


def package_dir(module_name: str) -> Path | None:
    """The folder (or single file) of the top-level package a module belongs to."""
    spec = importlib.util.find_spec(module_name.split(".")[0])
    if spec is None or spec.origin is None:
        return None
    origin = Path(spec.origin)
    return origin.parent if origin.name == "__init__.py" else origin


# The part of ``datamodules`` a served model runs: the tokenizing, scaling and audio-featurizing
# code that preparation used (not the readers, nor the vendored raw data).
SERVED_DATA_CODE = ("__init__.py", "text.py", "scaling.py", "artifact.py", "errors.py", "calendar.py",
                    "audio.py", "splits.py")


def _served_datamodules(out: Path) -> Path:
    package = out / "code" / "datamodules"
    package.mkdir(parents=True, exist_ok=True)
    for name in SERVED_DATA_CODE:
        source = Path(datamodules.__file__).parent / name
        if source.is_file():
            shutil.copyfile(source, package / name)
    return package


def code_paths(variant: Variant, task: Task, out: Path) -> list[str]:
    """The code a logged model imports: rnnbench's ``modules``, the served part of
    ``datamodules``, plus the package of a variant or a task defined outside rnnbench, so the
    model loads where none of them is installed."""
    paths = {Path(modules.__file__).parent, _served_datamodules(out)}
    outside = {None if variant.builtin else variant.module, type(variant).__module__, tasks.module_of(task)}
    for module_name in outside:
        if module_name and module_name.split(".")[0] != "modules":
            found = package_dir(module_name)
            if found is not None:
                paths.add(found)
    return sorted(str(p) for p in paths)


def write_model_files(module, variant: Variant, task: Task, hparams: dict[str, Any],
                      dataset: PreparedData, out: Path) -> dict[str, str]:
    """Weights and the JSON spec the pyfunc rebuilds the network from; returns MLflow artifacts."""
    manifest = dataset.manifest
    spec: dict[str, Any] = {
        "variant": variant.to_spec(), "task": task.name, "task_module": tasks.module_of(task),
        # task-level defaults spelled out: the model is rebuilt as trained even if one changes
        "hparams": task.resolved(hparams), "data": dataset.data,
        "dataset": manifest["dataset"], "content_hash": manifest["content_hash"],
    }
    for extra in ("labels", "vocab", "scaler", "tokenizer", "channels", "featurizer", "series", "calendar"):
        if extra in dataset.extras:
            spec[extra] = dataset.extras[extra]
    out.mkdir(parents=True, exist_ok=True)
    torch.save(module.net.state_dict(), out / "weights.pt")
    (out / "spec.json").write_text(json.dumps(spec, sort_keys=True))
    return {"weights": str(out / "weights.pt"), "spec": str(out / "spec.json")}


def log_model(tracking_uri: str, run_id: str, module, variant: Variant, task: Task,
              hparams: dict[str, Any], dataset: PreparedData, workdir: Path) -> str:
    """Log the model on ``run_id``; returns its ``runs:/`` URI."""
    import mlflow

    artifacts = write_model_files(module, variant, task, hparams, dataset, workdir)
    example = input_example(dataset)
    mlflow.set_tracking_uri(tracking_uri)
    with mlflow.start_run(run_id=run_id):
        mlflow.pyfunc.log_model(
            name=MODEL_NAME, python_model=str(MODEL_CODE), artifacts=artifacts,
            code_paths=code_paths(variant, task, workdir), pip_requirements=requirements("featurizer" in dataset.extras),
            signature=signature(example, served_predictions(artifacts, example), "featurizer" in dataset.extras),
            input_example=example,
        )
    # start_run(run_id=...) ends the run as FINISHED on exit; the caller decides the final status
    mlflow.MlflowClient(tracking_uri).update_run(run_id, status="RUNNING")
    return f"runs:/{run_id}/{MODEL_NAME}"


def input_example(dataset: PreparedData, n: int = 2) -> "pd.DataFrame":
    """The first ``n`` test examples as a user hands them to the served model: raw text, token
    ids, or (T, F) values in the data's own units (each series' own for many series; calendar
    channels left out and given as timestamps instead, for a model that reads them)."""
    import pandas as pd

    extras, split = dataset.extras, dataset.splits["test"]
    seqs = split.x[:n]
    if "tokenizer" in extras:
        vocab, chars = extras["vocab"], extras["tokenizer"].get("level") == "char"
        words = [[vocab[i] for i in s if i > 1] for s in seqs]  # no padding, no <unk>
        return pd.DataFrame({"text": ["".join(w) if chars else " ".join(w) for w in words]})
    if dataset.data.get("vocab_size"):
        return pd.DataFrame({"sequence": [np.asarray(s).astype(int).tolist() for s in seqs]})
    frame = pd.DataFrame()
    info, raw = extras.get("series"), []
    names = []
    for i, seq in enumerate(seqs):
        scaler = extras.get("scaler")
        if info is not None:
            k = int(split.ids[i][0])
            names.append(info["names"][k])
            scaler = {"mean": info["mean"][k], "std": info["std"][k]}
        values = np.asarray(seq, dtype=np.float64)
        values = values.reshape(len(values), -1)
        if scaler is not None:
            values = values * np.asarray(scaler["std"], dtype=np.float64) + np.asarray(scaler["mean"], dtype=np.float64)
        raw.append(values)
    cal = extras.get("calendar")
    if cal:  # the model computes these channels from timestamps
        width = int(dataset.manifest.get("calendar_channels", 4 * len(cal["features"])))
        raw = [v[:, :-width] for v in raw]
        frame["time"] = [pd.date_range("2024-01-01", periods=len(v), freq=cal["freq"]).astype(str).tolist()
                         for v in raw]
    frame["sequence"] = [v.tolist() for v in raw]
    if info is not None:
        frame["series"] = names
    return frame[[c for c in ("sequence", "series", "time") if c in frame]]


def signature(example: "pd.DataFrame", output: "pd.DataFrame", audio: bool = False):
    """The served model's signature: the example's columns (a sequence or timestamps as any
    nested list, so whole numbers are accepted where floats were seen) and the predictions';
    a model trained on audio also reads an ``audio`` column of clips (paths or bytes)."""
    from mlflow.models import ModelSignature, infer_signature
    from mlflow.types.schema import AnyType, ColSpec, DataType, Schema

    columns = [ColSpec(DataType.string if c in ("text", "series") else AnyType(), c)
               for c in example.columns]
    if audio:  # frames, or clips the model featurizes itself: either column will do
        columns = [ColSpec(AnyType(), "sequence", required=False), ColSpec(AnyType(), "audio", required=False)]
    inputs = Schema(columns)
    return ModelSignature(inputs=inputs, outputs=infer_signature(example, output).outputs)


def served_predictions(artifacts: dict[str, str], example: "pd.DataFrame") -> "pd.DataFrame":
    """What the pyfunc built from ``artifacts`` predicts for ``example``, loaded as MLflow will."""
    import types

    from flows.pyfunc_model import SequenceModel

    model = SequenceModel()
    model.load_context(types.SimpleNamespace(artifacts=artifacts))
    return model.predict(None, example)
