"""``data.source`` as a list of sources, without Ray: the config's refusals, the merged
listing (classes, a uri listed twice, label conflicts across sources, what each source set
aside), the check after the read, and the fingerprint: one source keeps the one it always
had, a list covers every source in order (``test_data_plan.py`` prepares and trains on one)."""

from __future__ import annotations

import hashlib
import json
import shutil
from dataclasses import asdict
from pathlib import Path

import pytest
import yaml
from conftest import scan_file, write_digits_tree, write_manifest, write_truncated_jpeg

from tljob.config import ConfigError, load_config
from tljob.config.paths import make_paths_absolute
from tljob.data.listing import DataError, ImageListing, check_listing
from tljob.data.plan import plan_data, store_settings
from tljob.data.prepared import FORMAT_VERSION
from tljob.data.sources import list_source, listing_stats
from tljob.preflight.storage import Target, targets


def _job(source, tmp_path: Path, *overrides: str):
    job = load_config(
        None,
        [
            "model.weights=none",
            "data.image_size=32",
            "data.seed=1",
            "train.batch_size=2",
            "scaling.num_workers=1",
            f"run.storage_path={tmp_path / 'runs'}",
            *overrides,
        ],
    )
    job.data.source = source
    return job


def _plan(source, tmp_path: Path, *overrides: str):
    job = _job(source, tmp_path, *overrides)
    return plan_data(job, list_source(job.data))


def _old_fingerprint(job, listing: ImageListing) -> str:
    """The fingerprint of one source as tljob computed it before lists of sources."""
    uris = [u for c in listing.classes for u in listing.files[c]]
    stats = listing_stats(listing, uris)
    described = {
        "format_version": FORMAT_VERSION,
        "classes": listing.classes,
        "objects": sorted(
            [u, c, stats[u].size, stats[u].mtime_ns]
            for c in listing.classes
            for u in listing.files[c]
        ),  # fmt: skip
        "set_aside_at_listing": sorted((q["path"], q["reason"]) for q in listing.quarantined),
        "split": {"val_fraction": job.data.val_fraction, "seed": job.data.seed},
        "store": asdict(store_settings(job)),
    }
    text = json.dumps(described, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:24]


def _counts(listing: ImageListing) -> dict[str, int]:
    return {name: len(listing.files[name]) for name in listing.classes}


@pytest.fixture
def two_sources(tmp_path):
    """A folder of 3 classes x 4 images, and a manifest beside a folder of new images
    (relative uris), which also lists two of the folder's images (absolute uris): one
    under its own class, one under another, and a missing file."""
    labelled = write_digits_tree(tmp_path / "labelled", classes=3, per_class=4)
    new = write_digits_tree(tmp_path / "pseudo" / "new", classes=4, per_class=2)
    same = sorted((labelled / "digit_1").iterdir())[0]
    other = sorted((labelled / "digit_2").iterdir())[0]
    rows = [(f"new/digit_{c}/{p.name}", f"digit_{c}") for c in range(4)
            for p in sorted((new / f"digit_{c}").iterdir())]  # fmt: skip
    rows += [(str(same), "digit_1"), (str(other), "digit_0"), ("new/gone.png", "digit_3")]
    manifest = write_manifest(tmp_path / "pseudo" / "pseudo.csv", rows)
    return labelled, manifest, same, other


# --- the config ---


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ("[]", "`data.source` ([]): is an empty list: give at least one folder, manifest or "
               "s3:// URI"),
        ("[a/, '']", "`data.source` (['a/', '']): entry 1 ('') is empty: remove it, or name a "
                     "folder, a manifest or an s3:// URI"),
        ("[a/, ' ', b.csv]", "`data.source` (['a/', ' ', 'b.csv']): entry 1 (' ') is empty"),
        ("[a/, b.csv, ./a]", "`data.source` (['a/', 'b.csv', './a']): entry 2 ('./a') names "
                             "the same source as entry 0 ('a/'): its images would be listed "
                             "twice; remove one"),
        ("[s3://b/x/, s3://b/x]", "entry 1 ('s3://b/x') names the same source as entry 0 "
                                  "('s3://b/x/')"),
        ("[a/, 3]", "`data.source` (['a/', 3]): entry 1 (3) must be a folder, a manifest or an "
                    "s3:// URI (it is of type int)"),
        ("{a: 1}", "`data.source` ({'a': 1}): must be a folder, a manifest or an s3:// URI, "
                   "or a list of them (it is of type dict)"),
        ("5", "`data.source` (5): must be a folder, a manifest or an s3:// URI, or a list of "
              "them (it is of type int)"),
    ],
)  # fmt: skip
def test_the_config_refuses_bad_source_lists_naming_index_and_value(value, message):
    with pytest.raises(ConfigError) as caught:
        load_config(None, [f"data.source={value}"])
    assert message in str(caught.value)


