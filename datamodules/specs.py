"""What a dataset is to rnnbench: ``DatasetSpec`` (task, files, builder, parameters) and
``VENDORED``, the folder the built-in raw files ship in. Light, so listing names costs nothing."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from datamodules.artifact import Prepared
from datamodules.errors import DataError

VENDORED = Path(__file__).parent / "data"


@dataclass(frozen=True)
class DatasetSpec:
    name: str
    modality: str  # speech | text | timeseries | image | synthetic
    task: str  # classification | forecasting | regression | language-model | sequence
    description: str
    folder: str  # under datamodules/data, or the user's --source directory
    files: tuple[str, ...]
    build: Callable[[dict[str, Path], dict[str, Any]], Prepared]
    defaults: dict[str, Any] = field(default_factory=dict)
    # versions of outside tools whose output ends up in the artifact (part of the cache key);
    # raises DataError saying how to install a missing one, before any work starts
    versions: Callable[[], dict[str, str]] | None = None
    source: Path | None = None  # a user's dataset: the file or folder it was registered from
    snapshot: Path | None = None  # ... and the artifact registered for its default parameters
    kind: str = "built-in"  # or the --kind a user's dataset was registered with
    # a long-memory task: each variant's best model records how much every input step still
    # moves its loss, plotted per dataset after a benchmark (flows.gradients)
    input_gradients: bool = False

    def params(self, overrides: dict[str, Any] | None = None) -> dict[str, Any]:
        overrides = dict(overrides or {})
        unknown = sorted(set(overrides) - set(self.defaults))
        if unknown:
            raise DataError(
                f"dataset {self.name!r} has no parameter(s) {unknown}; valid: {sorted(self.defaults)}"
            )
        merged = {**self.defaults, **overrides}
        for key, value in merged.items():
            if isinstance(value, (int, float)) and not isinstance(value, bool) and value <= 0:
                raise DataError(f"dataset {self.name!r}: {key} must be positive, got {value}")
        return merged
