"""Worker fault tolerance on the session's real local Ray cluster, in one run and its rerun:
a second run on the busy run directory is refused; a Train worker killed (SIGKILL)
half-way through an epoch makes Ray Train restart the worker group, which resumes from the
newest complete checkpoint; with ``scaling.max_failures`` used up, killed workers end the
run with a message saying how often the group was restarted and where the rerun resumes;
the rerun resumes there and finishes with each epoch once and identical replicas. And a
restarted group's training stream gives the augmented views of the epoch it resumes at,
not those of the run's first epoch."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import time
from pathlib import Path

import pytest
import yaml
from conftest import write_digits_tree
from test_augment_stream import _expected, _identify, _job, _split_epochs, _train_rows
from test_resume import _write_checkpoint, state_after
from test_train_integration import digest_of_weights_file
from test_trust_integration import run, tljob_train

from tljob import storage
from tljob.run import checkpoint as ckpt_files
from tljob.run.attempts import Attempt, read_attempts, restart_figures
from tljob.run.ledger import parse_history_csv

pytestmark = pytest.mark.ray

EPOCHS = 4
# a worker's own log file in the cluster's session logs: worker-<id>-<job>-<pid>.out/.err
_WORKER_LOG = re.compile(r"^worker-[0-9a-f]+-[0-9a-f]+-(\d+)\.(out|err)$")


def _tljob_line_writers(ray_cluster, pids: set[int]) -> set[int]:
    """Which of ``pids`` have written a [tljob] line into their session log files: rank 0,
    the worker that writes the checkpoints, is the one whose lines the driver relays (the
    driver prints them without Ray's prefix, so the pid is read from Ray's own log files)."""
    logs = Path(ray_cluster["temp_dir"]) / "session_latest" / "logs"
    writers = set()
    for path in logs.glob("worker-*"):
        match = _WORKER_LOG.match(path.name)
        if match and int(match.group(1)) in pids and "[tljob] " in path.read_text(errors="replace"):
            writers.add(int(match.group(1)))
    return writers


def _job_yaml(tmp_path: Path) -> Path:
    data = write_digits_tree(tmp_path / "digits", classes=3, per_class=40)
    tree = {
        "data": {"source": str(data), "image_size": 32, "val_fraction": 0.2, "seed": 1},
        "model": {"backbone": "vgg16", "weights": "none", "head": {"dropout": 0.0}},
        "train": {
            "batch_size": 4,
            "stages": [
                {"name": "head", "epochs": EPOCHS, "learning_rate": 1e-3, "trainable": "head"}
            ],
        },
        # augmented, so the training split is streamed from Ray Data every epoch
        "augment": {"preset": "seed"},
        "scaling": {"num_workers": 2, "cpus_per_worker": 0.5, "max_failures": 1},
        "run": {"name": "ft", "storage_path": str(tmp_path / "runs")},
    }
    path = tmp_path / "ft.yaml"
    path.write_text(yaml.safe_dump(tree))
    return path


def _alive_train_workers(ray_cluster) -> dict[int, str]:
    """pid -> actor id of the live Ray Train workers, from Ray's state API."""
    from ray.util.state import list_actors

    actors = list_actors(
        address=ray_cluster["dashboard"],
        filters=[("class_name", "=", "RayTrainWorker"), ("state", "=", "ALIVE")],
    )
    return {a.pid: a.actor_id for a in actors}


def _wait_for(predicate, proc: subprocess.Popen, log: Path, what: str, timeout: float):
    deadline = time.monotonic() + timeout
    while not (found := predicate()):
        assert proc.poll() is None, f"the run ended before {what}: {log.read_text()[-3000:]}"
        assert time.monotonic() < deadline, f"no {what} within {timeout} s"
        time.sleep(0.05)
    return found


