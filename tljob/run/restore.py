"""What a worker restores when its worker group starts: the checkpoint its attempt record
names (``tljob.run.attempts``; the driver's resume plan for the first group, the newest
complete checkpoint for a restarted one), with the state, the current and best weights and
the optimizer's variables (read through the plain model copy), and where training goes on."""

from __future__ import annotations

from typing import Any, NamedTuple

import numpy as np

from tljob import storage
from tljob.config import JobConfig
from tljob.nn import io as keras_io
from tljob.run import checkpoint as ckpt_files
from tljob.run.attempts import Attempt, current_attempt
from tljob.run.ledger import ResumePlan, TrainState, plan_resume


class Restored(NamedTuple):
    """What the chosen checkpoint holds (all None but a fresh state without one)."""

    state: TrainState
    weights: list[np.ndarray] | None = None
    best_weights: list[np.ndarray] | None = None
    optimizer: list[np.ndarray] | None = None


def restore_checkpoint(plain: Any, checkpoint_uri: str | None) -> Restored:
    """Read the chosen checkpoint through the plain model copy."""
    if checkpoint_uri is None:
        return Restored(TrainState())
    contents = ckpt_files.read_checkpoint(
        storage.resolve(checkpoint_uri), lambda path: keras_io.load_weights(plain, path)
    )
    return Restored(*contents)


class AttemptStart(NamedTuple):
    """Where this worker group starts: its attempt, the checkpoint read, and the stage and
    epoch training continues at (``plan.stage_index``, ``plan.epoch``)."""

    attempt: Attempt
    restored: Restored
    plan: ResumePlan


def restore_attempt(plain: Any, run_dir: storage.Location, job: JobConfig) -> AttemptStart:
    """Read the checkpoint the current attempt resumes from; every worker of the group reads
    the same record, so all restore the same epoch."""
    attempt = current_attempt(run_dir)
    uri = run_dir.join(attempt.checkpoint).uri if attempt.checkpoint else None
    restored = restore_checkpoint(plain, uri)
    # The driver has already checked this config against the run's; only the position is new.
    plan = plan_resume(restored.state, attempt.checkpoint, None, job, run_dir.uri)
    return AttemptStart(attempt, restored, plan)
