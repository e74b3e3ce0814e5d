"""Images per second per core into a worker's tf.data iterator, three input paths.

(a) one JPEG file per image per epoch (the old path: read + decode + resize every epoch);
(b) raw uint8 shards (``data.shard_pixels: raw``): read + resize from the stored size;
(c) encoded shards (``data.shard_pixels: jpeg``): read + decode the small stored image + resize.

Source images are 500x375 JPEGs (quality 90, a smooth picture with noise) on local disk,
trained at 224 px (stored at 256). Each path runs on a private local Ray with ``--cpus``
CPUs; the dataset is turned into tf.data exactly as a worker does (``_to_tf_per_worker``)
and iterated for ``--epochs`` epochs; the last epoch is timed (the first pays start-up).
Preparation (decode once + write shards) is timed separately. Not a test: no asserts.

    .venv/bin/python benchmarks/input_paths.py [--images 400] [--cpus 2] [--epochs 2]
"""

from __future__ import annotations

import argparse
import shutil
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image


def write_jpegs(folder: Path, n: int) -> None:
    rng = np.random.default_rng(0)
    y, x = np.mgrid[0:375, 0:500]
    for c in range(2):
        (folder / f"class_{c}").mkdir(parents=True)
    for i in range(n):
        base = np.stack([(x + 7 * i) % 256, (y + 3 * i) % 256, (x + y) % 256], axis=2)
        noisy = np.clip(base + rng.normal(0, 12, base.shape), 0, 255).astype(np.uint8)
        Image.fromarray(noisy).save(folder / f"class_{i % 2}" / f"{i:05d}.jpg", quality=90)


def time_epochs(ds, epochs: int, batch: int = 32) -> tuple[float, int]:
    from tljob.run.worker import _to_tf_per_worker

    seconds, count = 0.0, 0
    for _ in range(epochs):
        tf_ds = _to_tf_per_worker(ds, batch, 1, 224, training=True, shuffle=256)
        start, count = time.perf_counter(), 0
        for images, _labels in tf_ds:
            count += int(images.shape[0])
        seconds = time.perf_counter() - start
    return seconds, count


def old_path(paths: list[str], labels: list[int]):
    import ray.data

    from tljob.images import decode_rgb, resize_bilinear_uint8

    def decode(batch):
        images = np.empty((len(batch["path"]), 224, 224, 3), np.uint8)
        for i, p in enumerate(batch["path"]):
            with open(p, "rb") as f:
                images[i] = resize_bilinear_uint8(decode_rgb(f.read()), 224)
        return {"image": images, "label": batch["label"].astype(np.int64)}

    items = [{"path": p, "label": lab} for p, lab in zip(paths, labels, strict=True)]
    blocks = max(1, len(items) // 64)
    return ray.data.from_items(items, override_num_blocks=blocks).map_batches(decode, batch_size=64)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=400)
    parser.add_argument("--cpus", type=int, default=2)
    parser.add_argument("--epochs", type=int, default=2)
    args = parser.parse_args()

    import ray

    from tljob.config import load_config
    from tljob.data.pipeline import prepare_data

    work = Path(tempfile.mkdtemp(prefix="tljob-bench-"))
    try:
        src = work / "images"
        write_jpegs(src, args.images)
        ray.init(address="local", num_cpus=args.cpus, include_dashboard=False, log_to_driver=False)
        rows = []
        paths = sorted(str(p) for p in src.rglob("*.jpg"))
        labels = [int(Path(p).parent.name[-1]) for p in paths]
        seconds, n = time_epochs(old_path(paths, labels), args.epochs)
        rows.append(("(a) JPEG file per image per epoch", n / seconds))
        for pixels in ("raw", "jpeg"):
            job = load_config(
                None,
                [
                    f"data.source={src}",
                    "data.image_size=224",
                    "data.val_fraction=0.05",
                    "model.weights=none",
                    f"data.shard_pixels={pixels}",
                    f"run.storage_path={work / 'runs'}",
                ],
            )
            start = time.perf_counter()
            prepared = prepare_data(job)
            prep = time.perf_counter() - start
            seconds, n = time_epochs(prepared.train, args.epochs)
            label = {"raw": "(b) raw uint8 shards", "jpeg": "(c) JPEG-encoded shards"}[pixels]
            rows.append((f"{label} (prepared once in {prep:.1f} s)", n / seconds))
        print(
            f"\n{args.images} images 500x375 JPEG -> 224 px, {args.cpus} CPUs, last of "
            f"{args.epochs} epochs\n"
        )
        print("| input path | images/s | images/s per core | vs (a) |")
        print("| --- | --- | --- | --- |")
        for name, rate in rows:
            print(f"| {name} | {rate:.0f} | {rate / args.cpus:.0f} | {rate / rows[0][1]:.1f}x |")
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
