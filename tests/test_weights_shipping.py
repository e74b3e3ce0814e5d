"""ImageNet weights that reach every worker: the driver resolves them once and ships the
file through the run directory; workers with an empty Keras cache and no way to download
train from that copy."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import yaml
from conftest import REPO, write_digits_tree

from tljob.zoo.weights import file_sha256

pytestmark = pytest.mark.ray


def test_workers_without_a_keras_cache_train_from_the_weights_the_driver_shipped(
    tmp_path, ray_cluster
):
    data = write_digits_tree(tmp_path / "digits", classes=4, per_class=20)
    driver_home, worker_home = tmp_path / "driver-keras", tmp_path / "worker-keras"
    worker_home.mkdir()
    config = tmp_path / "job.yaml"
    config.write_text(
        yaml.safe_dump(
            {
                "data": {"source": str(data), "image_size": 32, "val_fraction": 0.2, "seed": 1},
                "model": {"backbone": "mobilenet_v2_tv", "weights": "imagenet"},
                # the backbone stays frozen: its weights at the end are the ones it started from
                "train": {
                    "batch_size": 4,
                    "stages": [{"name": "head", "epochs": 1, "learning_rate": 1e-3}],
                },
                "scaling": {"num_workers": 2, "cpus_per_worker": 0.5},
                "run": {"name": "shipped", "storage_path": str(tmp_path / "runs")},
            }
        )
    )
    # Offline everywhere (no download allowed), and the workers' Keras cache is an empty
    # folder. (Proxy variables cannot block the network here: gRPC, which Ray and
    # TensorFlow's collectives use, would follow them too.)
    runtime_env = {"env_vars": {"KERAS_HOME": str(worker_home), "TLJOB_OFFLINE": "1"}}
    proc = subprocess.run(
        [
            str(Path(sys.executable).with_name("ray")),
            "job",
            "submit",
            "--address",
            ray_cluster["dashboard"],
            "--runtime-env-json",
            json.dumps(runtime_env),
            "--",
            "env",
            f"KERAS_HOME={driver_home}",  # the driver's own cache, empty too at first
            sys.executable,
            str(REPO / "ray_jobs" / "train.py"),
            "--config",
            str(config),
        ],
        capture_output=True,
        text=True,
        timeout=900,
        env={**os.environ, "RAY_ADDRESS": ""},
    )
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-4000:]
    assert "succeeded" in proc.stdout.lower()

    # the driver converted the package's checkpoint into its cache, once, and shipped it
    converted = driver_home / "models" / "mobilenet_v2_tv_b0353104_notop.weights.h5"
    run_dir = tmp_path / "runs" / "shipped"
    shipped = run_dir / "weights" / converted.name
    assert "[tljob] weights: converting " in proc.stdout
    assert f"[tljob] weights: {converted} shipped to the workers as {shipped}" in proc.stdout
    assert "[tljob] weights: the workers built the backbone from" in proc.stdout
    assert file_sha256(shipped) == file_sha256(converted)
    assert (run_dir / "weights" / f"{converted.name}.sha256").read_text().strip() == (
        file_sha256(shipped)
    )
    # no worker looked for weights of its own: their Keras cache holds no file (tf_keras
    # writes only its keras.json settings there on import)
    assert {p.name for p in worker_home.iterdir()} <= {"keras.json"}

    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["initial_weights"] == {"file": str(shipped), "sha256": file_sha256(shipped)}
    assert summary["replica_weights_identical"] is True

    # the trained model's backbone holds exactly the shipped weights (it stayed frozen)
    from tljob.nn import io as nn_io
    from tljob.nn.torchvision_mobilenet import mobilenet_v2_torchvision

    exported = nn_io.load_exported(run_dir / "model" / "model.keras").get_layer("backbone")
    reference = mobilenet_v2_torchvision(weights=str(shipped), input_shape=(32, 32, 3))
    got, want = exported.get_weights(), reference.get_weights()
    assert len(got) == len(want) == 260  # 52 convolutions, and 52 BatchNorms x 4
    # Bit for bit, but for subnormal floats (|x| < 1.2e-38: torchvision's checkpoint has a
    # few in BatchNorm statistics), which the workers' all-reduce of BatchNorm statistics
    # before validation flushes to zero on CPU.
    tiny = np.finfo(np.float32).tiny
    for a, b in zip(got, want, strict=True):
        assert np.array_equal(a, np.where(np.abs(b) < tiny, np.float32(0), b))
    random_init = mobilenet_v2_torchvision(input_shape=(32, 32, 3)).get_weights()
    assert not np.array_equal(got[0], random_init[0])
