"""Input images on the cluster: scanning, checking, splitting and streaming them with Ray Data.

Driver side (cheap, paths only, in ``tljob.data.listing``): ``list_images`` lists
``<source>/<class>/**/<image>`` and builds one sorted class -> index map for the whole run.
Cluster side (Ray Data): one scan reads and decodes every listed file once and returns its
sha256 and, for a file that cannot be used, why. Back on the driver, ``check_listing``
quarantines undecodable files and label conflicts and keeps one copy of byte-identical
files; only then is each class split into train/validation with the configured seed, so a
content can never be in both splits. Each epoch streams the kept files through decode +
bilinear resize into uint8 ``image`` / int64 ``label`` rows.

Accounting, written to ``summary.json["data"]`` and ``data_report.json``::

    listed == train.used + val.used + duplicates + quarantined

``listed``: image files found in class folders (after listing skips and
``max_images_per_class``). ``duplicates``: byte-identical copies set aside, each
``{path, duplicate_of}``. ``quarantined``: files that cannot be trusted, each
``{path, reason}``; the reason starts with its kind: ``corrupt_image``,
``unsupported_image`` (high bit depth with no known range), ``unreadable_file`` or
``label_conflict``. Files not listed at all (hidden, symlink cycles, not images, outside a
class folder) are in ``skipped`` ``{path, reason}``, counted as ``skipped_at_listing``.
"""

from __future__ import annotations

import hashlib
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
import ray
import ray.data

from tljob import storage
from tljob.config import DataSection
from tljob.data.listing import (
    CheckedListing,
    DataError,
    ImageListing,
    ImageScan,
    check_listing,
    list_images,
    split_stratified,
)
from tljob.images import ImageDecodeError, UnsupportedImageError, decode_rgb, resize_bilinear_uint8
from tljob.report import clean_reason

__all__ = [
    "DataError",
    "ImageListing",
    "ImageScan",
    "PreparedData",
    "SplitCounts",
    "decode_and_resize_batch",
    "find_corrupt",
    "image_dataset",
    "list_images",
    "prepare_data",
    "scan_images",
    "split_stratified",
]

_ROWS_PER_BLOCK = 256
_DECODE_BATCH = 64


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
    counts: dict[str, SplitCounts]  # "train" / "val"
    listed: int
    duplicates: list[dict[str, str]]  # {path, duplicate_of}
    quarantined: list[dict[str, str]]  # {path, reason}
    skipped: list[dict[str, str]]  # {path, reason}

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
        """``data_report.json``: the counts, and every file set aside with why."""
        return {
            **self.summary(),
            "quarantined_files": self.quarantined,
            "duplicate_files": self.duplicates,
            "skipped_files": self.skipped,
        }


def _count_by(keys: Iterable[str]) -> dict[str, int]:
    return dict(sorted(Counter(keys).items()))  # sorted: the same data, the same text


def _read(path: str) -> bytes:
    return storage.read_bytes(storage.resolve(path))


def scan_file(path: str) -> ImageScan:
    """Read one file, hash its bytes and decode it once (the pixels are not kept)."""
    try:
        data = _read(path)
    except OSError as e:
        return ImageScan(sha256="", problem=f"unreadable_file: {clean_reason(str(e))}")
    digest = hashlib.sha256(data).hexdigest()
    try:
        decode_rgb(data)
    except UnsupportedImageError as e:
        return ImageScan(digest, f"unsupported_image: {e}")
    except ImageDecodeError as e:
        return ImageScan(digest, f"corrupt_image: {e}")
    return ImageScan(digest, "")


