"""The MLflow pyfunc every rnnbench model is logged as (MLflow "models from code").

Loads weights as a state_dict with ``weights_only=True`` and the vocabulary, scaler and labels
from JSON, so loading never unpickles arbitrary objects. Rebuilds the network from the variant
and task recorded in ``spec.json``; needs only the ``modules`` package and the tokenizing and
scaling code of ``datamodules``, which are logged beside it as code (with the package of a
variant or task defined outside rnnbench).

Input: a DataFrame with a ``text`` column (text, character and word models), an ``audio``
column (a model trained on audio clips: each row a clip's file path or its bytes, WAV, FLAC or
OGG, featurized with the sample rate and features the model was trained with, by the same
code) or a ``sequence`` column holding one (T, F) nested list per row (speech frames such as
log-mel features, generic
sequences, or a forecasting window of raw values, every channel in the order it was prepared;
token ids for a dataset without a tokenizer, such as copy-memory). A forecasting model trained
on many series also needs a ``series`` column naming each row's series (its own scaling is
applied and undone); one trained with calendar inputs needs a ``time`` column holding each
window's timestamps (the calendar channels are computed from them, never given).
Output: as the task formats it: ``label`` and ``probability`` (classification), ``prediction``
(regression; per-step tasks: the predicted next token or label at every step),
``t+1``..``t+H`` (forecasting, in the series' own units) or ``transcript`` (transcription: the
label string, e.g. ``3141``).
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
        self.calendar = self.spec.get("calendar")

    def _scalers(self, frame: pd.DataFrame) -> list:
        """Each row's scaler: the dataset's, or for many series the named series' own."""
        info = self.spec.get("series")
        if info is None:
            return [self.spec.get("scaler")] * len(frame)
        if "series" not in frame:
            raise ValueError("this model forecasts many series: give a 'series' column naming each "
                             f"row's series (e.g. {', '.join(map(repr, info['names'][:3]))})")
        index = {name: i for i, name in enumerate(info["names"])}
        unknown = sorted({str(k) for k in frame["series"]} - set(index))
        if unknown:
            raise ValueError(f"unknown series {unknown[:5]}; the model knows {len(index)} series "
                             f"(e.g. {', '.join(map(repr, info['names'][:3]))})")
        return [{"mean": info["mean"][index[str(k)]], "std": info["std"][index[str(k)]]}
                for k in frame["series"]]

    def _calendar(self, frame: pd.DataFrame, row: int, steps: int) -> np.ndarray:
        from datamodules import calendar

        cal = self.calendar
        if "time" not in frame:
            raise ValueError(f"this model reads calendar inputs ({', '.join(cal['features'])}): "
                             "give a 'time' column holding each window's timestamps")
        times = pd.to_datetime(pd.Series(list(frame["time"].iloc[row])))
        if len(times) != steps:
            raise ValueError(f"row {row}: {len(times)} timestamps for a window of {steps} steps")
        return calendar.channels(times, cal["features"], cal["freq"], cal["horizon"])

    def _clips(self, clips) -> list:
        """Each clip decoded, featurized and scaled exactly as preparation did (in float32)."""
        import io

        from datamodules.audio import decode, featurize

        featurizer = self.spec["featurizer"]
        seqs = []
        for clip in clips:
            source = io.BytesIO(clip) if isinstance(clip, (bytes, bytearray)) else str(clip)
            samples, _ = decode(source, int(featurizer["sample_rate"]))
            frames = featurize(samples, featurizer)
            seqs.append(torch.from_numpy(np.ascontiguousarray(self.scale(frames, self.spec["scaler"]))))
        return seqs

    def _encode(self, frame: pd.DataFrame) -> list:
        if "audio" in frame and self.spec.get("featurizer"):
            return self._clips(frame["audio"])
        if self.tokenizer is not None:
            return [torch.from_numpy(self.tokenizer(str(text))) for text in frame["text"]]
        if self.spec["data"].get("vocab_size"):  # token ids given as they are
            return [torch.as_tensor(np.asarray(seq, dtype=np.int64).reshape(-1)) for seq in frame["sequence"]]
        seqs = []
        for row, (seq, scaler) in enumerate(zip(frame["sequence"], self._scalers(frame))):
            arr = np.asarray([np.asarray(step, dtype=np.float64) for step in seq], dtype=np.float64)
            if arr.ndim == 1:
                arr = arr[:, None]
            if self.calendar:
                arr = np.concatenate([arr, self._calendar(frame, row, len(arr))], axis=1)
            scaled = self.scale(arr, scaler) if scaler else arr  # in float64, then as the model reads it
            seqs.append(torch.from_numpy(np.asarray(scaled, dtype=np.float32)))
        return seqs

    def predict(self, context, model_input: pd.DataFrame, params=None) -> pd.DataFrame:
        frame = model_input if isinstance(model_input, pd.DataFrame) else pd.DataFrame(model_input)
        seqs = self._encode(frame)
        lengths = torch.tensor([len(s) for s in seqs], dtype=torch.int64)
        with torch.no_grad():
            out = self.net(pad_sequence(seqs, batch_first=True), lengths)
        if self.spec.get("series") is None:
            return self.task.predictions(out, lengths, self.spec)
        # many series: each row's forecast back in its own series' units
        return pd.concat([self.task.predictions(out[i:i + 1], lengths[i:i + 1], {**self.spec, "scaler": s})
                          for i, s in enumerate(self._scalers(frame))], ignore_index=True)


mlflow.models.set_model(SequenceModel())
