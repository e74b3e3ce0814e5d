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
Training is batched per replica: each worker's training rows are cut into batches of
``batch_size`` (the last partial one dropped), one batch per replica and step, handed to
Keras through ``strategy.distribute_datasets_from_function`` (``per_replica``), so an
epoch leaves out at most ``batch_size - 1`` of a worker's rows. Such a dataset is
iterated once per ``fit`` (Keras never recreates its iterator), so the training datasets
are endless; the streamed one starts each epoch's Ray Data execution only when training
begins that epoch (``tljob.run.input_wait.EpochGate``: with ``streaming_split`` every
worker must start every epoch, and a prefetch past a stage's last epoch would start one
on some workers only). Each training batch is stamped as it leaves the pipeline
(``stamped``) for the input wait (``tljob.run.input_wait``).
Validation keeps Keras' own distribution: batches of ``batch_size * world_size`` split
across the ``world_size`` replicas, every row kept, so its last batch may be short: Keras
cuts it into ``world_size`` pieces (the batch size of these datasets is not static), and 1
row over 2 replicas leaves one of them a 0-row batch, which the model answers with 0 rows
(``tljob.nn.layers.ImageClassifier``).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np
import tensorflow as tf

from tljob.config.augment import AugmentSection
from tljob.data.features import view_of_epoch
from tljob.nn.labels import SPARSE, LabelFormat
from tljob.run.input_wait import EpochGate, InputClock

_READ_ROWS = 1024  # rows per batch when a shard is read into memory


def _specs(image_size: int, labels: LabelFormat) -> tuple[tf.TensorSpec, tf.TensorSpec]:
    return (
        tf.TensorSpec(shape=(None, image_size, image_size, 3), dtype=tf.uint8, name="image"),
        labels.spec(),
    )


def array_specs(arrays: tuple[np.ndarray, np.ndarray]) -> tuple[tf.TensorSpec, tf.TensorSpec]:
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


def per_worker_only(dataset: tf.data.Dataset) -> tf.data.Dataset:
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
    """The Ray Data shard, streamed again every epoch (shuffled when ``shuffle`` > 0), in
    batches of ``global_batch`` (validation: Keras splits them over the replicas)."""
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


def streamed_train_per_worker(
    shard: Any,
    batch_size: int,
    batches_per_epoch: int,
    image_size: int,
    shuffle: int,
    gate: EpochGate,
    label_format: LabelFormat = SPARSE,
) -> tf.data.Dataset:
    """The training shard streamed, endless: epoch ``n`` of the Ray Data stream starts when
    ``gate`` says training began epoch ``n`` of the current ``fit``; each epoch yields its
    first ``batches_per_epoch`` full batches of ``batch_size`` (shuffled when ``shuffle`` >
    0) and reads the rest of the stream to its end; the dataset ends with the ``fit``."""

    def batches() -> Iterator[tuple[np.ndarray, np.ndarray]]:
        generation, epoch = gate.generation(), 0
        while gate.wait_for_epoch(generation, epoch):
            served = 0
            for batch in shard.iter_batches(
                batch_size=batch_size,
                batch_format="numpy",
                drop_last=True,
                prefetch_batches=2,
                local_shuffle_buffer_size=max(shuffle, batch_size) if shuffle else None,
            ):
                if served < batches_per_epoch:
                    served += 1
                    yield batch["image"], label_format.as_array(batch["label"])
            epoch += 1

    dataset = tf.data.Dataset.from_generator(
        batches, output_signature=_specs(image_size, label_format)
    )
    return per_worker_only(dataset.prefetch(2))


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
    arrays: tuple[np.ndarray, np.ndarray] | list[tuple[np.ndarray, np.ndarray]],
    batch_size: int,
    shuffled: bool,
    seed: int,
    first_epoch: Callable[[], int],
    batches_per_epoch: int | None = None,
) -> tf.data.Dataset:
    """Training batches of ``batch_size`` rows from the arrays, endless: epoch after epoch,
    each the first ``batches_per_epoch`` (default: all ``len // batch_size``) full batches
    of the epoch's order, so pass ``steps_per_epoch`` to ``fit``.

    Endless because Keras creates one iterator per ``fit`` over a distributed dataset (and
    with a finite one it would make an extra one before the first epoch, and prefetching
    could start it): the orders are then fixed. ``first_epoch()`` is read when ``fit``
    starts: the run's global epochs done, so a resumed run continues with the orders a
    straight run would use. The rows of epoch ``e`` are permuted by ``(seed, e)``.
    A list of K (inputs, labels) of one length (views, ``tljob.run.cached_stage``): epoch
    ``e`` draws from the ``view_of_epoch(e, K)``-th.
    """
    views = arrays if isinstance(arrays, list) else [arrays]
    if len({len(labels) for _, labels in views}) != 1:
        raise ValueError(f"views of different lengths: {[len(v[1]) for v in views]}")
    batches_per_epoch = batches_per_epoch or len(views[0][1]) // batch_size

    def batches() -> Iterator[tuple[np.ndarray, np.ndarray]]:
        epoch = first_epoch()
        while True:
            images, labels = views[view_of_epoch(epoch, len(views))]
            order = (
                np.random.default_rng([seed, epoch]).permutation(len(labels))
                if shuffled
                else np.arange(len(labels))
            )
            for start in range(0, batches_per_epoch * batch_size, batch_size):
                rows = order[start : start + batch_size]
                yield images[rows], labels[rows]
            epoch += 1

    dataset = tf.data.Dataset.from_generator(batches, output_signature=array_specs(views[0]))
    # endless already; repeat() makes its cardinality infinite, so the strategy need not
    # check with every worker, each step, whether all still have a batch
    return per_worker_only(dataset.repeat().prefetch(2))


