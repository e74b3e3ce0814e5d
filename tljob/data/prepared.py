"""Prepared data on storage: its fingerprint, its manifest, ``quarantine.csv``, publishing.

Pure (no Ray, no TensorFlow). Layout under ``<data.prepared_path>`` (default
``<run.storage_path>/prepared``)::

    <fingerprint>/manifest.json            written last: the prepared data is complete
    <fingerprint>/<attempt>/train/*.parquet
    <fingerprint>/<attempt>/val/*.parquet
    <fingerprint>/<attempt>/test/*.parquet  only with a test split
    <fingerprint>/<attempt>/quarantine.csv uri,split,reason of every quarantined image

The fingerprint is a sha256 over the shard format version, the listing (every uri with its
size and modification time, its class, and what was set aside at listing), the classes,
the split settings (``val_fraction``, ``seed``, and ``test_fraction`` when above 0) and the
store settings (stored size, pixel format and quality, pixel limit, shard size); with
``data.test_source``, that source's listing too; with a list of sources in ``data.source``,
each source's URI in order and the entries listed again by a later source. Unchanged data
and settings give the same fingerprint, so the shards are reused; any change gives a new
folder. Settings without a test split give the fingerprint they gave before test splits
existed, so prepared data made then is reused (its manifest has no ``test`` split).

Each preparation writes under its own ``<attempt>`` prefix (a random id), so concurrent
preparations of one fingerprint never write the same file. The manifest is created
exclusively and names its attempt: the first preparation to publish wins, a later one
discards its attempt and uses the winner's. A folder without ``manifest.json`` is
incomplete (an interrupted preparation) and is prepared again. Attempt folders that are not
the published one and saw no write for ``ABANDONED_AFTER_S`` are removed whenever the
prepared data is used (``remove_abandoned_attempts``).
"""

from __future__ import annotations

import csv
import hashlib
import heapq
import io
import itertools
import json
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import pyarrow.fs as pafs

from tljob import storage
from tljob.data.listing import ImageListing
from tljob.data.sources import ObjectStat

# 2: row groups of about ROW_GROUP_BYTES, the image column uncompressed.
FORMAT_VERSION = 2
# One row group is one read and one task of the training stream: large enough for few
# object-store GETs, small enough that every CPU gets several per epoch.
ROW_GROUP_BYTES = 8 * 1024 * 1024
MANIFEST_FILE = "manifest.json"
QUARANTINE_FILE = "quarantine.csv"
SPLITS = ("train", "val")
TEST_SPLIT = "test"  # the third split: in a manifest only when the data has a test split
# An attempt folder untouched this long belongs to no running preparation.
ABANDONED_AFTER_S = 6 * 3600.0
# Quarantine happens before the split (a bad file must not shape it), so quarantined
# images belong to no split; quarantine.csv says so in its split column.
NO_SPLIT = "none"


