"""The live progress display without Ray: when it is wanted, and what rank 0's end of the
channel does when the channel is broken. (End to end, under a pseudo-terminal: the resumed
run of ``test_train_integration``'s Ctrl-C test.)"""

from __future__ import annotations

import sys


class _Push:
    def __init__(self, fail: bool) -> None:
        self.fail, self.sent = fail, []

    def remote(self, event):
        if self.fail:
            raise RuntimeError("the board actor is gone")
        self.sent.append(event)


class _Board:
    def __init__(self, fail: bool) -> None:
        self.push = _Push(fail)


def test_the_sink_hands_events_over_or_says_it_could_not():
    from tljob.progress import Line
    from tljob.run.progress import BoardSink

    board = _Board(fail=False)
    assert BoardSink(board).send(Line("a")) is True
    assert board.push.sent == [Line("a")]
    # a broken channel never stops training: the caller logs the line instead
    assert BoardSink(_Board(fail=True)).send(Line("b")) is False


class _Stdout:
    def __init__(self, tty: bool) -> None:
        self.tty = tty

    def isatty(self) -> bool:
        return self.tty


def test_the_live_display_is_for_terminals_without_verbose(monkeypatch):
    from tljob.run.progress import live_display_wanted

    monkeypatch.setattr(sys, "stdout", _Stdout(tty=True))
    assert live_display_wanted(verbose=False) is True
    assert live_display_wanted(verbose=True) is False
    monkeypatch.setattr(sys, "stdout", _Stdout(tty=False))
    assert live_display_wanted(verbose=False) is False
