"""Streaming a prepared split from its shards into training, a few row groups per task.

The shards' footers are read by Ray tasks (``shard_units_in_tasks``), not on the driver.
A unit of work is one Parquet row group of one shard (about ``prepared.ROW_GROUP_BYTES``):
one ranged read, then the stored pixels are decoded (when encoded) and resized to the
training size in the same task (a task takes about ``TASK_ROWS`` rows' worth of units),
so pixels cross Ray's object store once, at the training size. Shards keep their pixel
column uncompressed (``prepared.shard_write_options``): raw pixels barely compress, and
snappy made reading them about ten times slower (measured).

The training split visits its row groups in a new order every epoch, drawn from
``data.seed`` (rows are delivered as tasks finish, so the order seen can differ a little
from the drawn one; with several workers it differs anyway); rows inside a row group are
already in a seeded random order (preparation writes them so), and the worker's local
shuffle buffer mixes further. Validation reads
its row groups in order and never resizes (it is stored at the training size).

With ``TrainingViews`` (what a run passes) the training split's tasks also read each row's
``sha256`` and map the stored images through the ``augment`` section's ``Augmenter``
instead of the plain resize (``tljob.data.views``: the view of an image depends only on
the seed, the epoch and the image); with MixUp / CutMix on, each row group is mixed as one
batch and both splits emit float32 (N, num_classes) labels (validation's exactly one-hot).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import cv2
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import ray
import ray.data

from tljob import ray_private, storage
from tljob.data.shards import decode_stored
from tljob.data.views import TrainingViews, execution_epoch, one_hot, training_views
from tljob.images import resize_fast_uint8

# One task owns one CPU; OpenCV's own thread pool would oversubscribe it.
cv2.setNumThreads(1)
# Rows one task reads (whole row groups, at least one): Ray Data's cost is mostly per task
# and per scheduling-loop pass, so ~4 raw 256 px row groups per task instead of 1 cut the
# stream's CPU per image from 1.40 to 0.84 ms at 224 px with the seed preset, its
# augmentation included (measured on 1 core, with the reservation below off). Small splits
# keep at least MIN_TASKS tasks per epoch, for parallelism.
TASK_ROWS = 168
MIN_TASKS = 8


def shard_units(folder: storage.Location, files: Sequence[str]) -> list[dict[str, Any]]:
    """Every row group of the shards ``files`` (relative to ``folder``), as
    ``{path, row_group, rows}``, in file order. Reads only the Parquet footers."""
    units: list[dict[str, Any]] = []
    for name in files:
        path = folder.join(name).path
        with folder.fs.open_input_file(path) as handle:
            meta = pq.ParquetFile(handle).metadata
        units.extend(
            {"path": path, "row_group": g, "rows": meta.row_group(g).num_rows}
            for g in range(meta.num_row_groups)
        )
    return units


# Shard footers read by one task; tasks are IO-bound and ask for no CPU, so that a sweep's
# trial never waits behind the other trials' reservations for them.
FOOTERS_PER_TASK = 16


@ray.remote(num_cpus=0)
def _units_of(folder: storage.Location, files: Sequence[str]) -> list[dict[str, Any]]:
    return shard_units(folder, files)


def shard_units_in_tasks(folder: storage.Location, files: Sequence[str]) -> list[dict[str, Any]]:
    """``shard_units`` read by Ray tasks, ``FOOTERS_PER_TASK`` shards each, in parallel (a
    million images are a few thousand shards: one after another on the driver that was a
    round trip each), in file order."""
    chunks = [files[i : i + FOOTERS_PER_TASK] for i in range(0, len(files), FOOTERS_PER_TASK)]
    parts = ray.get([_units_of.remote(folder, chunk) for chunk in chunks])
    return [unit for part in parts for unit in part]


def to_training_rows(
    batch: dict[str, np.ndarray],
    stored_size: int,
    pixels: str,
    image_size: int,
    out: np.ndarray | None = None,
) -> dict[str, np.ndarray]:
    """Shard rows -> uint8 ``image`` (N, image_size, image_size, 3) + int64 ``label``; the
    images written into ``out`` (that shape, C-contiguous) when given."""
    shape = (len(batch["label"]), image_size, image_size, 3)
    images = out if out is not None else np.empty(shape, dtype=np.uint8)
    for i, data in enumerate(batch["image"]):
        resize_fast_uint8(decode_stored(data, stored_size, pixels), image_size, dst=images[i])
    return {"image": images, "label": np.asarray(batch["label"], dtype=np.int64)}


def decode_all(column: pa.ChunkedArray, stored_size: int, pixels: str) -> np.ndarray:
    """A row group's ``image`` column -> uint8 (N, S, S, 3) at the stored size.

    Raw pixels whose rows all hold S * S * 3 bytes are a read-only view of the column's
    data buffer: no per-row bytes objects and no copy (they were a tenth of a stream
    task's time, measured)."""
    array = column.combine_chunks() if column.num_chunks != 1 else column.chunk(0)
    row = stored_size * stored_size * 3
    if pixels == "raw" and array.null_count == 0 and len(array):
        wide = pa.types.is_large_binary(array.type)
        offsets = np.frombuffer(array.buffers()[1], dtype=np.int64 if wide else np.int32)
        offsets = offsets[array.offset : array.offset + len(array) + 1]
        if np.all(np.diff(offsets) == row):
            data = np.frombuffer(array.buffers()[2], dtype=np.uint8)
            data = data[offsets[0] : offsets[0] + len(array) * row]
            return data.reshape(len(array), stored_size, stored_size, 3)
    items = array.to_numpy(zero_copy_only=False)
    images = np.empty((len(items), stored_size, stored_size, 3), dtype=np.uint8)
    for i, item in enumerate(items):
        images[i] = decode_stored(item, stored_size, pixels)
    return images


def _read_units(
    batch: dict[str, np.ndarray],
    fs: Any,
    stored_size: int,
    pixels: str,
    image_size: int,
    views: TrainingViews | None = None,
    one_hot_classes: int = 0,
    first_execution: int = 0,
) -> dict[str, np.ndarray]:
    """Read the row groups named in ``batch`` and return their training rows: augmented
    views with ``views``, plain resized otherwise (labels one-hot with ``one_hot_classes``).

    Every row group's images are written straight into one array of the task's rows (its
    size known from ``batch["rows"]``): concatenating per-group arrays copied every image
    once more, about a third of a plain task's CPU (measured)."""
    columns = ["image", "label", "sha256"] if views is not None else ["image", "label"]
    epoch = execution_epoch(first_execution, views.epoch_offset) if views is not None else 0
    total = int(np.sum(batch["rows"]))
    images = np.empty((total, image_size, image_size, 3), dtype=np.uint8)
    labels: list[np.ndarray] = []
    start = 0
    for path, group, rows in zip(batch["path"], batch["row_group"], batch["rows"], strict=True):
        with fs.open_input_file(str(path)) as handle:
            table = pq.ParquetFile(handle).read_row_group(int(group), columns=columns)
        if table.num_rows != int(rows):  # the footer was read when the stream was built
            raise RuntimeError(f"{path} row group {group}: {table.num_rows} rows, not {rows}")
        out = images[start : start + table.num_rows]
        start += table.num_rows
        group_labels = table["label"].to_numpy()
        if views is not None:
            stored = decode_all(table["image"], stored_size, pixels)
            sha256 = table["sha256"].to_numpy(zero_copy_only=False)
            part = training_views(stored, group_labels, sha256, views, image_size, epoch, out)
            labels.append(part["label"])
            continue
        data = table["image"].to_numpy(zero_copy_only=False)
        part = to_training_rows(
            {"image": data, "label": group_labels}, stored_size, pixels, image_size, out
        )
        labels.append(one_hot(part["label"], one_hot_classes) if one_hot_classes else part["label"])
    return {"image": images, "label": np.concatenate(labels)}


def _units_per_task(units: Sequence[dict[str, Any]]) -> int:
    """Row groups per task: about ``TASK_ROWS`` rows, with at least ``MIN_TASKS`` tasks."""
    largest = max((u["rows"] for u in units), default=1)
    return max(1, min(TASK_ROWS // max(1, largest), len(units) // MIN_TASKS))


def split_dataset(
    folder: storage.Location,
    files: Sequence[str],
    stored_size: int,
    pixels: str,
    image_size: int,
    shuffle_seed: int | None,
    views: TrainingViews | None = None,
    one_hot_classes: int = 0,
) -> ray.data.Dataset:
    """A lazy stream of one split's training rows from its shards (``files`` relative to
    ``folder``; images stored at ``stored_size`` as ``pixels``), resized to ``image_size``.

    ``shuffle_seed``: None reads the row groups in order; otherwise they come in a new
    order every epoch (every execution of the dataset), drawn from this seed.
    ``views``: the training split's augmented views (``tljob.data.views``; each execution
    of the dataset is the next epoch). ``one_hot_classes`` > 0: labels as float32 one-hot
    rows of that many classes (validation when training's labels are soft)."""
    units = shard_units_in_tasks(folder, files)
    ds = ray.data.from_items(units, override_num_blocks=max(1, len(units)))
    if shuffle_seed is not None:
        ds = ds.randomize_block_order(
            seed=ray.data.RandomSeedConfig(seed=shuffle_seed, reseed_after_execution=True)
        )
    rows = ds.map_batches(
        _read_units,
        fn_kwargs={
            "fs": folder.fs,
            "stored_size": stored_size,
            "pixels": pixels,
            "image_size": image_size,
            "views": views,
            "one_hot_classes": one_hot_classes,
            # executions of this dataset so far: the next one is epoch views.epoch_offset
            "first_execution": ray_private.execution_index(ds.context),
        },
        # One task reads a few row groups, drawn after the shuffle of the groups: Ray Data
        # bundles that many one-group blocks into the task.
        batch_size=_units_per_task(units),
    )
    # One operator chain, nothing to arbitrate: the executor's per-operator reservation
    # only costs its scheduling loop CPU (0.31 -> 0.17 ms per image, measured).
    rows.context.op_resource_reservation_enabled = False
    return rows