def test_killed_workers_restart_the_group_until_max_failures_then_the_rerun_resumes(
    tmp_path, ray_cluster
):
    """One run with ``scaling.max_failures`` 1: a second run on its busy run directory is
    refused; rank 0 killed (SIGKILL) half-way through epoch 2 makes Ray Train restart the
    group from checkpoint 1; once the restarted group has written a further checkpoint every
    worker is killed, the one restart is used up and the run fails saying so and where the
    rerun resumes; the rerun resumes there and finishes with each epoch once."""
    config = _job_yaml(tmp_path)
    run_dir = storage.resolve(str(tmp_path / "runs" / "ft"))
    log = tmp_path / "driver.log"
    env = {**os.environ, "RAY_ADDRESS": ray_cluster["gcs"], "PYTHONUNBUFFERED": "1"}
    with open(log, "w") as out:
        driver = subprocess.Popen(
            tljob_train(ray_cluster, config), env=env, stdout=out, stderr=subprocess.STDOUT,
            start_new_session=True,
        )  # fmt: skip
    try:
        _wait_for(lambda: storage.exists(run_dir.join("run.lock")), driver, log, "lock", 240)
        # a second run on the same run directory is refused at once, naming the holder
        second = run(ray_cluster, tljob_train(ray_cluster, config), timeout=120)
        assert second.returncode == 2, second.stderr[-2000:]
        assert f"is in use by another tljob run: pid {driver.pid} on host" in second.stderr

        def second_epoch_begun() -> tuple[Attempt, set[int]] | None:
            attempts = read_attempts(run_dir)
            # rank 0 records an epoch as it begins it, after the previous one's checkpoint
            if len(attempts) == 1 and attempts[0].furthest_epoch >= 2:
                rank_0 = _tljob_line_writers(ray_cluster, set(_alive_train_workers(ray_cluster)))
                return (attempts[0], rank_0) if rank_0 else None
            return None

        first, rank_0 = _wait_for(second_epoch_begun, driver, log, "epoch 2", timeout=240)
        at_kill, _ = ckpt_files.newest_complete(run_dir)
        workers = _alive_train_workers(ray_cluster)
        assert len(workers) == 2 and len(rank_0) == 1 and rank_0 <= set(workers), (
            rank_0,
            workers,
        )
        os.kill(rank_0.pop(), signal.SIGKILL)

        def restarted_group_checkpointed() -> dict[int, str] | None:
            # the restarted group (attempt 2) has written a checkpoint after the one it
            # resumed from, and both its workers are up
            newest, _ = ckpt_files.newest_complete(run_dir)
            if len(read_attempts(run_dir)) == 2 and (newest or "") > "checkpoint_epoch_0001":
                restarted = _alive_train_workers(ray_cluster)
                return restarted if len(restarted) == 2 else None
            return None

        restarted = _wait_for(restarted_group_checkpointed, driver, log, "checkpoint 2", 300)
        for pid in restarted:
            os.kill(pid, signal.SIGKILL)
        driver.wait(timeout=300)
    finally:
        if driver.poll() is None:
            os.killpg(driver.pid, signal.SIGKILL)
            driver.wait(timeout=60)
    output = log.read_text()
    assert driver.returncode == 1, output[-4000:]
    assert first.checkpoint is None and first.number == 1
    assert at_kill == "checkpoint_epoch_0001", "the kill came after epoch 2's checkpoint"
    # the group was restarted once, from the checkpoint the first kill left as newest
    assert (
        "[tljob] worker group restarted (attempt 2); resuming after stage 'head' epoch 1 "
        f"(global epoch 1) from checkpoint_epoch_0001; next: stage 1/1 'head' epoch 2/{EPOCHS}"
    ) in output
    # ... and the second kill, with no restart left, ended the run saying where to resume
    done, _ = ckpt_files.newest_complete(run_dir)
    epochs_done = int(done.rsplit("_", 1)[1])
    assert 2 <= epochs_done < EPOCHS, "the second kill came too late to test resuming"
    assert "tljob: failed: train failed on worker rank 0: " in output
    assert (
        "The worker group was restarted 1 time(s) in this run (`scaling.max_failures`: 1). "
        f"Rerun the same command to resume from {done} in {run_dir.uri}."
    ) in output
    # the records of the failed run (its rerun clears them): the first group was killed
    # in epoch 2, which the second, resumed from checkpoint 1, trained again
    attempts = read_attempts(run_dir)
    assert [a.number for a in attempts] == [1, 2]
    assert (attempts[1].checkpoint, attempts[1].epochs_done) == ("checkpoint_epoch_0001", 1)
    assert attempts[0].furthest_epoch == 2 and attempts[1].furthest_epoch >= epochs_done
    assert restart_figures(attempts) == {"restarts": 1, "epochs_repeated": 1}
    # history.csv never runs ahead of the newest complete checkpoint (it is written after
    # the checkpoint's upload: a kill in between leaves none yet)
    history_file = Path(run_dir.path) / "history.csv"
    assert not history_file.exists() or (
        len(parse_history_csv(history_file.read_text())) <= epochs_done
    )

    rerun = run(ray_cluster, tljob_train(ray_cluster, config), timeout=900)
    assert rerun.returncode == 0, rerun.stdout[-3000:] + rerun.stderr[-3000:]
    assert (
        f"[tljob] resuming after stage 'head' epoch {epochs_done} (global epoch {epochs_done}) "
        f"from {done}; next: stage 1/1 'head' epoch {epochs_done + 1}/{EPOCHS}"
    ) in rerun.stdout
    assert rerun.stdout.count("[tljob] stage 1/1 'head' epoch ") == EPOCHS - epochs_done
    # a rerun is a new run, not a restart: it counts its own restarts only
    assert "restarts          0 worker-group restarts" in rerun.stdout
    summary = json.loads(storage.read_text(run_dir.join("summary.json")))
    assert (summary["restarts"], summary["epochs_repeated"]) == (0, 0)
    history = parse_history_csv(storage.read_text(run_dir.join("history.csv")))
    assert [(r.global_epoch, r.epoch) for r in history] == [(e, e) for e in range(1, EPOCHS + 1)]
    assert summary["epochs"] == EPOCHS and summary["stages"]["head"]["epochs"] == EPOCHS
    last = ckpt_files.checkpoint_name(EPOCHS)
    assert summary["checkpoint"].endswith(last)

    # both workers ended with the same weights: those of the last checkpoint
    replicas = Path(run_dir.path) / "replicas"
    digests = [(replicas / f"rank_{r}.sha256").read_text() for r in (0, 1)]
    assert digests[0] == digests[1] and summary["replica_weights_identical"] is True
    assert digest_of_weights_file(Path(run_dir.path), last, config) == digests[0]


