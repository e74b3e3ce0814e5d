"""Results you can trust, on a real local Ray cluster: a diverging loss stops the run and
keeps the last good checkpoint, whose rerun (the rate lowered) extends the finished stage,
while shrinking a stage is refused; a validation batch that leaves a replica no images
neither crashes nor miscounts; and a job the cluster cannot place is refused. (Killed
workers, the rerun resuming from the newest complete checkpoint and a second run refused
on a busy run directory: test_fault_tolerance.py.)"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from conftest import REPO, write_digits_tree

from tljob import storage
from tljob.run import checkpoint as ckpt_files
from tljob.run.ledger import parse_history_csv

pytestmark = pytest.mark.ray


def tiny_job(
    tmp_path: Path, name: str, stages: list[dict], workers: int = 1, classes: int = 3, per_class=10
) -> Path:
    data = tmp_path / "digits"
    if not data.exists():
        write_digits_tree(data, classes=classes, per_class=per_class)
    tree = {
        "data": {"source": str(data), "image_size": 32, "val_fraction": 0.2, "seed": 1},
        "model": {"backbone": "vgg16", "weights": "none", "head": {"dropout": 0.0}},
        "train": {"batch_size": 4, "stages": stages},
        "scaling": {"num_workers": workers, "cpus_per_worker": 0.5},
        "run": {"name": name, "storage_path": str(tmp_path / "runs")},
    }
    path = tmp_path / f"{name}.yaml"
    path.write_text(yaml.safe_dump(tree))
    return path


def tljob_train(ray_cluster, config: Path, *overrides: str) -> list[str]:
    command = [sys.executable, str(REPO / "ray_jobs" / "train.py"), "--config", str(config)]
    for override in overrides:
        command += ["--set", override]
    return command


def run(ray_cluster, command: list[str], timeout: float = 600) -> subprocess.CompletedProcess:
    env = {**os.environ, "RAY_ADDRESS": ray_cluster["gcs"], "PYTHONUNBUFFERED": "1"}
    return subprocess.run(command, env=env, capture_output=True, text=True, timeout=timeout)


def driver_tracebacks(output: str) -> list[str]:
    """Traceback lines of the driver itself. Lines that Ray forwards from its own actors
    carry an "(ActorName pid=N)" prefix; their internals are not tljob's output."""
    return [line for line in output.splitlines() if "Traceback" in line and " pid=" not in line]


def history(run_dir: Path) -> list[dict]:
    return parse_history_csv((run_dir / "history.csv").read_text())


def head(epochs: int, lr: float = 1e-3, **extra) -> dict:
    return {"name": "head", "epochs": epochs, "learning_rate": lr, "trainable": "head", **extra}


def test_a_non_finite_loss_stops_the_run_and_the_rerun_extends_the_finished_stage(
    tmp_path, ray_cluster
):
    """A diverging stage stops the run and keeps the last good checkpoint; the rerun, with
    the learning rate lowered as the message says and the finished first stage extended,
    trains only the new epochs and then the second stage; shrinking a stage below the
    epochs it trained is refused."""
    stages = [
        head(1),
        {
            "name": "blow_up",
            "epochs": 2,
            # beyond float32's range: the rate is inf in the optimizer, so Adam's first step
            # makes every weight inf or nan (0 x inf) and the second step's loss is nan on any
            # CPU. A finite 1e38 relied on overflow inside the network, which a ReLU that
            # maps nan to 0 (it differs between CPUs) can hide for an epoch or more
            "learning_rate": 1e39,
            "optimizer": "adam",
            "trainable": "all",
        },
    ]
    config = tiny_job(tmp_path, "nan", stages)
    run_dir = tmp_path / "runs" / "nan"
    proc = run(ray_cluster, tljob_train(ray_cluster, config))
    assert proc.returncode == 1, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert "[tljob] starting fresh: " in proc.stdout
    err = proc.stderr
    assert "tljob: failed: training stopped: loss" in err
    assert "became non-finite" in err and "in stage 2 'blow_up' epoch 1 step " in err
    assert "at learning rate inf" in err  # what the float32 optimizer held
    assert "the last good checkpoint, checkpoint_epoch_0001, is kept" in err
    assert "Lower `train.stages.1.learning_rate`" in err
    assert driver_tracebacks(err) == []
    assert [(r.stage, r.epoch) for r in history(run_dir)] == [("head", 1)]
    assert ckpt_files.checkpoint_dirs(storage.resolve(str(run_dir))) == ["checkpoint_epoch_0001"]
    assert not (run_dir / "model").exists()  # no NaN model was exported
    assert not (run_dir / "diverged.json").exists()
    assert not (run_dir / "run.lock").exists()

    # the stage that has not trained may change; the finished one may grow
    rerun = ("train.stages.0.epochs=3", "train.stages.1.learning_rate=1e-3")
    longer = run(ray_cluster, tljob_train(ray_cluster, config, *rerun))
    assert longer.returncode == 0, longer.stdout[-3000:] + longer.stderr[-3000:]
    assert (
        "[tljob] resuming after stage 'head' epoch 1 (global epoch 1) from "
        "checkpoint_epoch_0001; next: stage 1/2 'head' epoch 2/3"
    ) in longer.stdout
    assert longer.stdout.count("[tljob] stage 1/2 'head' epoch ") == 2  # epochs 2 and 3 only
    assert [(r.stage, r.epoch) for r in history(run_dir)] == [
        ("head", 1),
        ("head", 2),
        ("head", 3),
        ("blow_up", 1),
        ("blow_up", 2),
    ]
    saved = yaml.safe_load((run_dir / "config.yaml").read_text())
    assert saved["train"]["stages"][0]["epochs"] == 3
    assert saved["train"]["stages"][1]["learning_rate"] == 1e-3
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["epochs"] == 5 and summary["checkpoint"].endswith("checkpoint_epoch_0005")
    assert (run_dir / "model" / "model.keras").is_file()

    shorter = run(
        ray_cluster, tljob_train(ray_cluster, config, *rerun[1:], "train.stages.0.epochs=2")
    )
    assert shorter.returncode == 2
    assert "`train.stages.0.epochs` (2) is less than the 3 epoch(s)" in shorter.stderr
    # the saved config still says what happened
    assert yaml.safe_load((run_dir / "config.yaml").read_text()) == saved


