"""Images per second per core into a worker's tf.data iterator, three input paths, from S3.

(a) one JPEG object per image per epoch (the old path: GET + decode + resize every epoch);
(b) raw uint8 shards (``data.shard_pixels: raw``): row-group reads + resize from the stored size;
(c) encoded shards (``data.shard_pixels: jpeg``): row-group reads + decode + resize.

Source images are 500x375 JPEGs (quality 90, a smooth picture with noise) in a local
SeaweedFS S3 server (the one the tests use), trained at 224 px (stored at 256). Each path
runs on a private local Ray with ``--cpus`` CPUs; the dataset becomes tf.data exactly as a
streaming worker's does (``run.feed.streamed_per_worker``, batch 32, shuffle buffer 256)
and is iterated for ``--epochs`` epochs; the last epoch is timed (the first pays start-up).
Preparation (decode once + write shards to S3) is timed separately. Not a test: no asserts.

The S3 server runs on the same cores, and serving a 196 KB raw row costs it real CPU that a
remote store would spend on its own machines. So besides images/s on the wall clock, each
timed epoch reports images per CPU-second of everything but the S3 server (the machine's
busy time from /proc/stat minus the ``weed`` process's CPU time): the per-core rate of the
Ray cluster itself. Run it on an otherwise idle machine.

    .venv/bin/python benchmarks/input_paths.py [--images 400] [--cpus 2] [--epochs 2]
"""

from __future__ import annotations

import argparse
import io
import os
import shutil
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
from PIL import Image

BUCKET = "bench"


def jpeg_bytes(i: int, rng: np.random.Generator) -> bytes:
    y, x = np.mgrid[0:375, 0:500]
    base = np.stack([(x + 7 * i) % 256, (y + 3 * i) % 256, (x + y) % 256], axis=2)
    noisy = np.clip(base + rng.normal(0, 12, base.shape), 0, 255).astype(np.uint8)
    buf = io.BytesIO()
    Image.fromarray(noisy).save(buf, format="JPEG", quality=90)
    return buf.getvalue()


def upload_jpegs(client, prefix: str, n: int) -> list[tuple[str, int]]:
    """``n`` JPEGs under ``s3://BUCKET/<prefix>/class_<c>/``; returns (uri, label)."""
    rng = np.random.default_rng(0)
    keys = [(f"{prefix}/class_{i % 2}/{i:05d}.jpg", i % 2) for i in range(n)]
    bodies = [jpeg_bytes(i, rng) for i in range(n)]
    with ThreadPoolExecutor(8) as pool:
        puts = [
            pool.submit(client.put_object, Bucket=BUCKET, Key=key, Body=body)
            for (key, _label), body in zip(keys, bodies, strict=True)
        ]
        for put in puts:
            put.result()
    return [(f"s3://{BUCKET}/{k}", label) for k, label in keys]


def busy_cpu_seconds() -> float:
    """CPU seconds every core of the machine has spent busy since boot (/proc/stat)."""
    fields = [int(v) for v in Path("/proc/stat").read_text().split("\n")[0].split()[1:]]
    idle = fields[3] + fields[4]  # idle + iowait
    return (sum(fields[:8]) - idle) / os.sysconf("SC_CLK_TCK")


def process_cpu_seconds(pid: int) -> float:
    """User + system CPU seconds of process ``pid`` (/proc/<pid>/stat)."""
    stat = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(stat[11]) + int(stat[12])) / os.sysconf("SC_CLK_TCK")


def time_epochs(ds, epochs: int, server_pid: int, batch: int = 32) -> tuple[float, float, int]:
    """(wall seconds, CPU seconds outside the S3 server, images) of the last epoch."""
    from tljob.run.feed import streamed_per_worker

    seconds, cpu, count = 0.0, 0.0, 0
    for _ in range(epochs):
        tf_ds = streamed_per_worker(ds, batch, 224, training=True, shuffle=256)
        busy, served = busy_cpu_seconds(), process_cpu_seconds(server_pid)
        start, count = time.perf_counter(), 0
        for images, _labels in tf_ds:
            count += int(images.shape[0])
        seconds = time.perf_counter() - start
        cpu = (busy_cpu_seconds() - busy) - (process_cpu_seconds(server_pid) - served)
    return seconds, cpu, count


