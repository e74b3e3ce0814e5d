"""Input images for a run: list, prepare once into shards (or reuse them), stream splits.

``prepare_data`` is the data step of a run and of ``tljob prepare``. The driver lists the
source (``tljob.data.sources``: cheap, no reads) and plans it once (``tljob.data.plan``:
the split, the fingerprint of the listing and settings, ``tljob.data.prepared``). When
``<prepared_path>/<fingerprint>/manifest.json`` exists the shards are reused and no source
image is read. Otherwise one Ray Data pass
(``tljob.data.shards.stage_all``) reads, hashes and decodes every listed image once; the
driver quarantines undecodable files and label conflicts, keeps one copy of byte-identical
files (``listing.check_listing``) and only then splits each class with the configured seed,
so a content can never be in two splits; a second pass copies each split's rows into its
own shards, and the manifest is published last. Training streams the train and val splits
from their shards.

A test split (``data.test_fraction``: drawn first from each class's usable images; or the
images of ``data.test_source``, read in the same pass and checked against ``data.source``'s
contents, ``tljob.data.testset``) gets shards of its own, stored as validation's are, and
``PreparedData.test`` streams them (None without a test split, and for prepared data made
before test splits existed). Only ``train`` and ``val`` go to training: the test images
never take part in it, nor in the choice of the best epoch, schedules or early stopping.

Accounting, written to ``summary.json["data"]`` and ``data_report.json``::

    listed == train.used + val.used + test.used + duplicates + quarantined

``listed``: image files found in class folders (after listing skips and
``max_images_per_class``), or manifest rows, of ``data.source`` and of
``data.test_source`` (``test.used`` is 0 and absent without a test split).
``duplicates``: byte-identical copies set
aside, each ``{path, duplicate_of}``. ``quarantined``: images that cannot be trusted, each
``{path, reason}``; the reason starts with its kind: ``corrupt_image``, ``empty_file``,
``too_many_pixels``, ``unsupported_image`` (high bit depth with no known range),
``unreadable_file``, ``label_conflict``, ``unknown_label``, ``missing_object``,
``is_a_directory``, ``empty_uri`` or ``duplicate_row``. They are also in ``quarantine.csv``
beside the shards. Files not listed at all (hidden, symlink cycles, not images, outside a
class folder) are in ``skipped`` ``{path, reason}``, counted as ``skipped_at_listing``.

A class left with no training image (every image of it quarantined) is refused with exit 2,
as an empty class folder is: the prepared data is published first (its ``manifest.json``
holds the accounting, its ``quarantine.csv`` every quarantined image), so the refusal names
the file and a rerun on the same data refuses again without reading a source image. When no
split can be written at all, ``quarantine.csv`` is kept in the unpublished attempt.
"""

from __future__ import annotations

import uuid
from collections import Counter
from collections.abc import Iterable
from dataclasses import asdict, dataclass, replace
from typing import Any

import numpy as np
import ray.data

from tljob import output, storage
from tljob.config import JobConfig
from tljob.config.features import job_feature_views
from tljob.data.listing import (
    CheckedListing,
    DataError,
    ImageListing,
    ImageScan,
    check_listing,
    list_images,
    refuse_classes_without_training_images,
)
from tljob.data.plan import DataPlan, plan_data, store_settings
from tljob.data.prepared import (
    QUARANTINE_FILE,
    TEST_SPLIT,
    PreparedManifest,
    StoreSettings,
    prepared_dir,
    publish,
    quarantine_csv,
    read_manifest,
    remove_abandoned_attempts,
)
from tljob.data.shards import Progress, stage_all, write_splits
from tljob.data.sources import list_source
from tljob.data.split import SplitItem, split_stratified
from tljob.data.stream import split_dataset
from tljob.data.testset import check_test_listing, empty_test_error, merge_checked, usable_items
from tljob.data.views import TrainingViews

__all__ = [
    "DataError",
    "ImageListing",
    "ImageScan",
    "PreparedData",
    "SplitCounts",
    "list_images",
    "prepare_data",
    "split_stratified",
    "store_settings",
]

