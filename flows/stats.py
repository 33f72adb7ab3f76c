"""Seed statistics for the leaderboard: each variant's per-seed scores summarised (n, mean,
sample sd, 95% Student-t interval of the mean), the winner chosen on the validation mean, and
every other variant tested against it, one named test applied the same way everywhere.

The test: Welch's two-sided t-test of each variant's validation scores against the winner's
(seeds do not pair across architectures, and variances differ between them), Holm's step-down
correction across those comparisons, and "tied with the winner" when the corrected p-value is
not below 0.05. A variant with one seed gets no interval and no test, and is said to have none.

Where the scores live in MLflow (what the sweep writes and ``flows.leaderboard`` reads, from the
sweep runs it already fetches, so seeds cost no extra request): one metric per seed on the
sweep run (``rnnbench.role=sweep``), for the selection metric on validation, validation loss
(the declared tie-break) and every reported test metric::

    final/val/<metric>/seed<k>     e.g. final/val/acc/seed0, final/val/loss/seed0
    final/test/<metric>/seed<k>    e.g. final/test/acc/seed0, final/test/f1/seed0

``<metric>`` is the task's metric name without its stage (``acc``, ``mae``, ``bpc``), ``<k>``
the retrain's number, 0 to N-1 (the seed it trained with is derived from it and the budget's
seed: ``flows.sweep.final_seed``). The retrained models themselves are ``rnnbench.role=final``
runs below the sweep run; the sweep run carries copies of their final scores.
Plain Python and scipy.stats: no torch, Ray or MLflow here.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field
from typing import Iterable, Mapping, Optional, Sequence


ALPHA = 0.05
POWER = 0.8
CONFIDENCE = 0.95
PREFIX = "final"
# scipy.stats takes half a second to import: loaded when a board has seeds to compare


def _scipy():
    from scipy import optimize, stats

    return stats, optimize


_SEED_KEY = re.compile(rf"^{PREFIX}/(?P<stage>val|test)/(?P<metric>.+)/seed(?P<seed>-?\d+)$")


def seed_metric_name(stage: str, metric: str, seed: int) -> str:
    """The MLflow metric key of one seed's final score: ``final/<stage>/<metric>/seed<k>``."""
    return f"{PREFIX}/{stage}/{metric}/seed{int(seed)}"


def seed_scores(metrics: Mapping[str, float]) -> dict[str, list[float]]:
    """Per-seed scores found in a run's metrics, as ``{"val/acc": [seed0, seed1, ...]}`` (in
    seed order); metrics of any other name are ignored."""
    found: dict[str, dict[int, float]] = {}
    for key, value in metrics.items():
        match = _SEED_KEY.match(key)
        if match and value is not None and math.isfinite(value):
            found.setdefault(f"{match['stage']}/{match['metric']}", {})[int(match["seed"])] = float(value)
    return {name: [by_seed[k] for k in sorted(by_seed)] for name, by_seed in found.items()}


@dataclass(frozen=True)
class Summary:
    """One variant's scores over its seeds; ``sd`` and the interval are None for one seed."""

    n: int
    mean: float
    sd: Optional[float]
    ci_low: Optional[float]
    ci_high: Optional[float]

    @property
    def half_width(self) -> Optional[float]:
        return None if self.ci_high is None else (self.ci_high - self.ci_low) / 2


def summarize(scores: Sequence[float], confidence: float = CONFIDENCE) -> Summary:
    """n, mean, sample standard deviation (n - 1) and the Student-t interval of the mean,
    mean ± t(1 - (1 - confidence)/2, n - 1) · sd / √n."""
    xs = [float(x) for x in scores]
    if not xs:
        raise ValueError("no scores to summarise")
    n, mean = len(xs), sum(xs) / len(xs)
    if n == 1:
        return Summary(1, mean, None, None, None)
    sd = _sd(xs, mean)
    half = float(_scipy()[0].t.ppf(1 - (1 - confidence) / 2, n - 1)) * sd / math.sqrt(n)
    return Summary(n, mean, sd, mean - half, mean + half)


def _sd(xs: Sequence[float], mean: float) -> float:
    if max(xs) == min(xs):  # exactly, not after rounding: no spread between seeds
        return 0.0
    return math.sqrt(sum((x - mean) ** 2 for x in xs) / (len(xs) - 1))


def welch(a: Sequence[float], b: Sequence[float]) -> float:
    """Two-sided p-value of Welch's t-test (unequal variances, Welch–Satterthwaite degrees of
    freedom) that ``a`` and ``b`` have the same mean; each needs two scores or more. With no
    spread in either sample, equal means give 1 and different ones 0."""
    if len(a) < 2 or len(b) < 2:
        raise ValueError("Welch's t-test needs at least two scores per sample")
    sa, sb = summarize(a), summarize(b)
    va, vb = sa.sd ** 2 / sa.n, sb.sd ** 2 / sb.n
    if va + vb == 0:
        return 1.0 if sa.mean == sb.mean else 0.0
    t = (sa.mean - sb.mean) / math.sqrt(va + vb)
    df = (va + vb) ** 2 / (va ** 2 / (sa.n - 1) + vb ** 2 / (sb.n - 1))
    return float(min(1.0, 2 * _scipy()[0].t.sf(abs(t), df)))


