"""Throughput of the inference path (``tljob.infer``) from prepared shards, against a plain
``model.predict`` over the same decoded images in one process, on this machine.

    .venv/bin/python benchmarks/predict_throughput.py [--backbone mobilenet_v2] [--size 96]
        [--images 2048] [--batch-size 64] [--actors 1 2]

The images (random pixels) are written as a prepared validation split (raw pixels, as
``tljob prepare`` stores them), the model is built with ``model.weights=none`` and exported
with ``nn.io.export_model``. "plain": one Python process loads the export, reads the shards
into one uint8 array, and times ``model.predict(images, batch_size)`` after one warm-up
batch (TensorFlow's default threads: every core). "tljob": ``infer(model, PreparedSplit,
top=5, actors=N)`` on a local Ray of ``--cpus`` CPUs, the rows consumed in the driver, as
``tljob predict`` and the end-of-run re-check consume them.

Per core means per CPU-second actually used: the CPU time of every process involved (the
plain process; for tljob the driver and every process of its local Ray: GCS, raylet,
workers, actors), read from /proc. tljob is measured in its steady state, from the moment a
quarter of the rows had arrived (leaving the actors' start out) to the last row;
the wall time of the whole call, actor starts included, is shown too.

Prints a Markdown table; docs/pages/performance/2026-12-05-predict.md came from this command
(``--images 4096 --size 96 --batch-size 64``).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

CLASSES = ["a", "b", "c", "d", "e"]
_TICKS = os.sysconf("SC_CLK_TCK")


def write_split(root: Path, images: int, size: int) -> str:
    """A prepared val split of ``images`` random images (``tljob.data.prepared`` layout)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    from tljob.data.prepared import PreparedManifest, StoreSettings

    store = StoreSettings(size, size, "raw", 0, 10**8, 64 * 2**20)
    rng = np.random.default_rng(0)
    pixels = rng.integers(0, 256, (images, size, size, 3), dtype=np.uint8)
    labels = rng.integers(0, len(CLASSES), images)
    table = pa.table(
        {
            "image": [p.tobytes() for p in pixels],
            "label": pa.array(labels, pa.int64()),
            "class_name": [CLASSES[i] for i in labels],
            "uri": [f"image-{i:06d}" for i in range(images)],
            "sha256": ["-"] * images,
        }
    )
    (root / "attempt" / "val").mkdir(parents=True)
    pq.write_table(table, root / "attempt" / "val" / "0.parquet", **store.write_options())
    manifest = PreparedManifest(
        fingerprint="bench",
        attempt="attempt",
        classes=CLASSES,
        store=store.__dict__,
        listed=images,
        per_split={"val": {"used": images, "per_class_used": {}}},
        files={"val": ["attempt/val/0.parquet"]},
    )
    (root / "manifest.json").write_text(manifest.to_json())
    return str(root)


PLAIN = """
import json, sys, time
import numpy as np, pyarrow.parquet as pq
from tljob.config import load_config
from tljob.nn import io as nn_io, model as nn_model

backbone, size, batch, run, shard, classes = sys.argv[1:7]
size, batch, classes = int(size), int(batch), int(classes)
cfg = load_config(None, ["data.source=x", f"model.backbone={backbone}", "model.weights=none",
                         f"data.image_size={size}"]).model
nn_io.export_model(nn_model.build_model(cfg, classes, size), f"{run}/model/model.keras")
net = nn_io.load_exported(f"{run}/model/model.keras")
column = pq.read_table(shard, columns=["image"])["image"].to_pylist()
images = np.stack([np.frombuffer(b, np.uint8).reshape(size, size, 3) for b in column])
net.predict(images[:batch], batch_size=batch, verbose=0)  # trace and warm up
wall, cpu = time.perf_counter(), time.process_time()
net.predict(images, batch_size=batch, verbose=0)
print(json.dumps({"wall": time.perf_counter() - wall, "cpu": time.process_time() - cpu}))
"""