def stamped(dataset: tf.data.Dataset, clock: InputClock) -> tf.data.Dataset:
    """``dataset`` whose batches note the time they leave it (``InputClock.delivered``):
    the last stage of the pipeline, after its prefetch buffers, run when a batch is taken."""

    def stamp(*batch: tf.Tensor) -> tuple[tf.Tensor, ...]:
        def note(rows: np.ndarray) -> np.int8:
            clock.delivered(int(rows))
            return np.int8(0)

        noted = tf.numpy_function(note, [tf.shape(batch[0])[0]], tf.int8)
        with tf.control_dependencies([noted]):
            return tuple(tf.identity(t) for t in batch)

    return dataset.map(stamp)


def class_weighted(dataset: tf.data.Dataset, weights: Any) -> tf.data.Dataset:
    """(images, labels, sample weights): each row weighted by its class's weight (of the
    most likely class for soft labels), as ``fit``'s ``class_weight`` would, which Keras
    refuses for a distributed dataset. ``weights``: per class index; None: unchanged."""
    if not weights:
        return dataset
    table = tf.constant(list(weights), tf.float32)

    def weigh(images: tf.Tensor, labels: tf.Tensor) -> tuple[tf.Tensor, ...]:
        classes = tf.argmax(labels, axis=-1) if labels.shape.rank == 2 else labels
        return images, labels, tf.gather(table, classes)

    return dataset.map(weigh)


def per_replica(strategy: Any, dataset: tf.data.Dataset) -> Any:
    """``dataset`` (this worker's, batched per replica) as the distribution strategy's
    input: each of this worker's replicas takes its next batch every step; no rebatching
    into global batches and no sharding (each worker holds only its own rows)."""
    return strategy.distribute_datasets_from_function(lambda _context: dataset)


def in_memory_val(arrays: tuple[np.ndarray, np.ndarray], global_batch: int) -> tf.data.Dataset:
    """Every validation row, in the order read, in global batches (the last may be short).
    A generator over slices, not ``from_tensor_slices``, which would copy the arrays."""
    images, labels = arrays

    def batches() -> Iterator[tuple[np.ndarray, np.ndarray]]:
        for start in range(0, len(labels), global_batch):
            yield images[start : start + global_batch], labels[start : start + global_batch]

    dataset = tf.data.Dataset.from_generator(batches, output_signature=array_specs(arrays))
    return per_worker_only(dataset.prefetch(2))


