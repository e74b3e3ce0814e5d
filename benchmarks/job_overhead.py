"""The cost of the job around the model: `tljob train` epochs against a plain tf_keras fit.

    PYTHONPATH=. .venv/bin/python benchmarks/job_overhead.py [--workers 1 2] [--epochs 4]
        [--repeat 2] [--workdir /tmp/tljob-overhead]

Both sides train the demo's network (MobileNetV2 from random weights, all layers, 32 px,
batch 32 per worker, Adam 1e-3) on the demo's data (Fashion-MNIST from Debian's
dataset-fashion-mnist, 300 images per class: 2,400 train + 600 validation), with a full
validation pass every epoch:

(a) plain: one process, in-memory uint8 arrays, ``model.fit(x, y, validation_data=...)``;
(b) job: ``tljob.run.job.run_job`` with N workers on a private local Ray (2 CPUs), started
    here and shut down after. Its epochs are read from the run's ``timings.json`` (rank 0's
    wall time per epoch, checkpoint and report included, and where it went).

The first epoch (graph tracing, first read of the data) is shown apart; the ratio compares
the steady epochs (2nd onwards), min-max over the repeats.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
os.environ.setdefault("RAY_AUTH_MODE", "disabled")

PER_CLASS = 300
BATCH = 32
PHASES = (
    "train",
    "validation",
    "callbacks",
    "weights_read",
    "checkpoint_write",
    "report_and_upload",
    "history_write",
)


def demo_tree(workdir: Path) -> Path:
    from tljob.demo import DEBIAN_FASHION_MNIST, load_fashion_mnist, write_image_tree

    root = workdir / f"fashion-mnist-{PER_CLASS}"
    write_image_tree(*load_fashion_mnist(DEBIAN_FASHION_MNIST), root, PER_CLASS)
    return root


def job_config(source: Path, workdir: Path, name: str, workers: int, epochs: int):
    from tljob.config import load_config

    return load_config(
        None,
        [
            f"data.source={source}",
            "data.image_size=32",
            "model.backbone=mobilenet_v2",
            "model.weights=none",
            f"train.batch_size={BATCH}",
            f"train.stages=[{{name: all, epochs: {epochs}, learning_rate: 1.0e-3, "
            "trainable: all}]",
            f"scaling.num_workers={workers}",
            f"run.name={name}",
            f"run.storage_path={workdir / 'runs'}",
        ],
    )


def arrays(job) -> dict[str, tuple]:
    """The job's train/val split as uint8 arrays, decoded and resized like the pipeline."""
    import numpy as np

    from tljob.data.listing import list_images
    from tljob.data.split import split_stratified
    from tljob.images import load_image, resize_bilinear_uint8

    train, val = split_stratified(list_images(job.data.source), job.data.val_fraction, 0)
    out = {}
    for split, items in (("train", train), ("val", val)):
        x = np.stack([resize_bilinear_uint8(load_image(path), 32) for path, _ in items])
        out[split] = (x, np.array([label for _, label in items], dtype=np.int64))
    return out


def plain_fit(job, data: dict[str, tuple], epochs: int) -> list[float]:
    """Seconds per epoch of a plain fit, validation included."""
    from tljob.config import Trainable
    from tljob.nn import model as nn_model
    from tljob.nn.keras import tf_keras

    net = nn_model.build_model(job.model, 10, 32)
    nn_model.set_trainable(net, Trainable.parse("all"))
    nn_model.compile_for_stage(net, "adam", 1e-3)
    seconds: list[float] = []

    class Clock(tf_keras.callbacks.Callback):
        def on_epoch_begin(self, epoch, logs=None):
            self.start = time.monotonic()

        def on_epoch_end(self, epoch, logs=None):
            seconds.append(time.monotonic() - self.start)

    net.fit(
        *data["train"],
        batch_size=BATCH,
        epochs=epochs,
        validation_data=data["val"],
        shuffle=True,
        callbacks=[Clock()],
        verbose=0,
    )
    return seconds


def job_epochs(job) -> list[dict[str, float]]:
    from tljob.run.job import run_job

    summary = run_job(job)
    run_dir = Path(summary["run_dir"].removeprefix("file://"))
    return json.loads((run_dir / "timings.json").read_text())


def span(values: list[float]) -> str:
    lo, hi = min(values), max(values)
    return f"{lo:.2f}" if hi - lo < 0.005 else f"{lo:.2f}-{hi:.2f}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workers", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--epochs", type=int, default=4)
    parser.add_argument("--repeat", type=int, default=2)
    parser.add_argument("--workdir", default="/tmp/tljob-overhead")
    args = parser.parse_args()
    workdir = Path(args.workdir).resolve()
    source = demo_tree(workdir)
    stamp = time.strftime("%H%M%S")

    rows: list[tuple[str, list[float], list[float]]] = []  # label, first, steady means
    base = job_config(source, workdir, "plain", 1, args.epochs)
    data = arrays(base)
    firsts, steadies = [], []
    for _ in range(args.repeat):
        seconds = plain_fit(base, data, args.epochs)
        firsts.append(seconds[0])
        steadies.append(statistics.mean(seconds[1:]))
        print(f"plain fit: {[round(s, 2) for s in seconds]}", flush=True)
    rows.append(("plain tf_keras fit, 1 process", firsts, steadies))
    plain_steady = min(steadies)

    import ray

    from tljob import output

    ray.init(
        num_cpus=2,
        include_dashboard=False,
        _temp_dir=str(workdir / "ray"),
        runtime_env={"env_vars": output.worker_env(False)},
    )
    breakdowns: dict[int, list[dict[str, float]]] = {}
    try:
        for workers in args.workers:
            firsts, steadies = [], []
            for r in range(args.repeat):
                name = f"job-{workers}w-{stamp}-{r}"
                epochs = job_epochs(job_config(source, workdir, name, workers, args.epochs))
                walls = [e["wall"] for e in epochs]
                print(f"job, {workers} worker(s): {walls}", flush=True)
                firsts.append(walls[0])
                steadies.append(statistics.mean(walls[1:]))
                breakdowns.setdefault(workers, []).extend(epochs[1:])
            rows.append((f"tljob train, {workers} worker(s)", firsts, steadies))
    finally:
        ray.shutdown()

    print("\n| run | first epoch, s | steady epoch, s | vs plain (min-max) |")
    print("| --- | --- | --- | --- |")
    for label, firsts, steadies in rows:
        ratios = [s / plain_steady for s in steadies]
        print(f"| {label} | {span(firsts)} | {span(steadies)} | {span(ratios)}x |")
    print("\nwhere a steady job epoch goes (mean seconds, rank 0):\n")
    print("| workers | " + " | ".join(PHASES) + " | wall |")
    print("| --- " * (len(PHASES) + 2) + "|")
    for workers, epochs in breakdowns.items():
        cells = [statistics.mean(e.get(p, 0.0) for e in epochs) for p in (*PHASES, "wall")]
        print(f"| {workers} | " + " | ".join(f"{c:.2f}" for c in cells) + " |")


if __name__ == "__main__":
    main()
