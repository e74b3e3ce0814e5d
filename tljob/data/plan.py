"""The data plan of a run or a sweep: what the listing gives before any image is read,
computed once and passed down (pure: no Ray, no TensorFlow).

``plan_data`` takes a listing and computes, once: the listing's stratified split
(``split_stratified``), the images of each class in each split, the prepared data's
fingerprint (``tljob.data.prepared``; from what the listing learnt of every file, the rest
looked at) and, for a job that trains, the batch check (``tljob.preflight.check_batches``)
for its ``train.batch_size`` and ``scaling.num_workers``. ``tljob train`` builds it before
Ray starts (``tljob.run.job.plan_checked``) and hands it to the run
(``tljob.run.driver``), which hands it to preparation (``tljob.data.pipeline.prepare_data``);
``tljob prepare`` builds one without the batch check.

A sweep builds one and every trial uses it. A trial's data settings are the sweep's
(``tljob.config.sweep.trial_job`` refuses others), so its split and fingerprint are the
plan's; only the batch check can differ, when the trial searches ``train.batch_size`` or
``scaling.num_workers``: ``for_job`` gives such a trial a plan of its own, checked once for
its (batch size, workers) from the same split, and any other trial the sweep's plan as it
is.

The split here is of the listing: what training gets when every listed image is usable, the
counts the batch check is made on before any image is read. The test split
(``data.test_fraction``: drawn first from each class, ``split.split_listing``; or
``data.test_source``: its own listing, ``tljob.data.testset``) is planned here too; it takes
no part in the batch check, which is about training. Preparation splits the images
that are usable by the same rule (``split_for``); when none was set aside that is this
split, used as it is. The prepared split's counts are checked again only when set-aside
images made them smaller (``check_prepared``).
"""

from __future__ import annotations

from collections import ChainMap, Counter
from collections.abc import Mapping
from dataclasses import dataclass, replace

from tljob.config import JobConfig
from tljob.data.listing import DataError, ImageListing
from tljob.data.prepared import SplitSettings, StoreSettings, fingerprint
from tljob.data.sources import ObjectStat, listing_stats
from tljob.data.split import Split, SplitItem, split_listing
from tljob.data.testset import list_test_source, listed_test_items
from tljob.preflight.batches import check_batches

Items = tuple[SplitItem, ...]  # as ``split_listing`` gives them


def store_settings(job: JobConfig) -> StoreSettings:
    """The store settings of ``job`` (part of the fingerprint)."""
    return StoreSettings(
        stored_size=job.stored_size,
        val_size=job.image_size,
        pixels=job.data.shard_pixels,
        quality=job.data.shard_quality if job.data.shard_pixels == "jpeg" else 0,
        max_image_pixels=job.data.max_image_pixels,
        target_bytes=int(job.data.shard_target_mb * 1_000_000),
    )


@dataclass(frozen=True)
class Batches:
    """What a batch check is made for: ``train.batch_size`` and ``scaling.num_workers``."""

    batch_size: int
    num_workers: int

    @classmethod
    def of(cls, job: JobConfig) -> Batches:
        return cls(job.train.batch_size, job.scaling.num_workers)


