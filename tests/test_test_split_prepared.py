"""The test split prepared on the session's Ray, at a tiny size: the manifest's counts,
shards disjoint from train and val by uri and by content, the dry-run's count, the
datasets the driver gives the trainer never reading a test shard (access times), and a
``data.test_source`` in shards of its own (the rules without Ray: ``test_test_split.py``)."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
from conftest import scan_file, write_digits_tree

from tljob import storage
from tljob.config import load_config
from tljob.data.listing import check_listing, list_images
from tljob.data.split import split_listing
from tljob.report import data_summary_line

pytestmark = pytest.mark.ray


def _job(data: Path, *overrides: str):
    return load_config(
        None,
        [
            f"data.source={data}",
            "model.weights=none",
            "data.image_size=32",
            "data.seed=1",
            "train.batch_size=4",
            "scaling.num_workers=1",
            f"run.storage_path={data.parent / 'runs'}",
            *overrides,
        ],
    )


def _paths(items) -> list[str]:
    return [item["path"] for item in items]


def age(paths: list[Path]) -> None:
    """Access times well before modification times: the next read moves the access time
    past the modification time (the 'relatime' rule)."""
    for path in paths:
        st = path.stat()
        os.utime(path, ns=(st.st_mtime_ns - 10**11, st.st_mtime_ns))


def read_since_aged(paths: list[Path]) -> list[Path]:
    return [p for p in paths if p.stat().st_atime_ns >= p.stat().st_mtime_ns]


def _shard_rows(folder: Path, files: list[str]) -> dict[str, str]:
    """uri -> sha256 of every row of the shards ``files`` (relative to ``folder``)."""
    rows: dict[str, str] = {}
    for name in files:
        table = pq.read_table(folder / name, columns=["uri", "sha256"])
        rows.update(zip(table["uri"].to_pylist(), table["sha256"].to_pylist(), strict=True))
    return rows


def test_a_prepared_test_split_is_counted_disjoint_and_never_read_by_training(
    tmp_path, ray_connected
):
    from tljob.data.pipeline import prepare_data
    from tljob.run.dry_run import dry_run

    data = write_digits_tree(tmp_path / "digits", classes=3, per_class=10)
    original = sorted((data / "digit_0").iterdir())[0]
    shutil.copy(original, data / "digit_0" / "zz_copy.png")  # set aside before the split
    job = _job(data, "data.test_fraction=0.2", "scaling.cpus_per_worker=0.5")

    said: list[str] = []
    dry_run(job, None, say=said.append)
    # the listing's split: digit_0's copy still counts there
    assert (
        "ok     batches       19 train + 6 val + 6 test images; 1 worker x `train.batch_size` "
        "4: 4 steps per epoch"
    ) in said
    (would,) = [line for line in said if line.startswith("would  prepare")]

    prepared = prepare_data(job)
    assert would == f"would  prepare       decode 31 images into {prepared.prepared_uri}"
    assert data_summary_line(prepared.summary()) == (
        "data: 3 classes; images 31 listed = 18 train + 6 val + 6 test + 1 duplicates + 0 "
        "quarantined; train images 18 used (digit_0 6, digit_1 6, digit_2 6); val images 6 "
        "used (digit_0 2, digit_1 2, digit_2 2); test images 6 used (digit_0 2, digit_1 2, "
        "digit_2 2)"
    )
    assert prepared.duplicates == [
        {"path": str(data / "digit_0" / "zz_copy.png"), "duplicate_of": str(original)}
    ]
    folder = Path(prepared.prepared_uri)
    manifest = json.loads((folder / "manifest.json").read_text())
    assert {name: split["used"] for name, split in manifest["per_split"].items()} == {
        "train": 18,
        "val": 6,
        "test": 6,
    }
    assert manifest["listed"] == 31 == 18 + 6 + 6 + len(manifest["duplicates"])
    rows = {name: _shard_rows(folder, files) for name, files in manifest["files"].items()}
    assert {name: len(r) for name, r in rows.items()} == {"train": 18, "val": 6, "test": 6}
    for a, b in (("train", "val"), ("train", "test"), ("val", "test")):
        assert not set(rows[a]) & set(rows[b])  # by uri
        assert not set(rows[a].values()) & set(rows[b].values())  # by content
    # the test images are the rule's: the usable images split with the seed
    listing = list_images(str(data))
    scans = {p: scan_file(p) for c in listing.classes for p in listing.files[c]}
    expected = split_listing(check_listing(listing, scans).usable, 0.2, 1, 0.2)
    assert sorted(rows["test"]) == _paths(expected.test)
    assert sorted(rows["val"]) == _paths(expected.val)

    # The datasets the driver gives the trainer, iterated as training does: every
    # train and val shard is read, no test shard is.
    from tljob.run.driver import _trainer

    shards = {name: [folder / f for f in files] for name, files in manifest["files"].items()}
    assert all(shards.values())
    run_dir = storage.resolve(str(tmp_path / "runs" / "split"))
    trainer = _trainer(job, prepared, 0, run_dir, None)
    assert set(trainer.datasets) == {"train", "val"}
    age([p for paths in shards.values() for p in paths])
    counted = {}
    for name, dataset in trainer.datasets.items():
        dataset = dataset() if callable(dataset) else dataset  # train: the per-attempt factory
        counted[name] = sum(len(b["label"]) for b in dataset.iter_batches(batch_size=None))
    assert counted == {"train": 18, "val": 6}
    assert read_since_aged(shards["train"] + shards["val"]) == shards["train"] + shards["val"]
    assert read_since_aged(shards["test"]) == []
    # PreparedData.test streams the test split as validation's is streamed
    batches = list(prepared.test.iter_batches(batch_size=None))
    labels = np.concatenate([b["label"] for b in batches])
    assert labels.dtype == np.int64 and np.bincount(labels).tolist() == [2, 2, 2]
    assert {b["image"].shape[1:] for b in batches} == {(32, 32, 3)}
    assert read_since_aged(shards["test"]) == shards["test"]


def test_a_test_source_is_prepared_into_its_own_shards_without_copies_of_training_images(
    tmp_path, ray_connected
):
    from tljob.data.pipeline import prepare_data

    data = write_digits_tree(tmp_path / "digits", classes=3, per_class=6)
    fresh = write_digits_tree(tmp_path / "fresh", classes=3, per_class=9)
    tests = tmp_path / "tests"
    for c in (0, 2):
        (tests / f"digit_{c}").mkdir(parents=True)
        for path in sorted((fresh / f"digit_{c}").iterdir())[6:]:
            shutil.move(path, tests / f"digit_{c}" / path.name)
    copied = sorted((data / "digit_2").iterdir())[1]
    shutil.copy(copied, tests / "digit_2" / "copy.png")
    job = _job(data, f"data.test_source={tests}")

    prepared = prepare_data(job)
    assert prepared.counts["test"].per_class_used == {"digit_0": 3, "digit_1": 0, "digit_2": 3}
    assert prepared.duplicates == [
        {"path": str(tests / "digit_2" / "copy.png"), "duplicate_of": str(copied)}
    ]
    summary = prepared.summary()
    used = {name: split["used"] for name, split in summary["splits"].items()}
    assert used == {"train": 15, "val": 3, "test": 6}
    assert summary["listed"] == 18 + 7 == sum(used.values()) + 1
    folder = Path(prepared.prepared_uri)
    manifest = json.loads((folder / "manifest.json").read_text())
    test_rows = _shard_rows(folder, manifest["files"]["test"])
    assert sorted(test_rows) == sorted(str(p) for p in tests.rglob("*.png") if p.name != "copy.png")
    train_val = {
        **_shard_rows(folder, manifest["files"]["train"]),
        **_shard_rows(folder, manifest["files"]["val"]),
    }
    assert not set(test_rows.values()) & set(train_val.values())
    assert len(train_val) == 18  # the training data is data.source's alone
    assert prepared.test is not None and prepared.test.count() == 6
    assert prepare_data(job).reused  # the same sources: the same fingerprint
