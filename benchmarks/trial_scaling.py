"""Trial scaling: 8 identical tiny trials through rnnbench's Tune path, one at a time vs two at
a time, on the machine's cores.

Each side is one sweep through the Tuner ``flows.sweep`` builds (trainable
``flows.trial.train_trial``: Lightning ``fit`` with its MLflow trial run, Tune's report and
checkpoint every epoch; actors reused; one CPU and one torch thread per trial, as a sweep sets
them), with a constant search space so the 8 trials are the same work, and ASHA's grace period
at the full budget so none stops early. Sides differ only in ``max_concurrent_trials`` (1 or 2)
and alternate, one pair per round. The headline is the throughput of the trial phase: from the
first trial's MLflow run opening to the end of the last trial's last epoch (each trial's
start-up, training, reporting and logging, and Tune's scheduling between trials), one at a time over two at a time
(target: at least 1.7). The sweep's fixed start (Tune's set-up, the actors' process start and
imports) falls on both sides alike and is what sweep_scaling and orchestration_share measure;
the ratio of the whole ``Tuner.fit`` times, which includes it, is printed in the note.

The machine is shared, so each round also times a control without Ray, Tune or MLflow: two
plain processes each running ``flows.training.fit`` on the same data (half the epochs of the 8
trials each, one torch thread) at once vs one after another. Its ratio, in the note, is the
scaling the machine allowed at that moment: a trial ratio near it is the machine's limit, not
rnnbench's.

Usage: python -m benchmarks.trial_scaling [--smoke]
"""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

from benchmarks.common import finish, parser, ratios, report, spread
from benchmarks.tune_sweeps import Workspace, sweep, trial_record, workspace
from flows import tracking
from flows.plan import Budget

TARGET = 1.7
TRIALS = 8
VARIANT = "lstm"
# one configuration: the 8 trials are the same work (JapaneseVowels, 14 batches an epoch)
SPACE = {"hidden_size": 32, "num_layers": 1, "dropout": 0.0, "lr": 5e-3, "weight_decay": 0.0,
         "batch_size": 16, "grad_clip": 1.0}


def plain_fit(artifact_dir: Path, epochs: int) -> None:
    """In a child process: ``fit`` as a trial calls it (one thread), without Ray, Tune or MLflow."""
    from flows.training import PreparedData, fit
    from modules import tasks
    from modules.variants import VARIANTS

    data = PreparedData.load(artifact_dir)
    fit(SPACE, data, VARIANTS[VARIANT], tasks.get(data.manifest["task"]), max_epochs=epochs, threads=1)


def control(artifact_dir: Path, epochs: int) -> dict[str, float]:
    """Seconds for two plain ``fit`` processes one after another and at once. The same two
    children serve both sides; before the clock starts each has done its imports and one
    untimed 1-epoch fit (so both sides time warm fits), and each fit waits for a line on stdin."""
    code = ("import sys, warnings, logging; warnings.filterwarnings('ignore'); logging.disable(logging.WARNING); "
            "from benchmarks.trial_scaling import plain_fit; from pathlib import Path; "
            f"data = Path({str(artifact_dir)!r}); plain_fit(data, 1); print('ready', flush=True)\n"
            "while sys.stdin.readline().strip() == 'go':\n"
            f"    plain_fit(data, {epochs}); print('done', flush=True)")
    children = [subprocess.Popen([sys.executable, "-c", code], stdin=subprocess.PIPE,
                                 stdout=subprocess.PIPE, text=True) for _ in range(2)]
    try:
        for child in children:
            if child.stdout.readline().strip() != "ready":
                raise SystemExit(f"the control's plain fit failed ({child.wait()})")
        out = {}
        for side, at_once in (("plain_one_after_another", False), ("plain_at_once", True)):
            start = time.perf_counter()
            for child in children:
                child.stdin.write("go\n")
                child.stdin.flush()
                if not at_once:
                    _done(child)
            if at_once:
                for child in children:
                    _done(child)
            out[side] = time.perf_counter() - start
        return out
    finally:
        for child in children:
            if child.poll() is None:
                child.stdin.close()  # its loop ends at end of input
            child.wait()


def _done(child: subprocess.Popen) -> None:
    if child.stdout.readline().strip() != "done":
        raise SystemExit(f"the control's plain fit failed ({child.wait()})")


def measure(ws: Workspace, smoke: bool) -> bool:
    """Run the benchmark in ``ws`` (JapaneseVowels prepared, Ray started); print and save its line."""
    trials, epochs, rounds = (2, 1, 1) if smoke else (TRIALS, 6, 2)
    times: dict[str, list[float]] = {"one_at_a_time": [], "two_at_a_time": []}
    fits: dict[str, list[float]] = {side: [] for side in times}
    controls: list[dict[str, float]] = []
    concurrency = {"one_at_a_time": 1, "two_at_a_time": 2}
    for round_ in range(rounds):
        order = list(times) if round_ % 2 == 0 else list(reversed(times))
        for side in order:
            budget = Budget(num_samples=trials, max_epochs=epochs, grace_period=epochs,
                            max_concurrent_trials=concurrency[side], cpus_per_trial=1,
                            max_concurrent_sweeps=1, seed=0)
            elapsed, grid, runs = sweep(ws, VARIANT, budget, SPACE, f"trial-scaling-{side}-{round_}")
            done = [int((r.metrics or {}).get("training_iteration", 0)) for r in grid]
            assert done == [epochs] * trials, f"{side}: trials ran {done} epochs, not {epochs} each"
            spans = [trial_record(tracking.client(ws.settings.tracking_uri), r)[:2] for r in runs]
            phase = max(end for _, end in spans) - min(start for start, _ in spans)
            times[side].append(phase)
            fits[side].append(elapsed)
            print(f"  {side}: {trials} trials in {phase:.1f} s ({elapsed:.1f} s in Tuner.fit)", flush=True)
        controls.append(control(ws.artifact_dir, trials * epochs // 2))
        print(f"  control, two plain fit processes: one after another "
              f"{controls[-1]['plain_one_after_another']:.1f} s, at once {controls[-1]['plain_at_once']:.1f} s",
              flush=True)
    per = ratios(times["one_at_a_time"], times["two_at_a_time"])
    s = spread(per)
    whole = spread(ratios(fits["one_at_a_time"], fits["two_at_a_time"]))["median"]
    plain = spread([c["plain_one_after_another"] / c["plain_at_once"] for c in controls])["median"]
    note = (f"{trials} trials x {epochs} epochs ({VARIANT}, japanese-vowels): trial phase one at a "
            f"time {spread(times['one_at_a_time'])['median']:.1f} s, two at a time "
            f"{spread(times['two_at_a_time'])['median']:.1f} s (median of {rounds}); "
            f"whole Tuner.fit ratio {whole:.2f}; control (plain processes) ratio {plain:.2f}")
    raw = {"trials": trials, "epochs": epochs, "variant": VARIANT, "space": SPACE,
           "trial_phase_s": times, "tuner_fit_s": fits, "ratios": per, "spread": s,
           "tuner_fit_ratio": whole, "control_s": controls, "control_ratio": plain}
    return report("trial_scaling", s["median"], ">=", TARGET, note, raw=raw, smoke=smoke)


def main() -> None:
    args = parser(__doc__.splitlines()[0]).parse_args()
    with workspace() as ws:
        ok = measure(ws, args.smoke)
    finish(ok, args.smoke)


if __name__ == "__main__":
    main()
