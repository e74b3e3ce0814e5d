"""Listing, labelling, splitting and checking images; decoding into the pipeline."""

from __future__ import annotations

import io
import os
import shutil
from pathlib import Path

import numpy as np
import pytest
from conftest import scan_file, write_digits_tree
from PIL import Image

from tljob.config import load_config
from tljob.data.listing import check_listing
from tljob.data.pipeline import (
    DataError,
    list_images,
    prepare_data,
    split_stratified,
)
from tljob.data.prepared import StoreSettings
from tljob.data.shards import prepare_bytes
from tljob.data.stream import to_training_rows
from tljob.images import ImageDecodeError, decode_rgb
from tljob.report import data_summary_line, data_summary_table


def test_classes_and_labels_come_from_sorted_folders(tmp_path):
    root = write_digits_tree(tmp_path / "d", classes=3, per_class=4)
    (root / "digit_1").rename(root / "b_one")
    listing = list_images(str(root))
    assert listing.classes == ["b_one", "digit_0", "digit_2"]
    assert [len(listing.files[c]) for c in listing.classes] == [4, 4, 4]
    train, val = split_stratified(listing, 0.25, seed=0)
    for item in train + val:
        assert Path(item["path"]).parent.name == listing.classes[item["label"]]


def test_non_images_and_stray_files_are_skipped_and_counted(tmp_path):
    root = write_digits_tree(tmp_path / "d", classes=2, per_class=3)
    (root / "README.txt").write_text("about")
    (root / "digit_0" / "notes.csv").write_text("a,b")
    (root / "digit_1" / ".DS_Store").write_bytes(b"\0")
    (root / "digit_1" / "nested").mkdir()
    Image.new("RGB", (5, 5)).save(root / "digit_1" / "nested" / "deep.JPG")
    listing = list_images(str(root))
    assert sorted((Path(s["path"]).name, s["reason"]) for s in listing.skipped) == [
        (".DS_Store", "hidden"),
        ("README.txt", "outside_class_folder"),
        ("notes.csv", "not_an_image_file"),
    ]
    assert len(listing.files["digit_1"]) == 4  # images in sub-folders count, any case


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (lambda r: None, "is not an existing directory"),
        (lambda r: r.mkdir(), "has no class folders"),
        (
            lambda r: (
                (r / "cats").mkdir(parents=True)
                or (r / "dogs").mkdir()
                or Image.new("L", (4, 4)).save(r / "cats" / "a.png")
            ),
            "class folder(s) 'dogs' hold no image files",
        ),
        (
            lambda r: (
                (r / "cats").mkdir(parents=True)
                or Image.new("L", (4, 4)).save(r / "cats" / "a.png")
            ),
            "has one class ('cats'); classification needs at least two class folders",
        ),
    ],
)
def test_unusable_trees_are_clear_errors(tmp_path, make, message):
    root = tmp_path / "images"
    make(root)
    with pytest.raises(DataError) as err:
        list_images(str(root))
    assert message in str(err.value)
    assert str(root) in str(err.value)


def test_empty_source_and_unsupported_scheme():
    with pytest.raises(DataError, match="`data.source` is empty"):
        list_images("")
    with pytest.raises(DataError, match="the gs:// scheme is not supported"):
        list_images("gs://bucket/images")


def test_split_is_stratified_deterministic_and_complete(tmp_path):
    root = write_digits_tree(tmp_path / "d", classes=4, per_class=10)
    (root / "digit_3" / "0003.png").unlink()  # uneven class: 9 images
    listing = list_images(str(root))
    train, val = split_stratified(listing, 0.2, seed=3)
    val_per_class = np.bincount([v["label"] for v in val], minlength=4).tolist()
    assert val_per_class == [2, 2, 2, 2]  # round(10*0.2)=2, round(9*0.2)=2
    assert len(train) == 39 - 8
    all_paths = [p for c in listing.classes for p in listing.files[c]]
    assert sorted(i["path"] for i in train + val) == sorted(all_paths)
    assert not {i["path"] for i in train} & {i["path"] for i in val}
    again_train, again_val = split_stratified(list_images(str(root)), 0.2, seed=3)
    assert again_val == val and again_train == train
    _, other_val = split_stratified(listing, 0.2, seed=4)
    assert {i["path"] for i in other_val} != {i["path"] for i in val}


