"""``tljob demo``: the real job on real images, offline, in about five minutes on 2 cores.

Pure (no Ray, no TensorFlow) and independent of ``tljob.cli``: it prepares the images and
the job, and the CLI runs it like any other.

Fashion-MNIST (Zalando's 28x28 greyscale product photos, 10 classes) is read from the four
idx files that Debian's ``dataset-fashion-mnist`` package installs, a class-balanced subset
is written out as an ordinary ``<class>/<image>.png`` folder tree, and ``tljob train`` runs
on it with the demo config below (also saved as ``<workdir>/demo.yaml``).
"""

from __future__ import annotations

import gzip
import os
import struct
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import yaml
from PIL import Image

from tljob import output
from tljob.config import JobConfig
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
DEFAULT_IMAGES_PER_CLASS = 300

# Sized for ~5 minutes on 2 cores. MobileNetV2 from random weights (no ImageNet weights
# ship offline): a short head stage shows the recipe, then the whole network trains.
DEMO_CONFIG: dict[str, Any] = {
    "data": {"image_size": 32, "val_fraction": 0.2, "seed": 0},
    "model": {"backbone": "mobilenet_v2", "weights": "none", "head": {"dropout": 0.2}},
    "train": {
        "batch_size": 32,
        "stages": [
            {"name": "head", "epochs": 1, "learning_rate": 1e-3, "trainable": "head"},
            {"name": "fine_tune", "epochs": 4, "learning_rate": 1e-3, "trainable": "all"},
        ],
        "reduce_lr": {"patience": 1},
    },
    "scaling": {"num_workers": 2, "cpus_per_worker": 0.5},
    "run": {},  # name and storage_path: see demo_config_tree
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


def load_fashion_mnist(data_dir: str | os.PathLike[str]) -> tuple[np.ndarray, np.ndarray]:
    """The 60,000 training images (N, 28, 28) and labels (N,) from the idx files."""
    folder = Path(data_dir)
    images = read_idx(_find_idx(folder, "train-images-idx3-ubyte"))
    labels = read_idx(_find_idx(folder, "train-labels-idx1-ubyte"))
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


def demo_config_tree(workdir: Path, images_dir: Path, per_class: int) -> dict[str, Any]:
    tree = yaml.safe_load(yaml.safe_dump(DEMO_CONFIG))  # deep copy
    tree["data"]["source"] = str(images_dir)
    tree["run"]["storage_path"] = str(workdir / "runs")
    # One run per subset size, so a rerun resumes (or re-reports) the same experiment.
    tree["run"]["name"] = f"fashion-mnist-demo-{per_class}"
    return tree


def prepare_demo(
    data_dir: str | None,
    workdir: str,
    images_per_class: int | None,
    overrides: Sequence[str] = (),
) -> JobConfig:
    """Write the demo images and config, and return the validated job (``overrides`` apply
    on top of the demo config); ``tljob.run.job.run_job`` trains it."""
    work = Path(workdir).resolve()
    per_class = images_per_class or DEFAULT_IMAGES_PER_CLASS
    if per_class < 2:
        raise UserError(f"--images-per-class ({per_class}) must be at least 2")
    images_dir = work / f"fashion-mnist-{per_class}"
    images, labels = load_fashion_mnist(data_dir or DEBIAN_FASHION_MNIST)
    counts = write_image_tree(images, labels, images_dir, per_class)
    log.info(f"demo: wrote {sum(counts.values())} Fashion-MNIST images to {images_dir}")
    demo_yaml = work / "demo.yaml"
    demo_yaml.write_text(
        yaml.safe_dump(demo_config_tree(work, images_dir, per_class), sort_keys=False)
    )
    job = resolve_job(str(demo_yaml), overrides)
    log.info(f"demo: config {demo_yaml} (rerun it with: tljob train --config {demo_yaml})")
    return job
