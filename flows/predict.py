"""``rnnbench predict``: a registered model (``models:/rnnbench-<dataset>@champion``, or any
model URI) on a file of raw inputs, one prediction per input.

The file's format comes from its extension: ``.txt`` (one text per line), ``.csv`` (a ``text``
column; a ``sequence`` column of JSON lists; or the rows of one window, a column per channel),
``.jsonl`` (one object per line with the served model's columns, or a bare text or list) and
audio clips (``.wav .flac .ogg``, which the model featurizes itself with the settings it was
trained with).
What a model reads is in its ``spec.json`` (see ``flows.pyfunc_model``); the file is checked
against it before anything is predicted. Nothing read from the file is unpickled.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pandas as pd

from flows import registry

AUDIO = (".wav", ".flac", ".ogg")
FORMATS = {".txt": "text", ".csv": "csv", ".jsonl": "jsonl", **{ext: "audio" for ext in AUDIO}}


class PredictError(ValueError):
    """Bad input to ``rnnbench predict``: one line saying what is wrong and what is valid."""


def input_format(path: Path) -> str:
    """The input's format by extension; a missing or unreadable file fails here, before any
    model is loaded."""
    fmt = FORMATS.get(path.suffix.lower())
    if fmt is None:
        raise PredictError(f"{path}: unknown input format {path.suffix or '(no extension)'!r}; "
                           f"valid: {', '.join(FORMATS)}")
    if not path.is_file():
        raise PredictError(f"{path}: no such file")
    try:
        with open(path, "rb") as fh:
            fh.read(1)
    except OSError as exc:
        raise PredictError(f"{path}: cannot read it ({exc.strerror})") from None
    return fmt


def model_uri(tracking_uri: str, dataset: str | None, uri: str | None) -> str:
    """``uri`` as given, or the dataset's champion, checked to exist in the registry."""
    if uri:
        return uri
    if not dataset:
        raise PredictError("name a dataset (--dataset NAME) or a model (--model-uri URI)")
    from mlflow.exceptions import MlflowException

    name = registry.model_name(dataset)
    client = registry._client(tracking_uri)
    try:
        client.get_model_version_by_alias(name, registry.CHAMPION)
    except MlflowException:
        known = registry.registered(tracking_uri)
        raise PredictError(
            f"no registered model {name!r} with alias {registry.CHAMPION!r} in {tracking_uri}; "
            f"registered: {', '.join(known) if known else 'none (a finished benchmark registers one per dataset)'}"
        ) from None
    return registry.champion_uri(dataset)


def load(uri: str):
    """The pyfunc at ``uri`` and the spec it was built from."""
    import mlflow
    from mlflow.exceptions import MlflowException

    try:
        model = mlflow.pyfunc.load_model(uri)
    except (MlflowException, OSError) as exc:
        raise PredictError(f"cannot load model {uri}: {str(exc).splitlines()[0]}") from None
    try:
        spec = getattr(model.unwrap_python_model(), "spec", None)
    except MlflowException:  # a model of another flavour
        spec = None
    if spec is None:
        raise PredictError(f"{uri} is not an rnnbench model (it has no spec.json)")
    return model, spec


def reads(spec: dict[str, Any]) -> str:
    """What a model reads: ``text``, ``audio`` (frames from clips), ``tokens`` or ``sequence``."""
    if spec.get("tokenizer"):
        return "text"
    if spec.get("featurizer"):
        return "audio"
    return "tokens" if spec["data"].get("vocab_size") else "sequence"


def channels(spec: dict[str, Any]) -> int:
    """Values per step a user gives (the calendar channels are computed from timestamps)."""
    return int(spec["data"]["input_dim"]) - int(spec["data"].get("calendar_channels", 0) or 0)


def read(path: Path, fmt: str, spec: dict[str, Any]) -> pd.DataFrame:
    """The served model's input frame from the file, checked against what the model reads."""
    kind = reads(spec)
    expects = {"text": lambda: "texts: a .txt file (one per line), a .csv with a 'text' column or .jsonl",
               "audio": lambda: f"audio clips ({', '.join(AUDIO)}), or frames as .csv or .jsonl",
               "tokens": lambda: "token ids: .jsonl (one list per line) or .csv with a 'sequence' column",
               "sequence": lambda: f"sequences of {channels(spec)} value(s) per step: .csv (rows are "
                                   "steps, a column per channel) or .jsonl (one list per line)"}[kind]()
    wrong = PredictError(f"{path}: this model reads {expects}")
    if fmt == "audio":
        if kind != "audio":
            raise wrong
        return pd.DataFrame({"audio": [str(path.resolve())]})  # the model featurizes it
    if fmt == "text":
        if kind != "text":
            raise wrong
        lines = [line for line in _text(path).splitlines() if line.strip()]
        if not lines:
            raise PredictError(f"{path}: no text in it (one text per line)")
        return pd.DataFrame({"text": lines})
    frame = _csv(path, spec, kind, wrong) if fmt == "csv" else _jsonl(path, kind)
    return _checked(frame, path, spec, kind, wrong)


