"""The live progress display on the driver's terminal, fed by rank 0 through Ray. Ray + rich.

Ray Train V2 runs report callbacks in its controller, not in the driver, so the driver owns
its own channel: a tiny ``_Board`` actor (no CPU) holding a bounded list of events.
``BoardSink`` (picklable, in ``LoopConfig.progress``) is rank 0's end: a fire-and-forget
``push.remote`` that never waits on the actor. ``LiveDisplay`` is the driver's end: a thread
that drains the board a few times a second, prints the finished lines (they stay on screen)
and redraws the live row with rich. The event model and the text are ``tljob.progress``.
"""

from __future__ import annotations

import collections
import sys
import threading
from typing import Any

import ray

from tljob import output
from tljob.progress import Columns, Event, ProgressState

_BOARD_EVENTS = 1000  # far more than a few seconds of throttled events; oldest dropped
_POLL_S = 0.25


@ray.remote(num_cpus=0)  # a CPU here would be one the training workers cannot have
class _Board:
    def __init__(self) -> None:
        self._events: collections.deque[Event] = collections.deque(maxlen=_BOARD_EVENTS)

    def push(self, event: Event) -> None:
        self._events.append(event)

    def drain(self) -> list[Event]:
        events = list(self._events)
        self._events.clear()
        return events


class BoardSink:
    """Rank 0's end of the channel (an ``EventSink``)."""

    def __init__(self, board: Any) -> None:
        self._board = board

    def send(self, event: Event) -> bool:
        try:
            self._board.push.remote(event)  # not awaited: training never waits for it
        except Exception:  # the display is a nicety; a broken channel must not stop training
            return False
        return True


def live_display_wanted(verbose: bool) -> bool:
    """A live display when stdout is a terminal; plain lines otherwise, and with
    ``--verbose`` (Ray's own progress bars would fight it)."""
    return not verbose and sys.stdout.isatty()


def _renderable(columns: Columns | None) -> Any:
    from rich.progress_bar import ProgressBar
    from rich.table import Table
    from rich.text import Text

    if columns is None:
        return Text("")
    row = Table.grid(padding=(0, 1))
    row.add_row(
        Text(columns.where),
        ProgressBar(total=max(columns.total, 1), completed=columns.completed, width=24),
        *(Text(c) for c in (columns.steps, columns.metrics, columns.rate, columns.eta) if c),
    )
    return row


class LiveDisplay:
    """Start with ``start()``, give ``sink`` to the workers, ``stop()`` when training ends
    (it prints whatever is still on the board first)."""

    def __init__(self) -> None:
        from rich.console import Console
        from rich.live import Live

        self._board = _Board.remote()
        self.sink = BoardSink(self._board)
        self._state = ProgressState(prefix=output.PREFIX)
        # redirect_stdout: tljob's own lines and the workers' forwarded lines, printed
        # while the display runs, go above the live row instead of through it.
        self._live = Live(
            _renderable(None),
            console=Console(file=sys.stdout, highlight=False),
            refresh_per_second=4,
            transient=True,
            redirect_stdout=True,
            redirect_stderr=True,
        )
        self._stopping = threading.Event()
        self._thread = threading.Thread(target=self._run, name="tljob-progress", daemon=True)

    def start(self) -> LiveDisplay:
        self._live.start()
        self._thread.start()
        return self

    def _drain(self) -> None:
        try:
            events = ray.get(self._board.drain.remote(), timeout=10)
        except Exception:  # a slow or lost board: try again on the next tick
            return
        for event in events:
            lines = self._state.apply(event)
            if lines:  # printing redraws the live row: show the state after this event
                self._live.update(_renderable(self._state.columns()), refresh=False)
            for line in lines:
                self._live.console.print(line, markup=False, soft_wrap=True)
        self._live.update(_renderable(self._state.columns()))

    def _run(self) -> None:
        while not self._stopping.wait(_POLL_S):
            self._drain()
        self._drain()

    def stop(self) -> None:
        self._stopping.set()
        self._thread.join(timeout=30)
        self._live.stop()
        ray.kill(self._board)
