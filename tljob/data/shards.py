"""Decoding every image once into Parquet shards, and streaming the shards to training.

Ray Data side (never TensorFlow). Shard rows (schema version ``prepared.FORMAT_VERSION``):

    image       binary  raw: S * S * 3 uint8 RGB bytes, row-major; jpeg/png: the encoded
                        S x S image. S is ``data.stored_size`` in the train split, and the
                        training size in the val split: validation images are resized from
                        the source directly to the training size, exactly as the exported
                        model resizes its inputs, so validation measures the served model
    label       int64   index into the classes of the manifest
    class_name  string
    uri         string  the source image
    sha256      string  hex digest of the source bytes

Preparation has two passes. ``stage_all`` reads, hashes, checks and decodes every listed
image once on the cluster: each task writes its rows (a problem row has an empty image) to
one staging file and sends back only the small metadata (uri, sha256, problem), so the
driver can quarantine, dedupe and split without pixels. ``write_splits`` then copies the
usable rows of each split from staging into that split's shards (no decoding), about
``StoreSettings.target_bytes`` each, in row groups of about ``prepared.ROW_GROUP_BYTES``.
``tljob.data.stream`` streams a split to training, one task per row group.
"""

from __future__ import annotations

import hashlib
import io
import time
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.fs as pafs
import pyarrow.parquet as pq
import ray
import ray.data
from PIL import Image

from tljob import storage
from tljob.data.listing import ImageScan
from tljob.data.prepared import StoreSettings
from tljob.images import (
    ImageDecodeError,
    TooManyPixelsError,
    UnsupportedImageError,
    decode_rgb,
    image_dimensions,
    resize_bilinear_uint8,
)
from tljob.report import clean_reason

SHARD_COLUMNS = ("image", "label", "class_name", "uri", "sha256")


@dataclass(frozen=True)
class PreparedImage:
    """One source image after preparation: its hash, why it cannot be used ("" when it
    can), and its stored pixels (b"" when it cannot)."""

    sha256: str
    problem: str
    image: bytes  # at the stored (training split) size
    image_val: bytes = b""  # at the validation size


def prepare_bytes(data: bytes, store: StoreSettings) -> PreparedImage:
    """Check, decode, resize and encode one image's bytes; problems are reasons, never
    exceptions: ``empty_file``, ``too_many_pixels`` (from the header, before decoding),
    ``corrupt_image``, ``unsupported_image``."""
    digest = hashlib.sha256(data).hexdigest()
    if not data:
        return PreparedImage(digest, "empty_file: the file has 0 bytes", b"")
    try:
        width, height = image_dimensions(data)
        if width * height > store.max_image_pixels:
            return PreparedImage(
                digest,
                f"too_many_pixels: {width}x{height} = {width * height} pixels, more than "
                f"`data.max_image_pixels` ({store.max_image_pixels})",
                b"",
            )
        rgb = decode_rgb(data)
    except TooManyPixelsError as e:
        return PreparedImage(digest, f"too_many_pixels: {e}", b"")
    except UnsupportedImageError as e:
        return PreparedImage(digest, f"unsupported_image: {e}", b"")
    except ImageDecodeError as e:
        return PreparedImage(digest, f"corrupt_image: {e}", b"")
    return PreparedImage(
        digest,
        "",
        encode_stored(rgb, store.stored_size, store),
        encode_stored(rgb, store.val_size, store),
    )


def encode_stored(rgb: np.ndarray, size: int, store: StoreSettings) -> bytes:
    """``rgb`` resized to ``size`` x ``size``, as a shard's ``image`` bytes."""
    small = resize_bilinear_uint8(rgb, size)
    if store.pixels == "raw":
        return np.ascontiguousarray(small).tobytes()
    buf = io.BytesIO()
    if store.pixels == "jpeg":
        Image.fromarray(small).save(buf, format="JPEG", quality=store.quality)
    else:
        Image.fromarray(small).save(buf, format="PNG")
    return buf.getvalue()


def decode_stored(data: bytes, store_size: int, pixels: str) -> np.ndarray:
    """A shard's ``image`` bytes back to uint8 (S, S, 3)."""
    if pixels == "raw":
        return np.frombuffer(data, dtype=np.uint8).reshape(store_size, store_size, 3)
    with Image.open(io.BytesIO(data)) as im:
        return np.asarray(im.convert("RGB"), dtype=np.uint8)


def prepare_object(uri: str, store: StoreSettings) -> PreparedImage:
    """Read one object through ``storage`` and prepare it (``unreadable_file`` if it
    cannot be read)."""
    try:
        data = storage.read_bytes(storage.resolve(uri))
    except OSError as e:
        return PreparedImage("", f"unreadable_file: {clean_reason(str(e))}", b"")
    return prepare_bytes(data, store)


def scan_object(uri: str, store: StoreSettings) -> ImageScan:
    """What the check needs of one object: its hash and its problem."""
    prepared = prepare_object(uri, store)
    return ImageScan(prepared.sha256, prepared.problem)


