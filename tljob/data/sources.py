"""What ``data.source`` names: a folder per class, or a manifest of ``uri,label`` rows.

Pure (pyarrow and ``tljob.storage`` only; no Ray, no TensorFlow). Both layouts become one
``ImageListing``: classes in label-index order, the URIs of each class (sorted), what was
skipped, and what was set aside at listing (``ImageListing.quarantined``):

* a manifest (``.csv`` or ``.parquet``; columns ``uri`` and ``label``): relative uris are
  relative to the manifest's folder, absolute ones (``/…``, ``scheme://…``) may point
  anywhere in the store. Classes are the sorted distinct labels, or ``data.classes``.
  A row whose label is not a class is ``unknown_label``; a row whose object does not
  exist is ``missing_object``, a row that names a folder (a local directory, or an
  ``s3://`` prefix with objects below it but no object of its own, or any uri written with
  a trailing "/") is ``is_a_directory``; a row without a uri is ``empty_uri`` (its path is
  ``<manifest>#row=<n>``, data rows counted from 1); one uri listed under two labels is a
  ``label_conflict`` (every row), listed twice under one label a ``duplicate_row`` (the
  later rows). Labels that differ only in case are refused (``listing.refuse_case_variants``),
  and so is a class none of whose rows is left to read, naming the rows and why.
* a folder tree: ``listing.list_images``; with ``data.classes`` set, files in other class
  folders are ``unknown_label``, and a listed class without a folder is an error.
* a list of sources (each one of the above): each listed whole, its errors naming
  ``data.source[<index>]``, then merged into one listing (``tljob.data.merge``).

Data is only reached through ``storage.resolve`` and the ``Location``'s pyarrow filesystem,
so an object store works as a local disk does.
"""

from __future__ import annotations

import io
import posixpath
from collections.abc import Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.fs as pafs
import pyarrow.parquet as pq

from tljob import storage
from tljob.config import DataSection
from tljob.data.listing import (
    DataError,
    ImageListing,
    count_reasons,
    list_images,
    no_image_left_error,
    refuse_case_variants,
)

MANIFEST_SUFFIXES = (".csv", ".parquet")
_HEAD_CHUNK, _HEAD_THREADS = 64, 16  # object-store HEADs: paths per request batch, in flight
IS_A_DIRECTORY = (
    "is_a_directory: the manifest must list image files, not folders; list each image in "
    "this folder as its own row"
)
MISSING_OBJECT = "missing_object: no such file or object"


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


def _manifest_table(loc: storage.Location, source: str, field: str) -> pa.Table:
    info = loc.fs.get_file_info(loc.path)
    if info.type != pafs.FileType.File:
        raise DataError(f"`{field}` ({source!r}) is not an existing manifest file")
    try:
        if loc.path.lower().endswith(".parquet"):
            table = pq.read_table(loc.path, filesystem=loc.fs)
        else:
            options = pacsv.ConvertOptions(column_types={"uri": pa.string(), "label": pa.string()})
            table = pacsv.read_csv(io.BytesIO(storage.read_bytes(loc)), convert_options=options)
    except (pa.ArrowInvalid, OSError) as e:
        raise DataError(f"`{field}` ({source!r}): cannot read the manifest: {e}") from None
    missing = [c for c in ("uri", "label") if c not in table.column_names]
    if missing:
        raise DataError(
            f"`{field}` ({source!r}): the manifest has no column(s) {', '.join(missing)}; "
            f"it needs uri,label (it has {', '.join(table.column_names) or 'none'})"
        )
    return table


