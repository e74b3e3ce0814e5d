"""The training stream from shards: one task per row group, every row once per epoch, a new
reproducible row-group order every epoch, resized to the training size."""

from __future__ import annotations

import hashlib

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import ray.data
from conftest import write_digits_tree
from test_shards import _job, local_ray  # noqa: F401  (the module's private Ray)

from tljob import storage
from tljob.data.pipeline import prepare_data
from tljob.data.prepared import StoreSettings, read_manifest
from tljob.data.stream import shard_units, split_dataset
from tljob.images import resize_bilinear_uint8, resize_fast_uint8


def test_fast_resize_is_within_one_level_of_the_serving_kernel():
    rng = np.random.default_rng(0)
    for h, w, size in [(256, 256, 224), (375, 500, 224), (28, 28, 32), (20, 30, 64)]:
        image = rng.integers(0, 256, (h, w, 3), dtype=np.uint8)
        fast, exact = resize_fast_uint8(image, size), resize_bilinear_uint8(image, size)
        assert fast.shape == (size, size, 3) and fast.dtype == np.uint8
        assert int(np.abs(fast.astype(int) - exact.astype(int)).max()) <= 1
    same = rng.integers(0, 256, (9, 9, 3), dtype=np.uint8)
    assert resize_fast_uint8(same, 9) is same


def _write_shards(folder, stored: int, rows_per_file: list[int], group: int) -> dict[int, int]:
    """Raw shards whose row i is filled with the value i % 251 and labelled i; returns
    label -> pixel value."""
    start, names = 0, []
    for k, n in enumerate(rows_per_file):
        labels = np.arange(start, start + n)
        images = [np.full((stored, stored, 3), i % 251, np.uint8).tobytes() for i in labels]
        table = pa.table({"image": pa.array(images, pa.binary()), "label": pa.array(labels)})
        pq.write_table(table, folder / f"s{k}.parquet", row_group_size=group)
        names.append(f"s{k}.parquet")
        start += n
    return names


def _epochs(ds, n: int) -> list[list[int]]:
    return [
        [int(x) for b in ds.iter_batches(batch_size=None) for x in b["label"]] for _ in range(n)
    ]


@pytest.mark.ray
@pytest.mark.usefixtures("local_ray")
def test_each_epoch_reads_every_row_once_in_a_new_reproducible_group_order(tmp_path, monkeypatch):
    from tljob.data import stream

    names = _write_shards(tmp_path, 12, [10, 7], group=3)
    folder = storage.resolve(str(tmp_path))
    units = shard_units(folder, names)
    assert [(u["path"].rsplit("/", 1)[1], u["row_group"], u["rows"]) for u in units] == [
        ("s0.parquet", 0, 3), ("s0.parquet", 1, 3), ("s0.parquet", 2, 3), ("s0.parquet", 3, 1),
        ("s1.parquet", 0, 3), ("s1.parquet", 1, 3), ("s1.parquet", 2, 1),
    ]  # fmt: skip
    # the stream's footers are read by Ray tasks (one shard each here), never on the driver
    monkeypatch.setattr(stream, "FOOTERS_PER_TASK", 1)
    monkeypatch.setattr(pq, "ParquetFile", lambda *a: pytest.fail("a footer read here"))
    assert stream.shard_units_in_tasks(folder, names) == units
    ds = split_dataset(folder, names, 12, "raw", 8, shuffle_seed=5)
    epochs = _epochs(ds, 3)
    for order in epochs:
        assert sorted(order) == list(range(17))
    # Rows arrive as tasks finish; with delivery in block order, the seeded row-group
    # orders show: a new one every epoch, the same ones again from the same seed.
    context = ray.data.DataContext.get_current()
    context.execution_options.preserve_order = True
    try:
        ordered = _epochs(split_dataset(folder, names, 12, "raw", 8, shuffle_seed=5), 3)
        again = _epochs(split_dataset(folder, names, 12, "raw", 8, shuffle_seed=5), 3)
        # unshuffled, in block order: the stored order every epoch (without preserve_order
        # the rows come as tasks finish, in any order on a loaded machine)
        in_order = split_dataset(folder, names, 12, "raw", 12, shuffle_seed=None)
        assert _epochs(in_order, 2) == [list(range(17))] * 2
    finally:
        context.execution_options.preserve_order = False
    assert len({tuple(o) for o in ordered}) == 3
    assert again == ordered
    groups = {g[0]: g for g in ([0, 1, 2], [3, 4, 5], [6, 7, 8], [9], [10, 11, 12],
                                [13, 14, 15], [16])}  # fmt: skip
    for order in ordered:  # whole row groups, each in its stored order
        seen, i = [], 0
        while i < len(order):
            group = groups[order[i]]
            assert order[i : i + len(group)] == group
            seen.append(group[0])
            i += len(group)
        assert sorted(seen) == sorted(groups)
    batch = next(iter(ds.iter_batches(batch_size=None)))
    assert batch["image"].shape[1:] == (8, 8, 3) and batch["image"].dtype == np.uint8
    for image, label in zip(batch["image"], batch["label"], strict=True):
        assert int(image.min()) == int(image.max()) == int(label) % 251
    unordered = _epochs(split_dataset(folder, names, 12, "raw", 12, shuffle_seed=None), 2)
    assert [sorted(order) for order in unordered] == [list(range(17))] * 2


