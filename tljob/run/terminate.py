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


_active: list[object] = []  # the handler of the innermost sigterm_unwinds block
_received: list[bool] = []  # SIGTERM came within the innermost block


def received() -> bool:
    """Whether SIGTERM came within the active ``sigterm_unwinds`` block. Ask it of any
    KeyboardInterrupt: ``ray.get`` turns an exception raised by a signal handler while it
    waits into a plain KeyboardInterrupt."""
    return bool(_received and _received[-1])


def reclaim_sigterm() -> None:
    """Put ``sigterm_unwinds``'s handler back when a block is active: ``ray.init``
    installs its own (``sys.exit(15)``, which unwinds with no word of where to resume)."""
    if _active and threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGTERM, _active[-1])


@contextmanager
def sigterm_unwinds() -> Iterator[None]:
    """Within the block, SIGTERM raises ``Terminated`` in the main thread, after calling
    the Ctrl-C handler in force when it is not Python's own (Ray Train's, inside ``fit()``:
    it aborts the Train run). Outside the main thread (a sweep's trials) it does nothing:
    signals reach only the main thread. The caller's SIGTERM handler is back afterwards;
    ``ensure_ray`` calls ``reclaim_sigterm`` after ``ray.init``."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def on_sigterm(signum: int, frame: object) -> None:
        _received[-1] = True
        on_ctrl_c = signal.getsignal(signal.SIGINT)
        if callable(on_ctrl_c) and on_ctrl_c is not signal.default_int_handler:
            # Ray Train's exits when its controller is already gone
            with contextlib.suppress(SystemExit):
                on_ctrl_c(signal.SIGINT, frame)
        raise Terminated

    previous = signal.signal(signal.SIGTERM, on_sigterm)
    _active.append(on_sigterm)
    _received.append(False)
    try:
        yield
    finally:
        _active.pop()
        _received.pop()
        signal.signal(signal.SIGTERM, previous)