def resolve_row_uri(base: storage.Location, uri: str) -> str:
    """A manifest row's uri as readers resolve it: absolute ones as written (a local path
    made absolute), relative ones against the manifest's folder ``base``."""
    if "://" in uri or uri.startswith("/"):
        return storage.resolve(uri).uri
    if base.is_local():
        return posixpath.normpath(posixpath.join(base.path, uri))
    scheme, rest = base.uri.split("://", 1)
    return storage.resolve(f"{scheme}://{posixpath.normpath(posixpath.join(rest, uri))}").uri


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
    several: the merged listing is checked)."""
    try:
        loc = storage.resolve(source)
    except storage.StorageError as e:
        raise DataError(f"`{field}` ({source!r}): {e}") from None
    table = _manifest_table(loc, source, field)
    base = loc.parent
    labels_of: dict[str, list[str]] = {}
    written_as_folder: set[str] = set()
    set_aside: list[tuple[str, dict[str, str]]] = []  # (the row's label, {path, reason})
    rows = zip(table.column("uri").to_pylist(), table.column("label").to_pylist(), strict=True)
    for number, (raw_uri, raw_label) in enumerate(rows, start=1):
        written = str(raw_uri if raw_uri is not None else "").strip()
        label = str(raw_label if raw_label is not None else "").strip()
        if not written:
            entry = {"path": f"{loc.uri}#row={number}", "reason": "empty_uri: the row has no uri"}
            set_aside.append((label, entry))
            continue
        uri = resolve_row_uri(base, written)
        if written.endswith("/"):
            written_as_folder.add(uri)
        labels_of.setdefault(uri, []).append(label)
    labels = sorted({lab for labs in labels_of.values() for lab in labs})
    refuse_case_variants(
        [*labels, *(classes or [])],
        f"`{field}` ({source!r}): the labels" + (" and `data.classes`" if classes else ""),
    )
    names = list(classes) if classes else labels
    files: dict[str, list[str]] = {}
    for uri, row_labels in labels_of.items():
        distinct = sorted(set(row_labels))
        if len(distinct) > 1:
            reason = "label_conflict: the manifest lists this uri under classes " + ", ".join(
                map(repr, distinct)
            )
            set_aside += [(lab, {"path": uri, "reason": reason}) for lab in row_labels]
            continue
        again = {"path": uri, "reason": "duplicate_row: the manifest lists this uri again"}
        set_aside += [(distinct[0], dict(again)) for _ in row_labels[1:]]
        if distinct[0] not in names:
            reason = f"unknown_label: {distinct[0]!r} is not one of `data.classes`"
            set_aside.append((distinct[0], {"path": uri, "reason": reason}))
            continue
        files.setdefault(distinct[0], []).append(uri)
    looked = stat_objects(u for paths in files.values() for u in paths)
    readable: dict[str, list[str]] = {}
    for name, paths in files.items():
        for uri in paths:
            if looked[uri].is_dir or uri in written_as_folder:
                set_aside.append((name, {"path": uri, "reason": IS_A_DIRECTORY}))
            elif looked[uri].size < 0:
                set_aside.append((name, {"path": uri, "reason": MISSING_OBJECT}))
            else:
                readable.setdefault(name, []).append(uri)
    if len(names) < min_classes:
        raise DataError(
            f"`{field}` ({source!r}): the manifest has {len(names)} class(es); "
            + ("classification needs two" if min_classes == 2 else "it needs a labelled row")
        )
    per_class: dict[str, list[dict[str, str]]] = {}
    for label, entry in set_aside:
        if label in names:
            per_class.setdefault(label, []).append(entry)
    if refuse_empty_classes:
        _refuse_classes_without_rows(source, names, readable, per_class, field)
    return ImageListing(
        classes=names,
        files={c: sorted(readable.get(c, []))[:max_per_class] for c in names},
        skipped=[],
        quarantined=sorted((e for _, e in set_aside), key=lambda q: (q["path"], q["reason"])),
        quarantined_per_class={c: [e["reason"] for e in per_class[c]] for c in sorted(per_class)},
        stats={u: (st.size, st.mtime_ns) for u, st in looked.items() if st.size >= 0},
    )


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


def listing_stats(listing: ImageListing, uris: Iterable[str]) -> dict[str, ObjectStat]:
    """``ObjectStat`` of every uri: from what the listing learnt, the rest looked at."""
    uris = list(uris)
    known = {u: ObjectStat(u, *listing.stats[u]) for u in uris if u in listing.stats}
    return {**known, **stat_objects(u for u in uris if u not in known)}