def difference(a: Sequence[float], b: Sequence[float], confidence: float = CONFIDENCE) -> tuple[float, float]:
    """mean(b) - mean(a) and the half width of its Welch interval, t(1 - (1 - confidence)/2,
    df) · √(s_a²/n_a + s_b²/n_b) with Welch–Satterthwaite df; each sample needs two scores or
    more. With no spread in either sample the half width is 0."""
    if len(a) < 2 or len(b) < 2:
        raise ValueError("an interval of a difference needs at least two scores per sample")
    sa, sb = summarize(a), summarize(b)
    va, vb = sa.sd ** 2 / sa.n, sb.sd ** 2 / sb.n
    if va + vb == 0:
        return sb.mean - sa.mean, 0.0
    df = (va + vb) ** 2 / (va ** 2 / (sa.n - 1) + vb ** 2 / (sb.n - 1))
    half = float(_scipy()[0].t.ppf(1 - (1 - confidence) / 2, df)) * math.sqrt(va + vb)
    return sb.mean - sa.mean, half


def holm(pvalues: Sequence[float]) -> list[float]:
    """Holm's step-down adjusted p-values, in the input's order: sorted ascending, the i-th
    smallest (from 0) becomes max over j ≤ i of min(1, (m - j)·p_(j)). Rejecting where the
    adjusted value is below alpha controls the family-wise error rate at alpha."""
    m = len(pvalues)
    order = sorted(range(m), key=lambda i: pvalues[i])
    adjusted, running = [0.0] * m, 0.0
    for rank, i in enumerate(order):
        running = max(running, min(1.0, (m - rank) * pvalues[i]))
        adjusted[i] = running
    return adjusted


def pooled_sd(samples: Iterable[Sequence[float]]) -> Optional[float]:
    """√(Σ(n_i - 1)·s_i² / Σ(n_i - 1)) over the samples with two scores or more; None if none."""
    num = den = 0.0
    for xs in samples:
        if len(xs) >= 2:
            s = summarize(xs).sd
            num, den = num + (len(xs) - 1) * s ** 2, den + len(xs) - 1
    return math.sqrt(num / den) if den else None


def detectable_difference(sd: float, n: int, alpha: float = ALPHA, power: float = POWER) -> Optional[float]:
    """The smallest difference in means that a two-sided two-sample t-test with ``n`` seeds
    per variant detects with probability ``power`` at level ``alpha``, for a common standard
    deviation ``sd``:

        δ = λ · sd · √(2/n),   df = 2n - 2,   c = t(1 - alpha/2, df),

    where λ is the noncentrality at which the test has the wanted power,
    P(T > c) + P(T < -c) = power for T ~ noncentral t(df, λ); roughly
    (t(1 - alpha/2, df) + t(power, df)) · sd · √(2/n), and 2.80 · sd · √(2/n) for large n.
    Per comparison: Holm's correction tests the smallest p-value at alpha/m, so against m
    variants the first detectable difference is larger. None for fewer than two seeds."""
    if n < 2:
        return None
    if sd == 0:
        return 0.0
    st, optimize = _scipy()
    df = 2 * n - 2
    c = st.t.ppf(1 - alpha / 2, df)

    def shortfall(lam: float) -> float:
        lower = st.nct.cdf(-c, df, lam)  # vanishing, and NaN in scipy far out in the tail
        return st.nct.sf(c, df, lam) + (0.0 if math.isnan(lower) else lower) - power

    # power 0.99 at λ = 10 even for n = 2; the bracket must hold a sign change
    lam = float(optimize.brentq(shortfall, 0.0, 12.0, xtol=1e-10))
    return lam * sd * math.sqrt(2 / n)


@dataclass(frozen=True)
class Comparison:
    """One variant against the winner: ``tied`` is None where no test was possible."""

    p: Optional[float] = None  # Welch, two-sided, uncorrected
    p_holm: Optional[float] = None
    tied: Optional[bool] = None
    reason: str = ""  # why not tested

    def label(self) -> str:
        if self.reason:
            return self.reason
        return f"{'tied' if self.tied else 'worse'} (p {_p(self.p_holm)})"


