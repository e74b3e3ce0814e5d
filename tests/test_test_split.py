"""The test split (``data.test_fraction``, ``data.test_source``): the split rule and its
exact per-class counts, disjointness, determinism, the fingerprint, the config's refusals,
the test source's checks against ``data.source``, on real files without Ray (prepared on
Ray: ``test_test_split_prepared.py``)."""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from conftest import scan_file, write_digits_tree, write_manifest, write_truncated_jpeg

from tljob.config import ConfigError, load_config
from tljob.data.listing import DataError, ImageListing, check_listing, list_images
from tljob.data.plan import plan_data, store_settings
from tljob.data.prepared import FORMAT_VERSION
from tljob.data.sources import list_source, listing_stats
from tljob.data.split import split_counts, split_listing, split_stratified
from tljob.data.testset import check_test_listing, list_test_source
from tljob.report import data_summary_line

# --- the rule: test first from each class's seeded order, then validation, then training ---


@pytest.mark.parametrize(
    ("n", "val_fraction", "test_fraction", "expected"),
    [
        (10, 0.2, 0.2, (2, 2)),
        (3, 0.2, 0.2, (1, 1)),  # the minimum: 1 test, 1 validation, 1 training
        (5, 0.2, 0.2, (1, 1)),
        (7, 0.1, 0.15, (1, 1)),
        (100, 0.1, 0.15, (15, 10)),
        (4, 0.4, 0.4, (2, 1)),  # test first: validation gets what leaves 1 for training
        (25, 0.2, 0.0, (0, 5)),  # no test split: validation as it always was
        (2, 0.2, 0.0, (0, 1)),
        (1, 0.2, 0.0, (0, 0)),  # one image without a test split: it trains
    ],
)
def test_split_counts_of_a_class(n, val_fraction, test_fraction, expected):
    assert split_counts(n, val_fraction, test_fraction) == expected


def _listing(sizes: dict[str, int]) -> ImageListing:
    return ImageListing(
        classes=sorted(sizes),
        files={c: [f"/d/{c}/{i:03d}.png" for i in range(n)] for c, n in sizes.items()},
    )


def _paths(items) -> list[str]:
    return [item["path"] for item in items]


def test_the_split_has_exact_per_class_counts_is_disjoint_and_complete():
    listing = _listing({"a": 10, "b": 3, "c": 25})
    split = split_listing(listing, 0.2, seed=0, test_fraction=0.2)

    def per_class(items):
        return [sum(item["label"] == label for item in items) for label in range(3)]

    assert per_class(split.test) == [2, 1, 5]
    assert per_class(split.val) == [2, 1, 5]
    assert per_class(split.train) == [6, 1, 15]
    train, val, test = set(_paths(split.train)), set(_paths(split.val)), set(_paths(split.test))
    assert not (train & val or train & test or val & test)
    assert train | val | test == {p for c in listing.classes for p in listing.files[c]}
    assert len(split.train) == len(train)  # no path twice
    # every item keeps its class's label
    for item in [*split.train, *split.val, *split.test]:
        assert item["path"].split("/")[2] == listing.classes[item["label"]]
    assert _paths(split.test) == sorted(test) and _paths(split.val) == sorted(val)


def test_the_test_images_are_the_first_of_each_class_seeded_order_whatever_val_fraction():
    listing = _listing({"a": 10, "b": 3, "c": 25})
    for seed in (0, 7):
        # the documented rule, written out: one order per class from [seed, label]
        want_test, want_val = [], {}
        for label, name in enumerate(listing.classes):
            order = np.random.default_rng([seed, label]).permutation(len(listing.files[name]))
            paths = [listing.files[name][i] for i in order]
            n_test = {"a": 2, "b": 1, "c": 5}[name]
            want_test += paths[:n_test]
            want_val[name] = paths[n_test:]
        tests = set()
        for val_fraction in (0.1, 0.2, 0.3, 0.5):
            split = split_listing(listing, val_fraction, seed, test_fraction=0.2)
            assert _paths(split.test) == sorted(want_test)
            tests.add(tuple(_paths(split.test)))
            # validation: the next images of the same order
            for label, name in enumerate(listing.classes):
                val = [it["path"] for it in split.val if it["label"] == label]
                assert sorted(val) == sorted(want_val[name][: len(val)])
        assert len(tests) == 1
    # without a test split, validation is the first of the same order: the old split
    for label, name in enumerate(listing.classes):
        order = np.random.default_rng([3, label]).permutation(len(listing.files[name]))
        _, val = split_stratified(listing, 0.2, 3)
        n_val = split_counts(len(order), 0.2)[1]
        assert sorted(it["path"] for it in val if it["label"] == label) == sorted(
            listing.files[name][i] for i in order[:n_val]
        )