log = output.logger("data")


@dataclass
class SplitCounts:
    used: int
    per_class_used: dict[str, int]


@dataclass
class PreparedData:
    """What training needs from the data, plus the accounting written to the run."""

    classes: list[str]
    train: ray.data.Dataset
    val: ray.data.Dataset
    counts: dict[str, SplitCounts]  # "train" / "val", and "test" with a test split
    listed: int
    duplicates: list[dict[str, str]]  # {path, duplicate_of}
    quarantined: list[dict[str, str]]  # {path, reason}
    skipped: list[dict[str, str]]  # {path, reason}
    prepared_uri: str = ""  # <prepared_path>/<fingerprint>
    quarantine_uri: str = ""  # its quarantine.csv
    reused: bool = False  # the shards were already there: no source image was read
    # The test split's rows as validation's are (uint8 image, int64 label: never one-hot),
    # None without a test split. Never given to training.
    test: ray.data.Dataset | None = None
    # ``features: views K``: training's stream whose k-th execution is view k, else None
    train_views: ray.data.Dataset | None = None

    def summary(self) -> dict[str, Any]:
        """The counts (``summary.json["data"]``); see the module docstring."""
        return {
            "classes": len(self.classes),
            "listed": self.listed,
            "duplicates": len(self.duplicates),
            "quarantined": len(self.quarantined),
            "splits": {name: asdict(c) for name, c in self.counts.items()},
            "quarantined_reasons": _count_by(
                q["reason"].split(":", 1)[0] for q in self.quarantined
            ),
            "skipped_at_listing": len(self.skipped),
            "skipped_reasons": _count_by(s["reason"] for s in self.skipped),
        }

    def report(self) -> dict[str, Any]:
        """``data_report.json``: the counts, where the shards are, and every file set
        aside with why."""
        return {
            **self.summary(),
            "prepared": {
                "uri": self.prepared_uri,
                "quarantine_csv": self.quarantine_uri,
                "reused": self.reused,
            },
            "quarantined_files": self.quarantined,
            "duplicate_files": self.duplicates,
            "skipped_files": self.skipped,
        }


def _count_by(keys: Iterable[str]) -> dict[str, int]:
    return dict(sorted(Counter(keys).items()))  # sorted: the same data, the same text


def prepare_data(
    job: JobConfig, plan: DataPlan | None = None, epoch_offset: int = 0
) -> PreparedData:
    """Reuse or build the prepared shards of ``job``'s data as ``plan`` says (without one:
    list the source and plan it here, without a batch check); return training-ready
    datasets and the accounting. Needs a running Ray.

    The training dataset yields ``job.augment``'s views; its first execution is epoch
    ``epoch_offset`` (the global epochs a resumed run has done), each next one the next.

    Raises ``DataError`` (exit 2) when a split would be empty, a class has no training
    image, or more than ``data.max_bad_fraction`` of the listed images is quarantined (the
    prepared data and its ``quarantine.csv`` are kept for inspection)."""
    data_cfg = job.data
    if plan is None:
        plan = plan_data(job, list_source(data_cfg), batches=False)
    listing = plan.listing
    folder = prepared_dir(job.prepared_path, plan.fingerprint)
    manifest = read_manifest(folder)
    reused = manifest is not None
    if manifest is None:
        log.info(f"preparing {plan.listed()} images into {folder.uri}")
        manifest = _prepare(plan, folder, job)
    else:
        log.info(f"reusing prepared data {folder.uri} (fingerprint unchanged)")
    removed = remove_abandoned_attempts(folder, keep=manifest.attempt)
    if removed:
        log.info(f"removed {len(removed)} abandoned preparation attempt(s) under {folder.uri}")
    views = TrainingViews(
        section=job.augment,
        seed=job.augment.seed if job.augment.seed is not None else data_cfg.seed,
        num_classes=len(manifest.classes),
        epoch_offset=epoch_offset,
    )
    prepared = _from_manifest(
        manifest, folder, listing, job.image_size, data_cfg.seed, reused, views
    )
    if job_feature_views(job):  # executions 0, 1, ...: views 0, 1, ..., whatever the offset
        first = replace(views, epoch_offset=0)
        prepared.train_views = _split(manifest, folder, "train", job.image_size, first, None)
    # Also for prepared data published before this check existed: it is reused as it is.
    refuse_classes_without_training_images(
        data_cfg.source,
        listing,
        prepared.counts["train"].per_class_used,
        prepared.quarantined,
        prepared.duplicates,
        prepared.quarantine_uri,
    )
    _check_bad_fraction(prepared, data_cfg.max_bad_fraction)
    return prepared


