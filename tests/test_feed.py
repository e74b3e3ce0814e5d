"""A worker's in-memory input (tljob.run.feed): the rows read once, the per-epoch orders of
the training batches (reproducible across a resume), validation kept whole; soft labels'
float32 specs, and training streamed every epoch when the data pipeline augments."""

from __future__ import annotations

import numpy as np
import pytest
import tensorflow as tf

from tljob.config import load_config
from tljob.nn.labels import LabelFormat
from tljob.run import feed, feed_arrays

SIZE = 2


class RowsShard:
    """What ``read_shard_per_worker`` uses of a Ray Data shard: ``iter_batches``; it counts
    the rows handed out, to check that a shard is always read to the end."""

    def __init__(self, rows: int) -> None:
        self.labels = np.arange(rows, dtype=np.int64)
        # every pixel of row i is i % 256, so an image tells which row it came from
        self.images = np.broadcast_to(
            (self.labels % 256).astype(np.uint8)[:, None, None, None], (rows, SIZE, SIZE, 3)
        )
        self.handed_out = 0

    def iter_batches(self, batch_size: int, batch_format: str, drop_last: bool = False, **_):
        assert batch_format == "numpy"
        end = len(self.labels) // batch_size * batch_size if drop_last else len(self.labels)
        for start in range(0, end, batch_size):
            self.handed_out += len(self.labels[start : start + batch_size])
            yield {
                "image": self.images[start : start + batch_size],
                "label": self.labels[start : start + batch_size],
            }


def take_epochs(dataset, batches_per_epoch: int, epochs: int) -> list[np.ndarray]:
    """The labels of each epoch's batches, in order, from one iterator (as Keras does)."""
    it = iter(dataset)
    out = []
    for _ in range(epochs):
        labels = []
        for _ in range(batches_per_epoch):
            images, batch_labels = next(it)
            assert (images.numpy()[:, 0, 0, 0] == batch_labels.numpy() % 256).all()
            labels.append(batch_labels.numpy())
        out.append(np.concatenate(labels))
    return out


def test_a_shard_that_fits_is_read_whole_and_one_that_does_not_is_still_read_to_the_end():
    shard = RowsShard(2500)
    images, labels = feed.read_shard_per_worker(shard, limit_bytes=2500 * SIZE * SIZE * 3)
    assert images.dtype == np.uint8 and images.shape == (2500, SIZE, SIZE, 3)
    assert (labels == np.arange(2500)).all()
    big = RowsShard(2500)
    assert feed.read_shard_per_worker(big, limit_bytes=2500 * SIZE * SIZE * 3 - 1) is None
    assert big.handed_out == 2500


def test_training_batches_are_a_new_permutation_every_epoch_and_resume_reproduces_them():
    shard = RowsShard(70)
    arrays = feed.read_shard_per_worker(shard, limit_bytes=10**6)
    straight = feed.in_memory_train(arrays, 16, shuffled=True, seed=3, first_epoch=lambda: 0)
    epochs = take_epochs(straight, batches_per_epoch=4, epochs=3)  # 64 of 70 rows per epoch
    for labels in epochs:
        assert len(labels) == 64 and len(set(labels.tolist())) == 64
        assert labels.tolist() != sorted(labels.tolist())
    assert epochs[0].tolist() != epochs[1].tolist() != epochs[2].tolist()
    # a run resumed after 1 epoch sees the orders of epochs 2 and 3 of the straight run
    resumed = feed.in_memory_train(arrays, 16, shuffled=True, seed=3, first_epoch=lambda: 1)
    assert [e.tolist() for e in take_epochs(resumed, 4, 2)] == [e.tolist() for e in epochs[1:]]
    other_seed = feed.in_memory_train(arrays, 16, shuffled=True, seed=4, first_epoch=lambda: 0)
    assert take_epochs(other_seed, 4, 1)[0].tolist() != epochs[0].tolist()


def test_without_shuffling_every_epoch_is_the_rows_in_order():
    arrays = feed.read_shard_per_worker(RowsShard(40), limit_bytes=10**6)
    dataset = feed.in_memory_train(arrays, 8, shuffled=False, seed=0, first_epoch=lambda: 5)
    assert [e.tolist() for e in take_epochs(dataset, 5, 2)] == [list(range(40))] * 2


def test_validation_keeps_every_row_in_order_with_a_short_last_batch():
    arrays = feed.read_shard_per_worker(RowsShard(37), limit_bytes=10**6)
    for _ in range(2):  # Keras iterates it again every epoch
        sizes, labels = [], []
        for images, batch_labels in feed.in_memory_val(arrays, 16):
            sizes.append(len(batch_labels))
            assert (images.numpy()[:, 0, 0, 0] == batch_labels.numpy() % 256).all()
            labels.extend(batch_labels.numpy().tolist())
        assert sizes == [16, 16, 5] and labels == list(range(37))


