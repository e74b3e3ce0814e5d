"""A worker's input: its Ray Data shards as tf.data pipelines of (uint8 images, labels in
the run's ``LabelFormat``: int64 class indices, or float32 class probabilities with
MixUp / CutMix).

Streaming (``streamed_per_worker``) runs the Ray Data pipeline again every epoch. The
validation shard never changes between epochs, and neither does the training shard unless
the data pipeline draws new views every epoch (``train_streamed_because``: augmentation in
``data``, MixUp / CutMix), so when a worker's shards fit in ``scaling.worker_cache_mib``
they are read once into this worker's memory (``read_shard_per_worker``) and each epoch is
served from the arrays: the training rows in a new order every epoch, drawn from
``(data.seed, global epoch)`` so that a resumed run sees the orders a straight run would
have seen; the validation rows in the order read.
Under MultiWorkerMirroredStrategy Keras treats each batch as a global batch and splits it
across the ``world_size`` replicas, so batches of ``batch_size * world_size`` give every
worker ``batch_size`` images per step. Training drops the last partial batch; validation
keeps every row, so its last batch may be short: Keras cuts it into ``world_size`` pieces
(the batch size of these datasets is not static), and 1 row over 2 replicas leaves one of
them a 0-row batch, which the model answers with 0 rows (``tljob.nn.layers.ImageClassifier``).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np
import tensorflow as tf

from tljob.config.augment import AugmentSection
from tljob.nn.labels import SPARSE, LabelFormat

_READ_ROWS = 1024  # rows per batch when a shard is read into memory


def _specs(image_size: int, labels: LabelFormat) -> tuple[tf.TensorSpec, tf.TensorSpec]:
    return (
        tf.TensorSpec(shape=(None, image_size, image_size, 3), dtype=tf.uint8, name="image"),
        labels.spec(),
    )


def _array_specs(arrays: tuple[np.ndarray, np.ndarray]) -> tuple[tf.TensorSpec, tf.TensorSpec]:
    """The specs of in-memory arrays: uint8 images as ``read_shard_per_worker`` returns
    them, or float32 pooled features (``tljob.run.cached_stage``); (N, C) labels are soft."""
    inputs, labels = arrays
    soft = labels.ndim == 2
    label_spec = LabelFormat(soft, labels.shape[1] if soft else 0).spec()
    if inputs.ndim == 2:
        return tf.TensorSpec(shape=(None, inputs.shape[1]), dtype=tf.float32), label_spec
    return _specs(inputs.shape[1], LabelFormat(soft, labels.shape[1] if soft else 0))


def train_streamed_because(augment: AugmentSection) -> str | None:
    """Why the training split must be streamed every epoch even when it fits in memory
    (a cache would freeze epoch 0's views), or None."""
    if augment.soft_labels:
        return "MixUp / CutMix mix new batches every epoch"
    if augment.where == "data" and augment.active:
        return "the data pipeline augments it anew every epoch"
    return None


def _per_worker_only(dataset: tf.data.Dataset) -> tf.data.Dataset:
    """Each worker already holds only its own rows: Keras must not shard them again."""
    options = tf.data.Options()
    options.experimental_distribute.auto_shard_policy = tf.data.experimental.AutoShardPolicy.OFF
    return dataset.with_options(options)


def streamed_per_worker(
    shard: Any,
    global_batch: int,
    image_size: int,
    training: bool,
    shuffle: int,
    label_format: LabelFormat = SPARSE,
) -> tf.data.Dataset:
    """The Ray Data shard, streamed again every epoch (shuffled when ``shuffle`` > 0)."""
    features, labels = _specs(image_size, label_format)
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


def read_shard_per_worker(
    shard: Any, limit_bytes: int, label_format: LabelFormat = SPARSE
) -> tuple[np.ndarray, np.ndarray] | None:
    """The whole shard as (uint8 images, labels in ``label_format``), or None when it holds
    more than ``limit_bytes`` of pixels. The shard is read to the end either way: under
    ``streaming_split`` every worker must finish an epoch of it before the next starts."""
    images: list[np.ndarray] = []
    labels: list[np.ndarray] = []
    held = 0
    for batch in shard.iter_batches(batch_size=_READ_ROWS, batch_format="numpy"):
        held += batch["image"].nbytes
        if held <= limit_bytes:
            images.append(np.ascontiguousarray(batch["image"], dtype=np.uint8))
            labels.append(label_format.as_array(batch["label"]))
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

    dataset = tf.data.Dataset.from_generator(batches, output_signature=_array_specs(arrays))
    return _per_worker_only(dataset.prefetch(2))


def in_memory_val(arrays: tuple[np.ndarray, np.ndarray], global_batch: int) -> tf.data.Dataset:
    """Every validation row, in the order read, in global batches (the last may be short).
    A generator over slices, not ``from_tensor_slices``, which would copy the arrays."""
    images, labels = arrays

    def batches() -> Iterator[tuple[np.ndarray, np.ndarray]]:
        for start in range(0, len(labels), global_batch):
            yield images[start : start + global_batch], labels[start : start + global_batch]

    dataset = tf.data.Dataset.from_generator(batches, output_signature=_array_specs(arrays))
    return _per_worker_only(dataset.prefetch(2))


@dataclass
class WorkerInput:
    """A worker's training and validation datasets, and how they are fed."""

    train: tf.data.Dataset
    val: tf.data.Dataset
    train_in_memory: bool  # True: endless, ``fit`` needs ``steps_per_epoch``
    val_in_memory: bool
    train_streamed_because: str | None = None  # ``train_streamed_because``'s reason

    def describe(self) -> str:
        """The worker's line about what it holds in memory, and why training streams."""
        kept = [s for s in ("train", "val") if getattr(self, f"{s}_in_memory")]
        line = f"input: {' and '.join(kept) or 'nothing'} held in worker memory"
        if len(kept) < 2:
            line += ", the rest streamed from Ray Data every epoch"
        if self.train_streamed_because:
            line += f": training because {self.train_streamed_because}"
        return line


def worker_input_per_worker(
    shards: dict[str, Any],
    train_rows: int,
    global_batch: int,
    image_size: int,
    shuffle: int,
    seed: int,
    limit_bytes: int,
    first_epoch: Callable[[], int],
    labels: LabelFormat = SPARSE,
    train_streamed_because: str | None = None,
) -> WorkerInput:
    """In memory what fits in ``limit_bytes`` (training first: its row count is known
    before reading, so a shard that is too big is never read in vain), streamed the rest;
    training always streamed when ``train_streamed_because`` gives a reason.

    Every worker gets the same row counts from the equal split, so all decide alike and
    step through the same number of batches."""
    train_bytes = train_rows * image_size * image_size * 3
    train_arrays = (
        read_shard_per_worker(shards["train"], limit_bytes, labels)
        if train_bytes <= limit_bytes and train_streamed_because is None
        else None
    )
    if train_arrays is not None and len(train_arrays[1]) != train_rows:
        # the steps per epoch are computed from train_rows; an equal split guarantees it
        raise RuntimeError(f"training shard has {len(train_arrays[1])} rows, not {train_rows}")
    left = limit_bytes - (train_arrays[0].nbytes if train_arrays is not None else 0)
    val_arrays = read_shard_per_worker(shards["val"], left, labels) if left > 0 else None
    return WorkerInput(
        train=(
            in_memory_train(train_arrays, global_batch, shuffle > 0, seed, first_epoch)
            if train_arrays is not None
            else streamed_per_worker(
                shards["train"], global_batch, image_size, True, shuffle, labels
            )
        ),
        val=(
            in_memory_val(val_arrays, global_batch)
            if val_arrays is not None
            else streamed_per_worker(shards["val"], global_batch, image_size, False, 0, labels)
        ),
        train_in_memory=train_arrays is not None,
        val_in_memory=val_arrays is not None,
        train_streamed_because=train_streamed_because,
    )