def _scan_batch(batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    scans = [scan_file(str(path)) for path in batch["path"]]
    return {
        "path": batch["path"],
        "sha256": np.array([s.sha256 for s in scans], dtype=object),
        "problem": np.array([s.problem for s in scans], dtype=object),
    }


def decode_and_resize_batch(batch: dict[str, np.ndarray], image_size: int) -> dict[str, Any]:
    """Ray Data batch fn: ``{"path", "label"}`` -> uint8 ``image`` (N, S, S, 3) + ``label``."""
    images = np.empty((len(batch["path"]), image_size, image_size, 3), dtype=np.uint8)
    for i, path in enumerate(batch["path"]):
        images[i] = resize_bilinear_uint8(decode_rgb(_read(str(path))), image_size)
    return {"image": images, "label": batch["label"].astype(np.int64)}


def _dataset(items: list[dict[str, Any]]) -> ray.data.Dataset:
    blocks = max(1, -(-len(items) // _ROWS_PER_BLOCK))
    return ray.data.from_items(items, override_num_blocks=blocks)


def scan_images(paths: Sequence[str]) -> dict[str, ImageScan]:
    """Read, hash and decode every file of ``paths`` once, on the cluster (Ray Data)."""
    if not paths:
        return {}
    scanned = _dataset([{"path": p} for p in paths]).map_batches(
        _scan_batch, batch_size=_DECODE_BATCH
    )
    scans: dict[str, ImageScan] = {}
    for batch in scanned.iter_batches(batch_size=4096, batch_format="numpy"):
        for path, digest, problem in zip(
            batch["path"], batch["sha256"], batch["problem"], strict=True
        ):
            scans[str(path)] = ImageScan(sha256=str(digest), problem=str(problem))
    return scans


def find_corrupt(items: list[dict[str, Any]]) -> dict[str, str]:
    """{path: reason} for the files of ``items`` (``{"path", ...}``) that cannot be used."""
    scans = scan_images([it["path"] for it in items])
    return {path: scan.problem for path, scan in scans.items() if scan.problem}


def image_dataset(items: list[dict[str, Any]], image_size: int) -> ray.data.Dataset:
    """A lazy stream of decoded, resized images for ``items`` (re-read every epoch)."""
    return _dataset(items).map_batches(
        decode_and_resize_batch, fn_kwargs={"image_size": image_size}, batch_size=_DECODE_BATCH
    )


def prepare_data(
    data_cfg: DataSection, image_size: int, listing: ImageListing | None = None
) -> PreparedData:
    """List (unless ``listing`` is given), check, dedupe and split the images of
    ``data_cfg``; return training-ready datasets and the accounting. Needs a running Ray."""
    if listing is None:
        listing = list_images(data_cfg.source, data_cfg.max_images_per_class)
    # Fail before the scan when no class could give a validation image anyway.
    if not split_stratified(listing, data_cfg.val_fraction, data_cfg.seed)[1]:
        raise DataError(
            f"`data.val_fraction` ({data_cfg.val_fraction}) leaves no validation images: "
            "every class needs at least 2 images"
        )
    paths = [p for name in listing.classes for p in listing.files[name]]
    checked = check_listing(listing, scan_images(paths))
    train_items, val_items = split_stratified(checked.usable, data_cfg.val_fraction, data_cfg.seed)
    items = {"train": train_items, "val": val_items}
    for split, split_items in items.items():
        if not split_items:
            raise DataError(
                f"`data.source` ({data_cfg.source!r}): after setting aside "
                f"{len(checked.duplicates)} duplicate(s) and quarantining "
                f"{len(checked.quarantined)} file(s) the {split} split is empty; every class "
                f"needs at least 2 distinct readable images. Set aside: {_examples(checked)}"
            )
    counts = {split: _split_counts(listing.classes, it) for split, it in items.items()}
    _check_accounting(len(paths), counts, checked)
    return PreparedData(
        classes=listing.classes,
        train=image_dataset(items["train"], image_size).randomize_block_order(),
        val=image_dataset(items["val"], image_size),
        counts=counts,
        listed=len(paths),
        duplicates=checked.duplicates,
        quarantined=checked.quarantined,
        skipped=listing.skipped,
    )


def _examples(checked: CheckedListing, limit: int = 5) -> str:
    """The first set-aside files, for an error raised before data_report.json exists."""
    found = [f"{q['path']} ({q['reason']})" for q in checked.quarantined]
    found += [f"{d['path']} (duplicate of {d['duplicate_of']})" for d in checked.duplicates]
    more = f" and {len(found) - limit} more" if len(found) > limit else ""
    return "; ".join(found[:limit]) + more


def _split_counts(classes: list[str], items: list[dict[str, Any]]) -> SplitCounts:
    per_class = Counter(classes[it["label"]] for it in items)
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