def old_path(items: list[tuple[str, int]]):
    import ray.data

    from tljob import storage
    from tljob.images import decode_rgb, resize_bilinear_uint8

    def decode(batch):
        images = np.empty((len(batch["uri"]), 224, 224, 3), np.uint8)
        for i, uri in enumerate(batch["uri"]):
            data = storage.read_bytes(storage.resolve(str(uri)))
            images[i] = resize_bilinear_uint8(decode_rgb(data), 224)
        return {"image": images, "label": batch["label"].astype(np.int64)}

    rows = [{"uri": u, "label": lab} for u, lab in items]
    blocks = max(1, len(rows) // 64)
    return ray.data.from_items(rows, override_num_blocks=blocks).map_batches(decode, batch_size=64)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=400)
    parser.add_argument("--cpus", type=int, default=2)
    parser.add_argument("--epochs", type=int, default=2)
    args = parser.parse_args()

    import ray

    from tljob import storage
    from tljob.config import load_config
    from tljob.data.pipeline import prepare_data
    from tljob.storage.seaweed import LocalS3Server

    work = Path(tempfile.mkdtemp(prefix="tljob-bench-"))
    server = LocalS3Server(work / "s3").start()
    try:
        os.environ.update(server.admin.env())
        server.create_bucket(BUCKET)
        items = upload_jpegs(server.client(), "images", args.images)
        s3 = [f"s3.endpoint_url={server.endpoint_url}", "s3.allow_http=true"]
        storage.configure(storage.S3Settings.from_config(load_config(None, s3).s3))
        ray.init(
            address="local",
            num_cpus=args.cpus,
            include_dashboard=False,
            log_to_driver=False,
            runtime_env={"env_vars": storage.worker_env()},
        )
        rows = []
        pid = server.pid
        seconds, cpu, n = time_epochs(old_path(items), args.epochs, pid)
        rows.append(("(a) JPEG object per image per epoch", n / seconds, n / cpu))
        for pixels in ("raw", "jpeg"):
            job = load_config(
                None,
                [
                    f"data.source=s3://{BUCKET}/images",
                    "data.image_size=224",
                    "data.val_fraction=0.05",
                    "model.weights=none",
                    f"data.shard_pixels={pixels}",
                    f"run.storage_path=s3://{BUCKET}/runs",
                    *s3,
                ],
            )
            start = time.perf_counter()
            prepared = prepare_data(job)
            prep = time.perf_counter() - start
            seconds, cpu, n = time_epochs(prepared.train, args.epochs, pid)
            label = {"raw": "(b) raw uint8 shards", "jpeg": "(c) JPEG-encoded shards"}[pixels]
            rows.append((f"{label} (prepared once in {prep:.1f} s)", n / seconds, n / cpu))
        print(
            f"\n{args.images} images 500x375 JPEG -> 224 px, from S3 (SeaweedFS), {args.cpus} "
            f"CPUs, last of {args.epochs} epochs\n"
        )
        print(
            "| input path | images/s | images/s per core | vs (a) "
            "| images per CPU-second without the S3 server | vs (a) |"
        )
        print("| --- | --- | --- | --- | --- | --- |")
        for name, rate, per_cpu in rows:
            print(
                f"| {name} | {rate:.0f} | {rate / args.cpus:.0f} | {rate / rows[0][1]:.1f}x "
                f"| {per_cpu:.0f} | {per_cpu / rows[0][2]:.1f}x |"
            )
    finally:
        ray.shutdown()
        server.stop()
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
