"""What ``data.source`` names: a folder per class, or a manifest of ``uri,label`` rows.

Pure (pyarrow, numpy and ``tljob.storage`` only; no Ray, no TensorFlow). Both layouts
become one ``ImageListing``: classes in label-index order, the URIs of each class (sorted),
what was skipped, and what was set aside at listing (``ImageListing.quarantined``):

* a manifest (``.csv`` or ``.parquet``; columns ``uri`` and ``label``, optionally ``size``;
  read as columns by ``tljob.data.manifest``): relative uris are relative to the manifest's
  folder, absolute ones (``/…``, ``scheme://…``) may point anywhere in the store. Classes
  are the sorted distinct labels, or ``data.classes``. A row whose label is not a class is
  ``unknown_label``; a row without a ``size`` is looked at (one ``HEAD`` on S3), and is
  ``missing_object`` when its object does not exist (a row with a size is trusted: a
  missing object is quarantined when read); a row that names a folder (a local directory,
  or an ``s3://`` prefix with objects below it but no object of its own, or any uri written
  with a trailing "/") is ``is_a_directory``; a row without a uri is ``empty_uri`` (its
  path is ``<manifest>#row=<n>``, data rows counted from 1); one uri listed under two
  labels is a ``label_conflict`` (every row), listed twice under one label a
  ``duplicate_row`` (the later rows). Labels that differ only in case are refused
  (``listing.refuse_case_variants``), and so is a class none of whose rows is left to read,
  naming the rows and why.
* a folder tree: ``listing.list_images``; with ``data.classes`` set, files in other class
  folders are ``unknown_label``, and a listed class without a folder is an error.
* a list of sources (each one of the above): each listed whole, its errors naming
  ``data.source[<index>]``, then merged into one listing (``tljob.data.merge``).

Data is only reached through ``storage.resolve`` and the ``Location``'s pyarrow filesystem,
so an object store works as a local disk does.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Mapping
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass
from itertools import repeat

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.fs as pafs

from tljob import storage
from tljob.config import DataSection
from tljob.data import manifest
from tljob.data.listing import (
    DataError,
    ImageListing,
    count_reasons,
    list_images,
    no_image_left_error,
    refuse_case_variants,
)

# Readers of manifests (``tljob.infer``) resolve their rows by the same rule.
from tljob.data.manifest import resolve_row_uri as resolve_row_uri

MANIFEST_SUFFIXES = (".csv", ".parquet")
_HEAD_CHUNK, _HEAD_THREADS = 64, 16  # object-store HEADs: paths per request batch, in flight
IS_A_DIRECTORY = (
    "is_a_directory: the manifest must list image files, not folders; list each image in "
    "this folder as its own row"
)
MISSING_OBJECT = "missing_object: no such file or object"
# More rows than this to look at (a manifest without sizes) are looked at by the lookup the
# driver plugs in (``objects_looked_at_by``: Ray tasks, ``tljob.data.lookup``), not by
# this process's threads: at a million rows that is minutes of HEADs and a GB of objects.
CLUSTER_LOOKUP_ROWS = 20_000
# What a lookup returns for uris: their sizes (-1: no such object, or a folder) and which
# are folders, aligned with them.
Lookup = Callable[[pa.Array], tuple[np.ndarray, np.ndarray]]
_plugged: list[Lookup] = []


@contextmanager
def objects_looked_at_by(lookup: Lookup) -> Iterator[None]:
    """Within the block, a manifest with more than ``CLUSTER_LOOKUP_ROWS`` rows without a
    size has them looked at by ``lookup`` (the driver's Ray tasks) instead of here."""
    _plugged.append(lookup)
    try:
        yield
    finally:
        _plugged.pop()


def look_at(uris: pa.Array) -> tuple[np.ndarray, np.ndarray]:
    """Sizes (-1: no such object, or a folder) and folder flags of ``uris``, aligned:
    in this process, or by the plugged-in lookup when there are many."""
    if _plugged and len(uris) > CLUSTER_LOOKUP_ROWS:
        return _plugged[-1](uris)
    return look_at_here(uris)


def look_at_here(uris: pa.Array) -> tuple[np.ndarray, np.ndarray]:
    """``look_at`` in this process (16 requests in flight on an object store)."""
    listed = uris.to_pylist()
    found = stat_objects(listed)
    sizes = np.fromiter((found[u].size for u in listed), dtype=np.int64, count=len(listed))
    is_dir = np.fromiter((found[u].is_dir for u in listed), dtype=bool, count=len(listed))
    return sizes, is_dir


def is_manifest(source: str) -> bool:
    """Whether ``source`` names a manifest file rather than a folder tree."""
    return source.lower().endswith(MANIFEST_SUFFIXES)


def list_source(data: DataSection) -> ImageListing:
    """The listing of ``data.source`` (either layout, or a list of sources merged by
    ``tljob.data.merge``); ``DataError`` when unusable. One source (a string, or a list of
    one) is listed as it always was, so its fingerprint is unchanged."""
    if len(data.sources) > 1:
        from tljob.data.merge import merge_listings

        listings = [_list_one_of(i, source) for i, source in enumerate(data.sources)]
        return merge_listings(data.sources, listings, data.classes, data.max_images_per_class)
    (source,) = data.sources
    if is_manifest(source):
        return list_manifest(source, data.classes, data.max_images_per_class)
    listing = list_images(source, data.max_images_per_class)
    return _restrict_classes(listing, data.classes) if data.classes else listing


def _list_one_of(index: int, source: str) -> ImageListing:
    """One source of a list, listed whole (every class, every image; one class is
    enough): ``data.classes`` and ``data.max_images_per_class`` apply to the merged
    listing. Its errors name ``data.source[<index>]``."""
    field = f"data.source[{index}]"
    if is_manifest(source):
        return list_manifest(source, field=field, min_classes=1, refuse_empty_classes=False)
    return list_images(source, field=field, min_classes=1)


def _restrict_classes(listing: ImageListing, classes: list[str]) -> ImageListing:
    missing = [c for c in classes if c not in listing.classes]
    if missing:
        raise DataError(
            f"`data.classes` names {', '.join(map(repr, missing))}, but `data.source` has no "
            f"such class folder (it has {', '.join(map(repr, listing.classes))})"
        )
    quarantined = [
        {"path": p, "reason": f"unknown_label: folder {c!r} is not one of `data.classes`"}
        for c in listing.classes
        if c not in classes
        for p in listing.files[c]
    ]
    return ImageListing(
        classes=list(classes),
        files={c: listing.files[c] for c in classes},
        skipped=listing.skipped,
        quarantined=sorted(quarantined, key=lambda q: q["path"]),
        stats=listing.stats,
    )


def list_manifest(
    source: str,
    classes: list[str] | None = None,
    max_per_class: int | None = None,
    field: str = "data.source",
    min_classes: int = 2,
    refuse_empty_classes: bool = True,
) -> ImageListing:
    """List a manifest's rows as an ``ImageListing`` (see the module docstring); errors
    name the setting ``field``; fewer than ``min_classes`` classes is one, and so is a
    class with no row left to read unless not ``refuse_empty_classes`` (one source of
    several: the merged listing is checked). Rows are handled as columns
    (``tljob.data.manifest``); only rows set aside become Python objects one by one."""
    try:
        loc = storage.resolve(source)
    except storage.StorageError as e:
        raise DataError(f"`{field}` ({source!r}): {e}") from None
    rows = manifest.read_rows(loc.parent, manifest.read_table(loc, source, field), source, field)
    # (order key, the row's label, {path, reason}): sorted by key, the entries come in the
    # order rows are looked at, which messages about a class show.
    set_aside: list[tuple[tuple[int, int, int], str, dict[str, str]]] = []
    listed = pc.not_equal(rows.uris, "").to_numpy(zero_copy_only=False)
    for row in np.flatnonzero(~listed).tolist():
        entry = {"path": f"{loc.uri}#row={row + 1}", "reason": "empty_uri: the row has no uri"}
        set_aside.append(((0, row, 0), rows.labels[row].as_py(), entry))
    keep = listed.copy()  # the first row of each uri that is not a label conflict
    for group in manifest.rows_of_repeated_uris(rows.uris):
        uri = rows.uris[group[0]].as_py()
        row_labels = [rows.labels[r].as_py() for r in group]
        distinct = sorted(set(row_labels))
        keep[group[1:]] = False
        if len(distinct) > 1:
            keep[group[0]] = False
            reason = "label_conflict: the manifest lists this uri under classes " + ", ".join(
                map(repr, distinct)
            )
            set_aside += [((1, group[0], r), lab, {"path": uri, "reason": reason})
                          for r, lab in zip(group, row_labels, strict=True)]  # fmt: skip
        else:
            again = "duplicate_row: the manifest lists this uri again"
            set_aside += [((1, group[0], r), distinct[0], {"path": uri, "reason": again})
                          for r in group[1:]]  # fmt: skip
    labels = sorted(pc.unique(rows.labels.filter(pa.array(listed))).to_pylist())
    refuse_case_variants(
        [*labels, *(classes or [])],
        f"`{field}` ({source!r}): the labels" + (" and `data.classes`" if classes else ""),
    )
    names = list(classes) if classes else labels
    kept = np.flatnonzero(keep)
    label_index = pc.index_in(rows.labels.take(kept), value_set=pa.array(names, pa.string()))
    known = label_index.is_valid().to_numpy(zero_copy_only=False)
    for row in kept[~known].tolist():
        label = rows.labels[row].as_py()
        reason = f"unknown_label: {label!r} is not one of `data.classes`"
        set_aside.append(((1, row, row), label, {"path": rows.uris[row].as_py(), "reason": reason}))
    kept, class_of = kept[known], label_index.filter(pa.array(known)).to_numpy()
    readable = _readable_rows(rows, kept, class_of, names, set_aside)
    if len(names) < min_classes:
        raise DataError(
            f"`{field}` ({source!r}): the manifest has {len(names)} class(es); "
            + ("classification needs two" if min_classes == 2 else "it needs a labelled row")
        )
    set_aside.sort(key=lambda item: item[0])
    per_class: dict[str, list[dict[str, str]]] = {}
    for _, label, entry in set_aside:
        if label in names:
            per_class.setdefault(label, []).append(entry)
    files, stats = _files_by_class(rows, kept[readable], class_of[readable], names, max_per_class)
    del rows
    # The columns' memory goes back to the system: pyarrow's allocator keeps what it freed
    # (a quarter of a GB after a million rows), and the driver lives on for hours.
    pa.default_memory_pool().release_unused()
    if refuse_empty_classes:
        _refuse_classes_without_rows(source, names, files, per_class, field)
    return ImageListing(
        classes=names,
        files=files,
        skipped=[],
        quarantined=sorted((e for _, _, e in set_aside), key=lambda q: (q["path"], q["reason"])),
        quarantined_per_class={c: [e["reason"] for e in per_class[c]] for c in sorted(per_class)},
        stats=stats,
    )


def _readable_rows(
    rows: manifest.ManifestRows,
    kept: np.ndarray,
    class_of: np.ndarray,
    names: list[str],
    set_aside: list[tuple[tuple[int, int, int], str, dict[str, str]]],
) -> np.ndarray:
    """Which of the ``kept`` rows (of classes ``class_of``) name an object to read: a row
    written as a folder is not; a row without a size is looked at (``look_at``) and its
    size filled in; the others are set aside with why."""
    folder = rows.written_as_folder[kept]
    unsized = np.flatnonzero(~folder & (rows.sizes[kept] == manifest.NO_SIZE))
    sizes, dirs = look_at(rows.uris.take(kept[unsized]))
    missing = np.zeros(len(kept), dtype=bool)
    is_dir = folder.copy()
    is_dir[unsized] |= dirs
    missing[unsized] = (sizes < 0) & ~dirs
    rows.sizes[kept[unsized]] = sizes
    # Messages list a class's rows as the listing met them: classes in order of their
    # first row, rows in file order.
    _, first = np.unique(class_of, return_index=True)
    rank = np.empty(len(names), dtype=np.int64)
    rank[class_of[np.sort(first)]] = np.arange(len(first))
    for i in np.flatnonzero(is_dir | missing).tolist():
        row, name = int(kept[i]), names[int(class_of[i])]
        reason = IS_A_DIRECTORY if is_dir[i] else MISSING_OBJECT
        entry = {"path": rows.uris[row].as_py(), "reason": reason}
        set_aside.append(((2, int(rank[class_of[i]]), row), name, entry))
    return ~(is_dir | missing)


def _files_by_class(
    rows: manifest.ManifestRows,
    readable: np.ndarray,
    class_of: np.ndarray,
    names: list[str],
    max_per_class: int | None,
) -> tuple[dict[str, list[str]], dict[str, tuple[int, int]]]:
    """Each class's readable uris, sorted, at most ``max_per_class``; and uri -> (size, -1)
    of those (a manifest's objects are fingerprinted by size alone, so a row's ``size``
    and a ``HEAD``'s answer give the same fingerprint). The two share their uri strings."""
    table = pa.table(
        {"class": class_of, "uri": rows.uris.take(readable), "size": rows.sizes[readable]}
    )
    table = table.take(pc.sort_indices(table, [("class", "ascending"), ("uri", "ascending")]))
    bounds = np.searchsorted(table["class"].to_numpy(), np.arange(len(names) + 1))
    files: dict[str, list[str]] = {}
    stats: dict[str, tuple[int, int]] = {}
    for i, name in enumerate(names):
        count = min(bounds[i + 1] - bounds[i], max_per_class or 1 << 62)
        part = table.slice(bounds[i], count)
        files[name] = part["uri"].to_pylist()
        stats.update(zip(files[name], zip(part["size"].to_pylist(), repeat(-1)), strict=False))
    return files, stats


def _refuse_classes_without_rows(
    source: str,
    names: list[str],
    readable: dict[str, list[str]],
    set_aside: dict[str, list[dict[str, str]]],
    field: str,
) -> None:
    """A class none of whose rows is left to read is refused before any read, naming its
    rows set aside (nothing is written yet, so the message lists them)."""
    empty = [c for c in names if not readable.get(c)]
    if not empty:
        return
    described = {}
    for name in empty:
        rows = set_aside.get(name, [])
        if not rows:
            described[name] = "no row of the manifest has this label"
            continue
        shown = "; ".join(f"{e['path']} ({e['reason'].split(':', 1)[0]})" for e in rows[:5])
        more = f" and {len(rows) - 5} more" if len(rows) > 5 else ""
        described[name] = (
            f"all {len(rows)} of its row(s) were set aside at listing "
            f"({count_reasons(e['reason'] for e in rows)}): {shown}{more}"
        )
    raise no_image_left_error(source, described, "No image was read yet", field)


@dataclass(frozen=True)
class ObjectStat:
    """What the fingerprint knows of one listed object."""

    uri: str
    size: int  # -1 when it could not be looked at, or is not a file
    mtime_ns: int  # -1 when the store gives none
    is_dir: bool = False  # a directory (on an object store: a prefix with objects below it)


def stat_objects(uris: Iterable[str]) -> dict[str, ObjectStat]:
    """Size and modification time of every uri (one ``get_file_info`` per filesystem)."""
    groups: list[tuple[pafs.FileSystem, list[storage.Location]]] = []
    for uri in uris:
        loc = storage.resolve(uri)
        for fs, locs in groups:
            if fs is loc.fs or fs.equals(loc.fs):
                locs.append(loc)
                break
        else:
            groups.append((loc.fs, [loc]))
    found: dict[str, ObjectStat] = {}
    for fs, locs in groups:
        for loc, info in zip(locs, _file_infos(fs, [loc.path for loc in locs]), strict=True):
            if info.type == pafs.FileType.File:
                mtime = info.mtime_ns if info.mtime_ns is not None else -1
                found[loc.uri] = ObjectStat(loc.uri, int(info.size or 0), int(mtime))
            else:
                is_dir = info.type == pafs.FileType.Directory
                found[loc.uri] = ObjectStat(loc.uri, -1, -1, is_dir)
    return found


def _file_infos(fs: pafs.FileSystem, paths: list[str]) -> list[pafs.FileInfo]:
    """``fs.get_file_info(paths)``; on an object store in parallel chunks, because each
    path is one HEAD request and pyarrow sends them one after another."""
    if isinstance(fs, pafs.LocalFileSystem) or len(paths) <= _HEAD_CHUNK:
        return fs.get_file_info(paths)
    chunks = [paths[i : i + _HEAD_CHUNK] for i in range(0, len(paths), _HEAD_CHUNK)]
    with ThreadPoolExecutor(_HEAD_THREADS) as pool:
        return [info for part in pool.map(fs.get_file_info, chunks) for info in part]


def listing_stats(listing: ImageListing, uris: Iterable[str]) -> Mapping[str, ObjectStat]:
    """``ObjectStat`` of every uri: from what the listing learnt, the rest looked at. Made
    on demand from ``listing.stats``: a million ``ObjectStat`` at once would cost the
    driver hundreds of MB."""
    uris = list(uris)
    return ListedStats(uris, listing.stats, stat_objects(u for u in uris if u not in listing.stats))


class ListedStats(Mapping[str, ObjectStat]):
    """The ``ObjectStat`` of ``uris``: ``looked`` ones as they are, the others from
    ``known`` (uri -> (size, mtime_ns)) when asked for."""

    def __init__(
        self, uris: list[str], known: Mapping[str, tuple[int, int]], looked: dict[str, ObjectStat]
    ) -> None:
        self.uris, self.known, self.looked = uris, known, looked

    def __getitem__(self, uri: str) -> ObjectStat:
        found = self.looked.get(uri)
        if found is not None:
            return found
        if uri not in self.known:
            raise KeyError(uri)
        return ObjectStat(uri, *self.known[uri])

    def __iter__(self) -> Iterator[str]:
        return iter(self.uris)

    def __len__(self) -> int:
        return len(self.uris)
