"""How a run that failed is told to the user: one paragraph, from the exception objects.
Pure (no Ray, no TensorFlow).

Ray Train 2.60 (V2) ends ``trainer.fit()`` with a ``TrainingFailedError``: a
``WorkerGroupError`` whose ``worker_failures`` maps each failed worker's rank to its
exception, or a ``ControllerError`` whose ``controller_failure`` is the controller's. Their
``str`` is Ray's: a worker's traceback cut after a few lines, with nothing about the run.
This module reads those attributes (by name, so it needs no Ray) and says instead, in order:

* a storage failure anywhere (the driver, the controller, a worker; an S3 request or a full
  or read-only disk): ``StorageFailedError`` naming the operation, the object or file and
  where it failed, and where rerunning the same command resumes (exit 1);
* a tljob ``UserError`` raised in a worker: that error itself (exit 2, its message);
* any other exception of a worker: ``WorkerFailedError``, "train failed on worker rank R:
  Type: message (full traceback: FILE)" (exit 1). The worker saves its whole traceback in
  the run directory before re-raising (``save_traceback``), since Ray keeps only a snippet.

Credentials never appear: every text passes through ``tljob.storage.redact``.
"""

from __future__ import annotations

import errno
import re
import traceback
from collections.abc import Iterator
from dataclasses import dataclass

from tljob import output, storage
from tljob.errors import JobFailedError, UserError
from tljob.run.attempts import current_attempt

ERRORS_DIR = "errors"
DIVERGED_FILE = "diverged.json"  # rank 0 leaves it when the loss became non-finite
_MESSAGE_CHARS = 400  # an exception message longer than this is cut in the paragraph

# pyarrow's S3 errors, e.g. "When getting information for key 'runs/x/state.json' in bucket
# 'b': AWS Error NETWORK_CONNECTION during HeadObject operation: curlCode: 7, Could not
# connect to server; Details: ..."
_S3_ERROR = re.compile(
    r"AWS Error (?P<code>[^:]+?) during (?P<operation>\w+) operation: (?P<detail>.*)"
)
_S3_KEY = re.compile(r"key '(?P<key>[^']*)' in bucket '(?P<bucket>[^']*)'")
_S3_BUCKET = re.compile(r"bucket '(?P<bucket>[^']*)'")
# errors of a local (or mounted) run directory that are the storage's, not the program's
_STORAGE_ERRNOS = {errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EIO}
# TensorFlow's graph errors: "Graph execution error:\n\nDetected at node X defined at (most
# recent call last):\n  File ...\n\n<message>\n\t [[{{node X}}]] [Op:...]"
_TF_NODE = re.compile(r"Detected at node (?P<node>\S+) defined at")
_TF_TAIL = re.compile(r"\s*\[\[\{\{node [^}]*\}\}\]\]|\s*\[Op:[^\]]*\]")


class StorageFailedError(JobFailedError):
    """The run's storage (the object store, or the disk) failed during the run."""


class WorkerFailedError(JobFailedError):
    """A training worker raised an exception that is not a tljob ``UserError``."""


@dataclass(frozen=True)
class StorageFailure:
    """One failed storage operation: ``operation`` (the S3 call, or the OS error's name),
    ``target`` (``s3://bucket/key`` or the local path; "" when the error names none),
    ``detail`` (the store's answer, redacted) and ``where`` (the process it failed in)."""

    operation: str
    target: str
    detail: str
    where: str


def traceback_file(run_dir: storage.Location, rank: int, attempt: int) -> storage.Location:
    """Where worker ``rank`` of worker-group attempt ``attempt`` (``tljob.run.attempts``)
    saves the traceback of the exception that ended it."""
    return run_dir.join(ERRORS_DIR, f"worker_rank{rank}_attempt{attempt}.txt")


