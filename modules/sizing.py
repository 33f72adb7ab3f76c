"""Size matching: the width (and, where its steps are too coarse, a second knob) that brings a
variant's network to a target parameter count on a dataset. Counts come from building the
network itself (on torch's meta device: no memory, about a millisecond), so every variant is
handled alike, a user's too; which knobs a variant turns is its table entry's ``Sizing``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Callable, Iterator, Mapping

from modules.variants import TRAINING_ARGS, Variant, VariantError, listed_values

if TYPE_CHECKING:
    from modules.tasks import Task

TOLERANCE = 0.05  # a count within 5% of its target is matched
MAX_WIDTH = 1 << 20  # no knob is searched past this
_SCAN = 4096  # widths tried with the second knob, and steps looked through for a valid width
# hyperparameters that never change a network's parameter count
_COUNT_FREE = (*TRAINING_ARGS, "dropout")


class SizingError(ValueError):
    """A variant that cannot be brought within the tolerance of a target on a dataset."""


@dataclass(frozen=True)
class Solution:
    target: int
    n_params: int  # the built network's count
    values: Mapping[str, int]  # the knobs it sets: the width, and the second knob when needed

    @property
    def error(self) -> float:
        """Relative distance from the target (+0.03: 3% above it)."""
        return self.n_params / self.target - 1


def count(variant: Variant, task: "Task", data: Mapping[str, Any], hparams: Mapping[str, Any]) -> int:
    """Trainable parameters of ``variant``'s network built with ``hparams`` for ``data``."""
    import torch

    from modules.network import count_parameters

    try:
        with torch.device("meta"):  # shapes only: any width costs no memory
            return count_parameters(variant.build(task, data, hparams))
    except VariantError:
        raise
    except Exception:  # a user's class that computes on its weights while it builds
        return count_parameters(variant.build(task, data, hparams))


def _valid(variant: Variant, task: "Task", hparams: Mapping[str, Any], knob: str, value: int) -> bool:
    """Whether ``knob=value`` keeps every constraint of the variant that names it (e.g. a
    Transformer's width divisible by its heads), the other values taken from ``hparams``."""
    for rule in variant.constraints:
        if knob not in rule.params or not rule.holds_on(task):
            continue
        values = [value if p == knob else hparams.get(p, rule.defaults.get(p)) for p in rule.params]
        if None not in values and not rule.check(*values):  # unset: as Variant.build, unchecked
            return False
    return True


def _bracket(f: Callable[[int], int], valid: Callable[[int], bool], target: int) -> tuple[int | None, int | None]:
    """For a count ``f`` that grows with its argument: the largest valid value whose count is
    at most ``target`` and the smallest valid one whose count is above it (None: there is
    none). ``f`` is only called with valid values."""
    def up(v: int) -> int | None:
        return next((u for u in range(v, min(v + _SCAN, MAX_WIDTH + 1)) if valid(u)), None)

    def down(v: int) -> int | None:
        return next((u for u in range(v, max(0, v - _SCAN), -1) if valid(u)), None)

    def over(v: int) -> bool:  # the nearest valid value from v up counts more than the target
        u = up(v)
        return u is None or f(u) > target

    hi = 1
    while not over(hi):
        if hi >= MAX_WIDTH:
            return down(MAX_WIDTH), None
        hi = min(2 * hi, MAX_WIDTH)
    lo = hi // 2  # not over(lo), or lo == 0
    while hi - lo > 1:
        mid = (lo + hi) // 2
        if over(mid):
            hi = mid
        else:
            lo = mid
    above = up(hi)
    return (down(hi - 1) if hi > 1 else None), above


def _outward(below: int | None, above: int | None) -> Iterator[tuple[int, int]]:
    """(width, direction) from the bracket outward, alternating down and up."""
    down = below if below is not None else (above or 1) - 1
    up = above if above is not None else (below or 0) + 1
    for _ in range(_SCAN):
        if down >= 1:
            yield down, -1
            down -= 1
        if up <= MAX_WIDTH:
            yield up, 1
            up += 1


