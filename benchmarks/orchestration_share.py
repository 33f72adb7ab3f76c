"""Orchestration share: of a whole benchmark's wall time on the trial slots, the share spent
outside training and evaluation (Prefect, MLflow and Ray start-up, trial start, reporting,
checkpoints, logging, scheduling gaps, final scoring and leaderboards).

Runs ``rnnbench run`` on JapaneseVowels with the quick preset's budget and all its variants
(``--smoke``: the test preset), from data prepared beforehand, and derives the split from what
the run recorded in MLflow: the benchmark, sweep and trial runs' start times, and each
trial's per-epoch ``time/train_epoch_s`` and ``time/val_epoch_s`` (``flows.trial.EpochTimes``:
loading, steps and metrics of the training and validation loops). The capacity is the wall time
times the trial slots Ray offers (CPUs / cpus_per_trial); the share is 1 - (training and
validation time) / capacity (target: at most 0.25), and the rest is split by phase, in
slot-seconds:

- start-up: until the first trial run opens (CLI and Prefect's API, MLflow; the dataset and
  baseline, Ray's start; Tune's set-up and the first actor's start), times the slots;
- trial start: each trial from its run's opening to its first epoch (Lightning set-up);
- in-trial reporting: each trial's time between its epochs (Tune's report and checkpoint,
  MLflow logging);
- between trials: slots without a trial's epochs while trials still ran (trials' ends, new
  actors' start-up, Tune's scheduling, sweeps' start, test scoring and model logging);
- closing: after the last trial (the last sweeps' scoring and model logging, leaderboards,
  shutdown), times the slots.

Usage: python -m benchmarks.orchestration_share [--smoke]
"""

from __future__ import annotations

import os
import re
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from benchmarks.common import finish, parser, report
from benchmarks.tune_sweeps import EPOCH_METRICS, trial_record

ROOT = Path(__file__).resolve().parents[1]
RNNBENCH = str(Path(sys.executable).parent / "rnnbench")
TARGET = 0.25
DATASET = "japanese-vowels"


def preset_for(source: Path, dataset: str) -> str:
    """The preset's text with only ``dataset`` in its list (budget, space and variants kept)."""
    text, n = re.subn(r"(?m)^datasets\s*=.*$", f'datasets = ["{dataset}"]', source.read_text(), count=1)
    assert n == 1, f"{source}: no datasets line"
    return text


def run(preset: Path, home: Path) -> tuple[float, float]:
    from benchmarks.sweep_scaling import run_env

    start = time.time()
    done = subprocess.run([RNNBENCH, "run", "--preset", str(preset)], env=run_env(home),
                          capture_output=True, text=True)
    end = time.time()
    if done.returncode != 0:
        raise SystemExit(f"rnnbench run failed ({done.returncode}):\n{done.stdout[-3000:]}{done.stderr[-3000:]}")
    return start, end


def phases(home: Path, start: float, end: float, slots: int) -> dict[str, float]:
    """Slot-seconds per phase, from the run's MLflow records (see the module's docstring)."""
    from mlflow.tracking import MlflowClient

    client = MlflowClient(f"sqlite:///{home / 'mlflow.db'}")
    experiment = client.get_experiment_by_name("rnnbench")
    runs = client.search_runs([experiment.experiment_id], max_results=5000)
    role = lambda r: r.data.tags.get("rnnbench.role")  # noqa: E731
    bench = next(r for r in runs if role(r) == "benchmark")
    sweeps = [r for r in runs if role(r) == "sweep"]
    trials = [r for r in runs if role(r) == "trial"]
    assert trials, "the run recorded no trials"
    steps = trial_start = inside = 0.0
    spans = []
    by_sweep: dict[str, list[tuple[float, float]]] = {}
    for trial in trials:
        opened, closed, history = trial_record(client, trial)
        first = history[EPOCH_METRICS[0]][0]
        first_epoch_start = first.timestamp / 1000 - sum(history[k][0].value for k in EPOCH_METRICS)
        steps += sum(m.value for ms in history.values() for m in ms)
        trial_start += max(0.0, first_epoch_start - opened)
        inside += closed - opened
        spans.append((opened, closed))
        by_sweep.setdefault(trial.data.tags.get("mlflow.parentRunId"), []).append((opened, closed))
    first_trial, last_trial = min(s for s, _ in spans), max(e for _, e in spans)
    first_sweep = min(r.info.start_time for r in sweeps) / 1000
    bench_start = bench.info.start_time / 1000
    return {
        "start-up: CLI, Prefect, MLflow": slots * (bench_start - start),
        "start-up: data, baseline, Ray": slots * (first_sweep - bench_start),
        "start-up: Tune, first actor": slots * (first_trial - first_sweep),
        "trial start (Lightning set-up)": trial_start,
        "in-trial reporting, checkpoints, logging": inside - trial_start - steps,
        "between trials (actors, scheduling, sweep scoring and logging)":
            slots * (last_trial - first_trial) - inside,
        "closing: last sweeps, leaderboards, shutdown": slots * (end - last_trial),
        "training and validation": steps,
        "_trials": len(trials), "_sweeps": len(sweeps), "_trial_time": inside,
        # wall seconds per sweep, its slots' idle ends (other sweeps' trials may fill them)
        "_sweep_head_s": statistics.median(min(o for o, _ in by_sweep[r.info.run_id]) - r.info.start_time / 1000
                                           for r in sweeps if r.info.run_id in by_sweep),
        "_sweep_tail_s": statistics.median(r.info.end_time / 1000 - max(c for _, c in by_sweep[r.info.run_id])
                                           for r in sweeps if r.info.run_id in by_sweep),
    }