def test_a_source_is_a_string_or_a_list_in_yaml_and_on_the_command_line(tmp_path):
    one = load_config(None, ["data.source=images/"])
    assert (one.data.source, one.data.sources) == ("images/", ("images/",))
    listed = load_config(None, ["data.source=[images/, s3://b/pseudo.csv]"])
    assert listed.data.source == ["images/", "s3://b/pseudo.csv"]
    assert listed.data.sources == ("images/", "s3://b/pseudo.csv")
    config = tmp_path / "job.yaml"
    config.write_text(yaml.safe_dump({"data": {"source": ["images/", "pseudo.csv"]}}))
    assert load_config(config).data.sources == ("images/", "pseudo.csv")
    # a single --set value replaces the file's list, as any override does
    assert load_config(config, ["data.source=other/"]).data.source == "other/"
    # and one entry of it can be set by index
    assert load_config(config, ["data.source.1=p2.csv"]).data.sources == ("images/", "p2.csv")
    assert yaml.safe_load(yaml.safe_dump(listed.record()))["data"]["source"] == listed.data.source


def test_a_sweep_makes_every_local_source_absolute_and_preflight_probes_each_s3_one(
    tmp_path, monkeypatch
):
    monkeypatch.chdir(tmp_path)
    tree = {"data": {"source": ["images/", "s3://b/pseudo.csv"]}}
    make_paths_absolute(tree)
    assert tree["data"]["source"] == [str(tmp_path / "images"), "s3://b/pseudo.csv"]
    job = load_config(None, ["data.source=[images/, s3://b/pseudo.csv, s3://c/more/]"])
    assert targets(job) == [
        Target("`data.source[1]`", "s3://b/pseudo.csv", False),
        Target("`data.source[2]`", "s3://c/more/", False),
    ]
    assert targets(load_config(None, ["data.source=s3://b/x/"])) == [
        Target("`data.source`", "s3://b/x/", False)
    ]


# --- the merged listing ---


def test_the_listings_are_merged_first_source_first(tmp_path, two_sources):
    labelled, manifest, same, other = two_sources
    listing = list_source(_job([str(labelled), str(manifest)], tmp_path).data)
    new = tmp_path / "pseudo" / "new"
    assert listing.classes == ["digit_0", "digit_1", "digit_2", "digit_3"]  # the union
    assert _counts(listing) == {"digit_0": 6, "digit_1": 6, "digit_2": 6, "digit_3": 2}
    # relative uris are relative to the manifest's folder
    assert listing.files["digit_3"] == sorted(str(p) for p in (new / "digit_3").iterdir())
    assert str(other) in listing.files["digit_2"] and str(other) not in listing.files["digit_0"]
    assert listing.listed_again == [{"path": str(same), "duplicate_of": str(same)}]
    assert listing.quarantined == [  # sorted by path
        {"path": str(other),
         "reason": f"label_conflict: `data.source[1]` ({str(manifest)!r}) lists this uri as "
                   f"'digit_0', `data.source[0]` ({str(labelled)!r}) as 'digit_2' (the earlier "
                   "source's label is used)"},
        {"path": str(tmp_path / "pseudo" / "new" / "gone.png"),
         "reason": "missing_object: no such file or object"},
    ]  # fmt: skip
    assert listing.quarantined_per_class == {
        "digit_0": [listing.quarantined[0]["reason"]],
        "digit_3": ["missing_object: no such file or object"],
    }
    assert listing.listed() == 12 + 11 == listing.count() + 2 + 1
    assert listing.sources == [str(labelled), str(manifest)]
    # the other order: the manifest's label wins, the folder's entry is the conflict
    swapped = list_source(_job([str(manifest), str(labelled)], tmp_path).data)
    assert str(other) in swapped.files["digit_0"] and swapped.listed() == 23
    (conflict,) = [q for q in swapped.quarantined if q["path"] == str(other)]
    assert conflict["reason"].startswith(
        f"label_conflict: `data.source[1]` ({str(labelled)!r}) lists this uri as 'digit_2', "
        f"`data.source[0]` ({str(manifest)!r}) as 'digit_0'"
    )