def solve(variant: Variant, task: "Task", data: Mapping[str, Any], hparams: Mapping[str, Any],
          target: int, tolerance: float = TOLERANCE) -> Solution:
    """The knob values that bring ``variant`` on ``data`` within ``tolerance`` of ``target``
    parameters, the other hyperparameters as in ``hparams`` (the knobs' own values there are
    replaced). Width first; when its nearest counts are both too far, the first second knob
    that can close the gap, at the width nearest the width-only answer that it closes; of two
    values that land, the one nearer what the network uses by default. A second knob that
    ``hparams`` sets is held at its value, not turned. Raises SizingError."""
    width = variant.sizing.width
    second = [(k, d) for k, d in variant.sizing.second if hparams.get(k) is None]
    base = {k: v for k, v in hparams.items() if k != width and not any(k == s for s, _ in second)}
    counts: dict[tuple, int] = {}

    def n(values: Mapping[str, int]) -> int:
        key = tuple(sorted(values.items()))
        if key not in counts:
            counts[key] = count(variant, task, data, {**base, **values})
        return counts[key]

    def within(s: Solution) -> bool:
        return abs(s.error) <= tolerance

    f = lambda w: n({width: w})  # noqa: E731
    below, above = _bracket(f, lambda w: _valid(variant, task, base, width, w), target)
    nearest = [Solution(target, f(w), {width: w}) for w in (below, above) if w is not None]
    if not nearest:
        raise SizingError(f"{variant.name}: no {width} keeps its constraints")
    best = min(nearest, key=lambda s: abs(s.error))
    if within(best):
        return best
    valid_widths = (w for w in range(1, _SCAN) if _valid(variant, task, base, width, w))
    smallest, next_one = next(valid_widths, None), next(valid_widths, None)
    if smallest is not None and next_one is not None and f(smallest) == f(next_one):
        raise SizingError(f"{variant.name}: its parameter count ({f(smallest):,}) does not change "
                          f"with {width}, so it cannot be sized")
    for knob, default in second:
        found = _second_knob(variant, task, base, width, knob, default, n, below, above, target, tolerance)
        if found is not None:
            return found
    reach = " or ".join(f"{s.n_params:,} ({width}={s.values[width]}, {s.error:+.0%})" for s in nearest)
    tried = f"; {', '.join(k for k, _ in second)} could not close the gap" if second else ""
    least = f"; its smallest network has {f(smallest):,}" if below is None and smallest else ""
    raise SizingError(f"{variant.name} cannot be sized to {target:,} parameters within "
                      f"{tolerance:.0%} on this dataset: {width} gives {reach}{tried}{least}")


def _second_knob(variant, task, base, width, knob, default, n, below, above, target, tolerance):
    """The width nearest the width-only bracket at which ``knob`` lands within tolerance."""
    wider_too_big = False
    for w, direction in _outward(below, above):
        if (direction > 0 and wider_too_big) or not _valid(variant, task, base, width, w):
            continue
        g = lambda s: n({width: w, knob: s})  # noqa: E731
        if g(1) == g(2):
            return None  # the knob moves nothing here (an embedding width on numeric inputs)
        if direction > 0 and g(1) > target * (1 + tolerance):
            wider_too_big = True  # even the knob's least value is over: any wider width is too
            continue
        lo, hi = _bracket(g, lambda s: _valid(variant, task, base, knob, s), target)
        fits = [Solution(target, g(s), {width: w, knob: s}) for s in (lo, hi)
                if s is not None and abs(g(s) / target - 1) <= tolerance]
        if fits:
            usual = max(1, default({**base, width: w}))
            return min(fits, key=lambda s: abs(math.log(s.values[knob] / usual)))
    return None


def structural_keys(space: Mapping[str, Any], variant: Variant) -> list[str]:
    """The keys of a search space that may change the parameter count: everything but the
    training loop's, dropout and the width size matching solves (a second knob the space sets
    is held, so it counts here)."""
    return [k for k in space if k not in _COUNT_FREE and k != variant.sizing.width]