@dataclass(frozen=True)
class DataPlan:
    """The listing of a run's data and what follows from it before any image is read."""

    listing: ImageListing
    split: SplitSettings
    store: StoreSettings
    train: Items  # the listing's split
    val: Items
    # "train" / "val" (/ "test" with a test split) -> class -> images
    per_class: Mapping[str, Mapping[str, int]]
    fingerprint: str  # of the prepared data: <data.prepared_path>/<fingerprint>
    batches: Batches | None  # what the split's counts were checked for; None: not checked
    test: Items = ()  # data.test_fraction's, or data.test_source's files not in the listing
    test_listing: ImageListing | None = None  # data.test_source's, labels as the listing's

    @property
    def has_test(self) -> bool:
        """Whether the data has a test split (``data.test_fraction`` or ``test_source``)."""
        return self.split.test_fraction > 0 or self.test_listing is not None

    def listed(self) -> int:
        """Every listed entry, of ``data.source`` and of ``data.test_source``."""
        return self.listing.listed() + (self.test_listing.listed() if self.test_listing else 0)

    def for_job(self, job: JobConfig) -> DataPlan:
        """This plan for ``job``, whose data settings must be those it was made for (a
        sweep's trial): itself when ``job``'s batches are the ones checked, else a copy
        checked for them, on the same split (``TooFewImagesError`` when they do not fit)."""
        if (self.split, self.store) != (_split_settings(job), store_settings(job)):
            raise ValueError(  # trial_job refuses such a trial: a bug in tljob if reached
                f"the data plan is for {self.split} and {self.store}, not for the job's "
                f"{_split_settings(job)} and {store_settings(job)}"
            )
        batches = Batches.of(job)
        if batches == self.batches:
            return self
        _check(batches, len(self.train), len(self.val))
        return replace(self, batches=batches)

    def labels_to_read(self) -> dict[str, int]:
        """uri -> label of every file preparation reads: ``data.source``'s, by class, then
        those of ``data.test_source`` not listed in ``data.source`` (a uri is read once)."""
        label_of = {u: i for i, c in enumerate(self.listing.classes) for u in self.listing.files[c]}
        if self.test_listing is not None:
            for i, name in enumerate(self.test_listing.classes):
                for uri in self.test_listing.files[name]:
                    label_of.setdefault(uri, i)
        return label_of

    def split_for(self, usable: ImageListing) -> Split:
        """The stratified split of ``usable`` (the listed images of ``data.source`` that can
        be trusted): the plan's own when nothing was set aside (the same classes and files
        give the same split), else a split of ``usable`` by the same settings. Its ``test``
        is ``data.test_fraction``'s (empty with ``data.test_source``, whose images are
        checked apart: ``tljob.data.testset``). ``DataError`` when a test split is asked for
        and a class has fewer than 3 usable images."""
        if usable.classes == self.listing.classes and all(
            usable.files.get(c, []) == self.listing.files.get(c, []) for c in usable.classes
        ):
            test = list(self.test) if self.test_listing is None else []
            return Split(list(self.train), list(self.val), test)
        split = self.split
        return split_listing(usable, split.val_fraction, split.seed, split.test_fraction)

    def check_prepared(self, train_images: int, val_images: int) -> None:
        """Check the prepared split's counts for the plan's batches; they were checked
        already when they are the listing's (nothing was set aside)."""
        if self.batches is None:
            raise ValueError("the data plan was made without a batch check")
        if (train_images, val_images) != (len(self.train), len(self.val)):
            _check(self.batches, train_images, val_images)


def _split_settings(job: JobConfig) -> SplitSettings:
    return SplitSettings(job.data.val_fraction, job.data.seed, job.data.test_fraction)


def _check(batches: Batches, train_images: int, val_images: int) -> None:
    check_batches(train_images, val_images, batches.batch_size, batches.num_workers)


def plan_data(job: JobConfig, listing: ImageListing, batches: bool = True) -> DataPlan:
    """The data plan of ``job`` for ``listing`` (``data.source``'s; ``data.test_source``,
    when set, is listed here); with ``batches``, its split checked for the job's batch size
    and workers (``TooFewImagesError``, exit 2). Raises ``DataError`` (exit 2) when no class
    could give a validation image, a class is too small for a test split, or the test
    source cannot be listed or has labels that are not training classes."""
    split = _split_settings(job)
    parts = split_listing(listing, split.val_fraction, split.seed, split.test_fraction)
    train, val = parts.train, parts.val
    test_listing = None
    test = parts.test
    if job.data.test_source is not None:
        test_listing = list_test_source(job.data, listing.classes)
        test = listed_test_items(test_listing, listing)
    checked = Batches.of(job) if batches else None
    if checked is not None:
        _check(checked, len(train), len(val))
    # Fail before any read when no class could give a validation image anyway.
    if not val:
        raise DataError(
            f"`data.val_fraction` ({split.val_fraction}) leaves no validation images: "
            "every class needs at least 2 images"
        )
    store = store_settings(job)
    stats: Mapping[str, ObjectStat] = listing_stats(listing, _uris(listing))
    if test_listing is not None:
        stats = ChainMap(stats, listing_stats(test_listing, _uris(test_listing)))
    named = [("train", train), ("val", val)]
    if split.test_fraction > 0 or test_listing is not None:
        named.append(("test", test))
    return DataPlan(
        listing=listing,
        split=split,
        store=store,
        train=tuple(train),
        val=tuple(val),
        per_class={name: _per_class(listing.classes, items) for name, items in named},
        fingerprint=fingerprint(listing, stats, split, store, test_listing),
        batches=checked,
        test=tuple(test),
        test_listing=test_listing,
    )


def _uris(listing: ImageListing) -> list[str]:
    return [u for name in listing.classes for u in listing.files[name]]


def _per_class(classes: list[str], items: list[SplitItem]) -> dict[str, int]:
    counts = Counter(classes[label] for _, label in items)
    return {c: counts.get(c, 0) for c in classes}