def test_data_classes_and_max_images_per_class_apply_to_the_merged_listing(tmp_path, two_sources):
    labelled, manifest, same, other = two_sources
    sources = [str(labelled), str(manifest)]
    listing = list_source(_job(sources, tmp_path, "data.classes=[digit_2, digit_1]").data)
    assert listing.classes == ["digit_2", "digit_1"] and _counts(listing) == {
        "digit_2": 6,
        "digit_1": 6,
    }
    unknown = [q for q in listing.quarantined if q["reason"].startswith("unknown_label")]
    assert len(unknown) == 6 + 2  # digit_0's 4 + 2, digit_3's 2 (its missing row stays so)
    assert {q["reason"] for q in unknown} == {
        "unknown_label: 'digit_0' is not one of `data.classes`",
        "unknown_label: 'digit_3' is not one of `data.classes`",
    }
    assert listing.listed() == 23
    capped = list_source(_job(sources, tmp_path, "data.max_images_per_class=5").data)
    assert _counts(capped) == {"digit_0": 5, "digit_1": 5, "digit_2": 5, "digit_3": 2}
    # the first 5 in sorted uri order: the labelled folder's (…/labelled/…) sort first
    assert capped.files["digit_1"][:4] == sorted(str(p) for p in (labelled / "digit_1").iterdir())
    with pytest.raises(DataError) as caught:
        list_source(_job(sources, tmp_path, "data.classes=[digit_1, digit_7]").data)
    assert str(caught.value) == (
        f"`data.classes` names 'digit_7', but no source of `data.source` ({sources!r}) has "
        "such a class (they have 'digit_0', 'digit_1', 'digit_2', 'digit_3')"
    )


def test_a_source_needs_no_class_of_its_own_but_the_merged_classes_are_checked(tmp_path):
    labelled = write_digits_tree(tmp_path / "labelled", classes=2, per_class=3)
    one = sorted((labelled / "digit_0").iterdir())[0]
    # a manifest of one class, whose one row is missing: fine, the folder has the class
    manifest = write_manifest(tmp_path / "one.csv", [(str(tmp_path / "gone.png"), "digit_1")])
    listing = list_source(_job([str(labelled), str(manifest)], tmp_path).data)
    assert _counts(listing) == {"digit_0": 3, "digit_1": 3} and len(listing.quarantined) == 1
    # a class of the manifest alone, none of whose rows is left: refused before any read
    lone = write_manifest(tmp_path / "lone.csv", [("gone.png", "digit_5"), ("x.png", "digit_5")])
    sources = [str(labelled), str(lone)]
    with pytest.raises(DataError) as caught:
        list_source(_job(sources, tmp_path).data)
    assert str(caught.value).startswith(
        f"`data.source` ({sources!r}): class 'digit_5' has no image left to train on: all 2 "
        "of its entries were set aside at listing (missing_object 2). No image was read yet."
    )
    # one class in all: refused
    single = write_manifest(tmp_path / "single.csv", [(str(one), "digit_0")])
    only = write_digits_tree(tmp_path / "only", classes=1, per_class=2)
    with pytest.raises(DataError, match=r"its sources hold 1 class\(es\) together \('digit_0'\)"):
        list_source(_job([str(only), str(single)], tmp_path).data)
    # class names that differ only in case across sources
    upper = write_manifest(tmp_path / "upper.csv", [(str(one), "DIGIT_0")])
    with pytest.raises(DataError, match="the classes of its sources 'DIGIT_0' and 'digit_0' "):
        list_source(_job([str(labelled), str(upper)], tmp_path).data)
    # a source's own errors name its index
    missing = str(tmp_path / "nowhere")
    with pytest.raises(DataError) as caught:
        list_source(_job([str(labelled), missing], tmp_path).data)
    assert str(caught.value) == f"`data.source[1]` ({missing!r}) is not an existing directory"


