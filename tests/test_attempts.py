"""Worker-group attempts without Ray: the `scaling.max_failures` setting, where each attempt
resumes (the newest complete checkpoint), how far it got, the restart figures of
summary.json and their row in the end-of-run table, and the training dataset factory that
starts a restarted group's stream at the resumed epoch."""

from __future__ import annotations

import json
import os
import pickle
from types import SimpleNamespace

import pytest
from test_resume import _write_checkpoint, job_with, state_after

from tljob import storage
from tljob.config import load_config
from tljob.errors import UserError
from tljob.report import format_summary, restarts_row
from tljob.run import checkpoint as ckpt_files
from tljob.run.attempts import (
    Attempt,
    attempt_file,
    clear_attempts,
    current_attempt,
    read_attempts,
    record_epoch_begun,
    restart_figures,
    start_attempt,
)
from tljob.run.timings import epoch_timing

BASE = ["data.source=/x", "model.weights=none", "data.image_size=64"]


def test_max_failures_defaults_to_2_and_must_not_be_negative():
    assert load_config(None, BASE).scaling.max_failures == 2
    assert load_config(None, [*BASE, "scaling.max_failures=0"]).scaling.max_failures == 0
    with pytest.raises(UserError) as err:
        load_config(None, [*BASE, "scaling.max_failures=-1"])
    assert "`scaling.max_failures` (-1): Input should be greater than or equal to 0" in str(
        err.value
    )
    with pytest.raises(UserError, match=r"`scaling.max_failures` \('two'\)"):
        load_config(None, [*BASE, "scaling.max_failures=two"])


def _checkpoint(run_path, job, epochs: int) -> None:
    """A complete checkpoint of ``epochs`` global epochs (all in stage 0, then stage 1)."""
    directory = run_path / ckpt_files.checkpoint_name(epochs)
    _write_checkpoint(directory)
    per_stage = [min(epochs, 1), max(0, epochs - 1)]
    (directory / ckpt_files.STATE_FILE).write_text(state_after(job, per_stage).to_json())
    ckpt_files.write_manifest(str(directory))


def test_a_fresh_run_attempt_starts_from_nothing_and_is_numbered_1(tmp_path):
    run = storage.resolve(str(tmp_path / "run"))
    assert read_attempts(run) == []
    first = start_attempt(run)
    assert first == Attempt(number=1, checkpoint=None, epochs_done=0, furthest_epoch=0)
    assert json.loads((tmp_path / "run" / "attempts" / "attempt_0001.json").read_text()) == {
        "number": 1,
        "checkpoint": None,
        "epochs_done": 0,
        "furthest_epoch": 0,
    }
    assert current_attempt(run) == first


def test_a_restart_resumes_from_the_newest_complete_checkpoint_and_removes_newer_parts(
    tmp_path,
):
    job = job_with()
    run = storage.resolve(str(tmp_path / "run"))
    _checkpoint(tmp_path / "run", job, 1)
    first = start_attempt(run)
    assert (first.number, first.checkpoint, first.epochs_done) == (1, "checkpoint_epoch_0001", 1)
    first = record_epoch_begun(run, first, 2)
    _checkpoint(tmp_path / "run", job, 2)
    first = record_epoch_begun(run, first, 3)
    # epoch 3's upload was cut short by the failure: one file is short
    _checkpoint(tmp_path / "run", job, 3)
    os.truncate(tmp_path / "run" / "checkpoint_epoch_0003" / "model.weights.h5", 3)

    second = start_attempt(run)
    assert second == Attempt(
        number=2, checkpoint="checkpoint_epoch_0002", epochs_done=2, furthest_epoch=2
    )
    assert ckpt_files.checkpoint_dirs(run) == ["checkpoint_epoch_0002", "checkpoint_epoch_0001"]
    assert current_attempt(run) == second
    assert read_attempts(run) == [
        Attempt(number=1, checkpoint="checkpoint_epoch_0001", epochs_done=1, furthest_epoch=3),
        second,
    ]
    assert restart_figures(read_attempts(run)) == {"restarts": 1, "epochs_repeated": 1}


def test_rank_0_records_only_epochs_beyond_the_furthest(tmp_path):
    run = storage.resolve(str(tmp_path / "run"))
    attempt = start_attempt(run)
    attempt = record_epoch_begun(run, attempt, 1)
    assert attempt.furthest_epoch == 1
    assert Attempt.from_json(storage.read_text(attempt_file(run, 1))) == attempt
    (tmp_path / "run" / "attempts" / "attempt_0001.json").write_text(attempt.to_json() + " ")
    # an epoch already recorded is not written again
    assert record_epoch_begun(run, attempt, 1) is attempt
    assert (tmp_path / "run" / "attempts" / "attempt_0001.json").read_text().endswith("} ")


def test_a_worker_without_an_attempt_record_says_what_is_missing(tmp_path):
    run = storage.resolve(str(tmp_path / "run"))
    with pytest.raises(RuntimeError, match="no attempt record in .*/run/attempts: the training"):
        current_attempt(run)


def test_a_new_run_forgets_the_attempts_of_earlier_runs(tmp_path):
    run = storage.resolve(str(tmp_path / "run"))
    start_attempt(run)
    start_attempt(run)
    (tmp_path / "run" / "attempts" / "notes.txt").write_text("not a record")
    assert [a.number for a in read_attempts(run)] == [1, 2]
    clear_attempts(run)
    assert read_attempts(run) == []
    assert start_attempt(run).number == 1
    clear_attempts(storage.resolve(str(tmp_path / "never-ran")))  # nothing to clear is fine