@pytest.mark.ray
@pytest.mark.usefixtures("local_ray")
def test_prepared_shards_have_row_groups_and_an_uncompressed_image_column(tmp_path):
    root = write_digits_tree(tmp_path / "d", classes=2, per_class=6)
    prepared = prepare_data(_job(root, tmp_path / "runs"))
    folder = storage.resolve(prepared.prepared_uri)
    manifest = read_manifest(folder)
    store = StoreSettings(**manifest.store)
    for split, files in manifest.files.items():
        for name in files:
            meta = pq.ParquetFile(folder.join(name).path).metadata
            group = meta.row_group(0)
            columns = {group.column(c).path_in_schema: group.column(c) for c in range(5)}
            assert columns["image"].compression == "UNCOMPRESSED", split
            assert columns["uri"].compression == "SNAPPY", split
            assert meta.num_row_groups == -(-meta.num_rows // store.rows_per_group())


def _write_view_shards(folder, stored: int, rows_per_file: list[int], group: int) -> list[str]:
    """Raw shards of random pixels with ``label`` and ``sha256`` columns, as prepared
    training shards have; row groups of ``group`` rows."""
    rng = np.random.default_rng(5)
    start, names = 0, []
    for k, n in enumerate(rows_per_file):
        labels = np.arange(start, start + n) % 3
        images = [rng.integers(0, 256, (stored, stored, 3), np.uint8).tobytes() for _ in labels]
        sha = [hashlib.sha256(b).hexdigest() for b in images]
        table = pa.table(
            {"image": pa.array(images, pa.binary()), "label": pa.array(labels), "sha256": sha}
        )
        pq.write_table(table, folder / f"v{k}.parquet", row_group_size=group)
        names.append(f"v{k}.parquet")
        start += n
    return names


@pytest.mark.parametrize(
    "augment", [{"preset": "none"}, {"preset": "seed"}, {"preset": "light", "mixup_alpha": 0.4}]
)
def test_a_task_delivers_its_row_groups_views_in_order_bit_for_bit(tmp_path, augment):
    # The task writes every row group's views into one output array; before, each row
    # group's rows were made apart and concatenated. The same images and labels, in the
    # same order, bit for bit.
    from tljob.config.augment import AugmentSection
    from tljob.data.stream import _read_units, decode_all
    from tljob.data.views import TrainingViews, training_views

    names = _write_view_shards(tmp_path, 20, [10, 7], group=3)
    folder = storage.resolve(str(tmp_path))
    units = shard_units(folder, names)
    views = TrainingViews(AugmentSection.model_validate(augment), seed=3, num_classes=3)
    batch = {k: np.array([u[k] for u in units[::-1]]) for k in ("path", "row_group", "rows")}
    got = _read_units(batch, folder.fs, 20, "raw", 16, views)
    expected = []
    for unit in units[::-1]:
        table = pq.ParquetFile(unit["path"]).read_row_group(unit["row_group"])
        stored = decode_all(table["image"], 20, "raw")
        sha = table["sha256"].to_numpy(zero_copy_only=False)
        expected.append(training_views(stored, table["label"].to_numpy(), sha, views, 16, 0))
    np.testing.assert_array_equal(got["image"], np.concatenate([e["image"] for e in expected]))
    np.testing.assert_array_equal(got["label"], np.concatenate([e["label"] for e in expected]))
    assert (
        got["image"].shape == (17, 16, 16, 3) and got["label"].dtype == expected[0]["label"].dtype
    )
    assert len({e["image"].tobytes() for e in expected}) == len(expected)  # distinct groups


def test_validation_rows_of_several_row_groups_in_order_and_one_hot(tmp_path):
    from tljob.data.stream import _read_units

    names = _write_shards(tmp_path, 12, [10, 7], group=3)
    folder = storage.resolve(str(tmp_path))
    units = shard_units(folder, names)
    batch = {k: np.array([u[k] for u in units[1:5]]) for k in ("path", "row_group", "rows")}
    got = _read_units(batch, folder.fs, 12, "raw", 12, one_hot_classes=20)
    labels = [3, 4, 5, 6, 7, 8, 9, 10, 11, 12]  # groups 1-2 of s0, then 0 of s1 (s0 ends at 9)
    assert np.argmax(got["label"], axis=1).tolist() == labels
    assert got["label"].dtype == np.float32 and got["label"].sum() == len(labels)
    assert [int(img[0, 0, 0]) for img in got["image"]] == labels
    # a row group whose row count differs from the footer's the stream was built with
    batch["rows"] = batch["rows"] + np.array([0, 1, 0, 0])
    with pytest.raises(RuntimeError, match=r"row group 2: 3 rows, not 4"):
        _read_units(batch, folder.fs, 12, "raw", 12)
