"""One rich progress display for a whole benchmark, fed by a Ray Tune callback in the driver."""

from __future__ import annotations

from contextlib import contextmanager
from typing import Iterator

from ray.tune import Callback
from rich.progress import (BarColumn, MofNCompleteColumn, Progress, SpinnerColumn, TextColumn,
                           TimeElapsedColumn)

from flows.render import console

_display: "Display | None" = None


class Display:
    """One bar for the benchmark and one per running sweep (sweeps may run side by side, each
    in its own thread: rich's Progress is thread-safe)."""

    def __init__(self, progress: Progress, total_sweeps: int):
        self.progress = progress
        self.overall = progress.add_task("sweeps", total=total_sweeps)
        self.sweeps: dict[str, int] = {}

    def start_sweep(self, key: str, label: str, total_epochs: int) -> None:
        if key in self.sweeps:
            self.progress.remove_task(self.sweeps.pop(key))
        self.sweeps[key] = self.progress.add_task(label, total=total_epochs)

    def update_sweep(self, key: str, completed: int, description: str) -> None:
        if key in self.sweeps:
            self.progress.update(self.sweeps[key], completed=completed, description=description)

    def end_sweep(self, key: str, summary: str) -> None:
        if key in self.sweeps:
            self.progress.remove_task(self.sweeps.pop(key))
        self.progress.console.print(summary)
        self.progress.advance(self.overall)


@contextmanager
def display(total_sweeps: int, enabled: bool = True) -> Iterator[Display | None]:
    """Install the benchmark's progress display for the duration of the block."""
    global _display
    if not enabled:
        yield None
        return
    columns = (SpinnerColumn(), TextColumn("{task.description}"), BarColumn(),
               MofNCompleteColumn(), TimeElapsedColumn())
    with Progress(*columns, console=console, transient=False) as progress:
        _display = Display(progress, total_sweeps)
        try:
            yield _display
        finally:
            _display = None


def current() -> Display | None:
    return _display


class TrialProgress(Callback):
    """Epochs done across the sweep's trials (an early-stopped trial counts as done).

    Holds no display itself: Tune pickles its callbacks with the experiment state.
    """

    def __init__(self, key: str, label: str, metric: str, mode: str, max_epochs: int):
        self.key, self.label, self.metric, self.mode, self.max_epochs = key, label, metric, mode, max_epochs

    def _refresh(self, trials) -> None:
        shown = current()
        if shown is None:
            return
        done, best = 0, None
        for trial in trials:
            result = trial.last_result or {}
            finished = trial.status in ("TERMINATED", "ERROR")
            done += self.max_epochs if finished else min(result.get("training_iteration", 0), self.max_epochs)
            value = result.get(self.metric)
            if value is not None and (best is None or (value > best if self.mode == "max" else value < best)):
                best = value
        best_text = f"  best {self.metric} {best:.3f}" if best is not None else ""
        shown.update_sweep(self.key, done, f"{self.label}  trials {len(trials)}{best_text}")

    def on_trial_result(self, iteration, trials, trial, result, **info):
        self._refresh(trials)

    def on_trial_complete(self, iteration, trials, trial, **info):
        self._refresh(trials)

    def on_trial_error(self, iteration, trials, trial, **info):
        self._refresh(trials)
