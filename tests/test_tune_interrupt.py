"""Ctrl-C during a sweep: the first asks Tune to stop (its SIGUSR1), the second stops at
once; the previous handler and Tune's setting come back after. Real signals, no Ray."""

from __future__ import annotations

import os
import signal

import pytest

from tljob.tune.interrupt import tune_stops_on_interrupt


def test_first_ctrl_c_asks_tune_to_stop_the_second_stops_now(monkeypatch):
    monkeypatch.delenv("TUNE_DISABLE_SIGINT_HANDLER", raising=False)
    said, tune_stops = [], []
    before = signal.getsignal(signal.SIGINT)
    previous_usr1 = signal.signal(signal.SIGUSR1, lambda s, f: tune_stops.append(s))
    try:
        with tune_stops_on_interrupt(said.append) as interrupt:
            assert os.environ["TUNE_DISABLE_SIGINT_HANDLER"] == "1"  # Tune leaves SIGINT alone
            assert not interrupt.received
            signal.raise_signal(signal.SIGINT)
            assert interrupt.received
            assert tune_stops == [signal.SIGUSR1]
            assert said == [
                "Ctrl-C: stopping the sweep once Tune has saved its state (Ctrl-C again: now)"
            ]
            with pytest.raises(KeyboardInterrupt):
                signal.raise_signal(signal.SIGINT)
            assert tune_stops == [signal.SIGUSR1]  # not asked twice
    finally:
        signal.signal(signal.SIGUSR1, previous_usr1)
    assert signal.getsignal(signal.SIGINT) is before
    assert "TUNE_DISABLE_SIGINT_HANDLER" not in os.environ


def test_a_sweep_without_ctrl_c_records_none_and_keeps_a_set_value(monkeypatch):
    monkeypatch.setenv("TUNE_DISABLE_SIGINT_HANDLER", "0")
    with tune_stops_on_interrupt(lambda line: None) as interrupt:
        pass
    assert not interrupt.received
    assert os.environ["TUNE_DISABLE_SIGINT_HANDLER"] == "0"
