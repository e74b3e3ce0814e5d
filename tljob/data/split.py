"""The stratified split of a listing into training, validation and test images. Pure (no
Ray, no TensorFlow, no reads): ``split_listing`` draws each class's images in a seeded
order; ``tljob.data.plan`` makes the split once per run or sweep."""

from __future__ import annotations

import functools
from collections.abc import Mapping
from typing import Any, NamedTuple

import numpy as np

from tljob import output
from tljob.data.listing import DataError, ImageListing

log = output.logger("data")


class SplitItem(tuple):
    """One image of a split: ``item["path"]`` (its uri) and ``item["label"]`` (an index
    into the listing's classes), as a dict would give them. A 2-tuple: a split of a million
    images holds a million of them, and a dict each was 0.13 GB more."""

    __slots__ = ()
    _FIELDS = {"path": 0, "label": 1}

    def __new__(cls, path: str, label: int) -> SplitItem:
        return tuple.__new__(cls, (path, label))

    def __getnewargs__(self) -> tuple[str, int]:
        return (self[0], self[1])

    def __getitem__(self, key: Any) -> Any:
        return tuple.__getitem__(self, self._FIELDS[key] if isinstance(key, str) else key)


class Split(NamedTuple):
    """The stratified split of a listing: lists of ``SplitItem`` (labels index the
    listing's classes). ``train`` is in a seeded order that mixes the classes; ``val`` and
    ``test`` are sorted by path."""

    train: list[SplitItem]
    val: list[SplitItem]
    test: list[SplitItem]


# A class needs this many images for a test split: 1 test, 1 validation, 1 training.
MIN_IMAGES_WITH_TEST = 3


def split_counts(n: int, val_fraction: float, test_fraction: float = 0.0) -> tuple[int, int]:
    """(test, validation) images of a class of ``n`` (``n`` >= ``MIN_IMAGES_WITH_TEST``
    when ``test_fraction`` > 0). Test first: round(n * test_fraction), at least 1 and
    leaving 2; then validation: round(n * val_fraction), at least 1 and leaving 1 for
    training (none when fewer than 2 are left, as for a class of 1 without a test split)."""
    n_test = min(max(round(n * test_fraction), 1), n - 2) if test_fraction > 0 else 0
    rest = n - n_test
    n_val = 0 if rest < 2 else min(max(round(n * val_fraction), 1), rest - 1)
    return n_test, n_val


def split_listing(
    listing: ImageListing, val_fraction: float, seed: int, test_fraction: float = 0.0
) -> Split:
    """Split every class into test, validation and training images.

    Each class's images (sorted paths) are put in one order drawn from a generator seeded
    with ``[seed, label]``; the first ``split_counts(n)[0]`` are test, the next
    ``split_counts(n)[1]`` validation, the rest training. So the test images of a class
    depend only on its paths, ``seed`` and ``test_fraction``, never on ``val_fraction``;
    with ``test_fraction`` 0 the split is the train/validation split tljob always made.
    Deterministic, independent of worker count. A class of no images gives none (refused
    elsewhere as a class without training images); with ``test_fraction`` > 0 a class of
    1 or 2 images raises ``DataError`` naming it and its count.
    """
    if test_fraction > 0:
        few = {
            name: len(listing.files.get(name, []))
            for name in listing.classes
            if 0 < len(listing.files.get(name, [])) < MIN_IMAGES_WITH_TEST
        }
        if few:
            raise too_few_for_test_error(few, test_fraction)
    train: list[SplitItem] = []
    val: list[SplitItem] = []
    test: list[SplitItem] = []
    make = functools.partial(tuple.__new__, SplitItem)  # no Python call per item
    for label, name in enumerate(listing.classes):
        paths = listing.files.get(name, [])
        n_test, n_val = split_counts(len(paths), val_fraction, test_fraction)
        order = np.random.default_rng([seed, label]).permutation(len(paths))
        for rank, i in enumerate(order):
            item = make((paths[i], label))
            (test if rank < n_test else val if rank < n_test + n_val else train).append(item)
    # Interleave classes so every block of the stream mixes them (a local shuffle buffer
    # cannot fix class-sorted blocks).
    np.random.default_rng([seed, 1_000_003]).shuffle(train)
    val.sort(key=path_of)
    test.sort(key=path_of)
    # Each split is made once per run (tljob.data.plan): this line lets a test count them.
    log.debug(
        f"split_stratified: {len(train)} training, {len(val)} validation, {len(test)} test images"
    )
    return Split(train=train, val=val, test=test)


def split_stratified(
    listing: ImageListing, val_fraction: float, seed: int
) -> tuple[list[SplitItem], list[SplitItem]]:
    """The (train, val) split without a test split (``split_listing`` with
    ``test_fraction`` 0). A class of n >= 2 images puts between 1 and n-1 in validation."""
    split = split_listing(listing, val_fraction, seed)
    return split.train, split.val


def too_few_for_test_error(counts: Mapping[str, int], test_fraction: float) -> DataError:
    """The refusal of a test split when classes (``counts``: class -> usable images) have
    fewer than ``MIN_IMAGES_WITH_TEST`` images."""
    described = ", ".join(
        f"{name!r} ({n} image{'' if n == 1 else 's'})" for name, n in counts.items()
    )
    return DataError(
        f"`data.test_fraction` ({test_fraction}): class{'' if len(counts) == 1 else 'es'} "
        f"{described} cannot be split three ways: with a test split every class needs at "
        f"least {MIN_IMAGES_WITH_TEST} usable images (1 test, 1 validation, 1 training). "
        "Add images to the class, remove it, or set `data.test_fraction: 0` (a separate "
        "test set can come from `data.test_source`)"
    )


def path_of(item: SplitItem) -> str:
    """``item["path"]``, read by unpacking: the keyed ``__getitem__`` is a Python call,
    which a sort of a million items would pay a million times."""
    path, _ = item
    return path