def _stage_batch(
    batch: dict[str, np.ndarray], store: StoreSettings, staging_uri: str
) -> dict[str, np.ndarray]:
    """Prepare a batch of ``{uri, label, class_name}``; write every row to one new staging
    file; return the metadata rows (no pixels)."""
    results = [prepare_object(str(uri), store) for uri in batch["uri"]]
    table = pa.table(
        {
            "image": pa.array([r.image for r in results], type=pa.binary()),
            "image_val": pa.array([r.image_val for r in results], type=pa.binary()),
            "label": pa.array(batch["label"].astype(np.int64), type=pa.int64()),
            "class_name": pa.array([str(c) for c in batch["class_name"]], type=pa.string()),
            "uri": pa.array([str(u) for u in batch["uri"]], type=pa.string()),
            "sha256": pa.array([r.sha256 for r in results], type=pa.string()),
        }
    )
    target = storage.resolve(staging_uri).join(f"{uuid.uuid4().hex}.parquet")
    pq.write_table(table, target.path, filesystem=target.fs)
    n = len(results)
    return {
        "uri": batch["uri"],
        "sha256": np.array([r.sha256 for r in results], dtype=object),
        "problem": np.array([r.problem for r in results], dtype=object),
        "file": np.array([target.path] * n, dtype=object),
    }


@dataclass
class Staged:
    """What the staging pass found: per uri its scan, and the staging files written."""

    scans: dict[str, ImageScan]
    files: list[str]


def stage_all(
    items: Sequence[dict[str, Any]],
    store: StoreSettings,
    staging: storage.Location,
    progress: Callable[[int, int], None],
) -> Staged:
    """Prepare every ``{uri, label, class_name}`` of ``items`` once, on the cluster.

    ``progress(done, total)`` is called as metadata arrives. Tasks are sized so that
    every CPU of the cluster gets work and no staging file exceeds a shard."""
    staging.fs.create_dir(staging.path, recursive=True)
    cpus = max(1, int(ray.cluster_resources().get("CPU", 1)))
    per_task = max(1, min(store.rows_per_shard(), -(-len(items) // (2 * cpus))))
    blocks = max(1, -(-len(items) // per_task))
    staged = ray.data.from_items(list(items), override_num_blocks=blocks).map_batches(
        _stage_batch,
        fn_kwargs={"store": store, "staging_uri": staging.uri},
        batch_size=per_task,
    )
    scans: dict[str, ImageScan] = {}
    files: set[str] = set()
    for batch in staged.iter_batches(batch_size=None, batch_format="numpy"):
        for uri, digest, problem, file in zip(
            batch["uri"], batch["sha256"], batch["problem"], batch["file"], strict=True
        ):
            scans[str(uri)] = ImageScan(sha256=str(digest), problem=str(problem))
            files.add(str(file))
        progress(len(scans), len(items))
    return Staged(scans=scans, files=sorted(files))


def _keep_uris(table: pa.Table, uris: pa.Array, image_column: str) -> pa.Table:
    """The rows of ``uris``, with ``image_column`` as their ``image``."""
    kept = table.filter(pc.is_in(table["uri"], value_set=uris))
    return kept.select([image_column, *SHARD_COLUMNS[1:]]).rename_columns(list(SHARD_COLUMNS))


def write_splits(
    staged: Staged,
    members: dict[str, list[str]],
    store: StoreSettings,
    attempt: storage.Location,
) -> dict[str, list[str]]:
    """Copy each split's rows (``members[split]``: uris, in stream order) from staging into
    ``<attempt>/<split>/`` shards; return the shard paths of each split, relative to
    ``attempt``'s parent. Nothing is decoded."""
    written: dict[str, list[str]] = {}
    for split, uris in members.items():
        target = attempt.join(split)
        image_column = "image" if split == "train" else "image_val"
        source = ray.data.read_parquet(
            staged.files,
            filesystem=attempt.fs,
            columns=[image_column, *SHARD_COLUMNS[1:]],
            partitioning=None,
        )
        source.map_batches(
            _keep_uris,
            fn_kwargs={"uris": pa.array(uris, type=pa.string()), "image_column": image_column},
            batch_format="pyarrow",
            batch_size=None,
        ).write_parquet(
            target.path,
            filesystem=attempt.fs,
            min_rows_per_file=store.rows_per_shard(),
            **store.write_options(),
        )
        infos = attempt.fs.get_file_info(pafs.FileSelector(target.path))
        parent = attempt.path.rsplit("/", 1)[0]
        written[split] = sorted(
            i.path[len(parent) + 1 :] for i in infos if i.path.endswith(".parquet")
        )
    return written


class Progress:
    """``progress(done, total)`` that logs a line at most every ``every`` seconds, and the
    last one always."""

    def __init__(self, say: Callable[[str], None], every: float) -> None:
        self.say, self.every = say, every
        self.started = self.last = time.monotonic()

    def __call__(self, done: int, total: int) -> None:
        now = time.monotonic()
        if done < total and now - self.last < self.every:
            return
        self.last = now
        rate = done / max(now - self.started, 1e-9)
        self.say(f"prepare: {done}/{total} images decoded ({rate:.0f} images/s)")