def varying_options(variant: Variant, space: Mapping[str, Any], most: int = 64) -> dict[str, list]:
    """The searched keys of ``space`` (preset sampler tables) that may change the count, with
    their values: each configuration of them is sized on its own, so each must be listable (a
    choice or a small randint). Imports no torch: the plan calls it."""
    options = {}
    for key in structural_keys(space, variant):
        if not isinstance(space[key], Mapping):
            continue
        values = listed_values(space[key])
        if values is None:
            raise SizingError(f"{variant.name}: with size targets, {key} must be a constant or a "
                              f"choice (it may change the parameter count), got {dict(space[key])}")
        options[key] = values
    configurations = math.prod(len(v) for v in options.values())
    if configurations > most:
        raise SizingError(f"{variant.name}: with size targets, {', '.join(options)} allow "
                          f"{configurations} configurations, each sized on its own; at most {most}")
    return options


def solve_space(variant: Variant, task: "Task", data: Mapping[str, Any], space: Mapping[str, Any],
                target: int, tolerance: float = TOLERANCE) -> tuple[list[str], dict[tuple, Solution]]:
    """A solution for every configuration of ``space`` that can change the count: (the keys
    that vary, {their values: solution}). Constants and count-free keys are used as they are."""
    fixed = {k: v for k, v in space.items() if not isinstance(v, Mapping)}
    options = varying_options(variant, space)
    varying = list(options)
    table = {combo: solve(variant, task, data, {**fixed, **dict(zip(varying, combo))}, target, tolerance)
             for combo in _product(list(options.values()))}
    # a second knob one configuration needs is spelled out in all of them (at the value the
    # network takes when it is unset), so every trial records the network it trained
    used = {k for s in table.values() for k in s.values}
    for combo, s in table.items():
        hparams = {**fixed, **dict(zip(varying, combo)), **s.values}
        filled = {k: default(hparams) for k, default in variant.sizing.second if k in used and k not in s.values}
        if filled:
            table[combo] = Solution(s.target, s.n_params, {**s.values, **filled})
    return varying, table


# The least a dataset can be: one input channel, no vocabulary, the smallest output.
STAND_IN = {"input_dim": 1, "vocab_size": 0, "num_classes": 2, "horizon": 1, "outputs": 1,
            "window": 1, "target_channel": 0}


def smallest(variant: Variant, task: "Task", space: Mapping[str, Any]) -> tuple[int, dict] | None:
    """(count, knobs) of ``variant``'s smallest network on a ``task`` dataset: every knob at
    its least valid value on the stand-in dataset, the space's other values at their first;
    None when the stand-in cannot be built (a task that needs facts of its own)."""
    hparams = {k: (listed_values(v) or [None])[0] if isinstance(v, Mapping) else v for k, v in space.items()}
    hparams = {k: v for k, v in hparams.items() if v is not None}
    knobs = {}
    for knob in (variant.sizing.width, *(k for k, _ in variant.sizing.second if k not in hparams)):
        knobs[knob] = next((v for v in range(1, _SCAN) if _valid(variant, task, {**hparams, **knobs}, knob, v)), 1)
    try:
        return count(variant, task, STAND_IN, {**hparams, **knobs}), knobs
    except Exception:
        return None


def _product(lists: list[list]) -> Iterator[tuple]:
    import itertools

    return itertools.product(*lists)


def size_label(variant: str, target: int | None) -> str:
    """``lstm@50k``: a variant sized to a target, as tables and progress name it."""
    if not target:
        return variant
    shown = f"{target / 1e6:g}M" if target >= 1_000_000 else f"{target / 1e3:g}k" if target >= 1000 else str(target)
    return f"{variant}@{shown}"


class SolvedKnob:
    """A knob's value looked up from the other values a trial's configuration drew (``spec``
    is Tune's resolved spec; ``spec.config`` its configuration). Plain data: it travels to
    Tune's state and back on a resume."""

    def __init__(self, knob: str, varying: list[str], table: Mapping[tuple, Mapping[str, int]]):
        self.knob, self.varying = knob, list(varying)
        self.table = {k: dict(v) for k, v in table.items()}

    def __call__(self, spec) -> int:
        config = spec["config"] if "config" in spec else spec
        return self.table[tuple(config[k] for k in self.varying)][self.knob]