def test_split_keeps_one_image_classes_in_training(tmp_path):
    root = write_digits_tree(tmp_path / "d", classes=2, per_class=2)
    for extra in sorted((root / "digit_1").iterdir())[1:]:
        extra.unlink()
    train, val = split_stratified(list_images(str(root)), 0.9, seed=0)
    assert [i["label"] for i in val] == [0]  # class 0: 2 images -> 1 val; class 1: none
    assert sorted(i["label"] for i in train) == [0, 1]


def _png_bytes(mode: str, size=(6, 4), color=None) -> bytes:
    buf = io.BytesIO()
    Image.new(mode, size, color).save(buf, format="PNG")
    return buf.getvalue()


@pytest.mark.parametrize(
    ("mode", "color", "pixel"),
    [
        ("L", 200, [200, 200, 200]),
        ("RGBA", (10, 20, 30, 0), [10, 20, 30]),
        ("RGB", (1, 2, 3), [1, 2, 3]),
        ("P", 7, None),
    ],
)
def test_decode_converts_every_mode_to_rgb(mode, color, pixel):
    image = decode_rgb(_png_bytes(mode, color=color))
    assert image.shape == (4, 6, 3) and image.dtype == np.uint8
    if pixel is not None:
        assert image[0, 0].tolist() == pixel


