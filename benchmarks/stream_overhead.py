"""The prepared-shard stream before and after its leaner tasks, side by side in one process.

    PYTHONPATH=. .venv/bin/python benchmarks/stream_overhead.py [--images 3000] \\
        [--cores 1] [--repeats 5] [--presets none seed] [--work DIR]

The images and shards are ``benchmarks/augment_throughput.py``'s (3,000 generated 500x375
JPEGs, raw shards stored at 256 px, 224 px training views; made here when ``--work`` holds
none, and prepared before anything is timed). One process pinned to the first ``--cores``
CPUs (Ray's processes inherit it) starts a private Ray and builds, for each preset, two
training streams of the same prepared data: "before", whose tasks run
``read_units_before`` (the task function as it was: each row group's views in an array of
their own, then concatenated), and "after", tljob's ``stream._read_units`` (every view
written in place into the task's one output array). Each is read as a Train worker reads
its shard (``streaming_split(1)`` made once, ``iter_batches`` of 32, prefetch 2, local
shuffle buffer 256: ``augment_throughput._consume``). After a warm-up epoch of each, the
epochs alternate before/after/after/before... for ``--repeats`` rounds; the table gives
the medians of images/s (wall) and of images per CPU-second of the whole process tree
(driver and Ray's processes; steadier than wall time on a shared machine), and their
after/before ratios.

The second table splits one image's CPU: the task function alone (run in this process, no
Ray), the same with only the Parquet reads and zero-copy views, the object store put of a
task's output block, and the iterator's batching with its local shuffle buffer; "the rest"
is the stream's per-image CPU minus those (scheduling, task and actor calls, Ray's
processes). Not a test: no asserts. Prints Markdown.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
import augment_throughput as bench  # noqa: E402  (this folder is not a package)


def read_units_before(
    batch, fs, stored_size, pixels, image_size, views=None, one_hot_classes=0, first_execution=0
):
    """``tljob.data.stream._read_units`` before this change (training views only): each row
    group's views in an array of their own (copied in there from a per-image resize, or
    from ``geometry.warp``'s own output array), then one concatenation per task."""
    import pyarrow.parquet as pq

    from tljob.augment.keys import image_keys
    from tljob.augment.pipeline import Augmenter
    from tljob.data.stream import decode_all
    from tljob.data.views import execution_epoch
    from tljob.images import resize_fast_uint8

    epoch = execution_epoch(first_execution, views.epoch_offset)
    parts = []
    for path, group in zip(batch["path"], batch["row_group"], strict=True):
        with fs.open_input_file(str(path)) as handle:
            table = pq.ParquetFile(handle).read_row_group(
                int(group), columns=["image", "label", "sha256"]
            )
        stored = decode_all(table["image"], stored_size, pixels)
        keys = image_keys(table["sha256"].to_numpy(zero_copy_only=False))
        augmenter = Augmenter(views.section, image_size, views.seed)
        out = np.empty((len(stored), image_size, image_size, 3), dtype=np.uint8)
        if augmenter.geometric:  # the seed preset: every image warped
            out[np.arange(len(stored))] = augmenter(stored, keys, epoch)
        else:
            for i, image in enumerate(stored):
                out[i] = resize_fast_uint8(image, image_size)
        parts.append({"image": out, "label": np.asarray(table["label"].to_numpy(), np.int64)})
    if len(parts) == 1:
        return parts[0]
    return {
        "image": np.concatenate([p["image"] for p in parts]),
        "label": np.concatenate([p["label"] for p in parts]),
    }


def training_stream(job, before: bool):
    """The training dataset of ``job`` (already prepared), with the task function of
    ``before`` or of now."""
    from tljob.data import stream
    from tljob.data.pipeline import prepare_data

    now = stream._read_units
    stream._read_units = read_units_before if before else now
    try:
        prepared = prepare_data(job)
    finally:
        stream._read_units = now
    if not prepared.reused:
        raise SystemExit("the shards were not prepared beforehand")
    return prepared.train


def timed_epoch(shard) -> tuple[float, float]:
    """(images/s, images per CPU-second of the process tree) of one epoch of ``shard``."""
    cpu0, start = bench.tree_cpu_seconds(os.getpid()), time.perf_counter()
    count = bench._consume(shard)
    wall = time.perf_counter() - start
    return count / wall, count / (bench.tree_cpu_seconds(os.getpid()) - cpu0)


def cpu_ms_per_image(fn, images: int) -> float:
    start = time.process_time()
    fn()
    return (time.process_time() - start) / images * 1e3


