"""What the driver pays for a big manifest: listing time, peak memory, preparation time.

Three measurements, each printed as a Markdown table row. Not a test: no asserts.

* ``driver``: a synthetic manifest of ``--rows`` rows (``--classes`` classes) is listed,
  planned (split and fingerprint: ``tljob.data.plan.plan_data``), deduplicated as
  preparation does once every image is read (``listing.check_listing`` on one distinct
  scan per row) and split again (``DataPlan.split_for``), in a fresh subprocess whose peak
  resident memory (``ru_maxrss``) is reported with the time of each step. The rows name
  ``s3://`` objects that need not exist and carry a ``size`` column (nothing is looked
  at); with ``--local-files`` they name empty files made on local disk and no size, so
  every row is looked at (``stat``), the only way a manifest without sizes can be listed
  at 1M rows without an object store of 1M objects.
* ``s3``: ``--objects`` small distinct PNGs are uploaded to a local SeaweedFS S3 server,
  and a manifest of them is listed without and with a ``size`` column (one ``HEAD`` per
  row, or none).
* ``prepare``: the first ``--prepare`` of those objects are prepared into shards on a
  local Ray of 2 CPUs (``tljob.data.pipeline.prepare_data``: read, hash, decode, write),
  reported per 100,000 images.

    .venv/bin/python benchmarks/scale.py driver --rows 1000000 [--local-files DIR]
    .venv/bin/python benchmarks/scale.py s3 --objects 100000 --prepare 20000
"""

from __future__ import annotations

import argparse
import io
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

BUCKET = "scale"


def manifest_text(uris: list[str], classes: int, sizes: list[int] | None) -> str:
    """A ``uri,label[,size]`` CSV; row i is class i % classes."""
    if sizes is None:
        return "uri,label\n" + "".join(f"{u},class_{i % classes}\n" for i, u in enumerate(uris))
    rows = (
        f"{u},class_{i % classes},{s}\n" for i, (u, s) in enumerate(zip(uris, sizes, strict=True))
    )
    return "uri,label,size\n" + "".join(rows)


def synthetic_uris(rows: int, classes: int, root: str) -> list[str]:
    return [f"{root}/img/class_{i % classes:02d}/{i:07d}.jpg" for i in range(rows)]


def _job(source: str, *overrides: str):
    from tljob.config import load_config

    return load_config(
        None,
        [f"data.source={source}", "data.val_fraction=0.1", "model.weights=none", *overrides],
    )


def peak_rss_mb() -> float:
    """This process's peak resident memory (``VmHWM``: unlike ``ru_maxrss`` it is not
    carried over from the process that started this one)."""
    status = Path("/proc/self/status").read_text()
    return int(status.split("VmHWM:")[1].split()[0]) / 1024


def driver_child(manifest: str) -> None:
    """In a fresh process: list, plan, dedupe and split ``manifest``; print JSON."""
    from tljob.data.listing import ImageScan, check_listing
    from tljob.data.plan import plan_data
    from tljob.data.sources import list_source

    job = _job(manifest)
    base = peak_rss_mb()
    times = {}
    start = time.perf_counter()
    listing = list_source(job.data)
    times["listing_s"] = time.perf_counter() - start
    start = time.perf_counter()
    plan = plan_data(job, listing, batches=False)
    times["plan_s"] = time.perf_counter() - start
    start = time.perf_counter()
    # What the staging pass gives the driver: one distinct hash per image, no problem.
    uris = [u for name in listing.classes for u in listing.files[name]]
    scans = {u: ImageScan(f"{i:064x}", "") for i, u in enumerate(uris)}
    del uris
    checked = check_listing(listing, scans)
    times["dedupe_s"] = time.perf_counter() - start
    start = time.perf_counter()
    # A different usable listing than the plan's, so the split is made again.
    first = checked.usable.classes[0]
    checked.usable.files[first] = checked.usable.files[first][1:]
    split = plan.split_for(checked.usable)
    times["split_again_s"] = time.perf_counter() - start
    peak = peak_rss_mb()
    print(
        json.dumps(
            {
                **times,
                "images": listing.count(),
                "train": len(split.train),
                "peak_rss_mb": peak,
                "after_imports_mb": base,
            }
        )
    )


def run_driver(args: argparse.Namespace) -> None:
    work = Path(tempfile.mkdtemp(prefix="tljob-scale-"))
    try:
        if args.local_files:
            root = Path(args.local_files)
            uris = synthetic_uris(args.rows, args.classes, str(root))
            start = time.perf_counter()
            made = 0
            for uri in uris:
                path = Path(uri)
                if not path.exists():
                    path.parent.mkdir(parents=True, exist_ok=True)
                    path.touch()
                    made += 1
            print(f"{made} empty files made in {time.perf_counter() - start:.0f} s")
            text = manifest_text(uris, args.classes, None)
        else:
            uris = synthetic_uris(args.rows, args.classes, f"s3://{BUCKET}")
            text = manifest_text(uris, args.classes, [1000 + i % 5000 for i in range(args.rows)])
        manifest = work / "manifest.csv"
        manifest.write_text(text)
        del uris, text
        env = {**os.environ, "AWS_EC2_METADATA_DISABLED": "true"}
        child = subprocess.run(
            [sys.executable, __file__, "driver-child", str(manifest)],
            capture_output=True,
            text=True,
            env=env,
            check=False,
        )
        if child.returncode:
            sys.exit(child.stderr)
        got = json.loads(child.stdout.strip().splitlines()[-1])
        what = "local files, no size (stat each)" if args.local_files else "s3 uris + size"
        print(
            "| rows | manifest | listing, s | plan, s | dedupe, s | split again, s "
            "| peak RSS, MB | after imports, MB |"
        )
        print("| --- | --- | --- | --- | --- | --- | --- | --- |")
        print(
            f"| {args.rows:,} | {what} | {got['listing_s']:.1f} | {got['plan_s']:.1f} "
            f"| {got['dedupe_s']:.1f} | {got['split_again_s']:.1f} | {got['peak_rss_mb']:.0f} "
            f"| {got['after_imports_mb']:.0f} |"
        )
    finally:
        shutil.rmtree(work, ignore_errors=True)


