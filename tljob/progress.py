"""The live progress display's model: the events rank 0 sends while it trains, and what the
display shows for them. Pure (no Ray, no TensorFlow, no rich).

Rank 0 sends small events through an ``EventSink`` (``tljob.run.progress`` gives the Ray
one); the driver feeds them to a ``ProgressState``, prints the finished lines it returns
(they stay on screen) and draws ``ProgressState.columns()`` as the live row below them.
A ``Line`` is any ``[tljob]`` line rank 0 would otherwise have logged; ``EpochFinished`` is
the epoch's line with its validation metrics, after which the live row is empty until the
next ``EpochStarted``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Protocol

STEP_INTERVAL_S = 0.25  # at most 4 step events a second


@dataclass(frozen=True)
class EpochStarted:
    stage: str
    stage_index: int  # 0-based
    stages: int
    epoch: int  # 1-based, within the stage
    epochs: int
    steps: int  # training steps in this epoch


@dataclass(frozen=True)
class StepDone:
    step: int  # steps done in this epoch
    loss: float
    accuracy: float
    images_per_s: float
    elapsed_s: float  # since the epoch started
    input_wait_ratio: float = 0.0  # of the steps' time so far, waiting for input


@dataclass(frozen=True)
class Line:
    text: str  # one line, without the ``[tljob] `` prefix


@dataclass(frozen=True)
class EpochFinished:
    text: str  # the epoch's line (train and val metrics), without the prefix


Event = EpochStarted | StepDone | Line | EpochFinished


class EventSink(Protocol):
    """Where rank 0 sends events. ``send`` never blocks training and never raises; it
    returns False when the event could not be handed over (the caller logs the line)."""

    def send(self, event: Event) -> bool: ...


@dataclass(frozen=True)
class Columns:
    """The live row: ``where`` | bar (``completed`` of ``total``) | ``steps`` | ``metrics``
    | ``rate`` | ``eta``."""

    where: str
    completed: int
    total: int
    steps: str
    metrics: str
    rate: str
    eta: str


def format_eta(seconds: float | None) -> str:
    """``m:ss`` (``h:mm:ss`` from an hour on); ``-:--`` when unknown."""
    if seconds is None or not math.isfinite(seconds) or seconds < 0:
        return "-:--"
    total = round(seconds)
    hours, rest = divmod(total, 3600)
    minutes, secs = divmod(rest, 60)
    return f"{hours}:{minutes:02d}:{secs:02d}" if hours else f"{minutes}:{secs:02d}"


class ProgressState:
    """What the display knows: the current epoch and its last step. ``apply`` takes one
    event and returns the finished lines to print (prefixed), in order."""

    def __init__(self, prefix: str = "[tljob] ") -> None:
        self.prefix = prefix
        self.epoch: EpochStarted | None = None
        self.step: StepDone | None = None

    def apply(self, event: Event) -> list[str]:
        if isinstance(event, EpochStarted):
            self.epoch, self.step = event, None
            return []
        if isinstance(event, StepDone):
            if self.epoch is not None:
                self.step = event
            return []
        if isinstance(event, EpochFinished):
            self.epoch, self.step = None, None
        return [self.prefix + event.text]

    def columns(self) -> Columns | None:
        """The live row, or None between epochs."""
        epoch, step = self.epoch, self.step
        if epoch is None:
            return None
        where = (
            f"stage {epoch.stage_index + 1}/{epoch.stages} {epoch.stage} "
            f"epoch {epoch.epoch}/{epoch.epochs}"
        )
        done = min(step.step, epoch.steps) if step else 0
        if step is None:
            return Columns(where, 0, epoch.steps, f"step 0/{epoch.steps}", "", "", "ETA -:--")
        eta = (epoch.steps - done) * step.elapsed_s / done if done else None
        return Columns(
            where=where,
            completed=done,
            total=epoch.steps,
            steps=f"step {done}/{epoch.steps}",
            metrics=f"loss={step.loss:.4f} accuracy={step.accuracy:.4f}",
            rate=f"{step.images_per_s:.0f} images/s, input wait {step.input_wait_ratio:.0%}",
            eta=f"ETA {format_eta(eta)}",
        )