def breakdown(job) -> dict[str, float]:
    """CPU ms per image of the stream's parts, measured apart in this process."""
    import pyarrow.parquet as pq
    import ray
    from ray.data._internal.block_batching.interfaces import ResolvedBlock
    from ray.data._internal.block_batching.util import blocks_to_batches, format_batches
    from ray.data.block import BlockAccessor

    from tljob.data import stream
    from tljob.data.plan import plan_data
    from tljob.data.prepared import StoreSettings, prepared_dir, read_manifest
    from tljob.data.sources import list_source
    from tljob.data.views import TrainingViews

    folder = prepared_dir(
        job.prepared_path, plan_data(job, list_source(job.data), batches=False).fingerprint
    )
    manifest = read_manifest(folder)
    units = stream.shard_units(folder, manifest.files["train"])
    size = StoreSettings(**manifest.store).size_of("train")
    views = TrainingViews(section=job.augment, seed=bench.SEED, num_classes=bench.CLASSES)
    per = stream._units_per_task(units)
    tasks = [
        {k: np.array([u[k] for u in units[i : i + per]]) for k in ("path", "row_group", "rows")}
        for i in range(0, len(units), per)
    ]
    count = sum(u["rows"] for u in units)
    args = (folder.fs, size, "raw", bench.SIZE, views)

    def reads() -> None:
        for u in units:
            with folder.fs.open_input_file(u["path"]) as handle:
                table = pq.ParquetFile(handle).read_row_group(u["row_group"])
            stream.decode_all(table["image"], size, "raw")

    out: dict[str, float] = {}
    for name, fn in (("before", read_units_before), ("after", stream._read_units)):
        fn(tasks[0], *args)  # warm: imports, OpenCV's first calls
        out[f"task function ({name})"] = cpu_ms_per_image(
            lambda fn=fn: [fn(t, *args) for t in tasks], count
        )
    out["of which the Parquet reads"] = cpu_ms_per_image(reads, count)
    blocks = [BlockAccessor.batch_to_block(stream._read_units(t, *args)) for t in tasks]
    refs: list = []
    out["object store put of the blocks"] = cpu_ms_per_image(
        lambda: refs.extend(ray.put(b) for b in blocks), count
    )
    got = ray.get(refs)

    def batches() -> None:
        resolved = iter([ResolvedBlock(b) for b in got])
        for _ in format_batches(
            blocks_to_batches(
                resolved, batch_size=bench.BATCH, drop_last=True, shuffle_buffer_min_size=256
            ),
            batch_format="numpy",
        ):
            pass

    out["batching + local shuffle (iterator)"] = cpu_ms_per_image(batches, count)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=3000)
    parser.add_argument("--cores", type=int, default=1)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--presets", nargs="+", default=["none", "seed"])
    parser.add_argument("--work", default="/tmp/tljob-stream-bench")
    args = parser.parse_args()
    os.environ.setdefault("RAY_AUTH_MODE", "disabled")
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    work = Path(args.work)
    bench.generate_images(work / "images", args.images)
    os.sched_setaffinity(0, sorted(os.sched_getaffinity(0))[: args.cores])
    prep = bench.prepare_shards(work / "images", work, args.cores)  # starts Ray
    print(
        f"load before: {os.getloadavg()}; shards prepared in {prep['seconds']:.1f} s",
        file=sys.stderr,
        flush=True,
    )
    rows, parts = [], {}
    for preset in args.presets:
        job = bench._job(work / "images", work, augment=preset == "seed")
        shards = {
            name: bench._worker_iterator(training_stream(job, before=name == "before"))
            for name in ("before", "after")
        }
        for shard in shards.values():
            bench._consume(shard)  # warm-up epoch
        rates: dict[str, list[tuple[float, float]]] = {"before": [], "after": []}
        for r in range(args.repeats):
            for name in ("before", "after") if r % 2 == 0 else ("after", "before"):
                rates[name].append(timed_epoch(shards[name]))
                print(f"  {preset} {name}: {rates[name][-1]}", file=sys.stderr, flush=True)
        medians = {
            name: (statistics.median(w for w, _ in v), statistics.median(c for _, c in v))
            for name, v in rates.items()
        }
        rows.append((preset, medians))
        parts[preset] = breakdown(job)
    load = os.getloadavg()
    print(
        f"\n1-minute load average at the end: {load[0]:.1f}; medians of {args.repeats} "
        f"epochs each, {args.cores} core(s)\n"
    )
    print(
        "| preset | before, images/s | after, images/s | after/before "
        "| before, images per CPU-s | after, images per CPU-s | after/before |"
    )
    print("| --- | --- | --- | --- | --- | --- | --- |")
    for preset, m in rows:
        (bw, bc), (aw, ac) = m["before"], m["after"]
        print(
            f"| {preset} | {bw:,.0f} | {aw:,.0f} | {aw / bw:.2f}x | {bc:,.0f} | {ac:,.0f} "
            f"| {ac / bc:.2f}x |"
        )
    print("\nCPU ms per image, measured apart (after):\n")
    print("| part | " + " | ".join(parts) + " |")
    print("| --- " * (len(parts) + 1) + "|")
    for name in next(iter(parts.values())):
        print(f"| {name} | " + " | ".join(f"{p[name]:.3f}" for p in parts.values()) + " |")
    stream_ms = " | ".join(f"{1e3 / m['after'][1]:.3f}" for _, m in rows)
    print(f"| whole stream, per CPU-s of the process tree (after) | {stream_ms} |")


if __name__ == "__main__":
    main()