def test_the_split_is_fixed_by_the_seed():
    listing = _listing({"a": 10, "b": 3, "c": 25})
    again = _listing({"a": 10, "b": 3, "c": 25})
    assert split_listing(listing, 0.2, 4, 0.2) == split_listing(again, 0.2, 4, 0.2)
    tests = {tuple(_paths(split_listing(listing, 0.2, seed, 0.2).test)) for seed in range(10)}
    assert len(tests) == 10


def test_a_class_too_small_for_a_test_split_is_refused_naming_it_and_its_count():
    listing = _listing({"a": 10, "b": 2, "c": 1})
    with pytest.raises(DataError) as err:
        split_listing(listing, 0.2, 0, test_fraction=0.1)
    assert str(err.value) == (
        "`data.test_fraction` (0.1): classes 'b' (2 images), 'c' (1 image) cannot be split "
        "three ways: with a test split every class needs at least 3 usable images (1 test, "
        "1 validation, 1 training). Add images to the class, remove it, or set "
        "`data.test_fraction: 0` (a separate test set can come from `data.test_source`)"
    )
    assert len(split_listing(listing, 0.2, 0).train) == 10  # fine without a test split


def test_byte_identical_files_never_straddle_the_three_splits(tmp_path):
    root = write_digits_tree(tmp_path / "d", classes=2, per_class=10)
    for c in (0, 1):
        folder = root / f"digit_{c}"
        for i, original in enumerate(sorted(folder.iterdir())[:4]):
            shutil.copy(original, folder / f"copy_{i}.png")
    listing = list_images(str(root))
    scans = {p: scan_file(p) for c in listing.classes for p in listing.files[c]}
    digest = {p: s.sha256 for p, s in scans.items()}
    checked = check_listing(listing, scans)
    assert len(checked.duplicates) == 8
    for seed in range(10):
        split = split_listing(checked.usable, 0.2, seed, test_fraction=0.2)
        contents = [{digest[p] for p in _paths(part)} for part in split]
        assert not (contents[0] & contents[1] or contents[0] & contents[2])
        assert not contents[1] & contents[2]
        assert sum(map(len, split)) + len(checked.duplicates) == listing.count() == 28


# --- the config ---


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (
            ["data.val_fraction=0.5", "data.test_fraction=0.5"],
            "`data.val_fraction` (0.5) + `data.test_fraction` (0.5) must be < 1: the rest of "
            "each class is the training split; lower one of them",
        ),
        (
            ["data.val_fraction=0.3", "data.test_fraction=0.8"],
            "`data.val_fraction` (0.3) + `data.test_fraction` (0.8) must be < 1: the rest of "
            "each class is the training split; lower one of them",
        ),
        (
            ["data.test_fraction=0.2", "data.test_source=/data/test"],
            "`data.test_fraction` (0.2) and `data.test_source` ('/data/test') are mutually "
            "exclusive: the test split comes either from `data.source` or from its own "
            "images. Set `data.test_fraction: 0` to use `data.test_source`, or remove "
            "`data.test_source`",
        ),
        (
            ["data.test_fraction=-0.1"],
            "`data.test_fraction` (-0.1): Input should be greater than or equal to 0",
        ),
        (["data.test_fraction=1"], "`data.test_fraction` (1): Input should be less than 1"),
        (
            ["data.test_fraction=.nan"],
            "`data.test_fraction` (nan): must be a finite number, not inf or nan",
        ),
    ],
)
def test_the_config_refuses_bad_test_settings_naming_fields_and_values(overrides, message):
    with pytest.raises(ConfigError) as err:
        load_config(None, ["data.source=/x", *overrides])
    assert str(err.value) == f"invalid config:\n  {message}"


def test_test_settings_default_to_no_test_split():
    job = load_config(None, ["data.source=/x", "data.test_source="])
    assert (job.data.test_fraction, job.data.test_source) == (0.0, None)
    job = load_config(None, ["data.source=/x", "data.val_fraction=0.3", "data.test_fraction=0.6"])
    assert job.data.test_fraction == 0.6


# --- the plan and the fingerprint ---


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


