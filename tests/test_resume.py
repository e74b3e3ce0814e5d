"""Reruns that do what they say, without Ray: the resume plan, complete checkpoints, the
run directory checks and the permissions of what a run writes (the run lock:
``test_run_lock.py``)."""

from __future__ import annotations

import json
import os
import stat
import subprocess
import sys

import pytest

from tljob import storage
from tljob.config import dump_config, load_config
from tljob.run import checkpoint as ckpt_files
from tljob.run.ledger import (
    EpochRow,
    RunMismatchError,
    TrainState,
    parse_history_csv,
    plan_resume,
)

BASE = ["data.source=/x", "model.weights=none", "data.image_size=64"]
TWO_STAGES = [
    "train.stages.0.epochs=1",
    "train.stages.1.epochs=2",
]


def job_with(*overrides: str):
    return load_config(None, [*BASE, *TWO_STAGES, *overrides])


def state_after(job, epochs_per_stage: list[int], stopped_early=()) -> TrainState:
    rows = []
    for index, n in enumerate(epochs_per_stage):
        for e in range(n):
            rows.append(
                EpochRow.from_dict(
                    {
                        "global_epoch": len(rows) + 1,
                        "stage": job.train.stages[index].name,
                        "stage_index": index,
                        "epoch": e + 1,
                        "loss": 1.0,
                        "accuracy": 0.5,
                        "val_loss": 1.0,
                        "val_accuracy": 0.5,
                        "learning_rate": 0.001,
                        "trainable_tensors": 2,
                        "seconds": 1.5,
                    }
                )
            )
    return TrainState(history=rows, best=rows[-1], stopped_early=list(stopped_early))


def saved(job) -> dict:
    import yaml

    return yaml.safe_load(dump_config(job))


def test_fresh_run_says_why_it_starts_fresh():
    job = job_with()
    plan = plan_resume(None, None, None, job, "/runs/r")
    assert (plan.stage_index, plan.epoch, plan.complete) == (0, 0, False)
    assert plan.message == "starting fresh: /runs/r has no complete checkpoint"
    plan = plan_resume(None, None, saved(job), job, "/runs/r")
    assert plan.message == "starting fresh: /runs/r has no complete checkpoint yet"


def test_resume_continues_at_the_next_epoch_and_says_where():
    job = job_with()
    plan = plan_resume(state_after(job, [1, 1]), "checkpoint_epoch_0002", saved(job), job, "r")
    assert (plan.stage_index, plan.epoch, plan.complete) == (1, 1, False)
    assert plan.message == (
        "resuming after stage 'fine_tune' epoch 1 (global epoch 2) from checkpoint_epoch_0002; "
        "next: stage 2/2 'fine_tune' epoch 2/2"
    )


def test_extending_a_finished_last_stage_continues_it():
    first = load_config(None, [*BASE, "train.stages=[{name: head, epochs: 1, learning_rate: 0.1}]"])
    longer = load_config(
        None, [*BASE, "train.stages=[{name: head, epochs: 3, learning_rate: 0.1}]"]
    )
    state = state_after(first, [1])
    done = plan_resume(state, "checkpoint_epoch_0001", saved(first), first, "r")
    assert done.complete and "nothing to train" in done.message
    plan = plan_resume(state, "checkpoint_epoch_0001", saved(first), longer, "r")
    assert (plan.stage_index, plan.epoch, plan.complete) == (0, 1, False)
    assert plan.message.endswith("next: stage 1/1 'head' epoch 2/3")


def test_adding_a_stage_after_a_finished_run_starts_it():
    job = job_with()
    stages = saved(job)["train"]["stages"] + [{"name": "more", "epochs": 1, "learning_rate": 0.1}]
    more = job_with(f"train.stages={json.dumps(stages)}")
    plan = plan_resume(state_after(job, [1, 2]), "checkpoint_epoch_0003", saved(job), more, "r")
    assert (plan.stage_index, plan.epoch, plan.complete) == (2, 0, False)


