"""The learning-rate range test's arithmetic (pure): its rates, its curve, and the rule that
picks a rate from it (``learning_rate: auto``; the Keras part is ``tljob.nn.lr_find``).

As fastai's ``lr_find``: step ``i`` of ``n`` (``range_test_steps``: at most 100 and one
epoch; at least 20 when the data is in memory) trains at
``START * (END / START) ** (i / (n - 1))`` (exponential from 1e-7 to 1), the loss of every
step is smoothed by a debiased exponential moving average (``BETA``), and the test stops
once the smoothed loss is non-finite or more than ``DIVERGED`` times its lowest value. The
rule (``pick_rate``) is fastai's default, "valley": on the curve without its first tenth
and its last ``TAIL`` points, find the longest run of steps along which the smoothed loss
keeps falling (the longest decreasing subsequence, fastai's code), and take the rate about
two thirds of the way down it: on the fall, before the minimum, where the rate is about to
diverge. ``minimum / 10``, the older rule, is recorded beside it. A curve too short for
the valley (fewer than ``MIN_VALLEY`` points) gets the minimum's rate / 10.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

START, END = 1e-7, 1.0
MAX_STEPS = 100  # and at most one epoch of the stage
MIN_STEPS = 20  # when the data is in memory (range_test_steps)
BETA = 0.98
DIVERGED = 4.0
TAIL = 5
MIN_VALLEY = 8
RULE = "valley"


def range_test_steps(steps_per_epoch: int, in_memory: bool) -> int:
    """How many steps the range test trains: ``MAX_STEPS`` or one epoch, the smaller; but
    at least ``MIN_STEPS`` when the training data is in memory (it then cycles: a curve of
    a few steps cannot be read, and a stream can only be read once)."""
    steps = min(MAX_STEPS, steps_per_epoch)
    return max(steps, MIN_STEPS) if in_memory else max(1, steps)


def rates(steps: int, start: float = START, end: float = END) -> list[float]:
    """The rate of each step: exponential from ``start`` to ``end`` (``start`` for one step)."""
    if steps == 1:
        return [start]
    return [start * (end / start) ** (i / (steps - 1)) for i in range(steps)]


def smooth(losses: Sequence[float], beta: float = BETA) -> list[float]:
    """The debiased exponential moving average of ``losses`` (fastai's ``SmoothenValue``)."""
    average, out = 0.0, []
    for i, loss in enumerate(losses, start=1):
        average = beta * average + (1 - beta) * loss
        out.append(average / (1 - beta**i))
    return out


def diverged(smoothed: Sequence[float]) -> bool:
    """Whether the test should stop: the newest smoothed loss is not finite, or more than
    ``DIVERGED`` times the lowest so far."""
    last = smoothed[-1]
    return not math.isfinite(last) or last > DIVERGED * min(smoothed)


def valley_index(losses: Sequence[float]) -> int:
    """fastai's valley: the index two thirds down the longest decreasing run of ``losses``
    (the longest strictly decreasing subsequence, O(n²) as fastai computes it)."""
    n = len(losses)
    longest = [1] * n
    start = end = 0
    for i in range(1, n):
        for j in range(i):
            if losses[i] < losses[j] and longest[i] < longest[j] + 1:
                longest[i] = longest[j] + 1
        if longest[end] < longest[i]:
            end = i
            start = end - longest[end]
    sections = (end - start) / 3
    # fastai's start is one before the run's first point: -1 for a fall from step 0, where
    # a short fall would give index -1 (the last, highest rate); clamped to the first
    return max(0, start + int(sections) + int(sections / 2))


@dataclass
class RangeTest:
    """One stage's range test: what each step trained at, its loss, and the pick."""

    stage: str
    stage_index: int
    rates: list[float]  # the steps run (fewer than planned after divergence)
    losses: list[float]  # each step's loss (the batch's mean)
    smoothed: list[float] = field(default_factory=list)
    chosen: float = 0.0
    rule: str = RULE
    minimum_over_10: float = 0.0  # the older rule, for the reader
    window: tuple[int, int] = (0, 0)  # the curve's steps the rule looked at [from, to)
    stopped_early: bool = False
    seconds: float = 0.0

    def to_json(self) -> dict[str, Any]:
        """The record as JSON values: a non-finite loss (the step that diverged) is null."""
        data = asdict(self)
        data["losses"] = [v if math.isfinite(v) else None for v in self.losses]
        return data

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> RangeTest:
        losses = [math.nan if v is None else v for v in data["losses"]]
        return cls(**{**data, "losses": losses, "window": tuple(data["window"])})

    def summary(self) -> str:
        """What the tljob line says after the arrow: how the rate was picked."""
        lo, hi = self.window
        return (
            f"lr_find: {len(self.rates)} steps from {self.rates[0]:.0e} to {self.rates[-1]:.1e}"
            f"{', stopped at divergence' if self.stopped_early else ''}, {self.rule} of "
            f"steps {lo}-{hi - 1}, minimum/10 would be {self.minimum_over_10:.1e}"
        )


def pick_rate(test_rates: Sequence[float], losses: Sequence[float]) -> tuple[float, RangeTest]:
    """The rate the rule picks from a curve (see the module docstring), and the record.

    Non-finite losses (the step that diverged) are left out; ``ValueError`` when none is
    finite."""
    finite = [i for i, loss in enumerate(losses) if math.isfinite(loss)]
    if not finite:
        raise ValueError("the range test's losses are all non-finite")
    kept = finite[-1] + 1
    smoothed = smooth([loss if math.isfinite(loss) else 0.0 for loss in losses[:kept]])
    lowest = min(range(kept), key=lambda i: smoothed[i])
    minimum_over_10 = test_rates[lowest] / 10
    lo, hi = kept // 10, kept - TAIL
    if hi - lo >= MIN_VALLEY:
        chosen = test_rates[lo + valley_index(smoothed[lo:hi])]
        rule = RULE
    else:
        lo, hi, chosen, rule = 0, kept, minimum_over_10, "minimum/10 (too few steps for valley)"
    record = RangeTest(
        stage="",
        stage_index=0,
        rates=list(test_rates[: len(losses)]),
        losses=list(losses),
        smoothed=smoothed,
        chosen=chosen,
        rule=rule,
        minimum_over_10=minimum_over_10,
        window=(lo, hi),
        stopped_early=len(losses) < len(test_rates),
    )
    return chosen, record