def _attempt(number: int, done: int, furthest: int) -> Attempt:
    name = ckpt_files.checkpoint_name(done) if done else None
    return Attempt(number=number, checkpoint=name, epochs_done=done, furthest_epoch=furthest)


@pytest.mark.parametrize(
    ("attempts", "figures"),
    [
        ([], (0, 0)),
        ([_attempt(1, 0, 5)], (0, 0)),
        # killed half-way through epoch 3, resumed after epoch 2: epoch 3 is trained again
        ([_attempt(1, 0, 3), _attempt(2, 2, 5)], (1, 1)),
        # killed after epoch 2's checkpoint, before epoch 3 began: nothing is repeated
        ([_attempt(1, 0, 2), _attempt(2, 2, 5)], (1, 0)),
        # killed before any epoch began (start-up), then in epoch 2 of the second attempt,
        # whose epoch 1 had been checkpointed; the third resumes there
        ([_attempt(1, 0, 0), _attempt(2, 0, 2), _attempt(3, 1, 4)], (2, 1)),
        # a checkpoint two epochs back (an upload cut short): both epochs count
        ([_attempt(1, 0, 4), _attempt(2, 2, 4)], (1, 2)),
        # a record behind the checkpoint (rank 0's last write lost with it): never negative
        ([_attempt(1, 0, 1), _attempt(2, 2, 3)], (1, 0)),
    ],
)
def test_restart_figures(attempts, figures):
    assert restart_figures(attempts) == {"restarts": figures[0], "epochs_repeated": figures[1]}


def test_the_end_of_run_table_shows_restarts_and_repeated_epochs():
    assert restarts_row({"restarts": 0, "epochs_repeated": 0}) == (
        "restarts          0 worker-group restarts"
    )
    assert restarts_row({"restarts": 1, "epochs_repeated": 1}) == (
        "restarts          1 worker-group restart after a failure, 1 epoch trained again"
    )
    assert restarts_row({"restarts": 2, "epochs_repeated": 0}) == (
        "restarts          2 worker-group restarts after a failure, 0 epochs trained again"
    )
    summary = {
        "backbone": "vgg16",
        "weights": "none",
        "image_size": 32,
        "num_workers": 2,
        "classes": ["cat", "dog"],
        "data": {
            "listed": 9,
            "duplicates": 0,
            "quarantined": 0,
            "skipped_at_listing": 0,
            "splits": {
                "train": {"used": 6, "per_class_used": {"cat": 3, "dog": 3}},
                "val": {"used": 3, "per_class_used": {"cat": 2, "dog": 1}},
            },
        },
        "stages": {"head": {"epochs": 3, "best_val_accuracy": 0.5, "final_val_accuracy": 0.5}},
        "best": {"global_epoch": 1, "stage": "head", "epoch": 1, "val_accuracy": 0.5},
        "exported_model": {"path": "model/model.keras", "correct": 1, "images": 3, "accuracy": 0.3},
        "run_dir": "/runs/r",
        "checkpoint": "/runs/r/checkpoint_epoch_0003",
        "wall_seconds": 3.0,
    }
    before = format_summary(summary, "t").splitlines()  # a summary from before restarts
    assert not any(line.startswith("restarts") for line in before)
    lines = format_summary({**summary, "restarts": 1, "epochs_repeated": 1}, "t").splitlines()
    at = lines.index(
        "restarts          1 worker-group restart after a failure, 1 epoch trained again"
    )
    assert lines[at + 1].startswith("exported model    /runs/r/model/model.keras")
    assert [line for line in lines if line != lines[at]] == before


def test_epoch_timing_takes_each_phase_between_its_marks():
    marks = {"epoch": 10.0, "val": 12.5, "val_end": 13.0, "hooks": 13.25, "weights_read": 13.5}
    assert epoch_timing(4, marks) == {
        "global_epoch": 4,
        "train": 2.5,
        "validation": 0.5,
        "callbacks": 0.25,
        "weights_read": 0.25,
    }


class _Dataset:
    """What the factory touches of a Ray Dataset: its context's execution counter."""

    def __init__(self, execution: int) -> None:
        self.context = SimpleNamespace(_execution_idx=execution)


def test_the_training_dataset_factory_starts_each_attempt_at_its_checkpoints_epoch(tmp_path):
    from tljob.data.views import EpochMark
    from tljob.run.restart import TrainDatasetPerAttempt

    job = job_with()
    run = storage.resolve(str(tmp_path / "run"))
    _checkpoint(tmp_path / "run", job, 1)
    # the driver built the stream (counter 7) for a run resuming after 1 epoch
    dataset = _Dataset(execution=7)
    factory = pickle.loads(pickle.dumps(TrainDatasetPerAttempt(dataset, run, next_epoch=1)))
    assert factory.mark == EpochMark(execution=7, epoch=1)

    first = factory()
    assert first.context._execution_idx == 7  # the first group starts where the plan said
    assert current_attempt(run).checkpoint == "checkpoint_epoch_0001"

    _checkpoint(tmp_path / "run", job, 3)  # the group got to epoch 3, then a worker died
    second = factory()
    assert second.context._execution_idx == 9  # its next execution is epoch 3 (0-based)
    assert current_attempt(run) == Attempt(
        number=2, checkpoint="checkpoint_epoch_0003", epochs_done=3, furthest_epoch=3
    )
