"""Checkpoints through their one module, without Ray: writing one (manifest last) and
reading it back, and the one resume rule (newest complete, newer incomplete ones removed)
that a rerun of the command and a restarted worker group both follow."""

from __future__ import annotations

import json
import os

import numpy as np
import pytest
from test_resume import job_with, state_after

from tljob import storage
from tljob.config import dump_config
from tljob.run import checkpoint as ckpt_files
from tljob.run.attempts import start_attempt
from tljob.run.ledger import RunMismatchError


def _save(values: list[np.ndarray]):
    def save(path: str) -> None:
        np.savez(path, *values)
        os.rename(path + ".npz", path)  # np.savez appends .npz to a name without it

    return save


def _load(path: str) -> list[np.ndarray]:
    with np.load(path) as npz:
        return [npz[f"arr_{i}"] for i in range(len(npz.files))]


def _write(directory, job, epochs: list[int], weights: float, best: float) -> None:
    os.makedirs(directory, exist_ok=True)
    ckpt_files.write_checkpoint(
        str(directory),
        save_weights=_save([np.full(3, weights)]),
        save_best_weights=lambda path, current: _save([np.full(3, best)])(path),
        optimizer=[np.arange(2.0), np.ones((2, 2))],
        state=state_after(job, epochs),
    )


def test_a_written_checkpoint_is_complete_and_reads_back_as_written(tmp_path):
    job = job_with()
    seen = []
    directory = tmp_path / "run" / ckpt_files.checkpoint_name(2)
    directory.mkdir(parents=True)
    ckpt_files.write_checkpoint(
        str(directory),
        save_weights=_save([np.full(3, 1.0)]),
        save_best_weights=lambda path, current: (seen.append(current), _save([np.zeros(3)])(path)),
        optimizer=[np.arange(2.0), np.ones((2, 2))],
        state=state_after(job, [1, 1]),
    )
    # the best weights' writer is handed the current weights' file, already written
    assert seen == [str(directory / ckpt_files.WEIGHTS_FILE)]
    assert os.path.getsize(seen[0]) > 0
    sizes = json.loads((directory / ckpt_files.MANIFEST_FILE).read_text())["files"]
    assert sizes == {n: os.path.getsize(directory / n) for n in ckpt_files.CHECKPOINT_FILES}
    ckpt = storage.resolve(str(directory))
    assert ckpt_files.is_complete(ckpt)

    contents = ckpt_files.read_checkpoint(ckpt, _load)
    assert contents.state.to_json() == state_after(job, [1, 1]).to_json()  # NaN: by text
    assert [w.tolist() for w in contents.weights] == [[1.0, 1.0, 1.0]]
    assert [w.tolist() for w in contents.best_weights] == [[0.0, 0.0, 0.0]]
    assert [v.tolist() for v in contents.optimizer] == [[0.0, 1.0], [[1.0, 1.0], [1.0, 1.0]]]
    assert ckpt_files.read_state(ckpt).to_json() == state_after(job, [1, 1]).to_json()


def _run_with_an_interrupted_upload(tmp_path, job) -> storage.Location:
    """Complete checkpoints of epochs 1 and 2; epoch 3's upload cut short, epoch 4's
    directory without a manifest."""
    run = tmp_path / "runs" / "r"
    for epochs in ([1], [1, 1], [1, 2]):
        _write(run / ckpt_files.checkpoint_name(sum(epochs)), job, epochs, 1.0, 0.0)
    os.truncate(run / "checkpoint_epoch_0003" / ckpt_files.WEIGHTS_FILE, 3)
    (run / "checkpoint_epoch_0004").mkdir()
    return storage.resolve(str(run))


def test_the_resume_point_is_the_newest_complete_checkpoint_and_names_the_newer_parts(tmp_path):
    job = job_with()
    run = _run_with_an_interrupted_upload(tmp_path, job)
    point = ckpt_files.resume_point(run)
    assert (point.name, point.epochs_done) == ("checkpoint_epoch_0002", 2)
    assert point.state.to_json() == state_after(job, [1, 1]).to_json()
    assert point.incomplete == ("checkpoint_epoch_0004", "checkpoint_epoch_0003")
    said: list[str] = []
    point.remove_incomplete(said.append)
    assert said == [
        "removing checkpoint_epoch_0004: incomplete (its upload was interrupted)",
        "removing checkpoint_epoch_0003: incomplete (its upload was interrupted)",
    ]
    assert ckpt_files.checkpoint_dirs(run) == ["checkpoint_epoch_0002", "checkpoint_epoch_0001"]
    fresh = ckpt_files.resume_point(storage.resolve(str(tmp_path / "none")))
    assert (fresh.name, fresh.state, fresh.incomplete, fresh.epochs_done) == (None, None, (), 0)


def test_a_rerun_and_a_restarted_group_resume_alike(tmp_path):
    from tljob.run.driver import plan_run

    job = job_with()
    rerun = _run_with_an_interrupted_upload(tmp_path / "a", job)
    restarted = _run_with_an_interrupted_upload(tmp_path / "b", job)
    plan = plan_run(rerun, job, ["a", "b"])
    attempt = start_attempt(restarted)
    assert plan.checkpoint == attempt.checkpoint == "checkpoint_epoch_0002"
    assert attempt.epochs_done == 2
    assert ckpt_files.checkpoint_dirs(rerun) == ckpt_files.checkpoint_dirs(restarted)
    assert ckpt_files.checkpoint_dirs(rerun) == ["checkpoint_epoch_0002", "checkpoint_epoch_0001"]


def test_a_refused_rerun_removes_no_checkpoint_directory(tmp_path):
    from tljob.run.driver import plan_run

    job = job_with()
    run = _run_with_an_interrupted_upload(tmp_path, job)
    storage.write_text(run.join("labels.json"), '{"0": "a", "1": "b"}')
    storage.write_text(run.join("config.yaml"), dump_config(job))
    with pytest.raises(RunMismatchError, match=r"trained on classes \['a', 'b'\], but"):
        plan_run(run, job, ["a", "b", "c"])
    assert len(ckpt_files.checkpoint_dirs(run)) == 4