@pytest.mark.parametrize(
    ("overrides", "done", "message"),
    [
        (["train.stages.1.epochs=1"], [1, 2], "`train.stages.1.epochs` (1) is less than the 2"),
        (["train.stages.0.epochs=3"], [1, 1], "only the last trained stage can be extended"),
        (
            ["train.stages.0.learning_rate=0.5"],
            [1, 0],
            "`train.stages.0` has trained 1 epoch(s) and cannot change: `learning_rate` (0.0001",
        ),
        (["train.batch_size=8"], [1, 0], "`train.batch_size` (32 -> 8)"),
        (["data.seed=7"], [1, 0], "`data.seed` (0 -> 7)"),
        (["train.reduce_lr.patience=9"], [1, 0], "`train.reduce_lr.patience` (2 -> 9)"),
        (
            ["train.stages.0.schedule.kind=cosine"],
            [1, 0],
            "`train.stages.0` has trained 1 epoch(s) and cannot change: `schedule.kind` "
            "('plateau' -> 'cosine')",
        ),
        (
            ["train.stages.0.label_smoothing=0.1"],
            [1, 0],
            "cannot change: `label_smoothing` (0.0 -> 0.1)",
        ),
        (["train.stages.0.batchnorm=train"], [1, 0], "cannot change: `batchnorm` ('auto' -> "),
        (
            ["train.stages.1.optimizer=sgd", "train.stages.1.momentum=0.5"],
            [1, 1],
            "`train.stages.1` has trained 1 epoch(s) and cannot change: `optimizer` ('adam' -> "
            "'sgd'), `momentum` (None -> 0.5)",
        ),
        (["train.class_weight=balanced"], [1, 0], "`train.class_weight` ('none' -> 'balanced')"),
        (["train.best_metric=val_loss"], [1, 0], "`train.best_metric` ('val_accuracy' -> "),
        (
            ["train.precision=mixed_bfloat16"],
            [1, 0],
            "`train.precision` ('float32' -> 'mixed_bfloat16')",
        ),
        (["model.backbone=vgg16"], [1, 0], "`model.backbone` ('mobilenet_v2' -> 'vgg16')"),
    ],
)
def test_reruns_that_contradict_trained_epochs_are_refused(overrides, done, message):
    job = job_with()
    other = job_with(*overrides)
    with pytest.raises(RunMismatchError) as err:
        plan_resume(state_after(job, done), "checkpoint_epoch_0001", saved(job), other, "r")
    assert message in str(err.value)
    assert "choose a new `run.name`" in str(err.value)


def test_where_it_runs_may_change_on_resume():
    job = job_with()
    moved = job_with("scaling.num_workers=1", "data.source=/y", "run.progress_seconds=5")
    plan = plan_resume(state_after(job, [1, 1]), "checkpoint_epoch_0002", saved(job), moved, "r")
    assert (plan.stage_index, plan.epoch) == (1, 1)


def test_a_stage_ended_by_early_stopping_counts_as_finished():
    job = job_with("train.stages.1.epochs=5")
    state = state_after(job, [1, 2], stopped_early=[1])
    plan = plan_resume(state, "checkpoint_epoch_0003", saved(job), job, "r")
    assert plan.complete


def test_state_from_an_older_checkpoint_loads():
    old = {"stage_index": 1, "epoch": 0, "learning_rate": 0.1, "callbacks": {}, "history": []}
    state = TrainState.from_json(json.dumps(old))
    assert state.learning_rate == 0.1 and state.stopped_early == []


def _write_checkpoint(directory, sizes=None) -> None:
    os.makedirs(directory, exist_ok=True)
    for i, name in enumerate(ckpt_files.CHECKPOINT_FILES):
        with open(os.path.join(directory, name), "wb") as f:
            f.write(b"x" * (10 + i))
    ckpt_files.write_manifest(directory)


def test_the_newest_complete_checkpoint_wins_over_an_interrupted_upload(tmp_path):
    run = storage.resolve(str(tmp_path / "run"))
    for epoch in (1, 2, 3):
        _write_checkpoint(tmp_path / "run" / ckpt_files.checkpoint_name(epoch))
    # epoch 3's upload was interrupted: one file short, epoch 4 has no manifest at all
    os.truncate(tmp_path / "run" / "checkpoint_epoch_0003" / "model.weights.h5", 3)
    (tmp_path / "run" / "checkpoint_epoch_0004").mkdir()
    (tmp_path / "run" / "checkpoint_epoch_0004" / "state.json").write_text("{}")
    assert ckpt_files.checkpoint_dirs(run) == [
        "checkpoint_epoch_0004",
        "checkpoint_epoch_0003",
        "checkpoint_epoch_0002",
        "checkpoint_epoch_0001",
    ]
    assert ckpt_files.newest_complete(run) == (
        "checkpoint_epoch_0002",
        ["checkpoint_epoch_0004", "checkpoint_epoch_0003"],
    )
    assert ckpt_files.newest_complete(storage.resolve(str(tmp_path / "none"))) == (None, [])


def test_exported_files_are_as_readable_as_the_rest_of_the_run(tmp_path):
    import tempfile

    old = os.umask(0o022)
    try:
        with tempfile.TemporaryDirectory() as private:  # created drwx------
            os.makedirs(os.path.join(private, "sub"))
            with open(os.path.join(private, "sub", "model.keras"), "wb") as f:
                f.write(b"m")
            storage.upload_dir(private, storage.resolve(str(tmp_path / "run" / "model")))
    finally:
        os.umask(old)
    for path in [tmp_path / "run" / "model", tmp_path / "run" / "model" / "sub"]:
        assert stat.S_IMODE(path.stat().st_mode) == 0o755, path
    assert stat.S_IMODE((tmp_path / "run" / "model" / "sub" / "model.keras").stat().st_mode) == (
        0o644
    )