def _old_fingerprint(job, listing: ImageListing) -> str:
    """The fingerprint as tljob computed it before test splits existed."""
    uris = [u for c in listing.classes for u in listing.files[c]]
    stats = listing_stats(listing, uris)
    from dataclasses import asdict

    described = {
        "format_version": FORMAT_VERSION,
        "classes": listing.classes,
        "objects": sorted(
            [u, c, stats[u].size, stats[u].mtime_ns]
            for c in listing.classes
            for u in listing.files[c]
        ),  # fmt: skip
        "set_aside_at_listing": [],
        "split": {"val_fraction": job.data.val_fraction, "seed": job.data.seed},
        "store": asdict(store_settings(job)),
    }
    text = json.dumps(described, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:24]


def test_the_fingerprint_covers_the_test_split_and_is_unchanged_without_one(tmp_path):
    data = write_digits_tree(tmp_path / "digits", classes=3, per_class=10)
    tests = write_digits_tree(tmp_path / "more", classes=3, per_class=12)
    for c in range(3):  # the test source: images the training data does not hold
        for path in sorted((tests / f"digit_{c}").iterdir())[:10]:
            path.unlink()

    def plan(*overrides):
        job = _job(data, *overrides)
        return plan_data(job, list_source(job.data))

    without = plan()
    # prepared data made before test splits existed is reused
    assert without.fingerprint == _old_fingerprint(_job(data), list_images(str(data)))
    assert not without.has_test and without.test == () and "test" not in without.per_class
    fifth = plan("data.test_fraction=0.2")
    assert fifth.has_test and len(fifth.test) == 6
    assert fifth.per_class["test"] == {f"digit_{c}": 2 for c in range(3)}
    assert fifth.per_class["train"] == {f"digit_{c}": 6 for c in range(3)}
    third = plan("data.test_fraction=0.3")
    assert len({without.fingerprint, fifth.fingerprint, third.fingerprint}) == 3
    # the same listing and seed: the same test split and fingerprint, run after run
    assert plan("data.test_fraction=0.2").test == fifth.test
    assert plan("data.test_fraction=0.2").fingerprint == fifth.fingerprint
    # ... and a different val_fraction keeps the test split
    assert plan("data.test_fraction=0.2", "data.val_fraction=0.3").test == fifth.test
    source = plan(f"data.test_source={tests}")
    assert source.fingerprint not in {without.fingerprint, fifth.fingerprint}
    assert len(source.test) == 6 and (len(source.train), len(source.val)) == (24, 6)
    assert source.per_class["test"] == {f"digit_{c}": 2 for c in range(3)}
    assert source.listed() == 36
    # a test image that changes changes the fingerprint
    changed = sorted((tests / "digit_1").iterdir())[0]
    changed.write_bytes(changed.read_bytes() + b"\0")
    assert plan(f"data.test_source={tests}").fingerprint != source.fingerprint


# --- the test source: its classes, and its contents against data.source's ---


def test_a_test_source_may_hold_some_classes_but_no_unknown_label(tmp_path):
    data = write_digits_tree(tmp_path / "digits", classes=3, per_class=4)
    classes = list_images(str(data)).classes
    some = write_digits_tree(tmp_path / "some", classes=1, per_class=3)
    job = _job(data, f"data.test_source={some}")
    listing = list_test_source(job.data, classes)
    assert listing.classes == classes  # labels index the training classes
    assert {c: len(listing.files[c]) for c in classes} == {"digit_0": 3, "digit_1": 0, "digit_2": 0}

    for name in ("owl", "cat"):
        shutil.copytree(some / "digit_0", some / name)
    with pytest.raises(DataError) as err:
        plan_data(_job(data, f"data.test_source={some}"), list_images(str(data)))
    assert str(err.value) == (
        f"`data.test_source` ({str(some)!r}): labels 'cat', 'owl' are not classes of the "
        "training data ('digit_0', 'digit_1', 'digit_2'): the model cannot predict them, so "
        "a score on those images means nothing. Remove them from the test set, or add the "
        "classes to `data.source`"
    )
    manifest = write_manifest(
        tmp_path / "test.csv", [(str(p), "Digit_0") for p in some.glob("digit_0/*")]
    )
    with pytest.raises(DataError) as err:
        list_test_source(_job(data, f"data.test_source={manifest}").data, classes)
    assert str(err.value).startswith(
        f"`data.test_source` ({str(manifest)!r}): label 'Digit_0' is not a class of the "
        "training data ('digit_0', 'digit_1', 'digit_2'): the model cannot predict it"
    )
    with pytest.raises(DataError, match=r"^`data.test_source` \('/nowhere'\) is not an existing"):
        list_test_source(_job(data, "data.test_source=/nowhere").data, classes)