def _prepare(plan: DataPlan, folder: storage.Location, job: JobConfig) -> PreparedManifest:
    """Decode every listed image once, check, dedupe and split, write the shards,
    publish."""
    listing, split, store, fp = plan.listing, plan.split, plan.store, plan.fingerprint
    attempt_id = uuid.uuid4().hex[:12]
    attempt = folder.join(attempt_id)
    label_of = plan.labels_to_read()
    uris = list(label_of)
    # A seeded order mixes the classes in every staging file, hence in every shard block.
    order = np.random.default_rng([split.seed, 7]).permutation(len(uris))
    items = [
        {
            "uri": uris[i],
            "label": label_of[uris[i]],
            "class_name": listing.classes[label_of[uris[i]]],
        }
        for i in order
    ]
    staged = stage_all(
        items,
        store,
        attempt.join("staging"),
        Progress(log.info, max(job.run.progress_seconds, 1.0)),
    )
    test_checked = None
    if plan.test_listing is not None:
        test_checked = check_test_listing(plan.test_listing, staged.scans, listing)
    source_checked = check_listing(listing, staged.scans)
    checked = merge_checked(source_checked, test_checked)
    try:
        parts = plan.split_for(source_checked.usable)
    except DataError as e:  # a class too small for a test split once images were set aside
        raise _refused_in_attempt(attempt, checked, e) from None
    by_split = {"train": parts.train, "val": parts.val}
    if test_checked is not None:
        by_split["test"] = usable_items(test_checked.usable)
        if not by_split["test"]:
            listed = plan.test_listing.listed() if plan.test_listing else 0
            error = empty_test_error(job.data.test_source or "", test_checked, listed)
            raise _refused_in_attempt(attempt, checked, error)
        if test_checked.duplicates:
            log.info(
                f"{len(test_checked.duplicates)} image(s) of `data.test_source` are copies "
                "of other images (of `data.source`, or of each other): set aside as duplicates"
            )
    elif plan.has_test:
        by_split["test"] = parts.test
    counts = {name: _split_counts(listing.classes, it) for name, it in by_split.items()}
    _check_accounting(plan.listed(), counts, checked)
    if not (parts.train and parts.val) and not all(counts["train"].per_class_used.values()):
        # No split to publish, and a class with nothing to train on: keep the list of why.
        storage.delete_dir(attempt.join("staging"))
        quarantine = attempt.join(QUARANTINE_FILE)
        storage.write_text(quarantine, quarantine_csv(checked.quarantined))
        refuse_classes_without_training_images(
            job.data.source,
            listing,
            counts["train"].per_class_used,
            checked.quarantined,
            checked.duplicates,
            quarantine.uri,
        )
    for name, split_items in by_split.items():
        if not split_items:
            storage.delete_dir(attempt)
            raise DataError(
                f"`data.source` ({job.data.source!r}): after setting aside "
                f"{len(checked.duplicates)} duplicate(s) and quarantining "
                f"{len(checked.quarantined)} file(s) the {name} split is empty; every class "
                f"needs at least 2 distinct readable images. Set aside: {_examples(checked)}"
            )
    members = {name: [path for path, _ in items] for name, items in by_split.items()}
    files = write_splits(staged, members, store, attempt)
    storage.delete_dir(attempt.join("staging"))
    storage.write_text(attempt.join(QUARANTINE_FILE), quarantine_csv(checked.quarantined))
    manifest = PreparedManifest(
        fingerprint=fp,
        attempt=attempt_id,
        classes=listing.classes,
        store=asdict(store),
        listed=plan.listed(),
        per_split={name: asdict(c) for name, c in counts.items()},
        files=files,
        duplicates=checked.duplicates,
        quarantined=checked.quarantined,
    )
    return publish(folder, manifest)