def test_a_uri_listed_again_follows_its_file_through_the_check(tmp_path):
    labelled = write_digits_tree(tmp_path / "labelled", classes=2, per_class=3)
    kept, copied = sorted((labelled / "digit_0").iterdir())[:2]
    shutil.copy(kept, labelled / "digit_0" / "zz_copy.png")  # byte-identical, another uri
    broken = write_truncated_jpeg(labelled / "digit_1" / "broken.jpg")
    rows = [(str(p), "digit_0") for p in (kept, labelled / "digit_0" / "zz_copy.png")]
    rows.append((str(broken), "digit_1"))
    manifest = write_manifest(tmp_path / "again.csv", rows)
    listing = list_source(_job([str(labelled), str(manifest)], tmp_path).data)
    assert len(listing.listed_again) == 3 and listing.listed() == 8 + 3
    scans = {p: scan_file(p) for c in listing.classes for p in listing.files[c]}
    checked = check_listing(listing, scans)
    copy = str(labelled / "digit_0" / "zz_copy.png")
    assert checked.duplicates == [
        {"path": str(kept), "duplicate_of": str(kept)},  # listed again, used once
        {"path": copy, "duplicate_of": str(kept)},  # the copy (by content)
        {"path": copy, "duplicate_of": str(kept)},  # the copy, listed again
    ]
    reason = scans[str(broken)].problem
    assert reason.startswith("corrupt_image")
    assert checked.quarantined == [{"path": str(broken), "reason": reason}] * 2
    used = sum(len(v) for v in checked.usable.files.values())
    assert used + len(checked.duplicates) + len(checked.quarantined) == listing.listed() == 11
    assert str(copied) in checked.usable.files["digit_0"]


# --- the fingerprint ---


def test_one_source_keeps_its_fingerprint_and_a_list_covers_every_source_in_order(
    tmp_path, two_sources
):
    labelled, manifest, same, other = two_sources
    folder = _plan(str(labelled), tmp_path)
    assert folder.fingerprint == _old_fingerprint(
        _job(str(labelled), tmp_path), list_source(_job(str(labelled), tmp_path).data)
    )
    assert _plan([str(labelled)], tmp_path).fingerprint == folder.fingerprint  # a list of one
    alone = _plan(str(manifest), tmp_path)  # a manifest with rows set aside at listing
    assert alone.listing.quarantined and alone.fingerprint == _old_fingerprint(
        _job(str(manifest), tmp_path), alone.listing
    )
    both = _plan([str(labelled), str(manifest)], tmp_path)
    assert _plan([str(labelled), str(manifest)], tmp_path).fingerprint == both.fingerprint
    swapped = _plan([str(manifest), str(labelled)], tmp_path)
    assert len({folder.fingerprint, alone.fingerprint, both.fingerprint, swapped.fingerprint}) == 4
    # two folders with nothing in common: the same images either way, but not the same list
    more = write_digits_tree(tmp_path / "more", classes=3, per_class=2)
    one_way = _plan([str(labelled), str(more)], tmp_path)
    other_way = _plan([str(more), str(labelled)], tmp_path)
    assert one_way.listing.files == other_way.listing.files
    assert one_way.fingerprint != other_way.fingerprint
    # a file of the second source that changes changes it
    changed = sorted((tmp_path / "pseudo" / "new" / "digit_3").iterdir())[0]
    changed.write_bytes(changed.read_bytes() + b"\0")
    assert _plan([str(labelled), str(manifest)], tmp_path).fingerprint != both.fingerprint
    assert both.listed() == 23 and (len(both.train), len(both.val)) == (16, 4)