def test_decode_rejects_truncated_and_garbage():
    data = _png_bytes("RGB", size=(64, 64), color=(9, 9, 9))
    for bad in (data[: len(data) // 2], b"not an image at all"):
        with pytest.raises(ImageDecodeError):
            decode_rgb(bad)


def test_stored_rows_feed_uint8_at_training_size(tmp_path):
    store = StoreSettings(37, 32, "raw", 0, 10**8, 10**6)
    stored = prepare_bytes(_png_bytes("L", size=(8, 8), color=100), store)
    assert stored.problem == "" and len(stored.image) == 37 * 37 * 3
    out = to_training_rows(
        {"image": np.array([stored.image] * 2, dtype=object), "label": np.array([1, 0])},
        stored_size=37,
        pixels="raw",
        image_size=32,
    )
    assert out["image"].shape == (2, 32, 32, 3) and out["image"].dtype == np.uint8
    assert int(out["image"].min()) == int(out["image"].max()) == 100
    assert out["label"].dtype == np.int64 and out["label"].tolist() == [1, 0]


def _job(root: Path, *overrides: str):
    return load_config(
        None,
        [
            f"data.source={root}",
            "data.image_size=32",
            "model.weights=none",
            f"run.storage_path={root.parent / 'runs'}",
            *overrides,
        ],
    )


def test_corrupt_files_are_quarantined_and_counted(tmp_path, ray_connected):
    root = write_digits_tree(tmp_path / "d", classes=3, per_class=10)
    victims = [sorted((root / f"digit_{c}").iterdir())[i] for c, i in ((0, 0), (2, 5))]
    victims[0].write_bytes(victims[0].read_bytes()[:50])  # truncated PNG
    victims[1].write_bytes(b"\x89PNG but not really")
    (root / "digit_1" / "todo.txt").write_text("x")
    job = _job(root, "data.val_fraction=0.3")
    prepared = prepare_data(job)
    assert prepared.quarantined == [
        {"path": str(victims[0]), "reason": "corrupt_image: OSError: image file is truncated"},
        {"path": str(victims[1]), "reason": "corrupt_image: not a recognised image format"},
    ]
    counts = prepared.counts
    # quarantined before the split: 9 good images in classes 0 and 2, 10 in class 1
    assert counts["val"].per_class_used == {"digit_0": 3, "digit_1": 3, "digit_2": 3}
    assert counts["train"].per_class_used == {"digit_0": 6, "digit_1": 7, "digit_2": 6}
    assert prepared.listed == 30 == counts["train"].used + counts["val"].used + 2
    assert prepared.train.count() == counts["train"].used == 19
    assert prepared.val.count() == counts["val"].used == 9
    assert prepared.summary()["skipped_at_listing"] == 1
    rows = prepared.val.take_all()
    assert {r["image"].shape for r in rows} == {(32, 32, 3)}
    listing = list_images(str(root))
    scans = {p: scan_file(p) for c in listing.classes for p in listing.files[c]}
    _, val_items = split_stratified(check_listing(listing, scans).usable, 0.3, seed=0)
    assert sorted(r["label"] for r in rows) == sorted(v["label"] for v in val_items)


def test_scan_of_clean_data_finds_nothing(tmp_path):
    root = write_digits_tree(tmp_path / "d", classes=2, per_class=5)
    scans = [scan_file(str(p)) for p in sorted(root.rglob("*.png"))]
    assert [s.problem for s in scans] == [""] * 10
    assert len({s.sha256 for s in scans}) == 10


def test_prepare_data_accounts_for_every_listed_file(tmp_path, ray_connected):
    root = write_digits_tree(tmp_path / "d", classes=3, per_class=10)
    zeros, ones, twos = (sorted((root / f"digit_{c}").iterdir()) for c in range(3))
    (root / "digit_0" / "copy").mkdir()
    shutil.copy(zeros[0], root / "digit_0" / "copy" / "dup.png")  # duplicate in class
    shutil.copy(ones[4], root / "digit_2" / "stray.png")  # the same bytes in two classes
    twos[7].write_bytes(b"\x89PNG\r\n\x1a\n" + b"\0" * 30)  # corrupt
    (root / "digit_1" / ".ipynb_checkpoints").mkdir()
    shutil.copy(ones[0], root / "digit_1" / ".ipynb_checkpoints" / "x-checkpoint.png")
    os.symlink(".", root / "digit_0" / "loopdir")
    (root / "digit_1" / "notes.txt").write_text("x")
    job = _job(root, "data.val_fraction=0.3", "data.seed=5")
    prepared = prepare_data(job)

    summary = prepared.summary()
    assert summary == {
        "classes": 3,
        "listed": 32,
        "duplicates": 1,
        "quarantined": 3,
        "splits": {
            "train": {"used": 19, "per_class_used": {"digit_0": 7, "digit_1": 6, "digit_2": 6}},
            "val": {"used": 9, "per_class_used": {"digit_0": 3, "digit_1": 3, "digit_2": 3}},
        },
        "quarantined_reasons": {"corrupt_image": 1, "label_conflict": 2},
        "skipped_at_listing": 3,
        "skipped_reasons": {"hidden": 1, "directory_cycle": 1, "not_an_image_file": 1},
    }
    assert prepared.test is None  # no test split: no "test" in the splits either
    splits = summary["splits"]
    assert summary["listed"] == (
        splits["train"]["used"]
        + splits["val"]["used"]
        + summary["duplicates"]
        + summary["quarantined"]
    )
    conflict = "label_conflict: identical bytes are filed under classes 'digit_1', 'digit_2'"
    assert prepared.quarantined == [
        {"path": str(ones[4]), "reason": conflict},
        {"path": str(twos[7]), "reason": "corrupt_image: not a recognised image format"},
        {"path": str(root / "digit_2" / "stray.png"), "reason": conflict},
    ]
    assert prepared.duplicates == [
        {"path": str(root / "digit_0" / "copy" / "dup.png"), "duplicate_of": str(zeros[0])}
    ]
    report = prepared.report()
    assert report["duplicate_files"] == prepared.duplicates
    assert report["quarantined_files"] == prepared.quarantined
    assert report["skipped_files"] == [
        {"path": str(root / "digit_0" / "loopdir"), "reason": "directory_cycle"},
        {"path": str(root / "digit_1" / ".ipynb_checkpoints"), "reason": "hidden"},
        {"path": str(root / "digit_1" / "notes.txt"), "reason": "not_an_image_file"},
    ]
    train_rows, val_rows = prepared.train.take_all(), prepared.val.take_all()
    assert (len(train_rows), len(val_rows)) == (19, 9)
    # every digit image is distinct, so no picture may be in both splits
    assert not {r["image"].tobytes() for r in train_rows} & {r["image"].tobytes() for r in val_rows}
    assert data_summary_table(summary) == [
        "images            32 listed = 19 train + 9 val + 1 duplicates + 3 quarantined",
        "train images      19 used (digit_0 7, digit_1 6, digit_2 6)",
        "val images        9 used (digit_0 3, digit_1 3, digit_2 3)",
        "quarantined       corrupt_image 1, label_conflict 2",
        "skipped files     3 at listing (directory_cycle 1, hidden 1, not_an_image_file 1)",
    ]
    assert data_summary_line(summary).startswith(
        "data: 3 classes; images 32 listed = 19 train + 9 val + 1 duplicates + 3 quarantined; "
    )


def test_a_split_left_empty_by_duplicates_is_a_clear_error(tmp_path, ray_connected):
    root = write_digits_tree(tmp_path / "d", classes=2, per_class=2)
    for c in (0, 1):
        first, second = sorted((root / f"digit_{c}").iterdir())
        shutil.copy(first, second)  # two paths, one content: one image per class
    job = _job(root, "data.val_fraction=0.5")
    with pytest.raises(DataError) as err:
        prepare_data(job)
    zeros, ones = (sorted((root / f"digit_{c}").iterdir()) for c in (0, 1))
    assert str(err.value).endswith(
        "after setting aside 2 duplicate(s) and quarantining 0 file(s) the val split is empty; "
        "every class needs at least 2 distinct readable images. Set aside: "
        f"{zeros[1]} (duplicate of {zeros[0]}); {ones[1]} (duplicate of {ones[0]})"
    )


def test_end_of_run_table_states_the_data_accounting():
    from tljob.report import format_summary, set_aside_lines

    data = {
        "classes": 2,
        "listed": 12,
        "duplicates": 1,
        "quarantined": 2,
        "splits": {
            "train": {"used": 6, "per_class_used": {"cat": 3, "dog": 3}},
            "val": {"used": 3, "per_class_used": {"cat": 2, "dog": 1}},
        },
        "quarantined_reasons": {"label_conflict": 2},
        "skipped_at_listing": 0,
        "skipped_reasons": {},
    }
    summary = {
        "backbone": "vgg16",
        "weights": "none",
        "image_size": 32,
        "num_workers": 2,
        "classes": ["cat", "dog"],
        "data": data,
        "stages": {"head": {"epochs": 1, "best_val_accuracy": 0.5, "final_val_accuracy": 0.5}},
        "best": {"global_epoch": 1, "stage": "head", "epoch": 1, "val_accuracy": 0.5},
        "exported_model": {
            "path": "model/model.keras",
            "correct": 1,
            "images": 3,
            "accuracy": 1 / 3,
        },
        "run_dir": "/runs/r",
        "checkpoint": "/runs/r/checkpoint_epoch_0001",
        "wall_seconds": 3.0,
    }
    lines = format_summary(summary, "tljob run 'r'").splitlines()
    start = lines.index("classes           2: cat, dog") + 1
    assert lines[start : start + 4] == [
        "images            12 listed = 6 train + 3 val + 1 duplicates + 2 quarantined",
        "train images      6 used (cat 3, dog 3)",
        "val images        3 used (cat 2, dog 1)",
        "quarantined       label_conflict 2",
    ]
    assert lines[start + 4] == ""  # nothing skipped at listing: no row
    quarantined = [{"path": f"/d/{i}.png", "reason": "corrupt_image: x"} for i in range(12)]
    duplicates = [{"path": "/d/b.png", "duplicate_of": "/d/a.png"}]
    assert set_aside_lines(quarantined, duplicates)[-3:] == [
        "  quarantined /d/9.png: corrupt_image: x",
        "  ... 2 more quarantined in data_report.json",
        "  duplicate /d/b.png of /d/a.png",
    ]