def _refused_in_attempt(
    attempt: storage.Location, checked: CheckedListing, error: DataError
) -> DataError:
    """``error``, raised before any split is written: the staging files are deleted and
    ``quarantine.csv`` kept in the unpublished attempt, which the message names."""
    storage.delete_dir(attempt.join("staging"))
    quarantine = attempt.join(QUARANTINE_FILE)
    storage.write_text(quarantine, quarantine_csv(checked.quarantined))
    return DataError(f"{error}. Every quarantined image is listed with why in {quarantine.uri}")


def _from_manifest(
    manifest: PreparedManifest,
    folder: storage.Location,
    listing: ImageListing,
    image_size: int,
    seed: int,
    reused: bool,
    views: TrainingViews | None = None,
) -> PreparedData:
    datasets = {
        name: _split(manifest, folder, name, image_size, views, seed)
        for name in manifest.files  # "train", "val", and "test" when there is one
    }
    return PreparedData(
        classes=manifest.classes,
        train=datasets["train"],
        val=datasets["val"],
        test=datasets.get(TEST_SPLIT),
        counts={name: SplitCounts(**c) for name, c in manifest.per_split.items()},
        listed=manifest.listed,
        duplicates=manifest.duplicates,
        quarantined=manifest.quarantined,
        skipped=listing.skipped,
        prepared_uri=folder.uri,
        quarantine_uri=folder.join(manifest.attempt, QUARANTINE_FILE).uri,
        reused=reused,
    )


def _split(
    manifest: PreparedManifest,
    folder: storage.Location,
    name: str,
    image_size: int,
    views: TrainingViews | None,
    seed: int | None,
) -> ray.data.Dataset:
    """``name``'s stream; training's with ``views``, in row-group orders from ``seed``."""
    soft = views is not None and views.soft_labels
    return split_dataset(
        folder,
        manifest.files[name],
        StoreSettings(**manifest.store).size_of(name),
        manifest.store["pixels"],
        image_size,
        shuffle_seed=seed if name == "train" else None,
        views=views if name == "train" else None,
        one_hot_classes=len(manifest.classes) if soft and name == "val" else 0,
    )


def _check_bad_fraction(prepared: PreparedData, limit: float) -> None:
    bad = len(prepared.quarantined)
    if prepared.listed and bad / prepared.listed > limit:
        raise DataError(
            f"`data.max_bad_fraction` ({limit}): {bad} of {prepared.listed} listed images "
            f"({bad / prepared.listed:.1%}) are quarantined, more than the limit allows. "
            f"Each is listed with why in {prepared.quarantine_uri}; fix or remove them, or "
            "raise `data.max_bad_fraction`"
        )


def _examples(checked: CheckedListing, limit: int = 5) -> str:
    """The first set-aside files, for an error raised before data_report.json exists."""
    found = [f"{q['path']} ({q['reason']})" for q in checked.quarantined]
    found += [f"{d['path']} (duplicate of {d['duplicate_of']})" for d in checked.duplicates]
    more = f" and {len(found) - limit} more" if len(found) > limit else ""
    return "; ".join(found[:limit]) + more


def _split_counts(classes: list[str], items: list[SplitItem]) -> SplitCounts:
    per_class = Counter(classes[label] for _, label in items)
    return SplitCounts(used=len(items), per_class_used={c: per_class.get(c, 0) for c in classes})


def _check_accounting(listed: int, counts: dict[str, SplitCounts], checked: CheckedListing) -> None:
    accounted = (
        sum(c.used for c in counts.values()) + len(checked.duplicates) + len(checked.quarantined)
    )
    if accounted != listed:  # a bug in tljob, never the user's data
        raise RuntimeError(
            f"data accounting is off: {listed} listed but {accounted} used, duplicate or "
            "quarantined"
        )
