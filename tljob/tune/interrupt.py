"""Ctrl-C during a sweep (pure: signals only).

Ray Tune stops a run on SIGINT after saving its state, but then returns its results as if
the sweep had ended, and tells the user to call ``Tuner.restore``. tljob needs to know, so
that it neither writes a final table for an unfinished sweep nor loses the state: Tune's
own SIGINT handler is switched off (``TUNE_DISABLE_SIGINT_HANDLER``, read when ``fit``
starts) and ``StopOnInterrupt`` takes the signal. It records it and passes it on as SIGUSR1,
which Tune always treats as its stop signal. A second Ctrl-C stops at once.
"""

from __future__ import annotations

import os
import signal
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from types import FrameType


class StopOnInterrupt:
    """SIGINT handler: the first asks Tune to stop (``say`` tells the user), the next
    raises ``KeyboardInterrupt``. ``received`` says whether one came."""

    def __init__(self, say: Callable[[str], None]) -> None:
        self.say = say
        self.received = False

    def __call__(self, signum: int, frame: FrameType | None) -> None:
        if self.received:
            raise KeyboardInterrupt
        self.received = True
        self.say("Ctrl-C: stopping the sweep once Tune has saved its state (Ctrl-C again: now)")
        signal.raise_signal(signal.SIGUSR1)


@contextmanager
def tune_stops_on_interrupt(say: Callable[[str], None]) -> Iterator[StopOnInterrupt]:
    """Within the block, Ctrl-C goes through a ``StopOnInterrupt`` (yielded); the previous
    handler and environment are restored after. Only in the main thread (Python's rule for
    signal handlers); elsewhere Tune's own handling stays."""
    handler = StopOnInterrupt(say)
    try:
        previous = signal.signal(signal.SIGINT, handler)
    except ValueError:  # not the main thread: signals cannot be handled here
        yield handler
        return
    had = os.environ.get("TUNE_DISABLE_SIGINT_HANDLER")
    os.environ["TUNE_DISABLE_SIGINT_HANDLER"] = "1"
    try:
        yield handler
    finally:
        signal.signal(signal.SIGINT, previous)
        if had is None:
            os.environ.pop("TUNE_DISABLE_SIGINT_HANDLER", None)
        else:
            os.environ["TUNE_DISABLE_SIGINT_HANDLER"] = had
