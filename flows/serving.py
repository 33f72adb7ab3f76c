"""Packaging a trained model for MLflow: weights, JSON side files, code and pinned requirements."""

from __future__ import annotations

import json
from importlib import metadata
from pathlib import Path
from typing import Any

import torch

import modules
from datamodules.artifact import read_extra, read_manifest

MODEL_CODE = Path(__file__).with_name("pyfunc_model.py")
MODEL_NAME = "model"
_DATA_KEYS = ("task", "num_classes", "horizon", "input_dim", "vocab_size", "target_channel", "window",
              "outputs", "season")


def requirements() -> list[str]:
    pins = []
    for dist in ("torch", "pytorch-lightning", "torchmetrics", "numpy", "pandas", "mlflow"):
        version = metadata.version(dist).split("+")[0]  # a local tag (+cpu) is not on PyPI
        pins.append(f"{dist}=={version}")
    return pins


def sample_text(module, vocab: list[str], prompt: str = "ROMEO.\n", length: int = 400,
                temperature: float = 0.8, seed: int = 0) -> str:
    """Characters drawn one at a time from a trained character language model."""
    from modules.sequence import apply_head

    index = {c: i for i, c in enumerate(vocab)}
    ids = [index.get(c, 1) for c in prompt]
    generator = torch.Generator().manual_seed(seed)
    module.eval()
    with torch.no_grad():
        for _ in range(length):
            context = torch.tensor([ids[-256:]])
            logits = apply_head(module.net, module.head, context, torch.tensor([context.size(1)]))[0, -1]
            logits[:2] = float("-inf")  # never emit padding or <unk>
            probs = torch.softmax(logits / temperature, dim=-1)
            ids.append(int(torch.multinomial(probs, 1, generator=generator)))
    return "".join(vocab[i] for i in ids)


def write_model_files(module, variant: str, hparams: dict[str, Any], artifact_dir: Path,
                      out: Path, custom_variants: dict[str, str] | None = None) -> dict[str, str]:
    """Weights and the JSON spec the pyfunc rebuilds the network from; returns MLflow artifacts."""
    manifest = read_manifest(artifact_dir)
    spec: dict[str, Any] = {
        "variant": variant, "hparams": hparams, "custom_variants": custom_variants or {},
        "data": {k: manifest[k] for k in _DATA_KEYS if k in manifest},
        "dataset": manifest["dataset"], "content_hash": manifest["content_hash"],
    }
    for extra in ("labels", "vocab", "scaler", "tokenizer", "channels", "featurizer"):
        if extra in manifest.get("extras", []):
            spec[extra] = read_extra(artifact_dir, extra)
    weights = {k: v for k, v in module.state_dict().items() if k.startswith(("net.", "head."))}
    out.mkdir(parents=True, exist_ok=True)
    torch.save(weights, out / "weights.pt")
    (out / "spec.json").write_text(json.dumps(spec, sort_keys=True))
    return {"weights": str(out / "weights.pt"), "spec": str(out / "spec.json")}


def log_model(tracking_uri: str, run_id: str, module, variant: str, hparams: dict[str, Any],
              artifact_dir: Path, workdir: Path, custom_variants: dict[str, str] | None = None) -> str:
    """Log the model on ``run_id``; returns its ``runs:/`` URI."""
    import mlflow

    artifacts = write_model_files(module, variant, hparams, artifact_dir, workdir, custom_variants)
    mlflow.set_tracking_uri(tracking_uri)
    with mlflow.start_run(run_id=run_id):
        mlflow.pyfunc.log_model(
            name=MODEL_NAME, python_model=str(MODEL_CODE), artifacts=artifacts,
            code_paths=[str(Path(modules.__file__).parent)], pip_requirements=requirements(),
        )
    # start_run(run_id=...) ends the run as FINISHED on exit; the caller decides the final status
    mlflow.MlflowClient(tracking_uri).update_run(run_id, status="RUNNING")
    return f"runs:/{run_id}/{MODEL_NAME}"
