"""Input images: listing, labelling, splitting, checking and streaming them with Ray Data.

Driver side (cheap, paths only): ``list_images`` (in ``tljob.listing``) lists
``<source>/<class>/**/<image>`` and builds one sorted class -> index map for the whole run;
each class is split into train/validation with the configured seed. Cluster side (Ray
Data): one scan decodes every listed file once to find the corrupt ones (quarantined,
never silently dropped), then each epoch streams the good files through decode + bilinear
resize into uint8 ``image`` / int64 ``label`` rows.

Accounting: for each split, ``listed == used + quarantined``; files that are not images,
sit outside a class folder, are hidden or are reached through a symlink cycle are counted in
``skipped`` at listing time.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
import ray
import ray.data

from tljob import storage
from tljob.config import DataSection
from tljob.images import ImageDecodeError, decode_rgb, resize_bilinear_uint8
from tljob.listing import DataError, ImageListing, list_images

__all__ = [
    "DataError",
    "ImageListing",
    "PreparedData",
    "find_corrupt",
    "list_images",
    "prepare_data",
    "split_stratified",
]

_ROWS_PER_BLOCK = 256
_DECODE_BATCH = 64


@dataclass
class SplitCounts:
    listed: int
    used: int
    quarantined: int
    per_class_used: dict[str, int]


@dataclass
class PreparedData:
    """What training needs from the data, plus the accounting written to the run."""

    classes: list[str]
    train: ray.data.Dataset
    val: ray.data.Dataset
    counts: dict[str, SplitCounts]
    quarantined: list[dict[str, str]]  # {path, split, reason}
    skipped: list[dict[str, str]]  # {path, reason}

    def summary(self) -> dict[str, Any]:
        return {
            "classes": len(self.classes),
            "splits": {name: asdict(c) for name, c in self.counts.items()},
            "skipped_at_listing": len(self.skipped),
            "skipped_reasons": dict(Counter(s["reason"] for s in self.skipped)),
        }


def split_stratified(
    listing: ImageListing, val_fraction: float, seed: int
) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """Split every class by ``val_fraction`` with a per-class generator seeded from ``seed``.

    Returns (train, val) lists of ``{"path", "label"}``; labels index ``listing.classes``.
    A class of n >= 2 images puts between 1 and n-1 in validation. Deterministic: the same
    listing, fraction and seed always give the same split, independent of worker count.
    """
    train: list[dict[str, Any]] = []
    val: list[dict[str, Any]] = []
    for label, name in enumerate(listing.classes):
        paths = listing.files[name]
        n = len(paths)
        n_val = 0 if n < 2 else min(max(round(n * val_fraction), 1), n - 1)
        order = np.random.default_rng([seed, label]).permutation(n)
        for rank, i in enumerate(order):
            (val if rank < n_val else train).append({"path": paths[i], "label": label})
    # Interleave classes so every block of the stream mixes them (a local shuffle buffer
    # cannot fix class-sorted blocks).
    np.random.default_rng([seed, 1_000_003]).shuffle(train)
    val.sort(key=lambda item: item["path"])
    return train, val


def _read(path: str) -> bytes:
    return storage.read_bytes(storage.resolve(path))


def _scan_batch(batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Decode each file once; keep only the reason for files that fail."""
    reasons = []
    for path in batch["path"]:
        try:
            decode_rgb(_read(str(path)))
            reasons.append("")
        except (ImageDecodeError, OSError) as e:
            reasons.append(f"corrupt_image: {e}")
    return {"path": batch["path"], "reason": np.array(reasons, dtype=object)}


def decode_and_resize_batch(batch: dict[str, np.ndarray], image_size: int) -> dict[str, Any]:
    """Ray Data batch fn: ``{"path", "label"}`` -> uint8 ``image`` (N, S, S, 3) + ``label``."""
    images = np.empty((len(batch["path"]), image_size, image_size, 3), dtype=np.uint8)
    for i, path in enumerate(batch["path"]):
        images[i] = resize_bilinear_uint8(decode_rgb(_read(str(path))), image_size)
    return {"image": images, "label": batch["label"].astype(np.int64)}


def _dataset(items: list[dict[str, Any]]) -> ray.data.Dataset:
    blocks = max(1, -(-len(items) // _ROWS_PER_BLOCK))
    return ray.data.from_items(items, override_num_blocks=blocks)


def find_corrupt(items: list[dict[str, Any]]) -> dict[str, str]:
    """Decode every file of ``items`` on the cluster; return {path: reason} for failures."""
    if not items:
        return {}
    scanned = _dataset([{"path": it["path"]} for it in items]).map_batches(
        _scan_batch, batch_size=_DECODE_BATCH
    )
    bad: dict[str, str] = {}
    for batch in scanned.iter_batches(batch_size=4096, batch_format="numpy"):
        for path, reason in zip(batch["path"], batch["reason"], strict=True):
            if reason:
                bad[str(path)] = str(reason)
    return bad


def image_dataset(items: list[dict[str, Any]], image_size: int) -> ray.data.Dataset:
    """A lazy stream of decoded, resized images for ``items`` (re-read every epoch)."""
    return _dataset(items).map_batches(
        decode_and_resize_batch, fn_kwargs={"image_size": image_size}, batch_size=_DECODE_BATCH
    )


def prepare_data(
    data_cfg: DataSection, image_size: int, listing: ImageListing | None = None
) -> PreparedData:
    """List (unless ``listing`` is given), split and check the images of ``data_cfg``;
    return training-ready datasets. Needs a running Ray."""
    if listing is None:
        listing = list_images(data_cfg.source, data_cfg.max_images_per_class)
    train_items, val_items = split_stratified(listing, data_cfg.val_fraction, data_cfg.seed)
    if not val_items:
        raise DataError(
            f"`data.val_fraction` ({data_cfg.val_fraction}) leaves no validation images: "
            "every class needs at least 2 images"
        )
    bad = find_corrupt(train_items + val_items)
    counts: dict[str, SplitCounts] = {}
    quarantined: list[dict[str, str]] = []
    good: dict[str, list[dict[str, Any]]] = {}
    for split, items in (("train", train_items), ("val", val_items)):
        good[split] = [it for it in items if it["path"] not in bad]
        quarantined += [
            {"path": it["path"], "split": split, "reason": bad[it["path"]]}
            for it in items
            if it["path"] in bad
        ]
        per_class = Counter(listing.classes[it["label"]] for it in good[split])
        counts[split] = SplitCounts(
            listed=len(items),
            used=len(good[split]),
            quarantined=len(items) - len(good[split]),
            per_class_used={c: per_class.get(c, 0) for c in listing.classes},
        )
    if not good["train"] or not good["val"]:
        raise DataError(
            f"`data.source` ({data_cfg.source!r}): after quarantining {len(bad)} unreadable "
            "image(s) a split is empty; see the listed files"
        )
    return PreparedData(
        classes=listing.classes,
        train=image_dataset(good["train"], image_size).randomize_block_order(),
        val=image_dataset(good["val"], image_size),
        counts=counts,
        quarantined=quarantined,
        skipped=listing.skipped,
    )