def save_traceback(run_dir: storage.Location, rank: int, attempt: int, text: str) -> str:
    """Write a worker's formatted traceback (redacted) to its ``traceback_file``; returns
    its URI. Raises ``OSError`` when the storage cannot take it."""
    where = traceback_file(run_dir, rank, attempt)
    storage.write_text(where, storage.redact(text))
    return where.uri


def save_worker_traceback(run_dir: storage.Location, rank: int, error: BaseException) -> None:
    """In a worker, as ``error`` ends it: save its whole traceback under the worker group's
    attempt number. Never raises; when the storage cannot take it, the worker says so
    (unless the storage is what failed: the driver's paragraph says that)."""
    text = "".join(traceback.format_exception(error))
    try:
        save_traceback(run_dir, rank, current_attempt(run_dir).number, text)
    except Exception as e:
        if find_storage_failure(error) is None:
            output.logger("run").info(
                f"worker rank {rank} could not save its traceback in "
                f"{run_dir.join(ERRORS_DIR).uri}: {exception_text(e)}"
            )


def clear_tracebacks(run_dir: storage.Location) -> None:
    """Remove the traceback files of earlier runs (the driver, as a run starts): they are
    numbered by attempt, and each run numbers its attempts from 1 again."""
    storage.delete_dir(run_dir.join(ERRORS_DIR))


def worker_failures(error: BaseException) -> dict[int, BaseException]:
    """Rank -> exception of the workers that failed, for a Ray ``WorkerGroupError``;
    empty for anything else."""
    failures = getattr(error, "worker_failures", None)
    if not isinstance(failures, dict):
        return {}
    return {int(r): e for r, e in failures.items() if isinstance(e, BaseException)}


def controller_failure(error: BaseException) -> BaseException | None:
    """The controller's exception, for a Ray ``ControllerError``; else None."""
    failure = getattr(error, "controller_failure", None)
    return failure if isinstance(failure, BaseException) else None


def _chain(error: BaseException) -> Iterator[BaseException]:
    """``error``, what caused it (``__cause__``, ``__context__``, and a Ray task error's
    ``cause``), once each."""
    seen: set[int] = set()
    todo = [error]
    while todo:
        e = todo.pop(0)
        if id(e) in seen:
            continue
        seen.add(id(e))
        yield e
        for nxt in (e.__cause__, e.__context__, getattr(e, "cause", None)):
            if isinstance(nxt, BaseException):
                todo.append(nxt)


def _where_and_errors(error: BaseException) -> Iterator[tuple[str, BaseException]]:
    workers = worker_failures(error)
    controller = controller_failure(error)
    if workers:
        for rank in sorted(workers):
            for e in _chain(workers[rank]):
                yield f"on worker rank {rank}", e
    elif controller is not None:
        for e in _chain(controller):
            yield "in Ray Train's controller", e
    else:
        for e in _chain(error):
            yield "in the driver", e


def _s3_failure(text: str, where: str) -> StorageFailure | None:
    for line in text.splitlines():
        found = _S3_ERROR.search(line)
        if found is None:
            continue
        key, bucket = _S3_KEY.search(line), _S3_BUCKET.search(line)
        if key is not None:
            target = f"s3://{key['bucket']}/{key['key']}"
        else:
            target = f"s3://{bucket['bucket']}" if bucket is not None else ""
        detail = f"AWS Error {found['code']}: {found['detail'].strip()}"
        return StorageFailure(found["operation"], target, storage.redact(detail), where)
    return None


def find_storage_failure(error: BaseException) -> StorageFailure | None:
    """The first storage failure in ``error`` (a Ray ``TrainingFailedError`` or an exception
    of the driver) and in what caused it; None when it holds none."""
    for where, e in _where_and_errors(error):
        s3 = _s3_failure(str(e), where)
        if s3 is not None:
            return s3
        if isinstance(e, OSError) and e.errno in _STORAGE_ERRNOS:
            target = str(e.filename) if e.filename else ""
            detail = storage.redact(e.strerror or str(e))
            return StorageFailure(errno.errorcode[e.errno], target, detail, where)
    return None


