"""Listing, labelling, splitting and checking images; decoding into the pipeline."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pytest
from conftest import write_digits_tree
from PIL import Image

from tljob.config import load_config
from tljob.data import (
    DataError,
    decode_and_resize_batch,
    find_corrupt,
    list_images,
    prepare_data,
    split_stratified,
)
from tljob.images import ImageDecodeError, decode_rgb


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


def test_decode_and_resize_batch_feeds_uint8_at_training_size(tmp_path):
    path = tmp_path / "x.png"
    Image.new("L", (8, 8), 100).save(path)
    out = decode_and_resize_batch(
        {"path": np.array([str(path), str(path)], dtype=object), "label": np.array([1, 0])},
        image_size=32,
    )
    assert out["image"].shape == (2, 32, 32, 3) and out["image"].dtype == np.uint8
    assert int(out["image"].min()) == int(out["image"].max()) == 100
    assert out["label"].dtype == np.int64 and out["label"].tolist() == [1, 0]


def test_corrupt_files_are_quarantined_and_counted(tmp_path, ray_connected):
    root = write_digits_tree(tmp_path / "d", classes=3, per_class=10)
    victims = [sorted((root / f"digit_{c}").iterdir())[i] for c, i in ((0, 0), (2, 5))]
    victims[0].write_bytes(victims[0].read_bytes()[:40])  # truncated PNG
    victims[1].write_bytes(b"\x89PNG but not really")
    (root / "digit_1" / "todo.txt").write_text("x")
    job = load_config(
        None,
        [
            f"data.source={root}",
            "data.image_size=32",
            "data.val_fraction=0.3",
            "model.weights=none",
        ],
    )
    prepared = prepare_data(job.data, job.image_size)
    counts = prepared.counts
    assert sorted(q["path"] for q in prepared.quarantined) == sorted(map(str, victims))
    assert all(q["reason"].startswith("corrupt_image:") for q in prepared.quarantined)
    for split in ("train", "val"):
        c = counts[split]
        assert c.listed == c.used + c.quarantined
    assert counts["train"].listed + counts["val"].listed == 30
    assert counts["train"].quarantined + counts["val"].quarantined == 2
    assert counts["val"].listed == 9  # 3 per class
    assert prepared.train.count() == counts["train"].used
    assert prepared.val.count() == counts["val"].used
    assert prepared.summary()["skipped_at_listing"] == 1
    rows = prepared.val.take_all()
    assert {r["image"].shape for r in rows} == {(32, 32, 3)}
    _, val_items = split_stratified(list_images(str(root)), 0.3, seed=0)
    bad = {str(v) for v in victims}
    assert sorted(r["label"] for r in rows) == sorted(
        v["label"] for v in val_items if v["path"] not in bad
    )


def test_find_corrupt_on_clean_data_finds_nothing(tmp_path, ray_connected):
    root = write_digits_tree(tmp_path / "d", classes=2, per_class=5)
    items = [{"path": str(p)} for p in sorted(root.rglob("*.png"))]
    assert find_corrupt(items) == {}


def test_a_run_is_not_resumed_with_other_classes_or_network(tmp_path):
    from tljob import storage
    from tljob.config import dump_config
    from tljob.train import RunMismatchError, check_resumable

    run_dir = storage.resolve(str(tmp_path / "runs" / "r"))
    job = load_config(None, ["data.source=/x", "model.weights=none", "data.image_size=64"])
    check_resumable(run_dir, job, ["a", "b"])  # nothing saved yet: a fresh run
    storage.write_text(run_dir.join("labels.json"), '{"0": "a", "1": "b"}')
    storage.write_text(run_dir.join("config.yaml"), dump_config(job))
    longer = load_config(
        None,
        ["data.source=/x", "model.weights=none", "data.image_size=64", "train.stages.1.epochs=20"],
    )
    check_resumable(run_dir, longer, ["a", "b"])  # more epochs: fine, it resumes
    with pytest.raises(RunMismatchError, match=r"trained on classes \['a', 'b'\], but"):
        check_resumable(run_dir, job, ["a", "b", "c"])
    other = load_config(
        None, ["data.source=/x", "model.weights=none", "data.image_size=96", "model.backbone=vgg16"]
    )
    with pytest.raises(RunMismatchError) as err:
        check_resumable(run_dir, other, ["a", "b"])
    assert "`model.backbone` ('mobilenet_v2' -> 'vgg16')" in str(err.value)
    assert "`data.image_size` (64 -> 96)" in str(err.value)