def test_validation_that_leaves_a_replica_no_images_trains_and_counts_each_image_once(
    tmp_path, ray_cluster, monkeypatch
):
    monkeypatch.setenv("KERAS_HOME", str(tmp_path / "keras"))  # the driver converts into it
    # The demo's backbone with its ImageNet weights, 2 workers, 18 validation images in
    # batches of 4 x 2: each worker validates on 9, and its last batch of 1 image leaves
    # one replica 0 rows, which crashed the first validation pass (see ImageClassifier in
    # tljob.nn.layers)
    config = tiny_job(tmp_path, "uneven", [head(1)], workers=2, classes=3, per_class=20)
    overrides = ("model.backbone=mobilenet_v2_tv", "model.weights=imagenet")
    overrides += ("data.image_size=64", "data.val_fraction=0.3")
    proc = run(ray_cluster, tljob_train(ray_cluster, config, *overrides))
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    run_dir = tmp_path / "runs" / "uneven"
    assert [(r.stage, r.epoch) for r in history(run_dir)] == [("head", 1)]
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["data"]["splits"]["val"]["used"] == 18
    # the driver's re-check of the exported (best) model over all 18 images, one by one,
    # agrees exactly with the accuracy the workers reported for that epoch
    exported = summary["exported_model"]
    assert exported["images"] == 18
    assert summary["best"]["val_accuracy"] == pytest.approx(exported["correct"] / 18, abs=1e-6)


@pytest.mark.parametrize(
    ("scaling", "message"),
    [
        ({"num_workers": 8}, "8 workers (`scaling.num_workers`) × 0.5 (`scaling.cpus_per_worker`)"),
        (
            {"num_workers": 2, "cpus_per_worker": 1.0},
            "2 workers (`scaling.num_workers`) × 1 (`scaling.cpus_per_worker`) + 1 left for "
            "Ray Data to decode images (`scaling.data_cpus`) = 3 CPUs, the cluster has 2",
        ),
    ],
)
def test_a_job_the_cluster_cannot_place_is_refused_instead_of_hanging(
    tmp_path, ray_cluster, scaling, message
):
    # enough images that 8 workers would each get whole batches: only the cluster is short
    config = tiny_job(tmp_path, "too-big", [head(1)], classes=10, per_class=40)
    overrides = [f"scaling.{k}={v}" for k, v in scaling.items()]
    # a job that hung waiting for resources would hit the timeout
    proc = run(ray_cluster, tljob_train(ray_cluster, config, *overrides), timeout=180)
    assert proc.returncode == 2, proc.stdout[-2000:] + proc.stderr[-2000:]
    assert "tljob: error: the Ray cluster can never run this job" in proc.stderr
    assert message in proc.stderr
    assert driver_tracebacks(proc.stderr) == []
