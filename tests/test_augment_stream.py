"""Augmented views in the Ray Data training stream: the view of image i in epoch e is
``Augmenter(section, size, seed)(stored_i, key_i, e)`` whatever reads it (directly,
``streaming_split`` into 1 or 2 consumers as Ray Train does, other row groups), each
execution of the dataset is the next epoch, and a resumed run's offset shifts them.
With MixUp / CutMix the training labels are class probabilities and validation's exactly
one-hot. A real local Ray (the module's private one), always shut down."""

from __future__ import annotations

import threading
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
import ray.train
from conftest import write_digits_tree
from test_shards import local_ray  # noqa: F401  (the module's private Ray)

from tljob import storage
from tljob.augment.keys import image_keys
from tljob.augment.ops.mixing import mix_batch
from tljob.augment.pipeline import Augmenter
from tljob.config import load_config
from tljob.data.pipeline import prepare_data
from tljob.data.prepared import StoreSettings, read_manifest
from tljob.data.shards import decode_stored
from tljob.data.stream import split_dataset
from tljob.data.views import TrainingViews, row_group_key

pytestmark = [pytest.mark.ray, pytest.mark.usefixtures("local_ray")]

SIZE = 32


def _job(root: Path, runs: Path, *overrides: str):
    return load_config(
        None,
        [
            f"data.source={root}",
            f"data.image_size={SIZE}",
            "data.seed=3",
            "model.weights=none",
            f"run.storage_path={runs}",
            "augment.preset=seed",
            *overrides,
        ],
    )


