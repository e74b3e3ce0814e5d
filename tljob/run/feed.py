"""A worker's input: its Ray Data shards as tf.data pipelines of (uint8 images, int64 labels).

Streaming (``streamed_per_worker``) runs the Ray Data pipeline again every epoch. The
validation shard and the training shard never change between epochs, though, so when a
worker's shards fit in ``scaling.worker_cache_mib`` they are read once into this worker's
memory (``read_shard_per_worker``) and each epoch is served from the arrays: the training
rows in a new order every epoch, drawn from ``(data.seed, global epoch)`` so that a resumed
run sees the orders a straight run would have seen; the validation rows in the order read.
Under MultiWorkerMirroredStrategy Keras treats each batch as a global batch and splits it
across the ``world_size`` replicas, so batches of ``batch_size * world_size`` give every
worker ``batch_size`` images per step. Training drops the last partial batch; validation
keeps every row.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np
import tensorflow as tf

_READ_ROWS = 1024  # rows per batch when a shard is read into memory


def _specs(image_size: int) -> tuple[tf.TensorSpec, tf.TensorSpec]:
    return (
        tf.TensorSpec(shape=(None, image_size, image_size, 3), dtype=tf.uint8, name="image"),
        tf.TensorSpec(shape=(None,), dtype=tf.int64, name="label"),
    )


def _per_worker_only(dataset: tf.data.Dataset) -> tf.data.Dataset:
    """Each worker already holds only its own rows: Keras must not shard them again."""
    options = tf.data.Options()
    options.experimental_distribute.auto_shard_policy = tf.data.experimental.AutoShardPolicy.OFF
    return dataset.with_options(options)


def streamed_per_worker(
    shard: Any, global_batch: int, image_size: int, training: bool, shuffle: int
) -> tf.data.Dataset:
    """The Ray Data shard, streamed again every epoch (shuffled when ``shuffle`` > 0)."""
    features, labels = _specs(image_size)
    return shard.to_tf(
        feature_columns="image",
        label_columns="label",
        batch_size=global_batch,
        drop_last=training,
        prefetch_batches=2,
        local_shuffle_buffer_size=max(shuffle, global_batch) if training and shuffle else None,
        feature_type_spec=features,
        label_type_spec=labels,
    )


def read_shard_per_worker(shard: Any, limit_bytes: int) -> tuple[np.ndarray, np.ndarray] | None:
    """The whole shard as (uint8 images, int64 labels), or None when it holds more than
    ``limit_bytes`` of pixels. The shard is read to the end either way: under
    ``streaming_split`` every worker must finish an epoch of it before the next starts."""
    images: list[np.ndarray] = []
    labels: list[np.ndarray] = []
    held = 0
    for batch in shard.iter_batches(batch_size=_READ_ROWS, batch_format="numpy"):
        held += batch["image"].nbytes
        if held <= limit_bytes:
            images.append(np.ascontiguousarray(batch["image"], dtype=np.uint8))
            labels.append(batch["label"].astype(np.int64))
    if held > limit_bytes or not labels:
        return None
    return np.concatenate(images), np.concatenate(labels)


def in_memory_train(
    arrays: tuple[np.ndarray, np.ndarray],
    global_batch: int,
    shuffled: bool,
    seed: int,
    first_epoch: Callable[[], int],
) -> tf.data.Dataset:
    """Training batches from the arrays, endless: epoch after epoch, each cut into
    ``len // global_batch`` full batches (drop_last), so pass ``steps_per_epoch`` to ``fit``.

    Endless because Keras then creates one iterator per ``fit`` and never a throw-away one
    (with a finite dataset it makes an extra one before the first epoch, and prefetching
    could start it): the orders are then fixed. ``first_epoch()`` is read when ``fit``
    starts: the run's global epochs done, so a resumed run continues with the orders a
    straight run would use. The rows of epoch ``e`` are permuted by ``(seed, e)``.
    """
    images, labels = arrays
    full = len(labels) // global_batch * global_batch

    def batches() -> Iterator[tuple[np.ndarray, np.ndarray]]:
        epoch = first_epoch()
        while True:
            order = (
                np.random.default_rng([seed, epoch]).permutation(len(labels))
                if shuffled
                else np.arange(len(labels))
            )
            for start in range(0, full, global_batch):
                rows = order[start : start + global_batch]
                yield images[rows], labels[rows]
            epoch += 1

    dataset = tf.data.Dataset.from_generator(batches, output_signature=_specs(images.shape[1]))
    return _per_worker_only(dataset.prefetch(2))


def in_memory_val(arrays: tuple[np.ndarray, np.ndarray], global_batch: int) -> tf.data.Dataset:
    """Every validation row, in the order read, in global batches (the last may be short).
    A generator over slices, not ``from_tensor_slices``, which would copy the arrays."""
    images, labels = arrays

    def batches() -> Iterator[tuple[np.ndarray, np.ndarray]]:
        for start in range(0, len(labels), global_batch):
            yield images[start : start + global_batch], labels[start : start + global_batch]

    dataset = tf.data.Dataset.from_generator(batches, output_signature=_specs(images.shape[1]))
    return _per_worker_only(dataset.prefetch(2))


@dataclass
class WorkerInput:
    """A worker's training and validation datasets, and how they are fed."""

    train: tf.data.Dataset
    val: tf.data.Dataset
    train_in_memory: bool  # True: endless, ``fit`` needs ``steps_per_epoch``
    val_in_memory: bool


def worker_input_per_worker(
    shards: dict[str, Any],
    train_rows: int,
    global_batch: int,
    image_size: int,
    shuffle: int,
    seed: int,
    limit_bytes: int,
    first_epoch: Callable[[], int],
) -> WorkerInput:
    """In memory what fits in ``limit_bytes`` (training first: its row count is known
    before reading, so a shard that is too big is never read in vain), streamed the rest.

    Every worker gets the same row counts from the equal split, so all decide alike and
    step through the same number of batches."""
    train_bytes = train_rows * image_size * image_size * 3
    train_arrays = (
        read_shard_per_worker(shards["train"], limit_bytes) if train_bytes <= limit_bytes else None
    )
    if train_arrays is not None and len(train_arrays[1]) != train_rows:
        # the steps per epoch are computed from train_rows; an equal split guarantees it
        raise RuntimeError(f"training shard has {len(train_arrays[1])} rows, not {train_rows}")
    left = limit_bytes - (train_arrays[0].nbytes if train_arrays is not None else 0)
    val_arrays = read_shard_per_worker(shards["val"], left) if left > 0 else None
    return WorkerInput(
        train=(
            in_memory_train(train_arrays, global_batch, shuffle > 0, seed, first_epoch)
            if train_arrays is not None
            else streamed_per_worker(shards["train"], global_batch, image_size, True, shuffle)
        ),
        val=(
            in_memory_val(val_arrays, global_batch)
            if val_arrays is not None
            else streamed_per_worker(shards["val"], global_batch, image_size, False, 0)
        ),
        train_in_memory=train_arrays is not None,
        val_in_memory=val_arrays is not None,
    )
