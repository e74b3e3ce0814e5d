"""``tljob train --dry-run`` on a real local Ray cluster: the checks a run makes, nothing
trained or written (``--json``'s summary on stdout alone: test_data_plan.py's run)."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from conftest import write_digits_tree

pytestmark = pytest.mark.ray


def job_yaml(tmp_path: Path, data: Path, name: str, **sections) -> Path:
    tree = {
        "data": {"source": str(data), "image_size": 32, "val_fraction": 0.2, "seed": 1},
        "model": {"backbone": "vgg16", "weights": "none", "head": {"dropout": 0.0}},
        "train": {
            "batch_size": 4,
            "stages": [
                {"name": "head", "epochs": 1, "learning_rate": 1e-3, "trainable": "head"},
                {"name": "fine_tune", "epochs": 2, "learning_rate": 1e-4, "trainable": "all"},
            ],
        },
        "scaling": {"num_workers": 2, "cpus_per_worker": 0.5},
        "run": {"name": name, "storage_path": str(tmp_path / "runs")},
    }
    for key, value in sections.items():
        tree[key].update(value)
    path = tmp_path / f"{name}.yaml"
    path.write_text(yaml.safe_dump(tree))
    return path


def tljob(ray_cluster, *argv: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "RAY_ADDRESS": ray_cluster["gcs"], "PYTHONUNBUFFERED": "1"}
    return subprocess.run(
        [sys.executable, "-m", "tljob.cli", *argv],
        capture_output=True, text=True, timeout=900, env=env,
    )  # fmt: skip


def test_dry_run_makes_every_check_on_ray_and_writes_nothing(tmp_path, ray_cluster):
    data = write_digits_tree(tmp_path / "digits", classes=4, per_class=20)
    config = job_yaml(tmp_path, data, "dry")
    runs = tmp_path / "runs"
    proc = tljob(ray_cluster, "train", "--config", str(config), "--dry-run")
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    lines = proc.stdout.splitlines()
    memory = [line for line in lines if line.startswith("ok     memory")]
    cluster = [line for line in lines if line.startswith("ok     cluster")]
    # the node is named by its address, which depends on the machine's network
    assert len(cluster) == 1 and re.fullmatch(
        r"ok     cluster       1 node, 2 CPUs \(\S+: 2 CPU\) can place 2 workers", cluster[0]
    )
    assert len(memory) == 1 and memory[0].startswith(
        "ok     memory        a worker needs about 0.7 GiB (model parameters 0.22 GiB"
    )
    prepared = [line for line in lines if line.startswith("would  prepare")]
    assert len(prepared) == 1
    prepared_uri = prepared[0].rsplit(" ", 1)[1]
    assert prepared_uri.startswith(f"{runs}/prepared/")
    assert [line for line in lines if line not in memory + cluster] == [
        "tljob train --dry-run: checks only; nothing is trained, prepared or written",
        f"ok     config        {config}: run 'dry', backbone vgg16 at 32 px, 2 workers, "
        "stages head 1 epoch, fine_tune 2 epochs",
        "ok     object store  none used (local paths only)",
        f"ok     data          {data}: 4 classes, 80 images listed",
        "ok     batches       64 train + 16 val images; 2 workers x `train.batch_size` 4: "
        "8 steps per epoch",
        "ok     weights       none: random initialisation",
        f"ok     run directory {runs}/dry: would be created",
        f"ok     run lock      free ({runs}/dry/run.lock)",
        f"ok     resume        starting fresh: {runs}/dry has no complete checkpoint",
        f"ok     ray           joined {ray_cluster['gcs']}",
        f"would  prepare       decode 80 images into {prepared_uri}",
        "would  train         4 classes (digit_0, digit_1, digit_2, digit_3); stages head 1 "
        "epoch, fine_tune 2 epochs; at most 8 steps per epoch (images set aside while "
        "preparing lower it)",
        f"would  run           start fresh in {runs}/dry",
    ]
    assert not runs.exists()  # no run directory, no lock, no config.yaml, no prepared data

    # the fingerprint it predicted is the one a preparation publishes, and then reuses
    prepare = tljob(ray_cluster, "prepare", "--config", str(config))
    assert prepare.returncode == 0, prepare.stderr[-3000:]
    assert f"prepared data     {prepared_uri}  (prepared now)" in prepare.stdout
    again = tljob(ray_cluster, "train", "--config", str(config), "--dry-run")
    assert again.returncode == 0, again.stderr[-3000:]
    assert (
        f"would  prepare       reuse the prepared data {prepared_uri} (fingerprint unchanged)"
        in again.stdout.splitlines()
    )
    assert sorted(p.name for p in runs.iterdir()) == ["prepared"]  # still no run directory


def test_dry_run_refuses_a_cluster_too_small_with_the_message_a_run_gives(tmp_path, ray_cluster):
    data = write_digits_tree(tmp_path / "digits", classes=2, per_class=20)
    config = job_yaml(
        tmp_path,
        data,
        "big",
        train={"batch_size": 2},  # 32 training images fill a batch on each of 3 workers
        scaling={"num_workers": 3, "cpus_per_worker": 1},  # 3 CPUs: the cluster has 2
    )
    dry = tljob(ray_cluster, "train", "--config", str(config), "--dry-run")
    assert dry.returncode == 2, dry.stdout[-3000:] + dry.stderr[-3000:]
    assert not (tmp_path / "runs").exists()
    real = tljob(ray_cluster, "train", "--config", str(config))
    assert real.returncode == 2, real.stdout[-3000:] + real.stderr[-3000:]

    def error(proc: subprocess.CompletedProcess) -> str:
        (line,) = [x for x in proc.stderr.splitlines() if x.startswith("tljob: error:")]
        return line

    assert error(dry) == error(real)
    assert error(dry).startswith(
        "tljob: error: the Ray cluster can never run this job (Ray would wait for the "
        "workers forever)"
    )
    assert dry.stdout.splitlines()[-1] == f"ok     ray           joined {ray_cluster['gcs']}"
