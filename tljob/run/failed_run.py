"""The driver's side of a run that failed (Ray): the newest checkpoint the run saved, and
what the run raised turned into tljob's one paragraph (``tljob.run.failures``).

Where a rerun resumes is the newest complete checkpoint on storage
(``tljob.run.checkpoint.newest_complete``), asked of the storage when the run fails. When
the storage is what failed, it cannot be asked: then the newest checkpoint this run saved
answers, as rank 0 noted it in Ray's key-value store (in the cluster's GCS, not on the
storage) as soon as its upload had finished (``note_checkpoint``, ``NewestCheckpoint``), or
else the checkpoint the run resumed from. Rank 0 notes it, not a Ray Train callback: the
controller may fail (writing its own state to the lost storage) between a checkpoint's
upload and its callbacks.
"""

from __future__ import annotations

import contextlib
import json
import sys
import uuid
from dataclasses import dataclass

import ray.train

from tljob import ray_private, storage
from tljob.config import JobConfig
from tljob.errors import JobFailedError, UserError
from tljob.run import checkpoint as ckpt_files
from tljob.run import failures
from tljob.run.attempts import read_attempts, restart_figures
from tljob.run.failures import DIVERGED_FILE

_KV_NAMESPACE = "tljob"


def note_checkpoint(key: str, name: str) -> None:
    """Rank 0, once ``ray.train.report`` has uploaded checkpoint ``name``: note it under
    ``key`` (``LoopConfig.checkpoint_note``). Never raises: the note is a nicety."""
    if key:
        with contextlib.suppress(Exception):
            ray_private.kv_put(key, name, namespace=_KV_NAMESPACE)


class NewestCheckpoint:
    """The newest checkpoint this run has saved, known without asking the storage: what
    rank 0 noted under ``key``, else ``at_start`` (the checkpoint the run resumed from).
    ``close`` removes the note."""

    def __init__(self, at_start: str | None) -> None:
        self.at_start = at_start
        self.key = f"newest-checkpoint-{uuid.uuid4().hex}"

    def name(self) -> str | None:
        try:
            noted = ray_private.kv_get(self.key, namespace=_KV_NAMESPACE)
        except Exception:  # Ray not (or no longer) initialised: nothing was noted
            noted = None
        return noted.decode() if noted else self.at_start

    def close(self) -> None:
        with contextlib.suppress(Exception):
            ray_private.kv_del(self.key, namespace=_KV_NAMESPACE)


def resume_point(run_dir: storage.Location, newest: NewestCheckpoint | None) -> failures.Resume:
    """Where rerunning the same command resumes: the newest complete checkpoint on storage;
    when the storage cannot be listed, the newest this run saved (unknown without a plan)."""
    try:
        return failures.Resume(ckpt_files.newest_complete(run_dir)[0])
    except OSError:
        if newest is None:
            return failures.Resume(None, known=False)
        return failures.Resume(newest.name())


@dataclass(frozen=True)
class _Attempts:
    restarts: int | None  # None: the records could not be read
    last: int | None  # the number of the newest attempt


def _attempts(run_dir: storage.Location) -> _Attempts:
    try:
        attempts = read_attempts(run_dir)
    except OSError:
        return _Attempts(None, None)
    last = attempts[-1].number if attempts else None
    return _Attempts(restart_figures(attempts)["restarts"], last)


def _saved_traceback(run_dir: storage.Location, rank: int, attempt: int | None) -> str | None:
    if attempt is None:
        return None
    where = failures.traceback_file(run_dir, rank, attempt)
    try:
        return where.uri if storage.exists(where) else None
    except OSError:
        return None


def _storage_described(run_dir: storage.Location) -> str:
    return "" if run_dir.is_local() else storage.current_settings().describe()


def explain(
    error: BaseException,
    job: JobConfig,
    run_dir: storage.Location,
    newest: NewestCheckpoint | None,
    verbose: bool = False,
) -> BaseException:
    """What to raise instead of ``error`` (which the run raised): ``StorageFailedError``,
    a ``UserError`` a worker raised, ``WorkerFailedError``, ``JobFailedError`` for another
    Ray Train failure, or ``error`` itself (tljob's own errors, and anything else).
    ``verbose``: Ray's own report of the failure goes to stderr first."""
    if isinstance(error, UserError | JobFailedError):
        return error
    from_ray = isinstance(error, ray.train.TrainingFailedError)
    failure = failures.find_storage_failure(error)
    if failure is None and not from_ray:
        return error
    if verbose and from_ray:
        print(storage.redact(f"Ray Train's report of the failure:\n{error}"), file=sys.stderr)
    resume = resume_point(run_dir, newest)
    if failure is not None:
        return failures.StorageFailedError(
            failures.storage_paragraph(failure, _storage_described(run_dir), resume, run_dir.uri)
        )
    user_error = failures.find_user_error(error)
    if user_error is not None:
        return user_error
    attempts = _attempts(run_dir)
    closing = failures.closing_sentences(
        attempts.restarts, job.scaling.max_failures, resume, run_dir.uri
    )
    workers = failures.worker_failures(error)
    if workers:
        rank = min(workers)
        return failures.WorkerFailedError(
            failures.worker_paragraph(
                rank,
                workers[rank],
                _saved_traceback(run_dir, rank, attempts.last),
                {r: type(e).__name__ for r, e in workers.items() if r != rank},
                closing,
            )
        )
    controller = failures.controller_failure(error)
    if controller is not None:
        text = failures.exception_text(controller)
        return JobFailedError(f"train failed in Ray Train's controller: {text}\n{closing}")
    return JobFailedError(f"train failed: {failures.exception_text(error)}\n{closing}")


class TrainingDivergedError(JobFailedError):
    """The loss became NaN or infinite; the last good checkpoint is kept."""


def diverged_error(run_dir: storage.Location) -> TrainingDivergedError | None:
    """The error that ends a run whose loss became non-finite (rank 0 left the marker
    ``DIVERGED_FILE``), the marker removed; None when there is none."""
    marker = run_dir.join(DIVERGED_FILE)
    if not storage.exists(marker):
        return None
    info = json.loads(storage.read_text(marker))
    storage.delete_file(marker)
    kept, _ = ckpt_files.newest_complete(run_dir)
    step = f" step {info['step']}" if info.get("step") else ""
    kept_text = (
        f"the last good checkpoint, {kept}, is kept and a rerun of the same `run.name` "
        "resumes from it"
        if kept
        else "no epoch had finished, so there is no checkpoint"
    )
    return TrainingDivergedError(
        f"training stopped: {', '.join(info['non_finite'])} became non-finite "
        f"({info['loss']}) in stage {info['stage_index'] + 1} {info['stage']!r} epoch "
        f"{info['epoch']}{step}, at learning rate {info['learning_rate']:.3g}; nothing of "
        f"that epoch was saved and no model was exported; {kept_text}. Lower "
        f"`train.stages.{info['stage_index']}.learning_rate` (with a new `run.name`) and "
        "train again"
    )
