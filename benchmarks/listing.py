"""Listing time for 20,000 objects on the local S3 server: a folder tree and a manifest.

Uploads ``--objects`` small objects (``--classes`` class folders) to a local SeaweedFS S3
server, then times what ``prepare_data`` does before it reads any image: listing the source
and getting the size and modification time of every object for the fingerprint
(``sources.listing_stats``). A folder tree is listed with ``ListObjectsV2`` pages (1,000
keys each) that carry the sizes, so nothing is looked at twice; a manifest names objects
anywhere, so each row costs one ``HEAD`` (its existence check) and the fingerprint reuses
those answers. Not a test: no asserts.

    .venv/bin/python benchmarks/listing.py [--objects 20000] [--classes 10]
"""

from __future__ import annotations

import argparse
import os
import shutil
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

BUCKET = "listing"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--objects", type=int, default=20_000)
    parser.add_argument("--classes", type=int, default=10)
    args = parser.parse_args()

    from tljob import storage
    from tljob.config import load_config
    from tljob.data.sources import list_source, listing_stats
    from tljob.storage.seaweed import LocalS3Server

    work = Path(tempfile.mkdtemp(prefix="tljob-listing-"))
    server = LocalS3Server(work / "s3").start()
    try:
        os.environ.update(server.admin.env())
        server.create_bucket(BUCKET)
        client = server.client()
        keys = [f"tree/class_{i % args.classes}/{i:06d}.jpg" for i in range(args.objects)]
        start = time.perf_counter()
        with ThreadPoolExecutor(16) as pool:
            for put in [
                pool.submit(client.put_object, Bucket=BUCKET, Key=k, Body=b"x" * 64) for k in keys
            ]:
                put.result()
        upload = time.perf_counter() - start
        manifest = "uri,label\n" + "".join(f"../{k},{k.split('/')[1]}\n" for k in keys)
        client.put_object(Bucket=BUCKET, Key="lists/all.csv", Body=manifest.encode())
        s3 = [f"s3.endpoint_url={server.endpoint_url}", "s3.allow_http=true"]
        rows = []
        for name, source in [("folder tree", "tree"), ("manifest (CSV)", "lists/all.csv")]:
            job = load_config(None, [f"data.source=s3://{BUCKET}/{source}", *s3])
            storage.reset()
            storage.configure(storage.S3Settings.from_config(job.s3))
            start = time.perf_counter()
            listing = list_source(job.data)
            listed = time.perf_counter() - start
            uris = [u for c in listing.classes for u in listing.files[c]]
            stats = listing_stats(listing, uris)
            total = time.perf_counter() - start
            assert len(stats) == args.objects == listing.count(), (len(stats), listing.count())
            rows.append((name, listed, total))
        print(f"\n{args.objects} objects in {args.classes} classes, uploaded in {upload:.1f} s\n")
        print("| source | listing, s | listing + fingerprint stats, s | objects/s |")
        print("| --- | --- | --- | --- |")
        for name, listed, total in rows:
            print(f"| {name} | {listed:.2f} | {total:.2f} | {args.objects / total:.0f} |")
    finally:
        server.stop()
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