def find_user_error(error: BaseException) -> UserError | None:
    """A tljob ``UserError`` that a worker (or the controller) raised, or that caused it."""
    for _, e in _where_and_errors(error):
        if isinstance(e, UserError):
            return e
    return None


def exception_text(error: BaseException) -> str:
    """``Type: message`` on one line: a multi-line message joined, TensorFlow's graph
    error reduced to its message and node, anything past ``_MESSAGE_CHARS`` cut."""
    text = str(error).strip()
    lines = text.splitlines()
    node = _TF_NODE.search(text)
    if lines and lines[0].strip() == "Graph execution error:" and node is not None:
        # the message follows the stack of the node's Python definition
        after = text[node.end() :].splitlines()[1:]
        body = [ln for ln in after if ln.strip() and not ln.startswith("  ")]
        message = _TF_TAIL.sub("", " ".join(ln.strip() for ln in body)).strip()
        text = f"{message} (at node {node['node']})"
    else:
        text = " ".join(ln.strip() for ln in lines if ln.strip())
    if len(text) > _MESSAGE_CHARS:
        text = text[: _MESSAGE_CHARS - 1].rstrip() + "…"
    name = type(error).__name__
    return storage.redact(f"{name}: {text}" if text else name)


@dataclass(frozen=True)
class Resume:
    """Where rerunning the same command resumes: ``checkpoint`` (a checkpoint directory's
    name, or None: from the start), or ``known=False`` when it could not be found out."""

    checkpoint: str | None
    known: bool = True

    def clause(self, run_uri: str) -> str:
        """ "rerunning the same command resumes from ...", to end a sentence."""
        if not self.known:
            return (
                f"rerunning the same command resumes from the newest complete checkpoint in "
                f"{run_uri} (from the start if there is none)"
            )
        if self.checkpoint is None:
            return "rerunning the same command starts from the start (no epoch had finished)"
        return f"rerunning the same command resumes from {self.checkpoint} in {run_uri}"


def resume_sentence(resume: Resume, run_uri: str) -> str:
    """The sentence that ends a failed or interrupted run's message."""
    if resume.known and resume.checkpoint is not None:
        return f"Rerun the same command to resume from {resume.checkpoint} in {run_uri}."
    clause = resume.clause(run_uri)
    return clause[0].upper() + clause[1:] + "."


def closing_sentences(restarts: int | None, max_failures: int, resume: Resume, run_uri: str) -> str:
    """How often the worker group was restarted (when known), then ``resume_sentence``."""
    sentence = resume_sentence(resume, run_uri)
    if restarts is None:
        return sentence
    return (
        f"The worker group was restarted {restarts} time(s) in this run "
        f"(`scaling.max_failures`: {max_failures}). {sentence}"
    )


def storage_paragraph(
    failure: StorageFailure, storage_described: str, resume: Resume, run_uri: str
) -> str:
    """The message of ``StorageFailedError``: the operation and object, where, the store,
    and where a rerun resumes once the storage works again."""
    target = f" on {failure.target}" if failure.target else ""
    store = f" at {storage_described}" if storage_described else ""
    return (
        f"storage failed {failure.where}: {failure.operation}{target}{store} failed "
        f"({failure.detail}). The run stopped and keeps what it saved: once the storage "
        f"answers again, {resume.clause(run_uri)}."
    )


def worker_paragraph(
    rank: int,
    failure: BaseException,
    traceback_uri: str | None,
    others: dict[int, str],
    closing: str,
) -> str:
    """The message of ``WorkerFailedError``: worker ``rank``'s exception and its traceback
    file, the other workers that failed (rank -> exception type), then ``closing``."""
    first = f"train failed on worker rank {rank}: {exception_text(failure)}"
    if traceback_uri:
        first += f" (full traceback: {traceback_uri})"
    if others:
        also = ", ".join(f"rank {r} ({kind})" for r, kind in sorted(others.items()))
        first += f"; also failed: worker {also}"
    return f"{first}\n{closing}"
