"""The worker-group attempts of one run: where each started and how far it got. Pure (no
Ray, no TensorFlow).

Ray Train restarts the whole worker group when a worker dies (at most
``scaling.max_failures`` times per run). Each start of a worker group is an *attempt*.
When an attempt starts, ``start_attempt`` chooses where it resumes by the rule a rerun of
the command uses (``tljob.run.checkpoint.resume_point``): the newest complete checkpoint on
storage, with incomplete checkpoint directories newer than it removed. It writes the
choice to ``<run_dir>/attempts/attempt_NNNN.json`` before any worker of the attempt runs;
every worker restores what the newest record names (``current_attempt``), and rank 0
records each global epoch it begins (``record_epoch_begun``). After the run the driver
reads the records:

    restarts = attempts - 1
    epochs_repeated = sum over restarts of (furthest epoch the failed attempt began
                                            - epochs in the checkpoint the next resumed from)

so an epoch killed half-way counts as repeated (it is trained again from its start), and
a kill between an epoch's checkpoint and the next epoch's start repeats nothing.

Why a record on storage rather than Ray Train's own state: Ray 2.60 keeps its failure count
inside the controller's failure policy, with no public API to read it, and records neither
which checkpoint an attempt resumed from nor how far the failed attempt got. The record
lives in the run directory (local or ``s3://``), which the driver and every worker reach,
on one machine or across KubeRay pods. The driver clears it when a run starts, so it
counts the restarts of that run only; rerunning the command after a crashed driver is a
new run that resumes (``run.name`` and ``run.storage_path`` unchanged), not a restart.
"""

from __future__ import annotations

import json
import re
from dataclasses import asdict, dataclass, replace
from typing import Any

from tljob import storage
from tljob.run import checkpoint as ckpt_files

ATTEMPTS_DIR = "attempts"
_NAME = re.compile(r"^attempt_(\d{4,})\.json$")


@dataclass(frozen=True)
class Attempt:
    """One start of the worker group, as ``attempts/attempt_NNNN.json`` records it."""

    number: int  # 1 for the run's first worker group
    checkpoint: str | None  # name of the checkpoint directory it resumed from; None: fresh
    epochs_done: int  # global epochs that checkpoint holds (0 when fresh)
    furthest_epoch: int  # highest global epoch (1-based) rank 0 began; epochs_done before

    def to_json(self) -> str:
        return json.dumps(asdict(self), indent=1)

    @classmethod
    def from_json(cls, text: str) -> Attempt:
        return cls(**json.loads(text))


def attempt_file(run_dir: storage.Location, number: int) -> storage.Location:
    return run_dir.join(ATTEMPTS_DIR, f"attempt_{number:04d}.json")


def read_attempts(run_dir: storage.Location) -> list[Attempt]:
    """Every recorded attempt of the run, oldest first (none before a run's first start)."""
    folder = run_dir.join(ATTEMPTS_DIR)
    if not storage.is_dir(folder):
        return []
    infos = folder.fs.get_file_info(storage.pafs.FileSelector(folder.path))
    numbers = sorted(
        int(m.group(1))
        for info in infos
        if info.type == storage.pafs.FileType.File and (m := _NAME.match(info.base_name))
    )
    return [Attempt.from_json(storage.read_text(attempt_file(run_dir, n))) for n in numbers]


def clear_attempts(run_dir: storage.Location) -> None:
    """Forget the attempts of earlier runs of this run directory (the driver, before
    training): each run counts its own restarts."""
    storage.delete_dir(run_dir.join(ATTEMPTS_DIR))


def start_attempt(run_dir: storage.Location) -> Attempt:
    """Record the next attempt, resuming from the newest complete checkpoint on storage;
    remove the incomplete checkpoint directories newer than it (an upload the failure
    interrupted). Called once per worker-group start, before its workers run."""
    point = ckpt_files.resume_point(run_dir)
    point.remove_incomplete()
    previous = read_attempts(run_dir)
    attempt = Attempt(
        number=previous[-1].number + 1 if previous else 1,
        checkpoint=point.name,
        epochs_done=point.epochs_done,
        furthest_epoch=point.epochs_done,
    )
    storage.write_text(attempt_file(run_dir, attempt.number), attempt.to_json())
    return attempt


def current_attempt(run_dir: storage.Location) -> Attempt:
    """The attempt this worker belongs to: the newest record (a worker group starts only
    after its record is written, and the next is written only after it is shut down)."""
    attempts = read_attempts(run_dir)
    if not attempts:
        raise RuntimeError(
            f"no attempt record in {run_dir.join(ATTEMPTS_DIR).uri}: the training dataset "
            "must be tljob's per-attempt factory (tljob.run.restart.TrainDatasetPerAttempt)"
        )
    return attempts[-1]


def record_epoch_begun(run_dir: storage.Location, attempt: Attempt, global_epoch: int) -> Attempt:
    """Rank 0, as it begins ``global_epoch``: rewrite the attempt's record (one small
    whole-file write per epoch). Returns the updated record."""
    if global_epoch <= attempt.furthest_epoch:
        return attempt
    updated = replace(attempt, furthest_epoch=global_epoch)
    storage.write_text(attempt_file(run_dir, attempt.number), updated.to_json())
    return updated


def restart_figures(attempts: list[Attempt]) -> dict[str, Any]:
    """``summary.json``'s ``restarts`` (worker-group restarts in this run) and
    ``epochs_repeated`` (epochs begun again because they came after the checkpoint the next
    attempt resumed from; see the module docstring)."""
    repeated = sum(
        max(0, failed.furthest_epoch - resumed.epochs_done)
        for failed, resumed in zip(attempts, attempts[1:], strict=False)
    )
    return {"restarts": max(0, len(attempts) - 1), "epochs_repeated": repeated}