@dataclass(frozen=True)
class Verdict:
    """The winner on the validation mean, each variant's summary and comparison with it, and
    the one line that says which test was used, on how many seeds, and what it can detect."""

    metric: str
    mode: str
    winner: Optional[str]
    summaries: dict[str, Summary]
    comparisons: dict[str, Comparison]
    detectable: Optional[float]
    description: str
    tied: list[str] = field(default_factory=list)  # tied with the winner (the winner excluded)


def best(means: Mapping[str, float], mode: str, tiebreak: Mapping[str, float] | None = None) -> str:
    """The name with the best mean (``mode`` "max" or "min"); equal means by the lower
    ``tiebreak`` (validation loss), then by name."""
    if mode not in ("max", "min"):
        raise ValueError(f"mode must be 'max' or 'min', not {mode!r}")
    sign = -1 if mode == "max" else 1
    tb = tiebreak or {}
    return min(means, key=lambda v: (sign * means[v], _or_inf(tb.get(v)), v))


def _or_inf(value: Optional[float]) -> float:
    return float("inf") if value is None or not math.isfinite(value) else value


def compare(scores: Mapping[str, Sequence[float]], mode: str, metric: str = "the selection metric",
            winner: Optional[str] = None, tiebreak: Mapping[str, float] | None = None,
            alpha: float = ALPHA) -> Verdict:
    """Validation scores per variant (one per seed) -> the winner (the best mean, unless the
    caller names it) and each other variant's Welch test against it, Holm-corrected; a
    variant is tied with the winner when its corrected p-value is not below ``alpha``."""
    scores = {v: list(xs) for v, xs in scores.items() if len(xs)}
    summaries = {v: summarize(xs) for v, xs in scores.items()}
    if not summaries:
        return Verdict(metric, mode, None, {}, {}, None, "No seed repeats: nothing to compare.")
    if winner is None:
        winner = best({v: s.mean for v, s in summaries.items()}, mode, tiebreak)
    elif winner not in summaries:
        raise ValueError(f"winner {winner!r} has no scores")
    others = [v for v in summaries if v != winner]
    comparisons = {winner: Comparison(reason="winner")}
    tested = []
    for v in others:
        if summaries[winner].n < 2:
            comparisons[v] = Comparison(reason="not tested: the winner has 1 seed")
        elif summaries[v].n < 2:
            comparisons[v] = Comparison(reason="not tested: 1 seed")
        else:
            tested.append(v)
    raw = [welch(scores[v], scores[winner]) for v in tested]
    for v, p, p_holm in zip(tested, raw, holm(raw)):
        comparisons[v] = Comparison(p=p, p_holm=p_holm, tied=p_holm >= alpha)
    ns = sorted({s.n for s in summaries.values()})
    sd = pooled_sd(scores.values())
    # what the smallest sample among those tested can detect (conservative when n differ)
    n = min(summaries[v].n for v in [winner, *tested])
    detectable = detectable_difference(sd, n, alpha) if sd is not None and tested else None
    return Verdict(metric, mode, winner, summaries, comparisons, detectable,
                   describe(ns, metric, winner, detectable, sd, alpha, len(tested), len(summaries), n),
                   [v for v in tested if comparisons[v].tied])


def describe(ns: Sequence[int], metric: str, winner: str, detectable: Optional[float],
             sd: Optional[float], alpha: float = ALPHA, tested: int = 1, compared: int = 2,
             n: Optional[int] = None) -> str:
    """The one line a report prints about the test, N and what N seeds can detect (``tested``:
    variants tested against the winner; ``compared``: variants with seeds, the winner included)."""
    seeds = f"{ns[0]}" if len(ns) == 1 else f"{ns[0]}-{ns[-1]}"
    if compared == 1:
        return (f"Only {winner} was retrained on seeds ({seeds}): no other variant to test it "
                "against; ± is the 95% confidence interval of the mean (Student t).")
    if ns[-1] < 2 or not tested:
        return (f"{seeds} seed{'s' if ns[-1] > 1 else ''} per variant: no test of {metric} against "
                f"the winner {winner} (a test needs 2 seeds or more on both sides); no intervals "
                "for single seeds.")
    line = (f"Welch's t-test on {seeds} seeds per variant, Holm-corrected against the winner; "
            f"two-sided, on {metric}; tied with the winner ({winner}) where the corrected p ≥ "
            f"{alpha:g}; ± is the 95% confidence interval of the mean (Student t).")
    if detectable is not None:
        if detectable == 0:
            line += f" The seeds did not vary: any difference in {metric} is detectable."
        else:
            line += (f" With {n or ns[0]} seeds a difference of {_num(detectable)} in {metric} is "
                     f"detectable (alpha {alpha:g} per comparison, power {POWER:g}, pooled sd "
                     f"{_num(sd)}).")
    return line


def _p(p: float) -> str:
    return "< 0.001" if p < 0.001 else f"{p:.3f}"


def _num(x: float) -> str:
    return f"{x:.3g}"