def test_a_storage_path_that_is_a_file_is_a_clear_error(tmp_path):
    from tljob.run.lock import StoragePathError, prepare_run_dir

    (tmp_path / "runs").write_text("not a directory")
    with pytest.raises(StoragePathError) as err:
        prepare_run_dir(str(tmp_path / "runs"), "r")
    assert str(err.value) == (
        f"`run.storage_path` ({str(tmp_path / 'runs')!r}): {tmp_path / 'runs'} is an existing "
        "file, not a directory; point `run.storage_path` at a directory (it is created if missing)"
    )
    with pytest.raises(StoragePathError, match="cannot write the run directory"):
        prepare_run_dir(str(tmp_path / "runs" / "deeper"), "r")


@pytest.fixture
def read_only_dir(tmp_path):
    """A directory nobody can write to, root included (chattr +i where running as root)."""
    path = tmp_path / "ro"
    path.mkdir()
    path.chmod(0o555)
    immutable = os.geteuid() == 0 and subprocess.run(["chattr", "+i", str(path)]).returncode == 0
    try:
        (path / "probe").write_text("x")
    except OSError:
        pass
    else:
        pytest.fail("could not make a read-only directory on this machine")
    yield path
    if immutable:
        subprocess.run(["chattr", "-i", str(path)], check=True)
    path.chmod(0o755)


def test_a_read_only_storage_path_is_a_clear_error(read_only_dir):
    from tljob.run.lock import StoragePathError, prepare_run_dir

    with pytest.raises(StoragePathError) as err:
        prepare_run_dir(str(read_only_dir), "r")
    text = str(err.value)
    assert text.startswith(f"`run.storage_path` ({str(read_only_dir)!r}): cannot write the run")
    assert text.endswith("choose a directory this user can write to")


def test_a_run_is_not_resumed_with_other_classes(tmp_path):
    from tljob.run.driver import plan_run

    run_dir = storage.resolve(str(tmp_path / "runs" / "r"))
    job = job_with()
    assert plan_run(run_dir, job, ["a", "b"]).message.startswith("starting fresh")
    storage.write_text(run_dir.join("labels.json"), '{"0": "a", "1": "b"}')
    storage.write_text(run_dir.join("config.yaml"), dump_config(job))
    ckpt = tmp_path / "runs" / "r" / "checkpoint_epoch_0001"
    _write_checkpoint(ckpt)
    (ckpt / "state.json").write_text(state_after(job, [1]).to_json())
    ckpt_files.write_manifest(str(ckpt))
    (tmp_path / "runs" / "r" / "history.csv").write_text("stale\n")
    plan = plan_run(run_dir, job, ["a", "b"])
    assert (plan.stage_index, plan.epoch, plan.checkpoint) == (1, 0, "checkpoint_epoch_0001")
    # history.csv now says exactly what the checkpoint holds
    rows = parse_history_csv((tmp_path / "runs" / "r" / "history.csv").read_text())
    assert [(r.stage, r.epoch) for r in rows] == [("head", 1)]
    with pytest.raises(RunMismatchError, match=r"trained on classes \['a', 'b'\], but"):
        plan_run(run_dir, job, ["a", "b", "c"])


def test_too_few_images_for_a_batch_is_refused_before_ray_starts(tmp_path):
    from conftest import write_digits_tree

    data = write_digits_tree(tmp_path / "digits", classes=3, per_class=10)
    (tmp_path / "job.yaml").write_text("{}")
    overrides = [
        f"data.source={data}",
        "model.weights=none",
        f"run.storage_path={tmp_path / 'runs'}",
        "scaling.num_workers=1",
    ]
    command = [sys.executable, "-m", "tljob.cli", "train", "--config", str(tmp_path / "job.yaml")]
    for override in overrides:
        command += ["--set", override]
    # an address nobody listens on: reaching Ray at all would fail differently
    env = {**os.environ, "RAY_ADDRESS": "127.0.0.1:9"}
    proc = subprocess.run(command, capture_output=True, text=True, timeout=120, env=env)
    assert proc.returncode == 2, proc.stderr[-2000:]
    assert "`train.batch_size` (32)" in proc.stderr and "24 training images" in proc.stderr
    assert "Connecting to existing Ray cluster" not in proc.stderr
    assert "oneDNN" not in proc.stderr  # refused before TensorFlow was even loaded
    assert not (tmp_path / "runs").exists()  # refused before anything was written