@pytest.fixture(scope="module")
def digits(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("aug") / "digits"
    return write_digits_tree(root, classes=3, per_class=8, scale=2)


def _train_rows(prepared_uri: str) -> tuple[dict[str, np.ndarray], dict[str, int], int]:
    """The training shards' rows: stored image and label by sha256, and the stored size."""
    folder = storage.resolve(prepared_uri)
    manifest = read_manifest(folder)
    store = StoreSettings(**manifest.store)
    images, labels = {}, {}
    for name in manifest.files["train"]:
        for row in pq.read_table(folder.join(name).path).to_pylist():
            images[row["sha256"]] = decode_stored(row["image"], store.stored_size, "raw")
            labels[row["sha256"]] = row["label"]
    return images, labels, store.stored_size


def _expected(job, stored: dict[str, np.ndarray], epoch: int) -> dict[bytes, str]:
    """The Augmenter's view of every training image in ``epoch``, computed straight from
    the shard rows in one batch: view bytes -> sha256."""
    shas = sorted(stored)
    views = Augmenter(job.augment, SIZE, job.data.seed)(
        np.stack([stored[s] for s in shas]), image_keys(shas), epoch
    )
    found = {v.tobytes(): s for v, s in zip(views, shas, strict=True)}
    assert len(found) == len(shas)  # every image's view is distinct: rows are identifiable
    return found


def _identify(batches, expected: dict[bytes, str], labels: dict[str, int]) -> list[str]:
    """The sha256 of every emitted row, each checked to be exactly its image's view."""
    seen = []
    for batch in batches:
        for image, label in zip(batch["image"], batch["label"], strict=True):
            assert image.shape == (SIZE, SIZE, 3) and image.dtype == np.uint8
            sha = expected.get(image.tobytes())
            assert sha is not None, "a row is not the Augmenter's view of any image"
            assert int(label) == labels[sha]
            seen.append(sha)
    assert len(set(seen)) == len(seen)
    return seen


def _stream(prepared_uri: str, job, offset: int = 0):
    """The training stream of the prepared data, as ``prepare_data`` builds it."""
    folder = storage.resolve(prepared_uri)
    manifest = read_manifest(folder)
    store = StoreSettings(**manifest.store)
    views = TrainingViews(job.augment, job.data.seed, len(manifest.classes), offset)
    files = manifest.files["train"]
    return split_dataset(folder, files, store.stored_size, "raw", SIZE, 3, views)


def _split_epochs(ds, n: int, epochs: int) -> list[list[list[dict]]]:
    """Batches per epoch per consumer, from ``n`` concurrent consumers of the dataset split
    exactly as Ray Train's ``DataConfig`` splits it for ``n`` workers."""
    shards = ray.train.DataConfig().configure({"train": ds}, n, None, None)
    got: list[list[list[dict]]] = [[] for _ in range(epochs)]
    errors = []

    def consume(rank: int) -> None:
        try:
            for e in range(epochs):
                it = shards[rank]["train"].iter_batches(batch_size=4, batch_format="numpy")
                got[e].extend(list(it))
        except Exception as exc:  # surfaced below, in the test's thread
            errors.append(exc)

    threads = [threading.Thread(target=consume, args=(r,)) for r in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    assert not errors, errors
    return got


def test_views_are_the_augmenters_by_image_and_epoch_whatever_reads_them(digits, tmp_path):
    job = _job(digits, tmp_path / "runs")
    prepared = prepare_data(job)
    stored, labels, _ = _train_rows(prepared.prepared_uri)
    total = len(stored)
    assert total == prepared.counts["train"].used > 10
    expected = [_expected(job, stored, e) for e in range(3)]
    # The views of epochs 0 and 1 differ for every image.
    by_sha = [{s: v for v, s in ex.items()} for ex in expected]
    assert all(by_sha[0][s] != by_sha[1][s] for s in stored)

    # Directly: execution k is epoch k.
    direct = [_identify(prepared.train.iter_batches(batch_size=None), expected[e], labels)
              for e in range(2)]  # fmt: skip
    assert [sorted(d) for d in direct] == [sorted(stored)] * 2

    # As Ray Train splits it, for 1 and for 2 workers (equal splits drop the odd row).
    for n in (1, 2):
        epochs = _split_epochs(_stream(prepared.prepared_uri, job), n, 2)
        for e in range(2):
            seen = _identify(epochs[e], expected[e], labels)
            assert len(seen) == total // n * n

    # A resumed run that has done one epoch starts at epoch 1.
    resumed = _stream(prepared.prepared_uri, job, offset=1)
    first = _identify(resumed.iter_batches(batch_size=None), expected[1], labels)
    assert sorted(first) == sorted(stored)

    # Other row groups (shards of ~2 rows each): the same views.
    small = prepare_data(_job(digits, tmp_path / "runs", "data.shard_target_mb=0.01"))
    assert small.prepared_uri != prepared.prepared_uri
    folder = storage.resolve(small.prepared_uri)
    groups = [
        pq.ParquetFile(folder.join(f).path).metadata.num_row_groups
        for f in read_manifest(folder).files["train"]
    ]
    assert sum(groups) >= total // 2  # ~2 rows per row group
    for e in range(2):
        seen = _identify(small.train.iter_batches(batch_size=None), expected[e], labels)
        assert sorted(seen) == sorted(stored)


def test_mixup_cutmix_labels_are_probabilities_and_validation_is_one_hot(digits, tmp_path):
    job = _job(digits, tmp_path / "runs", "augment.mixup_alpha=0.4", "augment.cutmix_alpha=1.0")
    prepared = prepare_data(job)
    classes = len(prepared.classes)
    rows = 0
    soft = 0
    for batch in prepared.train.iter_batches(batch_size=None):
        label = batch["label"]
        assert label.dtype == np.float32 and label.shape == (len(batch["image"]), classes)
        assert batch["image"].dtype == np.uint8 and batch["image"].shape[1:] == (SIZE, SIZE, 3)
        np.testing.assert_allclose(label.sum(axis=1), 1.0, atol=1e-6)
        assert (label >= 0).all()
        soft += int((label.max(axis=1) < 1.0).sum())
        rows += len(label)
    assert rows == prepared.counts["train"].used
    assert soft > 0  # some rows really are mixed
    # One row group here: epoch 1 is mix_batch over its Augmenter views, keyed by its keys.
    folder = storage.resolve(prepared.prepared_uri)
    (name,) = read_manifest(folder).files["train"]
    assert pq.ParquetFile(folder.join(name).path).metadata.num_row_groups == 1
    table = pq.read_table(folder.join(name).path).to_pylist()
    keys = image_keys([r["sha256"] for r in table])
    stored = np.stack([decode_stored(r["image"], job.stored_size, "raw") for r in table])
    views = Augmenter(job.augment, SIZE, 3)(stored, keys, 1)
    s = job.augment
    images, labels = mix_batch(
        views, np.array([r["label"] for r in table]), classes, s.mixup_alpha, s.cutmix_alpha,
        3, 1, row_group_key(keys),
    )  # fmt: skip
    (batch,) = list(prepared.train.iter_batches(batch_size=None))  # the second execution
    assert np.array_equal(batch["image"], images)
    assert np.array_equal(batch["label"], labels)
    val = list(prepared.val.iter_batches(batch_size=None))
    labels = np.concatenate([b["label"] for b in val])
    assert labels.dtype == np.float32 and labels.shape == (prepared.counts["val"].used, classes)
    assert set(np.unique(labels).tolist()) == {0.0, 1.0}
    assert (labels.sum(axis=1) == 1.0).all()
    # the one-hot rows are the stored labels
    folder = storage.resolve(prepared.prepared_uri)
    stored = [
        row["label"]
        for f in read_manifest(folder).files["val"]
        for row in pq.read_table(folder.join(f).path, columns=["label"]).to_pylist()
    ]
    assert labels.argmax(axis=1).tolist() == stored