def plain(args: argparse.Namespace, run: Path, prepared: str) -> dict[str, float]:
    """Export the model and time the plain prediction, in a process of its own."""
    (run / "model").mkdir(parents=True)
    (run / "labels.json").write_text(json.dumps(dict(enumerate(CLASSES))))
    shard = str(Path(prepared) / "attempt" / "val" / "0.parquet")
    argv = [args.backbone, args.size, args.batch_size, run, shard, len(CLASSES)]
    proc = subprocess.run(
        [sys.executable, "-c", PLAIN, *map(str, argv)],
        capture_output=True,
        text=True,
        check=True,
        env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"},
    )
    return json.loads(proc.stdout.strip().splitlines()[-1])


def tree_cpu_seconds(root: int) -> float:
    """User + system CPU seconds of process ``root`` and all its live descendants."""
    parents: dict[int, int] = {}
    cpu: dict[int, float] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        parents[int(entry.name)] = int(fields[1])
        cpu[int(entry.name)] = (int(fields[11]) + int(fields[12])) / _TICKS
    ours, grew = {root}, True
    while grew:
        children = {pid for pid, ppid in parents.items() if ppid in ours} - ours
        ours |= children
        grew = bool(children)
    return sum(cpu.get(pid, 0.0) for pid in ours)


def through_tljob(args: argparse.Namespace, model: str, prepared: str, actors: int) -> dict:
    from tljob.infer.inputs import PreparedSplit
    from tljob.infer.pipeline import infer

    split = PreparedSplit.from_prepared(prepared, "val")
    me = os.getpid()
    started, cpu_start = time.perf_counter(), tree_cpu_seconds(me)
    ds = infer(model, split, batch_size=args.batch_size, top=5, actors=actors)
    seen, quarter = 0, None
    for batch in ds.iter_batches(batch_size=None, batch_format="numpy"):
        seen += len(batch["uri"])
        if quarter is None and seen >= args.images // 4:
            quarter = (seen, time.perf_counter(), tree_cpu_seconds(me))
    end, cpu_end = time.perf_counter(), tree_cpu_seconds(me)
    assert seen == args.images, seen
    rows, t_quarter, cpu_quarter = quarter
    return {
        "wall_all": end - started,
        "cpu_all": cpu_end - cpu_start,
        "steady_rows": seen - rows,
        "wall": end - t_quarter,
        "cpu": cpu_end - cpu_quarter,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--backbone", default="mobilenet_v2")
    parser.add_argument("--size", type=int, default=96)
    parser.add_argument("--images", type=int, default=2048)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--actors", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--cpus", type=int, default=2)
    args = parser.parse_args()

    import ray

    with tempfile.TemporaryDirectory() as tmp:
        prepared = write_split(Path(tmp) / "prepared", args.images, args.size)
        base = plain(args, Path(tmp) / "run", prepared)
        ray.init(num_cpus=args.cpus, include_dashboard=False, log_to_driver=False)
        from tljob import output

        output.quiet_ray(verbose=False)
        model = str(Path(tmp) / "run")
        runs = {n: through_tljob(args, model, prepared, n) for n in args.actors}
        ray.shutdown()

    per_cpu = args.images / base["cpu"]
    print(
        f"{args.backbone} at {args.size} px, {args.images} images, batch {args.batch_size}, "
        f"local Ray of {args.cpus} CPUs\n"
    )
    print("| path | images/s (wall) | CPU s | images per CPU-second | vs plain |")
    print("| --- | --- | --- | --- | --- |")
    print(
        f"| plain model.predict, 1 process | {args.images / base['wall']:,.0f} | "
        f"{base['cpu']:.1f} | {per_cpu:,.0f} | 1.00 |"
    )
    for n, r in runs.items():
        mine = r["steady_rows"] / r["cpu"]
        print(
            f"| tljob infer, {n} actor(s), steady state | {r['steady_rows'] / r['wall']:,.0f} "
            f"| {r['cpu']:.1f} | {mine:,.0f} | {mine / per_cpu:.2f} |"
        )
        print(
            f"| tljob infer, {n} actor(s), whole call (actor starts included) | "
            f"{args.images / r['wall_all']:,.0f} | {r['cpu_all']:.1f} | "
            f"{args.images / r['cpu_all']:,.0f} | {args.images / r['cpu_all'] / per_cpu:.2f} |"
        )


if __name__ == "__main__":
    main()
