"""Augmented images per second per core: Keras' two classic paths against tljob's two.

Every path augments the same generated 500x375 JPEGs (quality 90, photos of
``skimage.data`` cropped, tinted and noised, in class folders) with the ``seed`` preset
(ImageDataGenerator's rotation 40, shifts 0.2, shear 0.2, zoom 0.2, horizontal flip, fill
nearest) into 224 px batches of 32:

(a) ``ImageDataGenerator(...).flow_from_directory``: one image at a time in Python. On 1
    core the iterator is read directly; on 2 cores through Keras' own parallel reader, the
    ``OrderedEnqueuer`` with 2 worker processes (what ``fit(workers=2,
    use_multiprocessing=True)`` does);
(b) ``image_dataset_from_directory`` + Keras preprocessing layers (RandomFlip,
    RandomRotation(40/360), RandomTranslation(0.2, 0.2), RandomZoom(0.2), fill nearest; tf_keras
    has no shear layer) mapped with AUTOTUNE, TensorFlow's inter/intra-op and tf.data thread
    pools set to the core count;
(c) tljob from the JPEG files: Ray Data reads every file each epoch and decodes, resizes and
    augments it with ``tljob.augment.pipeline.Augmenter`` in its tasks;
(d) tljob from prepared uint8 shards: the training stream of ``tljob.data.pipeline
    .prepare_data`` (raw shards stored at 256 px, prepared once beforehand, timed apart).

(c) and (d) are consumed as a Train worker consumes its shard (``streaming_split(1)``, then
``iter_batches`` of 32 with prefetch 2 and a local shuffle buffer of 256, as
``run.feed.streamed_per_worker`` asks ``to_tf``), without TensorFlow, on a private
``ray.init(num_cpus=cores)``. Each (path, cores) runs in its own process whose CPU affinity
(inherited by every thread and child, Ray's included) is the first ``cores`` CPUs; the
first epoch is a warm-up, the rate is over the following ones. The "CPU-s" column counts the
CPU time of that process tree, which stays meaningful on a busy machine. Not a test: no
asserts. Run it on an otherwise idle machine; prints a Markdown table.

    PYTHONPATH=. .venv/bin/python benchmarks/augment_throughput.py [--images 3000] \\
        [--cores 1 2] [--paths a b c d] [--epochs 3] [--work DIR]
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np

from tljob.config.augment import PRESETS

SIZE = 224
BATCH = 32
SHUFFLE = 256
CLASSES = 4
SEED = 0
PATHS = {
    "a": "(a) Keras ImageDataGenerator.flow_from_directory",
    "b": "(b) tf.data image_dataset_from_directory + Keras layers",
    "c": "(c) tljob: Ray Data from the JPEG files",
    "d": "(d) tljob: Ray Data from prepared uint8 shards",
    "d0": "(d0) the same stream without augmentation (reference)",
}
# ImageDataGenerator's arguments for path (a): exactly tljob's `seed` preset.
SEED_RECIPE = dict(PRESETS["seed"])


# ---- the images --------------------------------------------------------------------------


def _photos() -> list[np.ndarray]:
    """The RGB photos and textures bundled with scikit-image (no download)."""
    from skimage import data

    photos = [
        getattr(data, name)()
        for name in ("astronaut", "coffee", "chelsea", "rocket", "immunohistochemistry")
    ]
    photos.append(data.hubble_deep_field())
    photos += [np.repeat(getattr(data, n)()[:, :, None], 3, 2) for n in ("grass", "brick")]
    return photos


def _write_image(path: Path, i: int, photos: list[np.ndarray]) -> None:
    """Image ``i``: a random 4:3 crop of a photo, resized to 500x375, flipped, tinted and
    noised with a generator seeded by ``i`` (the same bytes on every run)."""
    import cv2
    from PIL import Image

    rng = np.random.default_rng([SEED, i])
    photo = photos[i % len(photos)]
    h, w = photo.shape[:2]
    ch = int(min(h, w * 3 / 4) * rng.uniform(0.5, 1.0))
    cw = ch * 4 // 3
    y, x = rng.integers(0, h - ch + 1), rng.integers(0, w - cw + 1)
    crop = cv2.resize(photo[y : y + ch, x : x + cw], (500, 375), interpolation=cv2.INTER_AREA)
    if rng.random() < 0.5:
        crop = crop[:, ::-1]
    tinted = crop * rng.uniform(0.75, 1.25, 3) + rng.normal(0, 6, crop.shape)
    image = np.clip(tinted, 0, 255).astype(np.uint8)
    Image.fromarray(image).save(path, format="JPEG", quality=90)


def generate_images(folder: Path, count: int) -> None:
    """``count`` JPEGs in ``folder/class_<c>/<i>.jpg``; kept when already there."""
    done = folder / f".complete-{count}"
    if done.exists():
        return
    shutil.rmtree(folder, ignore_errors=True)  # another count, or an interrupted run
    photos = _photos()
    for c in range(CLASSES):
        (folder / f"class_{c}").mkdir(parents=True, exist_ok=True)
    with ThreadPoolExecutor(len(os.sched_getaffinity(0))) as pool:
        paths = [folder / f"class_{i % CLASSES}" / f"{i:05d}.jpg" for i in range(count)]
        list(pool.map(lambda i: _write_image(paths[i], i, photos), range(count)))
    done.touch()


def image_files(folder: Path) -> list[tuple[str, int]]:
    """(path, label) of every image, in class then name order."""
    return [
        (str(p), c) for c in range(CLASSES) for p in sorted((folder / f"class_{c}").glob("*.jpg"))
    ]


# ---- measuring ---------------------------------------------------------------------------


def tree_cpu_seconds(root: int) -> float:
    """User + system CPU seconds of process ``root`` and every live descendant, with the
    children each of them has reaped (a multiprocessing pool's, say)."""
    stats: dict[int, tuple[int, float]] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue  # exited meanwhile
            stats[int(entry.name)] = (int(fields[1]), sum(int(v) for v in fields[11:15]))
    children: dict[int, list[int]] = {}
    for pid, (parent, _) in stats.items():
        children.setdefault(parent, []).append(pid)
    total, todo = 0, [root]
    while todo:
        pid = todo.pop()
        total += stats.get(pid, (0, 0))[1]
        todo += children.get(pid, [])
    return total / os.sysconf("SC_CLK_TCK")


def timed_epochs(run_epoch: Callable[[int], int], epochs: int) -> dict[str, float]:
    """Run ``epochs`` epochs (``run_epoch(e)`` returns the images delivered); the rate is
    over every epoch after the first."""
    images, seconds, cpu = 0, 0.0, 0.0
    for epoch in range(epochs):
        cpu0, start = tree_cpu_seconds(os.getpid()), time.perf_counter()
        count = run_epoch(epoch)
        elapsed = time.perf_counter() - start
        used = tree_cpu_seconds(os.getpid()) - cpu0
        print(f"  epoch {epoch}: {count} images in {elapsed:.2f} s", file=sys.stderr, flush=True)
        if epoch > 0 or epochs == 1:
            images, seconds, cpu = images + count, seconds + elapsed, cpu + used
    return {"images": images, "seconds": seconds, "cpu_seconds": cpu}


# ---- (a) and (b): Keras ------------------------------------------------------------------


def keras_generator(folder: Path, cores: int, epochs: int) -> dict[str, float]:
    from tljob.nn.keras import tf_keras

    generator = tf_keras.preprocessing.image.ImageDataGenerator(**SEED_RECIPE)
    flow = generator.flow_from_directory(
        str(folder), target_size=(SIZE, SIZE), batch_size=BATCH, class_mode="sparse", seed=SEED
    )
    steps = len(flow)
    enqueuer = None
    batches: Iterator = iter(flow)
    if cores > 1:  # Keras' parallel reader: one process per worker, batches in order
        enqueuer = tf_keras.utils.OrderedEnqueuer(flow, use_multiprocessing=True)
        enqueuer.start(workers=cores, max_queue_size=10)
        batches = enqueuer.get()

    def epoch(_e: int) -> int:
        return sum(len(next(batches)[1]) for _ in range(steps))

    try:
        return timed_epochs(epoch, epochs)
    finally:
        if enqueuer is not None:
            enqueuer.stop()


def keras_layers(folder: Path, cores: int, epochs: int) -> dict[str, float]:
    import tensorflow as tf

    from tljob.nn.keras import tf_keras

    tf.config.threading.set_inter_op_parallelism_threads(cores)
    tf.config.threading.set_intra_op_parallelism_threads(cores)
    layers = tf_keras.layers
    augment = tf_keras.Sequential(
        [
            layers.RandomFlip("horizontal", seed=SEED),
            layers.RandomRotation(40 / 360, fill_mode="nearest", seed=SEED),
            layers.RandomTranslation(0.2, 0.2, fill_mode="nearest", seed=SEED),
            layers.RandomZoom(0.2, fill_mode="nearest", seed=SEED),
        ]
    )
    options = tf.data.Options()
    options.threading.private_threadpool_size = cores
    dataset = (
        tf_keras.utils.image_dataset_from_directory(
            str(folder), image_size=(SIZE, SIZE), batch_size=BATCH, shuffle=True, seed=SEED
        )
        .map(lambda x, y: (augment(x, training=True), y), num_parallel_calls=tf.data.AUTOTUNE)
        .prefetch(tf.data.AUTOTUNE)
        .with_options(options)
    )

    def epoch(_e: int) -> int:
        return sum(int(y.shape[0]) for _x, y in dataset)

    return timed_epochs(epoch, epochs)


# ---- (c) and (d): tljob on Ray Data ------------------------------------------------------


def _start_ray(cores: int) -> None:
    import ray
    import ray.data

    ray.init(
        address="local",
        num_cpus=cores,
        include_dashboard=False,
        log_to_driver=False,
        configure_logging=False,
    )
    ctx = ray.data.DataContext.get_current()
    ctx.enable_progress_bars = False
    ctx.print_on_execution_start = False


def _worker_iterator(dataset):
    """The iterator a Train worker gets for ``dataset`` (``ray.train.DataConfig``'s
    default: ``streaming_split``, made once and iterated once per epoch)."""
    (shard,) = dataset.streaming_split(1, equal=True)
    return shard


def _consume(shard) -> int:
    """Rows delivered in one epoch, batched as ``run.feed.streamed_per_worker`` asks."""
    count = 0
    for batch in shard.iter_batches(
        batch_size=BATCH,
        batch_format="numpy",
        prefetch_batches=2,
        local_shuffle_buffer_size=SHUFFLE,
        drop_last=True,
    ):
        count += len(batch["label"])
    return count


def decode_augment(batch: dict[str, np.ndarray], first_execution: int) -> dict[str, np.ndarray]:
    """Read, decode and resize the JPEGs of ``batch`` to ``SIZE``, then augment them with
    the ``seed`` preset, keyed by content hash as prepared rows are; the epoch is the
    dataset's execution count, as in tljob's stream (``tljob.data.views``)."""
    from tljob.augment.keys import image_keys
    from tljob.augment.pipeline import Augmenter
    from tljob.config.augment import AugmentSection
    from tljob.data.views import execution_epoch
    from tljob.images import decode_rgb, resize_fast_uint8

    images = np.empty((len(batch["path"]), SIZE, SIZE, 3), np.uint8)
    digests = []
    for i, path in enumerate(batch["path"]):
        data = Path(str(path)).read_bytes()
        digests.append(hashlib.sha256(data).hexdigest())
        images[i] = resize_fast_uint8(decode_rgb(data), SIZE)
    augmenter = Augmenter(AugmentSection(preset="seed"), SIZE, SEED)
    views = augmenter(images, image_keys(digests), execution_epoch(first_execution, 0))
    return {"image": views, "label": np.asarray(batch["label"], np.int64)}


def tljob_from_jpeg(folder: Path, cores: int, epochs: int) -> dict[str, float]:
    import cv2
    import ray.data

    cv2.setNumThreads(1)
    _start_ray(cores)
    rows = [{"path": p, "label": label} for p, label in image_files(folder)]
    dataset = ray.data.from_items(rows, override_num_blocks=max(1, len(rows) // 64))
    dataset = dataset.randomize_block_order(
        seed=ray.data.RandomSeedConfig(seed=SEED, reseed_after_execution=True)
    ).map_batches(
        decode_augment,
        fn_kwargs={"first_execution": dataset.context._execution_idx},
        batch_size=None,
    )
    shard = _worker_iterator(dataset)
    return timed_epochs(lambda _e: _consume(shard), epochs)


def _job(folder: Path, work: Path, augment: bool):
    from tljob.config import load_config

    return load_config(
        None,
        [
            f"data.source={folder}",
            f"data.image_size={SIZE}",
            "data.val_fraction=0.05",
            "data.shard_pixels=raw",
            f"data.seed={SEED}",
            "model.weights=none",
            f"run.storage_path={work / 'runs'}",
            f"augment.preset={'seed' if augment else 'none'}",
        ],
    )


def prepare_shards(folder: Path, work: Path, cores: int) -> dict[str, float]:
    """Prepare (or reuse) the shards of (d); returns the seconds it took."""
    from tljob.data.pipeline import prepare_data

    _start_ray(cores)
    start = time.perf_counter()
    prepared = prepare_data(_job(folder, work, augment=False))
    return {"seconds": time.perf_counter() - start, "reused": prepared.reused}


def tljob_from_shards(folder: Path, work: Path, cores: int, epochs: int, augment: bool):
    from tljob.data.pipeline import prepare_data

    _start_ray(cores)
    prepared = prepare_data(_job(folder, work, augment))
    if not prepared.reused:
        raise SystemExit("the shards were not prepared beforehand")
    shard = _worker_iterator(prepared.train)
    return timed_epochs(lambda _e: _consume(shard), epochs)


# ---- driver ------------------------------------------------------------------------------


def run_child(args: argparse.Namespace) -> dict[str, float]:
    """One (path, cores) measurement, in this process, pinned to the first ``cores`` CPUs."""
    os.sched_setaffinity(0, sorted(os.sched_getaffinity(0))[: args.child_cores])
    folder, work = Path(args.work) / "images", Path(args.work)
    path, cores, epochs = args.child, args.child_cores, args.epochs
    if path == "prepare":
        return prepare_shards(folder, work, cores)
    if path == "a":
        return keras_generator(folder, cores, epochs)
    if path == "b":
        return keras_layers(folder, cores, epochs)
    if path == "c":
        return tljob_from_jpeg(folder, cores, epochs)
    return tljob_from_shards(folder, work, cores, epochs, augment=path == "d")


def spawn(args: argparse.Namespace, path: str, cores: int) -> dict[str, float]:
    command = [sys.executable, __file__, "--work", args.work, "--epochs", str(args.epochs)]
    command += ["--child", path, "--child-cores", str(cores)]
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2", "RAY_USAGE_STATS_ENABLED": "0"}
    env.setdefault("RAY_AUTH_MODE", "disabled")
    print(f"{PATHS.get(path, path)} on {cores} core(s)", file=sys.stderr, flush=True)
    done = subprocess.run(command, env=env, stdout=subprocess.PIPE, text=True, check=False)
    results = [line for line in done.stdout.splitlines() if line.startswith("RESULT ")]
    if done.returncode != 0 or not results:
        return {"error": f"exit {done.returncode}"}
    return json.loads(results[-1][len("RESULT ") :])


def markdown(args: argparse.Namespace, rows: dict[tuple[str, int], dict], prep: dict) -> str:
    if not prep:
        prepared = ""
    elif prep.get("reused"):
        prepared = "; (d) shards prepared by an earlier run"
    else:
        prepared = f"; (d) shards prepared once in {prep['seconds']:.1f} s"
    lines = [
        f"{args.images} images 500x375 JPEG q90, `seed` preset -> {SIZE} px, batch {BATCH}; "
        f"rate over epochs 2..{args.epochs}{prepared}",
        "",
        "| path | cores | images/s | images/s per core | vs (a) per core "
        "| images per CPU-s (process tree) |",
        "| --- | --- | --- | --- | --- | --- |",
    ]
    base = {c: rows.get(("a", c), {}) for c in args.cores}
    for (path, cores), r in rows.items():
        if "error" in r:
            lines.append(f"| {PATHS[path]} | {cores} | {r['error']} | | | |")
            continue
        rate = r["images"] / r["seconds"]
        ref = base[cores]
        vs = f"{rate / (ref['images'] / ref['seconds']):.1f}x" if "seconds" in ref else "-"
        per_cpu = r["images"] / r["cpu_seconds"] if r["cpu_seconds"] else float("nan")
        lines.append(
            f"| {PATHS[path]} | {cores} | {rate:,.0f} | {rate / cores:,.0f} | {vs} "
            f"| {per_cpu:,.0f} |"
        )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=3000)
    parser.add_argument("--cores", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--paths", nargs="+", default=["a", "b", "c", "d"], choices=PATHS)
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--work", default="", help="keep images and shards here (reused)")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    parser.add_argument("--child-cores", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print("RESULT " + json.dumps(run_child(args)), flush=True)
        return

    keep = bool(args.work)
    args.work = args.work or tempfile.mkdtemp(prefix="tljob-augbench-")
    try:
        generate_images(Path(args.work) / "images", args.images)
        prep: dict = {}
        if {"d", "d0"} & set(args.paths):
            prep = spawn(args, "prepare", max(args.cores))
        rows = {(p, c): spawn(args, p, c) for p in args.paths for c in args.cores}
        print(markdown(args, rows, prep))
    finally:
        if not keep:
            shutil.rmtree(args.work, ignore_errors=True)


if __name__ == "__main__":
    main()