def test_a_restarted_groups_stream_gives_the_views_of_the_epoch_it_resumes_at(
    tmp_path, ray_connected
):
    from tljob.data.pipeline import prepare_data
    from tljob.run.restart import TrainDatasetPerAttempt

    digits = write_digits_tree(tmp_path / "digits", classes=3, per_class=8, scale=2)
    job = _job(digits, tmp_path / "runs")
    prepared = prepare_data(job)  # a fresh run: its first execution is epoch 0
    stored, labels, _ = _train_rows(prepared.prepared_uri)
    expected = [_expected(job, stored, e) for e in range(4)]
    run = storage.resolve(str(tmp_path / "run"))
    factory = TrainDatasetPerAttempt(prepared.train, run, next_epoch=0)

    # the first group: epochs 0 and 1, split for one worker as Ray Train splits it
    epochs = _split_epochs(factory(), 1, 2)
    for e in range(2):
        assert sorted(_identify(epochs[e], expected[e], labels)) == sorted(stored)

    # a worker died after the checkpoint of 2 epochs: the next group starts at epoch 2
    checkpoint = tmp_path / "run" / ckpt_files.checkpoint_name(2)
    _write_checkpoint(checkpoint)
    (checkpoint / ckpt_files.STATE_FILE).write_text(state_after(job, [1, 1]).to_json())
    ckpt_files.write_manifest(str(checkpoint))
    epochs = _split_epochs(factory(), 1, 2)
    for e in range(2):
        assert sorted(_identify(epochs[e], expected[2 + e], labels)) == sorted(stored)
    assert read_attempts(run)[-1] == Attempt(
        number=2, checkpoint="checkpoint_epoch_0002", epochs_done=2, furthest_epoch=2
    )