def source_preset(smoke: bool) -> Path:
    return ROOT / "tests" / "presets" / "tiny.toml" if smoke else ROOT / "flows" / "presets" / "quick.toml"


def slots_of(preset_text: str) -> int:
    """The trial slots Ray offers this machine under the preset's budget."""
    import tomllib

    budget = tomllib.loads(preset_text)["budget"]
    return max(1, int((os.cpu_count() or 1) // budget.get("cpus_per_trial", 1)))


def measure(smoke: bool) -> bool:
    """Run the preset (``smoke``: the test preset) on JapaneseVowels from prepared data; print
    and save the line."""
    from benchmarks.sweep_scaling import prepare

    source = source_preset(smoke)
    with tempfile.TemporaryDirectory(prefix="rnnbench-orchestration-") as tmp:
        root = Path(tmp)
        preset = root / f"{source.stem}-{DATASET}.toml"
        preset.write_text(preset_for(source, DATASET))
        home = root / "home"
        home.mkdir()
        prepare([DATASET], home / "data")
        start, end = run(preset, home)
        return summarize(home, start, end, source.stem, preset.read_text(), smoke)


def summarize(home: Path, start: float, end: float, preset_name: str, preset_text: str,
              smoke: bool) -> bool:
    """The share and its split by phase for the ``rnnbench run`` of ``preset_text`` on
    JapaneseVowels that ran in ``home`` from ``start`` to ``end``; print and save the line."""
    slots = slots_of(preset_text)
    split = phases(home, start, end, slots)
    wall = end - start
    capacity = slots * wall
    steps = split["training and validation"]
    share = 1 - steps / capacity
    print(f"  {preset_name} budget on {DATASET}: {split['_sweeps']} sweeps, {split['_trials']} trials, "
          f"wall {wall:.0f} s x {slots} slots = {capacity:.0f} slot-s", flush=True)
    for name, value in split.items():
        if not name.startswith("_"):
            print(f"  {name:<64} {value:7.1f} slot-s  {value / capacity:6.1%}", flush=True)
    print(f"  per sweep (median, wall): {split['_sweep_head_s']:.1f} s from its opening to its first trial "
          f"(Tune, actors), {split['_sweep_tail_s']:.1f} s from its last epoch to its end "
          f"(trials' ends, test scoring, model logging)", flush=True)
    note = (f"training+validation {steps:.0f} of {capacity:.0f} slot-s ({slots} x {wall:.0f} s wall); "
            f"trials open {split['_trial_time'] / capacity:.0%} of it")
    raw = {"preset": preset_name, "dataset": DATASET, "slots": slots, "wall_s": wall,
           "capacity_slot_s": capacity, "phases_slot_s": split}
    return report("orchestration_share", share, "<=", TARGET, note, raw=raw, smoke=smoke)


def main() -> None:
    args = parser(__doc__.splitlines()[0]).parse_args()
    finish(measure(args.smoke), args.smoke)


if __name__ == "__main__":
    main()