def png_bytes(i: int) -> bytes:
    """A distinct 8x8 PNG for every ``i``."""
    import numpy as np
    from PIL import Image

    pixels = np.random.default_rng(i).integers(0, 256, (8, 8, 3), dtype=np.uint8)
    buf = io.BytesIO()
    Image.fromarray(pixels).save(buf, format="PNG")
    return buf.getvalue()


def run_s3(args: argparse.Namespace) -> None:
    from tljob import storage
    from tljob.data.sources import list_source
    from tljob.storage.seaweed import LocalS3Server

    work = Path(tempfile.mkdtemp(prefix="tljob-scale-s3-"))
    server = LocalS3Server(work / "s3").start()
    try:
        os.environ.update(server.admin.env())
        os.environ["AWS_EC2_METADATA_DISABLED"] = "true"
        server.create_bucket(BUCKET)
        client = server.client()
        keys = [f"img/class_{i % args.classes:02d}/{i:07d}.png" for i in range(args.objects)]
        start = time.perf_counter()
        sizes = []
        with ThreadPoolExecutor(16) as pool:
            bodies = (png_bytes(i) for i in range(args.objects))
            puts = []
            for key, body in zip(keys, bodies, strict=True):
                sizes.append(len(body))
                puts.append(pool.submit(client.put_object, Bucket=BUCKET, Key=key, Body=body))
            for put in puts:
                put.result()
        upload = time.perf_counter() - start
        print(f"{args.objects} objects uploaded in {upload:.0f} s")
        uris = [f"../{k}" for k in keys]
        lists = {
            "no size (one HEAD a row)": (
                "lists/heads.csv",
                manifest_text(uris, args.classes, None),
            ),
            "size column (no HEAD)": ("lists/sized.csv", manifest_text(uris, args.classes, sizes)),
            "prepare": (
                "lists/prepare.csv",
                manifest_text(uris[: args.prepare], args.classes, sizes[: args.prepare]),
            ),
        }
        for key, text in lists.values():
            client.put_object(Bucket=BUCKET, Key=key, Body=text.encode())
        s3 = [f"s3.endpoint_url={server.endpoint_url}", "s3.allow_http=true"]
        print("| manifest | rows | listing, s | rows/s |")
        print("| --- | --- | --- | --- |")
        for name, (key, _) in lists.items():
            if name == "prepare":
                continue
            job = _job(f"s3://{BUCKET}/{key}", *s3)
            storage.reset()
            storage.configure(storage.S3Settings.from_config(job.s3))
            start = time.perf_counter()
            listing = list_source(job.data)
            took = time.perf_counter() - start
            assert listing.count() == args.objects, listing.count()
            print(f"| {name} | {args.objects:,} | {took:.1f} | {args.objects / took:,.0f} |")
        if args.prepare:
            prepare(f"s3://{BUCKET}/lists/prepare.csv", args.prepare, s3, work)
    finally:
        server.stop()
        shutil.rmtree(work, ignore_errors=True)


def prepare(source: str, images: int, s3: list[str], work: Path) -> None:
    import ray

    from tljob import storage
    from tljob.data.pipeline import prepare_data

    job = _job(
        source,
        *s3,
        f"run.storage_path={work / 'runs'}",
        "data.image_size=32",
        "data.stored_size=32",
    )
    storage.reset()
    storage.configure(storage.S3Settings.from_config(job.s3))
    ray.init(
        num_cpus=2,
        include_dashboard=False,
        log_to_driver=False,
        runtime_env={"env_vars": storage.worker_env()},  # the workers reach the same store
    )
    try:
        start = time.perf_counter()
        prepared = prepare_data(job)
        took = time.perf_counter() - start
    finally:
        ray.shutdown()
    used = sum(c.used for c in prepared.counts.values())
    print(
        f"prepared {images:,} images ({used:,} used) in {took:.0f} s: "
        f"{took * 100_000 / images:.0f} s per 100,000 images"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="what", required=True)
    driver = sub.add_parser("driver")
    driver.add_argument("--rows", type=int, default=1_000_000)
    driver.add_argument("--classes", type=int, default=100)
    driver.add_argument("--local-files", default="")
    child = sub.add_parser("driver-child")
    child.add_argument("manifest")
    s3 = sub.add_parser("s3")
    s3.add_argument("--objects", type=int, default=100_000)
    s3.add_argument("--classes", type=int, default=100)
    s3.add_argument("--prepare", type=int, default=20_000)
    args = parser.parse_args()
    if args.what == "driver-child":
        driver_child(args.manifest)
    elif args.what == "driver":
        run_driver(args)
    else:
        run_s3(args)


if __name__ == "__main__":
    main()