@dataclass
class WorkerInput:
    """A worker's training (distributed, endless) and validation datasets, the training
    steps of an epoch, the clock of its input wait, and how they are fed."""

    train: Any  # per_replica's distributed dataset
    val: Any  # a tf.data.Dataset, or per_replica's distributed dataset
    steps_per_epoch: int
    clock: InputClock
    train_in_memory: bool
    val_in_memory: bool
    train_streamed_because: str | None = None  # ``train_streamed_because``'s reason
    train_shard: Any = None  # the Ray Data shard the training batches stream from
    # steps run by one call of the compiled step (fit's ``steps_per_execution``), and the
    # validation steps when they must be known (more than one step per call)
    steps_per_execution: int = 1
    validation_steps: int | None = None

    def epoch_figures(self) -> dict[str, Any]:
        """This epoch's input figures (``InputClock.epoch_figures``), with the stream's
        measured images per CPU-second when training streams (None when not measured)."""
        figures = {**self.clock.epoch_figures(), "streamed": not self.train_in_memory}
        if not self.train_in_memory:
            from tljob import ray_private

            figures["stream_images_per_cpu_s"] = ray_private.stream_images_per_cpu_s(
                self.train_shard
            )
        return figures

    def wait_text(self) -> str:
        """The epoch line's words on the input wait."""
        return f"input wait {self.clock.epoch_figures()['input_wait_ratio']:.0%}"

    def describe(self) -> str:
        """The worker's line about what it holds in memory, and why training streams."""
        kept = [s for s in ("train", "val") if getattr(self, f"{s}_in_memory")]
        line = f"input: {' and '.join(kept) or 'nothing'} held in worker memory"
        if len(kept) < 2:
            line += ", the rest streamed from Ray Data every epoch"
        if self.train_streamed_because:
            line += f": training because {self.train_streamed_because}"
        return line


def training_steps(train_rows: int, batch_size: int, replicas_here: int = 1) -> int:
    """A worker's training steps per epoch: its rows in full batches of ``batch_size``,
    one batch per replica on this worker and step."""
    return train_rows // batch_size // replicas_here


def worker_input_per_worker(
    shards: dict[str, Any],
    strategy: Any,
    world_size: int,
    train_rows: int,
    batch_size: int,
    image_size: int,
    shuffle: int,
    seed: int,
    limit_bytes: int,
    first_epoch: Callable[[], int],
    labels: LabelFormat = SPARSE,
    train_streamed_because: str | None = None,
    class_weights: Any = None,
) -> WorkerInput:
    """In memory what fits in ``limit_bytes`` (training first: its row count is known
    before reading, so a shard that is too big is never read in vain), streamed the rest;
    training always streamed when ``train_streamed_because`` gives a reason. Training in
    batches of ``batch_size`` per replica of ``strategy`` (over ``world_size`` workers);
    validation in global batches.

    Every worker gets the same row counts from the equal split, so all decide alike and
    step through the same number of batches."""
    replicas_here = max(1, strategy.num_replicas_in_sync // world_size)
    steps = training_steps(train_rows, batch_size, replicas_here)
    clock = InputClock(batches_per_step=replicas_here)
    global_batch = batch_size * strategy.num_replicas_in_sync
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
    per_epoch = steps * replicas_here
    train = (
        in_memory_train(train_arrays, batch_size, shuffle > 0, seed, first_epoch, per_epoch)
        if train_arrays is not None
        else streamed_train_per_worker(
            shards["train"], batch_size, per_epoch, image_size, shuffle, clock.gate, labels
        )
    )
    return WorkerInput(
        train=per_replica(strategy, stamped(class_weighted(train, class_weights), clock)),
        val=(
            in_memory_val(val_arrays, global_batch)
            if val_arrays is not None
            else streamed_per_worker(shards["val"], global_batch, image_size, False, 0, labels)
        ),
        steps_per_epoch=steps,
        clock=clock,
        train_in_memory=train_arrays is not None,
        val_in_memory=val_arrays is not None,
        train_streamed_because=train_streamed_because,
        train_shard=shards["train"],
    )
