"""The MLflow pyfunc every rnnbench model is logged as (MLflow "models from code").

Loads weights as a state_dict with ``weights_only=True`` and the vocabulary, scaler and labels
from JSON, so loading never unpickles arbitrary objects. Needs only the ``modules`` package,
which is logged beside it as code.

Input: a DataFrame with a ``text`` column (text, character and word models) or a ``sequence``
column holding one (T, F) nested list per row (speech frames such as log-mel features, generic
sequences, or a forecasting window of raw values, every channel in the order it was prepared).
Output: ``label`` and ``probability`` (classification), ``prediction`` (regression; per-step
tasks: the predicted next character or label at every step) or ``t+1``..``t+H`` (forecasting).
"""

import json
import re

import mlflow
import numpy as np
import pandas as pd
import torch
from mlflow.pyfunc import PythonModel
from torch.nn.utils.rnn import pad_sequence


class SequenceModel(PythonModel):
    def load_context(self, context) -> None:
        from modules.registry import build_network
        from modules.sequence import apply_head

        with open(context.artifacts["spec"]) as fh:
            self.spec = json.load(fh)
        self.data = self.spec["data"]
        net, head = build_network(self.spec["variant"], self.spec["hparams"], self.data,
                                  self.spec.get("custom_variants"))
        self.model = torch.nn.ModuleDict({"net": net, "head": head})
        state = torch.load(context.artifacts["weights"], map_location="cpu", weights_only=True)
        self.model.load_state_dict(state)
        self.model.eval()
        self.apply_head = apply_head
        tok = self.spec.get("tokenizer")
        self.chars = bool(tok) and tok.get("level") == "char"
        self.pattern = re.compile(tok["pattern"]) if tok and not self.chars else None
        self.index = {t: i for i, t in enumerate(self.spec.get("vocab", []))}

    def _encode(self, frame: pd.DataFrame) -> list:
        if self.chars:
            return [torch.tensor([self.index.get(c, 1) for c in str(text)] or [1], dtype=torch.int64)
                    for text in frame["text"]]
        if self.pattern is not None:
            max_len = self.spec["tokenizer"]["max_len"]
            seqs = []
            for text in frame["text"].astype(str):
                text = text.lower() if self.spec["tokenizer"].get("lowercase", True) else text
                ids = [self.index.get(t, 1) for t in self.pattern.findall(text)][:max_len] or [1]
                seqs.append(torch.tensor(ids, dtype=torch.int64))
            return seqs
        scaler = self.spec.get("scaler", {"mean": [0.0], "std": [1.0]})  # synthetic data: none
        mean, std = np.asarray(scaler["mean"], np.float32), np.asarray(scaler["std"], np.float32)
        seqs = []
        for seq in frame["sequence"]:
            arr = np.asarray([np.asarray(step, dtype=np.float32) for step in seq], dtype=np.float32)
            if arr.ndim == 1:
                arr = arr[:, None]
            seqs.append(torch.from_numpy((arr - mean) / std))
        return seqs

    def predict(self, context, model_input: pd.DataFrame, params=None) -> pd.DataFrame:
        frame = model_input if isinstance(model_input, pd.DataFrame) else pd.DataFrame(model_input)
        seqs = self._encode(frame)
        lengths = torch.tensor([len(s) for s in seqs], dtype=torch.int64)
        with torch.no_grad():
            out = self.apply_head(self.model["net"], self.model["head"],
                                  pad_sequence(seqs, batch_first=True), lengths)
        if self.data["task"] == "classification":
            probs = out.softmax(dim=-1)
            labels = self.spec["labels"]
            top = probs.argmax(dim=-1)
            return pd.DataFrame({"label": [labels[i] for i in top.tolist()],
                                 "probability": probs.max(dim=-1).values.numpy()})
        if self.data["task"] in ("language-model", "sequence"):
            names = self.spec.get("vocab") or self.spec.get("labels")
            steps = out.argmax(dim=-1).tolist()
            joiner = "" if self.chars else " "
            return pd.DataFrame({"prediction": [joiner.join(names[i] for i in row[:n])
                                                for row, n in zip(steps, lengths.tolist())]})
        if self.data["task"] == "regression":
            if out.shape[1] == 1:
                return pd.DataFrame({"prediction": out[:, 0].numpy()})
            return pd.DataFrame(out.numpy(), columns=[f"prediction_{i}" for i in range(out.shape[1])])
        ch = self.data.get("target_channel", 0)
        scale = self.spec["scaler"]["std"][ch]
        shift = self.spec["scaler"]["mean"][ch]
        values = out.numpy() * scale + shift
        return pd.DataFrame(values, columns=[f"t+{i + 1}" for i in range(values.shape[1])])


mlflow.models.set_model(SequenceModel())