def _text(path: Path) -> str:
    try:
        return path.read_text(encoding="utf-8")
    except UnicodeDecodeError as exc:
        raise PredictError(f"{path}: not UTF-8 text ({exc.reason} at byte {exc.start})") from None


def _csv(path: Path, spec: dict[str, Any], kind: str, wrong: PredictError) -> pd.DataFrame:
    try:
        table = pd.read_csv(path, dtype=str, keep_default_na=False)
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as exc:
        raise PredictError(f"{path}: not a readable CSV file ({str(exc).splitlines()[0]})") from None
    if kind == "text":
        if "text" not in table:
            raise PredictError(f"{path}: no 'text' column (columns: {', '.join(table.columns)})")
        return table[["text"]]
    if "sequence" in table:  # one sequence per row, as JSON
        frame = table[[c for c in ("sequence", "series", "time") if c in table]].copy()
        for col in ("sequence", "time"):
            if col in frame:
                frame[col] = [_json(value, path, f"row {i + 2}, column {col!r}")
                              for i, value in enumerate(frame[col])]
        return frame
    if kind == "tokens":
        raise wrong
    # the rows of one window: a column per channel, in the order they were prepared
    extra = [c for c in ("series", "time") if c in table]
    values = table.drop(columns=extra)
    try:
        numbers = values.astype(float)
    except ValueError:
        raise PredictError(f"{path}: every column but series and time must hold numbers "
                           f"(columns: {', '.join(table.columns)})") from None
    frame = pd.DataFrame({"sequence": [numbers.to_numpy().tolist()]})
    if "time" in table:
        frame["time"] = [table["time"].tolist()]
    if "series" in table:
        names = sorted(set(table["series"]))
        if len(names) != 1:
            raise PredictError(f"{path}: one window per CSV file, of one series; found {len(names)}")
        frame["series"] = names
    return frame


def _json(text: str, path: Path, where: str) -> Any:
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise PredictError(f"{path}: {where} is not JSON ({exc.msg})") from None


def _jsonl(path: Path, kind: str) -> pd.DataFrame:
    rows = []
    for i, line in enumerate(_text(path).splitlines(), start=1):
        if not line.strip():
            continue
        value = _json(line, path, f"line {i}")
        if isinstance(value, dict):
            rows.append(value)
        elif isinstance(value, str) and kind == "text":
            rows.append({"text": value})
        elif isinstance(value, list) and kind != "text":
            rows.append({"sequence": value})
        else:
            raise PredictError(f"{path}: line {i} must be a JSON object with the model's columns "
                               f"or a bare {'text' if kind == 'text' else 'list'}")
    if not rows:
        raise PredictError(f"{path}: no inputs in it (one JSON value per line)")
    return pd.DataFrame(rows)


def _checked(frame: pd.DataFrame, path: Path, spec: dict[str, Any], kind: str,
             wrong: PredictError) -> pd.DataFrame:
    import numpy as np

    column = "text" if kind == "text" else "sequence"
    if column not in frame:
        raise PredictError(f"{path}: no {column!r} in it; {str(wrong).split(': ', 1)[1]}")
    if kind == "text":
        if not all(isinstance(t, str) for t in frame["text"]):
            raise PredictError(f"{path}: every 'text' must be a string")
        return frame
    width = channels(spec)
    for i, seq in enumerate(frame["sequence"]):
        try:
            arr = np.asarray(seq, dtype=np.float64)
        except (TypeError, ValueError):
            raise PredictError(f"{path}: input {i + 1} is not a list of numbers "
                               "(of equal-length lists, one per step)") from None
        if arr.size == 0:
            raise PredictError(f"{path}: input {i + 1} is empty")
        if kind == "tokens" and arr.ndim != 1:
            raise PredictError(f"{path}: input {i + 1} must be a flat list of token ids")
        if kind != "tokens":
            steps = arr.reshape(len(arr), -1) if arr.ndim <= 2 else None
            if steps is None or steps.shape[1] != width:
                got = "a deeper nesting" if steps is None else f"{steps.shape[1]} value(s) per step"
                raise PredictError(f"{path}: input {i + 1} has {got}; this model reads {width} per step")
    return frame


def predict(model, frame: pd.DataFrame, uri: str) -> pd.DataFrame:
    from mlflow.exceptions import MlflowException

    try:
        return model.predict(frame)
    except (MlflowException, ValueError, KeyError) as exc:
        raise PredictError(f"{uri} cannot predict this input: {str(exc).splitlines()[0]}") from None


def lines(predictions: pd.DataFrame) -> list[str]:
    """One JSON object per input, in input order."""
    return [json.dumps(row, default=_plain) for row in predictions.to_dict(orient="records")]


def _plain(value: Any) -> Any:
    import numpy as np

    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    return str(value)