@pytest.mark.parametrize("replicas", [1, 2])
def test_per_replica_validation_gives_every_replica_a_batch_every_step_and_each_row_once(
    replicas,
):
    arrays = feed.read_shard_per_worker(RowsShard(37), limit_bytes=10**6)
    dataset, steps = feed_arrays.in_memory_val_per_replica(arrays, 16, replicas)
    assert steps == (3 if replicas == 1 else 2)
    assert int(dataset.cardinality()) == steps * replicas  # known: fit may run many a call
    sizes, labels = [], []
    for images, batch_labels in dataset:
        sizes.append(len(batch_labels))
        assert (images.numpy()[:, 0, 0, 0] == batch_labels.numpy() % 256).all()
        labels.extend(batch_labels.numpy().tolist())
    assert labels == list(range(37)) and max(sizes) <= 16 and max(sizes) - min(sizes) <= 1
    assert len(sizes) == steps * replicas


class SoftRowsShard(RowsShard):
    """``RowsShard`` with MixUp / CutMix labels: row i is one-hot on class i % CLASSES
    (float32 (N, CLASSES)); ``to_tf`` records how it was asked to stream."""

    CLASSES = 3

    def __init__(self, rows: int) -> None:
        super().__init__(rows)
        self.labels = np.eye(self.CLASSES, dtype=np.float32)[np.arange(rows) % self.CLASSES]
        self.streamed: dict | None = None

    def to_tf(self, **kwargs):
        self.streamed = kwargs
        return "streamed"


SOFT = LabelFormat(soft=True, num_classes=SoftRowsShard.CLASSES)


def test_soft_labels_are_float32_class_probabilities_in_memory_and_streamed():
    arrays = feed.read_shard_per_worker(SoftRowsShard(40), limit_bytes=10**6, label_format=SOFT)
    assert arrays[1].dtype == np.float32 and arrays[1].shape == (40, 3)
    spec = tf.TensorSpec((None, 3), tf.float32, name="label")
    train = feed.in_memory_train(arrays, 8, shuffled=True, seed=0, first_epoch=lambda: 0)
    val = feed.in_memory_val(arrays, 16)
    for dataset in (train, val):
        assert dataset.element_spec[1] == spec
    images, labels = next(iter(train))
    rows = images.numpy()[:, 0, 0, 0]  # which rows the batch holds
    np.testing.assert_array_equal(labels.numpy(), np.eye(3, dtype=np.float32)[rows % 3])
    shard = SoftRowsShard(40)
    assert feed.streamed_per_worker(shard, 8, SIZE, True, 0, SOFT) == "streamed"
    assert shard.streamed["label_type_spec"] == spec
    assert shard.streamed["label_columns"] == "label"
    # integer labels in a soft run (shards prepared for another run) are refused
    with pytest.raises(ValueError, match="soft"):
        feed.read_shard_per_worker(RowsShard(4), limit_bytes=10**6, label_format=SOFT)


def augment(*options: str):
    return load_config(None, ["data.source=x", *options]).augment


@pytest.mark.parametrize(
    ("options", "reason"),
    [
        ((), None),
        (("augment.where=model", "augment.horizontal_flip=true"), None),
        (("augment.horizontal_flip=true",), "the data pipeline augments it anew every epoch"),
        (("augment.preset=light",), "the data pipeline augments it anew every epoch"),
        (("augment.mixup_alpha=0.2",), "MixUp / CutMix mix new batches every epoch"),
        (
            ("augment.where=model", "augment.rotation_range=5", "augment.cutmix_alpha=1"),
            "MixUp / CutMix mix new batches every epoch",
        ),
    ],
)
def test_training_is_streamed_every_epoch_when_the_data_pipeline_draws_new_views(options, reason):
    soft = augment(*options).soft_labels
    labels = SOFT if soft else LabelFormat()
    shards = {"train": SoftRowsShard(32), "val": SoftRowsShard(10)}
    if not soft:
        for shard in shards.values():
            shard.labels = np.arange(len(shard.labels), dtype=np.int64)
    because = feed.train_streamed_because(augment(*options))
    assert because == reason
    fed = feed.worker_input_per_worker(
        shards,
        tf.distribute.MirroredStrategy(["/cpu:0"]),
        1,
        train_rows=32,
        batch_size=8,
        image_size=SIZE,
        shuffle=0,
        seed=0,
        limit_bytes=10**6,  # everything fits
        first_epoch=lambda: 0,
        labels=labels,
        train_streamed_because=because,
    )
    assert fed.val_in_memory and shards["val"].handed_out == 10
    if reason is None:
        assert fed.train_in_memory and shards["train"].handed_out == 32
        assert fed.describe() == "input: train and val held in worker memory"
    else:
        # never read into memory: a cache would freeze epoch 0's views
        assert not fed.train_in_memory and shards["train"].handed_out == 0
        assert fed.steps_per_epoch == 4
        fed.clock.fit_begins()  # the stream's epoch starts when training begins it
        fed.clock.epoch_begins()
        batches = iter(fed.train)
        images, batch_labels = next(batches)  # one replica: its batch
        assert images.shape == (8, SIZE, SIZE, 3) and images.dtype == tf.uint8
        assert batch_labels.dtype == labels.spec().dtype
        assert batch_labels.shape[1:] == labels.spec().shape[1:]
        # the stream waits for training's next epoch until the fit ends: only then may its
        # iterator go (tf.data waits for a running generator to return)
        fed.clock.gate.close()
        del batches
        assert fed.describe() == (
            "input: val held in worker memory, the rest streamed from Ray Data every epoch: "
            f"training because {reason}"
        )
