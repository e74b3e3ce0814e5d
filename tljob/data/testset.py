"""The test split of ``data.test_source``: its listing, and its checks against the training
data. Pure (no Ray, no TensorFlow, no decoding).

``data.test_source`` is listed as ``data.source`` is (``tljob.data.sources``: a folder of
class folders or a ``uri,label`` manifest, local or ``s3://``; ``data.max_images_per_class``
does not apply), and may hold a subset of the classes, even one. Labels that are not
training classes are refused (exit 2, naming them): the model cannot predict them, so a
score on them means nothing. Its labels index the training classes.

Preparation reads and hashes its files with the training files, in one pass, and checks
them as ``listing.check_listing`` checks a listing (undecodable files and label conflicts
quarantined, byte-identical copies kept once); then against ``data.source``, so that no
content is both trained on and tested on:

* a test file byte-identical to a readable ``data.source`` file of the same class (one uri
  listed in both sources included) is a duplicate ``{path, duplicate_of}`` of the
  ``data.source`` file (the first in path order), and is not in the test split;
* of another class (or of several), it is quarantined as a ``label_conflict``.

The training split is never changed by the test source: it depends on ``data.source``, the
split settings and the seed alone.
"""

from __future__ import annotations

from collections.abc import Mapping

from tljob.config import DataSection
from tljob.data.listing import (
    CheckedListing,
    DataError,
    ImageListing,
    ImageScan,
    check_listing,
    list_images,
)
from tljob.data.sources import is_manifest, list_manifest
from tljob.data.split import SplitItem, path_of

FIELD = "data.test_source"


def list_test_source(data: DataSection, classes: list[str]) -> ImageListing:
    """The listing of ``data.test_source`` with the training ``classes`` as its classes
    (a class it does not hold has no file). ``DataError`` (exit 2) when it cannot be
    listed, or holds labels that are not in ``classes``, naming them."""
    source = data.test_source or ""
    if is_manifest(source):
        found = list_manifest(source, field=FIELD, min_classes=1)
    else:
        found = list_images(source, field=FIELD, min_classes=1)
    unknown = [name for name in found.classes if name not in classes]
    if unknown:
        raise DataError(
            f"`{FIELD}` ({source!r}): label{'' if len(unknown) == 1 else 's'} "
            f"{', '.join(map(repr, unknown))} "
            f"{'is not a class' if len(unknown) == 1 else 'are not classes'} of the training "
            f"data ({', '.join(map(repr, classes))}): the model cannot predict "
            f"{'it' if len(unknown) == 1 else 'them'}, so a score on those images means "
            "nothing. Remove them from the test set, or add the classes to `data.source`"
        )
    return ImageListing(
        classes=list(classes),
        files={name: found.files.get(name, []) for name in classes},
        skipped=found.skipped,
        quarantined=found.quarantined,
        quarantined_per_class=found.quarantined_per_class,
        stats=found.stats,
    )


def listed_test_items(test_listing: ImageListing, train_listing: ImageListing) -> list[SplitItem]:
    """The test split of ``test_listing`` when every listed file is usable: its files,
    sorted by path, as ``SplitItem``; a uri ``train_listing`` lists too is left
    out (it is a duplicate of itself)."""
    in_training = {u for name in train_listing.classes for u in train_listing.files[name]}
    return usable_items(test_listing, exclude=in_training)


def usable_items(
    listing: ImageListing, exclude: set[str] | frozenset[str] = frozenset()
) -> list[SplitItem]:
    """Every file of ``listing`` not in ``exclude``, sorted by path, as ``SplitItem``
    (labels index ``listing.classes``)."""
    items = [
        SplitItem(path, label)
        for label, name in enumerate(listing.classes)
        for path in listing.files.get(name, [])
        if path not in exclude
    ]
    return sorted(items, key=path_of)


def check_test_listing(
    test_listing: ImageListing, scans: Mapping[str, ImageScan], train_listing: ImageListing
) -> CheckedListing:
    """``listing.check_listing`` of the test source, then its contents checked against
    ``train_listing``'s (see the module docstring). ``scans`` must hold every path of both
    listings. Every path of ``test_listing`` ends up in exactly one of ``usable``,
    ``duplicates`` and ``quarantined``."""
    checked = check_listing(test_listing, scans)
    in_training: dict[str, tuple[set[str], str]] = {}  # sha256 -> (classes, first path)
    for name in train_listing.classes:
        for path in sorted(train_listing.files[name]):
            scan = scans[path]
            if not scan.problem:
                classes, first = in_training.get(scan.sha256, (set(), path))
                in_training[scan.sha256] = (classes | {name}, min(first, path))
    duplicates = list(checked.duplicates)
    quarantined = list(checked.quarantined)
    moved: dict[str, str] = {}  # test path -> the data.source path it copies
    usable: dict[str, list[str]] = {}
    for name in test_listing.classes:
        for path in checked.usable.files.get(name, []):
            found = in_training.get(scans[path].sha256)
            if found is None:
                usable.setdefault(name, []).append(path)
            elif found[0] == {name}:
                moved[path] = found[1]
                duplicates.append({"path": path, "duplicate_of": found[1]})
            else:
                reason = (
                    f"label_conflict: identical bytes are in `data.source` as class(es) "
                    f"{', '.join(map(repr, sorted(found[0])))}, here as {name!r}"
                )
                quarantined.append({"path": path, "reason": reason})
    # Copies of a test file that copies a data.source file name the data.source file.
    duplicates = [
        {"path": d["path"], "duplicate_of": moved.get(d["duplicate_of"], d["duplicate_of"])}
        for d in duplicates
    ]
    return CheckedListing(
        usable=ImageListing(
            classes=test_listing.classes,
            files={name: usable.get(name, []) for name in test_listing.classes},
            skipped=test_listing.skipped,
        ),
        duplicates=sorted(duplicates, key=lambda d: d["path"]),
        quarantined=sorted(quarantined, key=lambda q: q["path"]),
    )


def merge_checked(checked: CheckedListing, test: CheckedListing | None) -> CheckedListing:
    """The files set aside from both sources (``usable``: ``checked``'s, the training
    source's)."""
    if test is None:
        return checked
    return CheckedListing(
        usable=checked.usable,
        duplicates=sorted([*checked.duplicates, *test.duplicates], key=lambda d: d["path"]),
        quarantined=sorted([*checked.quarantined, *test.quarantined], key=lambda q: q["path"]),
    )


def empty_test_error(source: str, test: CheckedListing, listed: int) -> DataError:
    """The refusal of a ``data.test_source`` none of whose images is left to test on."""
    copies = len(test.duplicates)
    return DataError(
        f"`{FIELD}` ({source!r}): no test image is left: of its {listed} listed image(s), "
        f"{copies} are byte-identical copies of `data.source` images or of each other and "
        f"{len(test.quarantined)} were quarantined. A test set must hold images the model "
        "was not trained on: point `data.test_source` at other images"
    )
