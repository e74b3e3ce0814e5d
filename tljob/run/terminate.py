"""SIGTERM ends a run as Ctrl-C does: the run's lock released, the rerun's point said.

Kubernetes evicts a pod with SIGTERM (then SIGKILL after its grace period) and ``ray job
stop`` sends the driver SIGTERM. Python's default for it ends the process at once, with no
``finally``: the run lock stayed on storage and the retry that Kubernetes or the user
started waited out its staleness window (``tljob.run.lock``). ``sigterm_unwinds`` turns
SIGTERM into ``Terminated`` in the main thread, so the run unwinds as after Ctrl-C: inside
``fit()`` Ray Train's Ctrl-C handler first aborts the Train run gracefully (its workers
stop, the controller ends), then the lock is released on the way out. Ray, never
TensorFlow.
"""

from __future__ import annotations

import contextlib
import signal
import threading
from collections.abc import Iterator
from contextlib import contextmanager

EXIT_TERMINATED = 143  # 128 + SIGTERM, as a shell reports it


class Terminated(KeyboardInterrupt):
    """The driver received SIGTERM; raised in its main thread (``sigterm_unwinds``)."""


@contextmanager
def sigterm_unwinds() -> Iterator[None]:
    """Within the block, SIGTERM raises ``Terminated`` in the main thread, after calling
    the Ctrl-C handler in force when it is not Python's own (Ray Train's, inside ``fit()``:
    it aborts the Train run). Outside the main thread (a sweep's trials) it does nothing:
    signals reach only the main thread. The caller's SIGTERM handler is back afterwards."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def on_sigterm(signum: int, frame: object) -> None:
        on_ctrl_c = signal.getsignal(signal.SIGINT)
        if callable(on_ctrl_c) and on_ctrl_c is not signal.default_int_handler:
            # Ray Train's exits when its controller is already gone
            with contextlib.suppress(SystemExit):
                on_ctrl_c(signal.SIGINT, frame)
        raise Terminated

    previous = signal.signal(signal.SIGTERM, on_sigterm)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)