@dataclass(frozen=True)
class StoreSettings:
    """How prepared images are stored (all of it is part of the fingerprint)."""

    stored_size: int  # side of the training split's images (a margin for random crops)
    val_size: int  # side of the validation split's images: the training size
    pixels: str  # "raw" | "jpeg" | "png"
    quality: int
    max_image_pixels: int
    target_bytes: int

    def size_of(self, split: str) -> int:
        """Side of the stored images of ``split`` (validation and test: the training size)."""
        return self.stored_size if split == "train" else self.val_size

    def _row_bytes(self) -> int:
        raw = self.stored_size * self.stored_size * 3
        return {"raw": raw, "jpeg": raw // 8, "png": raw // 2}[self.pixels] + 256

    def rows_per_shard(self) -> int:
        """Rows in one shard of about ``target_bytes``, from the expected bytes per image."""
        return max(1, self.target_bytes // self._row_bytes())

    def rows_per_group(self) -> int:
        """Rows in one Parquet row group of about ``ROW_GROUP_BYTES`` (at most a shard)."""
        return max(1, min(self.rows_per_shard(), ROW_GROUP_BYTES // self._row_bytes()))

    def write_options(self) -> dict[str, Any]:
        """pyarrow Parquet writer options of a shard: row groups of ``rows_per_group``, the
        image column uncompressed (raw pixels barely compress and snappy made reading them
        about ten times slower, measured; encoded pixels are compressed already)."""
        return {
            "row_group_size": self.rows_per_group(),
            "compression": {
                "image": "NONE",
                "label": "SNAPPY",
                "class_name": "SNAPPY",
                "uri": "SNAPPY",
                "sha256": "SNAPPY",
            },
        }


@dataclass(frozen=True)
class SplitSettings:
    val_fraction: float
    seed: int
    test_fraction: float = 0.0

    def described(self) -> dict[str, Any]:
        """What the fingerprint covers: ``test_fraction`` only when there is a test split,
        so settings without one keep the fingerprint they had before it existed."""
        found = asdict(self)
        if not self.test_fraction:
            del found["test_fraction"]
        return found


# Stands for an array of objects in the fingerprint's JSON text while the rest is encoded;
# the array itself is encoded and hashed piece by piece (a million objects as one list and
# one string cost the driver hundreds of MB).
_OBJECTS_AT = "\x00objects {}\x00"


def _objects(listing: ImageListing, stats: Mapping[str, ObjectStat], at: str) -> dict[str, Any]:
    described: dict[str, Any] = {
        "objects": at,
        "set_aside_at_listing": sorted((q["path"], q["reason"]) for q in listing.quarantined),
    }
    if listing.sources:  # a list of sources; one source gives the fingerprint it always had
        described["sources"] = listing.sources
        described["listed_again"] = sorted(d["path"] for d in listing.listed_again)
    return described


def _hash_objects(
    digest: Any, listing: ImageListing, stats: Mapping[str, ObjectStat], chunk: int = 10_000
) -> None:
    """Hash the JSON array of ``[uri, class, size, mtime_ns]`` of every file of ``listing``,
    sorted, as ``json.dumps`` writes it. Each class's files are sorted and a listing holds a
    uri in one class, so merging the classes by uri gives that order without a sort."""
    merged = heapq.merge(
        *(zip(listing.files[name], itertools.repeat(name)) for name in listing.classes),
        key=lambda pair: pair[0],
    )
    digest.update(b"[")
    first = True
    while True:
        part = [
            _dumps([uri, name, stats[uri].size, stats[uri].mtime_ns])
            for uri, name in itertools.islice(merged, chunk)
        ]
        if not part:
            break
        digest.update((b"" if first else b",") + ",".join(part).encode("utf-8"))
        first = False
    digest.update(b"]")


def _dumps(value: Any) -> str:
    return json.dumps(value, sort_keys=True, separators=(",", ":"))


def fingerprint(
    listing: ImageListing,
    stats: Mapping[str, ObjectStat],
    split: SplitSettings,
    store: StoreSettings,
    test_listing: ImageListing | None = None,
) -> str:
    """Hex id of the prepared data for this listing and these settings (see module doc);
    ``test_listing``: that of ``data.test_source`` (``stats`` must hold its uris too).
    The sha256 of one JSON text (keys sorted), hashed in pieces."""
    described = {
        "format_version": FORMAT_VERSION,
        "classes": listing.classes,
        **_objects(listing, stats, _OBJECTS_AT.format(0)),
        "split": split.described(),
        "store": asdict(store),
    }
    listings = [listing]
    if test_listing is not None:
        described["test_source"] = _objects(test_listing, stats, _OBJECTS_AT.format(1))
        listings.append(test_listing)
    text = _dumps(described)
    digest = hashlib.sha256()
    for index, part in enumerate(listings):
        before, text = text.split(_dumps(_OBJECTS_AT.format(index)), 1)
        digest.update(before.encode("utf-8"))
        _hash_objects(digest, part, stats)
    digest.update(text.encode("utf-8"))
    return digest.hexdigest()[:24]


@dataclass
class PreparedManifest:
    """``manifest.json``: what the shards hold, and the accounting of every listed image."""

    fingerprint: str
    attempt: str
    classes: list[str]
    store: dict[str, Any]
    listed: int
    # split -> {used, per_class_used}; "train", "val", and "test" when there is a test split
    per_split: dict[str, dict[str, Any]]
    files: dict[str, list[str]]  # split -> shard paths relative to the fingerprint folder
    duplicates: list[dict[str, str]] = field(default_factory=list)  # {path, duplicate_of}
    quarantined: list[dict[str, str]] = field(default_factory=list)  # {path, reason}
    format_version: int = FORMAT_VERSION

    def to_json(self) -> str:
        return json.dumps(asdict(self), indent=1)

    @classmethod
    def from_json(cls, text: str) -> PreparedManifest:
        return cls(**json.loads(text))


def prepared_dir(root: str, fp: str) -> storage.Location:
    try:
        return storage.resolve(root).join(fp)
    except storage.StorageError as e:
        raise storage.StorageError(f"`data.prepared_path` ({root!r}): {e}") from None


def read_manifest(folder: storage.Location) -> PreparedManifest | None:
    """The published manifest of ``folder``, or None when there is none (or an older
    format, which is prepared again)."""
    loc = folder.join(MANIFEST_FILE)
    if not storage.exists(loc):
        return None
    manifest = PreparedManifest.from_json(storage.read_text(loc))
    return manifest if manifest.format_version == FORMAT_VERSION else None


def publish_first(
    folder: storage.Location,
    name: str,
    manifest: Any,
    read_published: Callable[[storage.Location], Any],
) -> Any:
    """Publish ``manifest`` (``to_json()``, naming its ``attempt`` folder) as ``folder/name``
    unless another writer already did; return the one published: ours, or the winner's
    (then our attempt is deleted). A published one that ``read_published`` cannot read (an
    older format: None) is replaced."""
    if storage.create_exclusive(folder.join(name), manifest.to_json().encode()):
        return manifest
    winner = read_published(folder)
    if winner is None:
        storage.write_text(folder.join(name), manifest.to_json())
        return manifest
    storage.delete_dir(folder.join(manifest.attempt))
    return winner


def publish(folder: storage.Location, manifest: PreparedManifest) -> PreparedManifest:
    """Publish ``manifest`` unless another preparation already did (``publish_first``)."""
    return publish_first(folder, MANIFEST_FILE, manifest, read_manifest)


def remove_abandoned_attempts(
    folder: storage.Location, keep: str, max_age_s: float = ABANDONED_AFTER_S
) -> list[str]:
    """Delete the attempt folders of ``folder`` other than ``keep`` (the published one)
    in which nothing was written for ``max_age_s`` seconds: what interrupted preparations
    left. A younger one may belong to a preparation still running, and is kept. Returns
    the names removed."""
    now_ns = time.time_ns()
    newest: dict[str, int] = {}
    empty: dict[str, int] = {}
    for info in folder.fs.get_file_info(pafs.FileSelector(folder.path, recursive=True)):
        name = info.path[len(folder.path) :].strip("/").split("/", 1)[0]
        if name in (keep, MANIFEST_FILE) or name.startswith("."):
            continue
        mtime = info.mtime_ns if info.mtime_ns is not None else now_ns
        if info.type == pafs.FileType.File:
            newest[name] = max(newest.get(name, 0), mtime)
        else:  # a folder's time counts only while it holds no file
            empty.setdefault(name, mtime)
    newest = {**empty, **newest}
    removed = sorted(n for n, t in newest.items() if now_ns - t > max_age_s * 1e9)
    for name in removed:
        storage.delete_dir(folder.join(name))
    return removed


def quarantine_csv(quarantined: Sequence[Mapping[str, str]]) -> str:
    """``uri,split,reason``, one row per quarantined image, in path order."""
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(["uri", "split", "reason"])
    for q in quarantined:
        writer.writerow([q["path"], NO_SPLIT, q["reason"]])
    return buf.getvalue()
