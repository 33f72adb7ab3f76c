"""Early-stopping payoff: 16 trials of one search space on JapaneseVowels with ASHA as the quick
preset configures it, against the same 16 trials trained to the full budget, over 3 seeds.

Both sides are sweeps through the Tuner ``flows.sweep`` builds, with the quick preset's search
space for the LSTM on JapaneseVowels, its ASHA settings (grace period, reduction factor) and
two trials at a time; the full side sets ASHA's grace period to the full budget, so that no
trial stops early (one rung, at the last epoch) and everything else stays the same. Per seed,
the ratio is the full side's trial-epochs over ASHA's (target: the median at least 2), and the
quality is each sweep's best validation score over all its trials' epochs (what a sweep picks
its model by): ASHA's median over seeds must be within 1% (relative) of the full runs' median.
Sides alternate (ASHA first for even seeds). The budget is 10 epochs, not the issue's 20 at
most, so that ``make bench`` stays under 10 minutes on 2 cores (see docs/BENCHMARKS.md).

Usage: python -m benchmarks.asha_payoff [--smoke]
"""

from __future__ import annotations

import statistics

from benchmarks.common import finish, parser, report, spread
from benchmarks.tune_sweeps import Workspace, sweep, workspace
from flows.plan import load_preset

TARGET = 2.0
QUALITY_TOLERANCE = 0.01  # relative
DATASET, VARIANT = "japanese-vowels", "lstm"


def best_score(grid, metric: str, mode: str) -> float:
    """The sweep's best validation score over every trial and epoch."""
    pick = max if mode == "max" else min
    return float(pick(pick(r.metrics_dataframe[metric]) for r in grid))


def measure(ws: Workspace, smoke: bool) -> bool:
    """Run the benchmark in ``ws`` (JapaneseVowels prepared, Ray started); print and save its line."""
    from modules import tasks

    assert ws.dataset == DATASET, f"asha_payoff runs on {DATASET}, not {ws.dataset}"
    trials, epochs, seeds = (2, 2, 1) if smoke else (16, 10, 3)
    preset = load_preset("quick")
    space = preset.space_for(DATASET, VARIANT)
    asha = preset.budget.model_copy(update={"num_samples": trials, "max_epochs": epochs,
                                            "max_concurrent_sweeps": 1})
    full = asha.model_copy(update={"grace_period": epochs})
    sides = {"asha": asha, "full": full}
    epochs_run: dict[str, list[int]] = {side: [] for side in sides}
    best: dict[str, list[float]] = {side: [] for side in sides}
    seconds: dict[str, list[float]] = {side: [] for side in sides}
    task = tasks.get(ws.prepared.manifest["task"])
    metric = f"val/{task.monitor}"
    for seed in range(seeds):
        order = list(sides) if seed % 2 == 0 else list(reversed(sides))
        for side in order:
            budget = sides[side].model_copy(update={"seed": seed})
            elapsed, grid, _ = sweep(ws, VARIANT, budget, space, f"asha-payoff-{side}-seed{seed}")
            epochs_run[side].append(sum(int(r.metrics["training_iteration"]) for r in grid))
            best[side].append(best_score(grid, metric, task.mode))
            seconds[side].append(elapsed)
            print(f"  seed {seed} {side}: {epochs_run[side][-1]} trial-epochs, best {metric} "
                  f"{best[side][-1]:.4f}, {elapsed:.0f} s", flush=True)
    if epochs_run["full"] != [trials * epochs] * seeds:
        raise SystemExit(f"the full side ran {epochs_run['full']} trial-epochs, not {trials * epochs} per seed")
    per = [f / a for f, a in zip(epochs_run["full"], epochs_run["asha"])]
    s = spread(per)
    asha_best, full_best = statistics.median(best["asha"]), statistics.median(best["full"])
    gap = (asha_best - full_best) / abs(full_best)
    # worse by more than the tolerance fails; better never does
    worse = -gap if task.mode == "max" else gap
    quality_ok = worse <= QUALITY_TOLERANCE
    note = (f"median best {metric} {asha_best:.4f} ASHA vs {full_best:.4f} full ({gap:+.2%}, "
            f"{'within' if quality_ok else 'NOT within'} 1%); {trials} trials x {epochs} epochs, "
            f"{seeds} seed(s); wall {statistics.median(seconds['asha']):.0f} s vs "
            f"{statistics.median(seconds['full']):.0f} s")
    raw = {"dataset": DATASET, "variant": VARIANT, "trials": trials, "max_epochs": epochs,
           "grace_period": asha.grace_period, "reduction_factor": asha.reduction_factor,
           "max_concurrent_trials": asha.max_concurrent_trials, "space": space, "metric": metric,
           "trial_epochs": epochs_run, "best": best, "fit_seconds": seconds, "ratios": per,
           "spread": s, "quality_gap": gap, "quality_ok": quality_ok}
    return report("asha_payoff", s["median"], ">=", TARGET, note, raw=raw, smoke=smoke, also=quality_ok)


def main() -> None:
    args = parser(__doc__.splitlines()[0]).parse_args()
    with workspace(DATASET) as ws:
        ok = measure(ws, args.smoke)
    finish(ok, args.smoke)


if __name__ == "__main__":
    main()
