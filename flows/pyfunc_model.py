"""The MLflow pyfunc every rnnbench model is logged as (MLflow "models from code").

Loads weights as a state_dict with ``weights_only=True`` and the vocabulary, scaler and labels
from JSON, so loading never unpickles arbitrary objects. Rebuilds the network from the variant
and task recorded in ``spec.json``; needs only the ``modules`` package and the tokenizing and
scaling code of ``datamodules``, which are logged beside it as code (with the package of a
variant or task defined outside rnnbench).

Input: a DataFrame with a ``text`` column (text, character and word models) or a ``sequence``
column holding one (T, F) nested list per row (speech frames such as log-mel features, generic
sequences, or a forecasting window of raw values, every channel in the order it was prepared;
token ids for a dataset without a tokenizer, such as copy-memory).
Output: as the task formats it: ``label`` and ``probability`` (classification), ``prediction``
(regression; per-step tasks: the predicted next token or label at every step) or
``t+1``..``t+H`` (forecasting, in the series' own units).
"""

import importlib
import json

import mlflow
import numpy as np
import pandas as pd
import torch
from mlflow.pyfunc import PythonModel
from torch.nn.utils.rnn import pad_sequence


class SequenceModel(PythonModel):
    def load_context(self, context) -> None:
        from datamodules.scaling import apply
        from datamodules.text import Tokenizer
        from modules import tasks
        from modules.variants import Variant

        with open(context.artifacts["spec"]) as fh:
            self.spec = json.load(fh)
        if self.spec.get("task_module"):  # a task defined outside rnnbench registers on import
            importlib.import_module(self.spec["task_module"])
        self.task = tasks.get(self.spec["task"])
        variant = Variant.from_spec(self.spec["variant"])
        self.net = variant.build(self.task, self.spec["data"], self.task.as_logged(self.spec["hparams"]))
        state = torch.load(context.artifacts["weights"], map_location="cpu", weights_only=True)
        self.net.load_state_dict(state)
        self.net.eval()
        tok = self.spec.get("tokenizer")
        self.tokenizer = Tokenizer(tok, self.spec["vocab"]) if tok else None
        self.scale = apply

    def _encode(self, frame: pd.DataFrame) -> list:
        if self.tokenizer is not None:
            return [torch.from_numpy(self.tokenizer(str(text))) for text in frame["text"]]
        if self.spec["data"].get("vocab_size"):  # token ids given as they are
            return [torch.as_tensor(np.asarray(seq, dtype=np.int64).reshape(-1)) for seq in frame["sequence"]]
        scaler = self.spec.get("scaler")
        seqs = []
        for seq in frame["sequence"]:
            arr = np.asarray([np.asarray(step, dtype=np.float64) for step in seq], dtype=np.float64)
            if arr.ndim == 1:
                arr = arr[:, None]
            scaled = self.scale(arr, scaler) if scaler else arr  # in float64, then as the model reads it
            seqs.append(torch.from_numpy(np.asarray(scaled, dtype=np.float32)))
        return seqs

    def predict(self, context, model_input: pd.DataFrame, params=None) -> pd.DataFrame:
        frame = model_input if isinstance(model_input, pd.DataFrame) else pd.DataFrame(model_input)
        seqs = self._encode(frame)
        lengths = torch.tensor([len(s) for s in seqs], dtype=torch.int64)
        with torch.no_grad():
            out = self.net(pad_sequence(seqs, batch_first=True), lengths)
        return self.task.predictions(out, lengths, self.spec)


mlflow.models.set_model(SequenceModel())