def test_test_images_that_copy_training_images_are_set_aside_never_tested(tmp_path):
    data = write_digits_tree(tmp_path / "digits", classes=3, per_class=6)
    fresh = write_digits_tree(tmp_path / "fresh", classes=3, per_class=9)
    tests = tmp_path / "tests"
    for c in range(3):  # 3 images of each class the training data does not hold
        (tests / f"digit_{c}").mkdir(parents=True)
        for path in sorted((fresh / f"digit_{c}").iterdir())[6:]:
            shutil.move(path, tests / f"digit_{c}" / path.name)
    train_file = {c: sorted((data / f"digit_{c}").iterdir()) for c in range(3)}
    test_file = {c: sorted((tests / f"digit_{c}").iterdir()) for c in range(3)}
    shutil.copy(train_file[1][2], tests / "digit_1" / "copy.png")  # same class: a duplicate
    shutil.copy(train_file[2][0], tests / "digit_0" / "other.png")  # another class: a conflict
    shutil.copy(test_file[0][0], tests / "digit_0" / "twice.png")  # a copy inside the test set
    broken = write_truncated_jpeg(tests / "digit_2" / "broken.jpg")
    rows = [(str(p), p.parent.name) for p in sorted(tests.rglob("*.*"))]
    rows.append((str(train_file[0][3]), "digit_0"))  # a file data.source lists itself
    manifest = write_manifest(tmp_path / "test.csv", rows)

    train_listing = list_images(str(data))
    job = _job(data, f"data.test_source={manifest}")
    listing = list_test_source(job.data, train_listing.classes)
    assert listing.listed() == 9 + 4 + 1
    every = [p for lst in (train_listing, listing) for c in lst.classes for p in lst.files[c]]
    scans = {p: scan_file(p) for p in every}
    checked = check_test_listing(listing, scans, train_listing)
    conflict = (
        "label_conflict: identical bytes are in `data.source` as class(es) 'digit_2', "
        "here as 'digit_0'"
    )
    assert checked.quarantined == [
        {"path": str(tests / "digit_0" / "other.png"), "reason": conflict},
        {"path": str(broken), "reason": scans[str(broken)].problem},
    ]
    assert checked.quarantined[1]["reason"].startswith("corrupt_image: ")
    assert checked.duplicates == sorted(
        [
            {"path": str(train_file[0][3]), "duplicate_of": str(train_file[0][3])},
            {"path": str(tests / "digit_0" / "twice.png"), "duplicate_of": str(test_file[0][0])},
            {"path": str(tests / "digit_1" / "copy.png"), "duplicate_of": str(train_file[1][2])},
        ],
        key=lambda d: d["path"],
    )
    assert {c: checked.usable.files[c] for c in listing.classes} == {
        f"digit_{c}": [str(p) for p in test_file[c]] for c in range(3)
    }
    usable = sum(len(v) for v in checked.usable.files.values())
    assert usable + len(checked.duplicates) + len(checked.quarantined) == listing.listed()
    # what training uses is untouched by the test source
    plan = plan_data(job, train_listing)
    assert (list(plan.train), list(plan.val)) == split_stratified(train_listing, 0.2, 1)
    assert str(train_file[0][3]) not in _paths(plan.test)  # listed in data.source itself


def test_the_data_summary_states_the_test_split():
    data = {
        "classes": 2,
        "listed": 21,
        "duplicates": 1,
        "quarantined": 0,
        "splits": {
            "train": {"used": 12, "per_class_used": {"a": 6, "b": 6}},
            "val": {"used": 4, "per_class_used": {"a": 2, "b": 2}},
            "test": {"used": 4, "per_class_used": {"a": 2, "b": 2}},
        },
        "skipped_at_listing": 0,
    }
    assert data_summary_line(data) == (
        "data: 2 classes; images 21 listed = 12 train + 4 val + 4 test + 1 duplicates + 0 "
        "quarantined; train images 12 used (a 6, b 6); val images 4 used (a 2, b 2); test "
        "images 4 used (a 2, b 2)"
    )
    del data["splits"]["test"]
    assert data_summary_line(data).startswith(
        "data: 2 classes; images 21 listed = 12 train + 4 val + 1 duplicates + 0 quarantined;"
    )
