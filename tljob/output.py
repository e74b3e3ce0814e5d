"""What a person sees while a job runs: tljob's own lines, and Ray's internals kept out of
the way unless asked for. Pure at import (imports Ray only inside ``quiet_ray``).

Every package logs through its own logger (``tljob.run``, ``tljob.data``, ...) under the
``tljob`` logger, which ``setup`` gives one handler writing ``[tljob] <message>`` lines to
stdout, one line per event, the same in the driver and in the workers (whose stdout Ray
forwards to the driver). On a terminal, rank 0's training lines go through the live display
instead (``tljob.run.progress``), which prints the same lines above its live row. Every
line passes through ``tljob.storage.redact`` first, so no credential is ever printed.

By default (``verbose=False``) Ray's own chatter goes only to Ray's session log files
(``/tmp/ray/session_latest/logs``): Ray Data's execution plans and progress bars, Ray
Train's per-report records and TensorFlow's C++ log lines; the driver drops TensorFlow's
start-up lines (``native_logs_hidden``). ``--verbose`` shows them.
"""

from __future__ import annotations

import contextlib
import logging
import os
import re
import sys
import tempfile
import threading
from collections.abc import Iterator
from typing import Any, TextIO

from tljob import ray_private

PREFIX = "[tljob] "
_HANDLER_NAME = "tljob-lines"
# Loggers whose console output is Ray's internals; their file handlers are left alone.
_RAY_LOGGERS = ("ray.data", "ray.train", "ray.tune", "ray.air")
# What TensorFlow's C++ side prints to stderr while it loads (absl/glog format), e.g.
#   I0000 00:00:1795831388.420093   17274 port.cc:153] oneDNN custom operations are on...
#   E0000 00:00:1712345678.123456    1234 cuda_dnn.cc:8310] Unable to register cuDNN factory
# TF 2.21 prints these before reading TF_CPP_MIN_LOG_LEVEL, so that variable alone cannot
# hide them.
_NATIVE_LOG_LINE = re.compile(
    r"[IWE]\d{4} [\d:.]+ +\d+ [\w.-]+:\d+\] "  # before absl starts, the time is epoch s
    r"|WARNING: All log messages before absl::InitializeLog\(\) is called are written to STDERR$"
    r"|To enable the following instructions: "  # the cpu_feature_guard line's second half
)


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


def is_native_log_line(line: str) -> bool:
    """Whether ``line`` is one of the C++ log lines TensorFlow prints while loading."""
    return _NATIVE_LOG_LINE.match(line.rstrip("\n")) is not None


@contextlib.contextmanager
def native_logs_hidden(verbose: bool) -> Iterator[None]:
    """Around the driver's first TensorFlow import: drop TensorFlow's C++ start-up lines
    (oneDNN, CUDA, CPU features) from this process's stderr, unless ``verbose``.

    They are written to file descriptor 2 by C++ code, beneath ``sys.stderr``, so the
    descriptor itself is pointed at a temporary file meanwhile; afterwards every captured
    line that is not such a log line (a Python warning, a traceback) is written to stderr.
    """
    if verbose:
        yield
        return
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    sys.stderr.flush()
    saved = os.dup(2)
    with tempfile.TemporaryFile() as captured:
        os.dup2(captured.fileno(), 2)
        try:
            yield
        finally:
            sys.stderr.flush()
            os.dup2(saved, 2)
            os.close(saved)
            captured.seek(0)
            text = captured.read().decode(errors="replace")
            kept = [ln for ln in text.splitlines(keepends=True) if not is_native_log_line(ln)]
            if kept:
                sys.stderr.write("".join(kept))
                sys.stderr.flush()


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


# Colour and cursor escapes (CSI sequences) a forwarded line may carry.
_ANSI_ESCAPE = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]")


def tljob_line(forwarded: str) -> str | None:
    """A line forwarded from a worker as the user should read it: tljob's own lines
    without colour codes, anything else None."""
    if PREFIX not in forwarded:
        return None
    return _ANSI_ESCAPE.sub("", forwarded)


def forward_only_tljob_lines(verbose: bool) -> bool:
    """In a Ray driver (after ``ray.init(log_to_driver=True)``), print only the ``[tljob]``
    lines of the output Ray forwards from workers and actors, clean: without Ray's
    ``(RayTrainWorker pid=…)`` prefix or colour codes, as they read in a log file or
    ``ray job logs``. The rest (Ray Data execution records, Ray Train's controller,
    TensorFlow's start-up lines) stays in the session log files, where Ray writes every
    process's output anyway. Returns whether the filter is on.

    Ray exposes no public hook for this (``tljob.ray_private``); if its internals moved,
    output is left as it is.
    """
    if verbose:
        return False
    return ray_private.replace_worker_output_printer(tljob_line)


# Warnings the raylet sends every driver that are about Ray's own housekeeping, not the
# job: a sweep's trial actors, Train controllers and workers outnumber the CPUs, which
# Ray's worker-pool heuristic reports as "N PYTHON worker processes have been started".
_HARMLESS_RAY_WARNINGS = re.compile(r"worker processes have been started on node")


def hide_ray_warnings(verbose: bool) -> bool:
    """In a Ray driver, drop the raylet's messages that match ``_HARMLESS_RAY_WARNINGS``
    from the console (others, e.g. a worker killed for lack of memory, still show).
    Returns whether the filter is on; no-op when ``verbose``. Ray has no public hook for
    it (``tljob.ray_private``); if its internals moved, output is left as it is."""
    if verbose:
        return False
    return ray_private.filter_stdstream_prints(
        lambda line: bool(_HARMLESS_RAY_WARNINGS.search(line))
    )


# What Ray's core worker prints to a driver's stderr (C++, beneath sys.stderr) for every
# actor a Ray Data actor pool starts: the pool passes its function through the object
# store and lets actors restart, which Ray 2.60 warns about (ray-project/ray#53727).
_RAY_ACTOR_ARGS_NOTICE = re.compile(
    r"Actor with class name: .* has constructor arguments in the object store and "
    r"max_restarts > 0"
)


@contextlib.contextmanager
def ray_actor_notices_hidden(verbose: bool) -> Iterator[None]:
    """While a Ray Data actor pool runs from this driver: drop Ray's per-actor notice
    (``_RAY_ACTOR_ARGS_NOTICE``) from this process's stderr, every other line passing at
    once. File descriptor 2 is a pipe meanwhile, read line by line by a thread; no-op when
    ``verbose``."""
    if verbose:
        yield
        return
    sys.stderr.flush()
    real = os.dup(2)
    read_end, write_end = os.pipe()
    os.dup2(write_end, 2)
    os.close(write_end)

    def pump() -> None:
        with os.fdopen(read_end, "rb") as pipe:
            for line in pipe:
                if not _RAY_ACTOR_ARGS_NOTICE.search(line.decode(errors="replace")):
                    os.write(real, line)

    thread = threading.Thread(target=pump, name="tljob-stderr", daemon=True)
    thread.start()
    try:
        yield
    finally:
        sys.stderr.flush()
        os.dup2(real, 2)  # the pipe's last writer in this process is gone
        thread.join(timeout=5)
        if not thread.is_alive():  # else a child still writes through it: keep ``real``
            os.close(real)
