"""What a person sees while a job runs: tljob's own lines, and Ray's internals kept out of
the way unless asked for. Pure at import (imports Ray only inside ``quiet_ray``).

Every package logs through its own logger (``tljob.run``, ``tljob.data``, ...) under the
``tljob`` logger, which ``setup`` gives one handler writing ``[tljob] <message>`` lines to
stdout, one line per event: the same on a terminal, in CI and in ``ray job logs``, and the
same in the driver and in the workers (whose stdout Ray forwards to the driver). Every
line passes through ``tljob.storage.redact`` first, so no credential is ever printed.

By default (``verbose=False``) Ray's own chatter goes only to Ray's session log files
(``/tmp/ray/session_latest/logs``): Ray Data's execution plans and progress bars, Ray
Train's per-report records and TensorFlow's C++ log lines. ``--verbose`` shows them.
"""

from __future__ import annotations

import logging
import os
import sys
from typing import Any, TextIO

PREFIX = "[tljob] "
_HANDLER_NAME = "tljob-lines"
# Loggers whose console output is Ray's internals; their file handlers are left alone.
_RAY_LOGGERS = ("ray.data", "ray.train", "ray.tune", "ray.air")


def logger(package: str) -> logging.Logger:
    """The logger of a tljob package, e.g. ``logger("run")`` -> ``tljob.run``."""
    return logging.getLogger(f"tljob.{package}")


class _LineFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        from tljob.storage.redact import redact  # no credential is ever printed

        return PREFIX + redact(record.getMessage())


class _StdoutHandler(logging.StreamHandler):
    """Writes to the *current* ``sys.stdout`` (tests and Ray swap it) and flushes at once."""

    def __init__(self, stream: TextIO | None = None) -> None:
        super().__init__(stream)
        self._fixed = stream

    @property  # type: ignore[override]
    def stream(self) -> TextIO:
        return self._fixed or sys.stdout

    @stream.setter
    def stream(self, value: Any) -> None:
        pass


def setup(verbose: bool = False, stream: TextIO | None = None) -> None:
    """Give the ``tljob`` logger its line handler (idempotent), and hide third-party
    warnings that are not about the user's job unless ``verbose``."""
    root = logging.getLogger("tljob")
    root.setLevel(logging.INFO)
    root.propagate = False
    if not any(h.get_name() == _HANDLER_NAME for h in root.handlers):
        handler = _StdoutHandler(stream)
        handler.set_name(_HANDLER_NAME)
        handler.setFormatter(_LineFormatter())
        root.addHandler(handler)
    if not verbose:
        os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


def worker_env(verbose: bool) -> dict[str, str]:
    """Environment for Ray workers (``runtime_env`` env_vars): TensorFlow's C++ logs and
    Ray Data's progress bars off unless ``verbose``."""
    if verbose:
        return {}
    return {"TF_CPP_MIN_LOG_LEVEL": "2", "TLJOB_QUIET_RAY": "1"}


def quiet_ray(verbose: bool) -> None:
    """Keep Ray's internal log records and progress bars off the console of this process
    (driver or worker); they still reach Ray's session log files. No-op when ``verbose``."""
    if verbose:
        return
    import ray.data

    ctx = ray.data.DataContext.get_current()
    ctx.enable_progress_bars = False
    ctx.print_on_execution_start = False
    for name in _RAY_LOGGERS:
        _console_off(logging.getLogger(name))


def _console_off(log: logging.Logger) -> None:
    """Raise the level of ``log``'s console handlers to ERROR; file handlers keep INFO."""
    for handler in log.handlers:
        if isinstance(handler, logging.StreamHandler) and not isinstance(
            handler, logging.FileHandler
        ):
            handler.setLevel(logging.ERROR)


def forward_only_tljob_lines(verbose: bool) -> bool:
    """In a Ray driver (after ``ray.init(log_to_driver=True)``), print only the ``[tljob]``
    lines of the output Ray forwards from workers and actors; the rest (Ray Data execution
    records, Ray Train's controller, TensorFlow's start-up lines) stays in the session log
    files, where Ray writes every process's output anyway. Returns whether the filter is on.

    Ray exposes no public hook for this, so it wraps the handler Ray registers for
    forwarded output (``ray._private.worker``); if that is missing, output is left as it is.
    """
    if verbose:
        return False
    try:
        from ray._private import worker as ray_worker

        dispatcher = ray_worker.global_worker_stdstream_dispatcher
        print_batch = ray_worker.print_to_stdstream
        ignore_prefix = ray_worker._should_ignore_worker_log_prefix(ray_worker.global_worker)
    except (ImportError, AttributeError):
        return False

    def tljob_lines_only(data: dict[str, Any]) -> None:
        lines = [line for line in data.get("lines", []) if PREFIX in line]
        if lines:
            print_batch({**data, "lines": lines}, ignore_prefix=ignore_prefix)

    if not any(name == "ray_print_logs" for name, _ in getattr(dispatcher, "handlers", [])):
        return False  # not a driver with log_to_driver, or Ray changed: leave it alone
    dispatcher.remove_handler("ray_print_logs")
    dispatcher.add_handler("ray_print_logs", tljob_lines_only)
    return True
