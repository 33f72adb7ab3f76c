"""`make bench-smoke`: every benchmark at its smoke size, in one process, sharing what the
benchmarks allow so the fixed costs are paid once: one import of torch and Lightning, one Ray
instance and prepared JapaneseVowels for trial_scaling and asha_payoff, and one `rnnbench run`
of the test preset for sweep_scaling's side-by-side side and orchestration_share (the same run
`orchestration_share --smoke` would start). Prints all seven benchmarks' lines; targets are not
enforced (exit 0 unless a benchmark fails to run). Each script's own `--smoke` still runs it
alone.

Usage: python -m benchmarks.smoke
"""

from __future__ import annotations

import os
import sys
import time

# the benchmarks are imported where they run: gpu's processes are spawned, and a spawned child
# imports this module again, which must stay cheap


def _timed(label: str, fn) -> None:
    """Run one benchmark and leave the process as it found it: a benchmark's temporary stores
    are gone afterwards, and MLflow's global tracking URI (which Lightning's MLflow logger sets,
    in the environment too) or a workspace's exported settings would point the next one at them."""
    environ = dict(os.environ)
    start = time.perf_counter()
    try:
        fn()
    finally:
        if "mlflow" in sys.modules:
            sys.modules["mlflow"].set_tracking_uri(None)
        os.environ.clear()
        os.environ.update(environ)
    print(f"  ({label}: {time.perf_counter() - start:.0f} s)", flush=True)


def tune_benchmarks() -> None:
    from benchmarks import asha_payoff, trial_scaling
    from benchmarks.tune_sweeps import workspace

    with workspace(asha_payoff.DATASET) as ws:
        trial_scaling.measure(ws, smoke=True)
        asha_payoff.measure(ws, smoke=True)


def whole_runs() -> None:
    from benchmarks import orchestration_share, sweep_scaling

    preset = sweep_scaling.SMOKE_PRESET
    text = preset.read_text()
    # the side-by-side run is exactly the one orchestration_share's smoke would start
    assert orchestration_share.preset_for(preset, orchestration_share.DATASET) == text, \
        f"{preset} must hold only {orchestration_share.DATASET} to serve orchestration_share"
    assert orchestration_share.source_preset(smoke=True) == preset

    def share(home, start, end) -> None:
        orchestration_share.summarize(home, start, end, preset.stem, text, smoke=True)
    sweep_scaling.measure(str(preset), repeats=1, smoke=True, side_by_side=share)


def main() -> None:
    from benchmarks import data_path, gpu, step_overhead

    start = time.perf_counter()
    _timed("step_overhead", lambda: step_overhead.measure(smoke=True))
    _timed("data_path", lambda: data_path.measure(smoke=True))
    _timed("trial_scaling + asha_payoff", tune_benchmarks)
    _timed("gpu", lambda: gpu.measure(smoke=True))
    _timed("sweep_scaling + orchestration_share", whole_runs)
    print(f"  (bench-smoke: {time.perf_counter() - start:.0f} s)", flush=True)


if __name__ == "__main__":
    main()
