"""SIGTERM unwinds a run as Ctrl-C does (``tljob.run.terminate``), without Ray: the run's
own SIGTERM test is the S3 scenario's second job (tests/test_s3_integration.py)."""

from __future__ import annotations

import os
import signal

import pytest

from tljob.run import terminate
from tljob.run.lock import RunLock, prepare_run_dir


def test_sigterm_raises_terminated_after_the_ctrl_c_handler_and_the_lock_goes(tmp_path):
    run_dir = prepare_run_dir(str(tmp_path), "r")
    calls = []
    before_term = signal.getsignal(signal.SIGTERM)
    before_int = signal.signal(signal.SIGINT, lambda *a: calls.append("ctrl-c handler"))
    try:
        with (
            pytest.raises(terminate.Terminated),
            terminate.sigterm_unwinds(),
            RunLock(run_dir),
        ):
            assert (tmp_path / "r" / "run.lock").exists()
            assert terminate.received() is False
            signal.signal(signal.SIGTERM, signal.SIG_DFL)  # as ray.init replaces it
            terminate.reclaim_sigterm()
            try:
                os.kill(os.getpid(), signal.SIGTERM)
                signal.pause()  # the handler raises
            finally:
                assert terminate.received() is True
    finally:
        signal.signal(signal.SIGINT, before_int)
    assert calls == ["ctrl-c handler"]  # (Ray Train's aborts the Train run)
    assert not (tmp_path / "r" / "run.lock").exists()
    assert signal.getsignal(signal.SIGTERM) is before_term
    assert terminate.received() is False  # outside any block
