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
    tmp_path, ray_cluster, monkeypatch
):
    """... and on cached features, which a sweep trial and a resumed run then find."""
    config, driver_home, cached = _shipped_run(tmp_path, ray_cluster)
    _check_a_trial_and_a_resumed_run_find_the_features(
        tmp_path, ray_cluster, config, driver_home, cached, monkeypatch
    )


def _shipped_run(tmp_path: Path, ray_cluster) -> tuple[Path, Path, dict]:
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

    # The head stage trained on cached features (its backbone frozen, pretrained, no
    # augmentation): the workers ran the backbone once over their images and stored them
    # beside the prepared data. They are what the backbone gives on the same images.
    cached = summary["cached_features"]
    assert (cached["stage"], cached["computed"]) == ("head", True)
    assert cached["rows_per_worker"] == {"train": 32, "val": 8}  # 64 / 2 and 16 / 2
    _check_features_are_the_backbones(Path(cached["folder"]), summary["prepared_data"], run_dir)
    return config, driver_home, cached


def _check_features_are_the_backbones(folder: Path, prepared_uri: str, run_dir: Path) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    from tljob.data.stream import shard_units
    from tljob.infer.inputs import PreparedSplit, read_prepared
    from tljob.nn import io as nn_io
    from tljob.nn.features import compute_features, features_model
    from tljob.run.cached_stage import _rows_of
    from tljob.storage import resolve

    val = PreparedSplit.from_prepared(prepared_uri, "val")
    rows = [
        read_prepared(unit | {"path": [unit["path"]], "row_group": [unit["row_group"]]},
                      resolve(val.folder_uri).fs, val.stored_size, val.pixels, 32)
        for unit in shard_units(resolve(val.folder_uri), val.files)
    ]  # fmt: skip
    images = np.concatenate([r["image"] for r in rows])
    labels = np.concatenate([r["label"] for r in rows])
    model = nn_io.load_exported(run_dir / "model" / "model.keras")
    want = compute_features(features_model(model), [images])
    manifest = json.loads((folder / "features.json").read_text())
    parts = sorted((folder / manifest["attempt"] / "val").iterdir())
    assert [p.name for p in parts] == ["part-00000.parquet", "part-00001.parquet"]
    got, got_labels = _rows_of(pa.concat_tables([pq.read_table(p) for p in parts]))
    assert got.shape == (16, 1280) and manifest["rows"] == {"train": 64, "val": 16}
    # every cached row is one of the images' features (to float tolerance), with its label,
    # and no image twice
    distance = np.abs(got[:, None, :] - want[None, :, :]).max(axis=2)
    match = distance.argmin(axis=1)
    assert len(set(match.tolist())) == 16
    assert distance.min(axis=1).max() <= 1e-4 * max(1.0, float(np.abs(want).max()))
    np.testing.assert_array_equal(got_labels, labels[match])


def _check_a_trial_and_a_resumed_run_find_the_features(
    tmp_path, ray_cluster, config, driver_home, cached, monkeypatch
) -> None:
    import ray

    from tljob.cli import main

    monkeypatch.setenv("KERAS_HOME", str(driver_home))  # the converted weights, same sha256
    if not ray.is_initialized():
        ray.init(address=ray_cluster["gcs"], log_to_driver=False)
    folder = Path(cached["folder"])
    # a sweep trial (a new run at another learning rate) finds them: no backbone pass
    sweep = tmp_path / "sweep.yaml"
    tree = yaml.safe_load(config.read_text())
    tree["search"] = {"train.stages.0.learning_rate": {"grid": [1e-2]}}
    # one worker: a 2-worker trial on the 2-CPU cluster would leave Ray Data no CPU, and
    # reads the 2 workers' parts as its one share
    tree["scaling"]["num_workers"] = 1
    tree["tune"] = {"name": "reuse"}
    sweep.write_text(yaml.safe_dump(tree))
    assert main(["tune", "--config", str(sweep)]) == 0
    [trial] = [json.loads(p.read_text()) for p in (tmp_path / "runs").glob("reuse-*/summary.json")]
    assert trial["cached_features"]["computed"] is False
    assert trial["cached_features"]["folder"] == str(folder)
    assert trial["cached_features"]["rows_per_worker"] == {"train": 64, "val": 16}
    # the first run, resumed to extend its head stage, finds them too: the head's optimizer
    # state restored into the head, the schedule continued
    assert main(["train", "--config", str(config), "--set", "train.stages.0.epochs=2"]) == 0
    resumed = json.loads((tmp_path / "runs" / "shipped" / "summary.json").read_text())
    assert resumed["epochs"] == 2
    assert resumed["cached_features"]["computed"] is False
    assert resumed["cached_features"]["folder"] == str(folder)
    # one backbone pass in all three runs: one attempt folder beside features.json
    assert sorted(p.name for p in folder.iterdir() if p.is_dir()) == [
        json.loads((folder / "features.json").read_text())["attempt"]
    ]
