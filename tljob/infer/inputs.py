"""What to score: any source listed as inputs, or a prepared split's shards; and decoding
one input for the model. Pure (no Ray, no TensorFlow).

``list_inputs`` takes what ``data.source`` takes, and more:

* a manifest (``.csv`` / ``.parquet``) with a ``uri`` column and, optionally, ``label``;
  relative uris are relative to the manifest's folder (``data.sources.resolve_row_uri``).
  A uri listed twice is one input (``duplicate_rows`` counts the other rows); listed under
  two labels it is ``skipped`` as ``label_conflict``; a row without a uri is ``empty_uri``;
* a folder or ``s3://`` prefix: every image file below it, at any depth
  (``storage.walk_files``: hidden entries skipped); other files are ``skipped`` as
  ``not_an_image_file``. The layout gives labels when it is a class-folder tree: every
  image inside a top-level folder, and two folders or more; the label is that folder;
* one image file.

Inputs are unique and sorted by uri: the same source gives the same list, the order
``tljob predict`` names its parts by. An input that cannot be read or decoded is not
dropped: ``decode_input`` gives its reason (``unreadable_file``, ``empty_file``,
``too_many_pixels``, ``corrupt_image``, ``unsupported_image``: the kinds preparation uses).
"""

from __future__ import annotations

import hashlib
import io
import posixpath
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.parquet as pq

from tljob import storage
from tljob.data.prepared import MANIFEST_FILE, StoreSettings, read_manifest
from tljob.data.sources import is_manifest, resolve_row_uri
from tljob.errors import UserError
from tljob.images import (
    IMAGE_EXTENSIONS,
    ImageDecodeError,
    TooManyPixelsError,
    UnsupportedImageError,
    decode_rgb,
    image_dimensions,
    resize_bilinear_uint8,
)
from tljob.report import clean_reason

# Larger images are refused from their header, before decoding (preparation's default).
MAX_IMAGE_PIXELS = 100_000_000


class InputError(UserError):
    """The source cannot be listed as inputs; the message names it and what to do."""


@dataclass
class InputListing:
    """The inputs of a source: unique uris in sorted order, the label each one's layout
    gives (None where it gives none), and what was not listed as an input, with why."""

    source: str
    uris: list[str]
    labels: list[str | None]
    skipped: list[dict[str, str]] = field(default_factory=list)  # {path, reason}
    duplicate_rows: int = 0  # manifest rows naming an input listed before

    def __len__(self) -> int:
        return len(self.uris)

    def label_names(self) -> list[str]:
        """The distinct labels the layout gives, sorted."""
        return sorted({label for label in self.labels if label is not None})

    def label_indices(self, classes: tuple[str, ...] | list[str]) -> np.ndarray:
        """Each input's label as an index into ``classes``: -1 when unknown or not a class
        (``unknown_labels`` names those)."""
        index = {name: i for i, name in enumerate(classes)}
        return np.array([index.get(lab, -1) if lab else -1 for lab in self.labels], np.int64)

    def unknown_labels(self, classes: tuple[str, ...] | list[str]) -> list[str]:
        """Labels the layout gives that are not among ``classes`` (e.g. the model's)."""
        return [name for name in self.label_names() if name not in set(classes)]

    def fingerprint(self) -> str:
        """sha256 over the inputs, in order: two listings of the same inputs agree."""
        digest = hashlib.sha256()
        for uri in self.uris:
            digest.update(uri.encode("utf-8") + b"\n")
        return digest.hexdigest()

    def skipped_reasons(self) -> dict[str, int]:
        return dict(sorted(Counter(s["reason"].split(":", 1)[0] for s in self.skipped).items()))


def list_inputs(source: str) -> InputListing:
    """The inputs of ``source`` (see the module docstring); ``InputError`` (exit 2) when it
    does not exist or holds no image."""
    try:
        loc = storage.resolve(source)
    except storage.StorageError as e:
        raise InputError(f"--source {source!r}: {e}") from None
    info = loc.fs.get_file_info(loc.path)
    if info.type == storage.pafs.FileType.NotFound:
        raise InputError(f"--source {source!r}: no such file, folder or prefix")
    if info.type == storage.pafs.FileType.File and is_manifest(loc.path):
        listing = _list_manifest(loc, source)
    elif info.type == storage.pafs.FileType.File:
        if not loc.path.lower().endswith(IMAGE_EXTENSIONS):
            raise InputError(
                f"--source {source!r} is neither an image ({', '.join(IMAGE_EXTENSIONS)}), "
                "a manifest (.csv, .parquet) nor a folder"
            )
        listing = InputListing(source, [loc.uri], [None])
    else:
        listing = _list_folder(loc, source)
    if not listing.uris:
        raise InputError(
            f"--source {source!r} lists no image (image files end in "
            f"{', '.join(IMAGE_EXTENSIONS)}; {len(listing.skipped)} other entries were skipped)"
        )
    return listing


def _list_folder(root: storage.Location, source: str) -> InputListing:
    walk = storage.walk_files(root)
    skipped = [{**s, "path": root.at(s["path"]).uri} for s in walk.skipped]
    found: list[tuple[str, str]] = []  # (uri, top-level folder or "")
    for path in walk.files:
        uri = root.at(path).uri
        if not path.lower().endswith(IMAGE_EXTENSIONS):
            skipped.append({"path": uri, "reason": "not_an_image_file"})
            continue
        parts = posixpath.relpath(path, root.path).split("/")
        found.append((uri, parts[0] if len(parts) > 1 else ""))
    found.sort()
    folders = {top for _, top in found}
    class_tree = "" not in folders and len(folders) >= 2
    return InputListing(
        source=source,
        uris=[uri for uri, _ in found],
        labels=[top if class_tree else None for _, top in found],
        skipped=sorted(skipped, key=lambda s: s["path"]),
    )


def _manifest_table(loc: storage.Location, source: str) -> pa.Table:
    try:
        if loc.path.lower().endswith(".parquet"):
            table = pq.read_table(loc.path, filesystem=loc.fs)
        else:
            types = {"uri": pa.string(), "label": pa.string()}
            table = pacsv.read_csv(
                io.BytesIO(storage.read_bytes(loc)),
                convert_options=pacsv.ConvertOptions(column_types=types),
            )
    except (pa.ArrowInvalid, OSError) as e:
        raise InputError(f"--source {source!r}: cannot read the manifest: {e}") from None
    if "uri" not in table.column_names:
        raise InputError(
            f"--source {source!r}: the manifest has no `uri` column (it has "
            f"{', '.join(table.column_names) or 'none'}); it needs uri and, optionally, label"
        )
    return table


def _list_manifest(loc: storage.Location, source: str) -> InputListing:
    table = _manifest_table(loc, source)
    uris = table.column("uri").to_pylist()
    raw = table.column("label").to_pylist() if "label" in table.column_names else [None] * len(uris)
    labels_of: dict[str, list[str | None]] = {}
    skipped: list[dict[str, str]] = []
    for number, (written, label) in enumerate(zip(uris, raw, strict=True), start=1):
        written = str(written if written is not None else "").strip()
        label = str(label).strip() if label is not None and str(label).strip() else None
        if not written:
            skipped.append({"path": f"{loc.uri}#row={number}", "reason": "empty_uri: no uri"})
            continue
        labels_of.setdefault(resolve_row_uri(loc.parent, written), []).append(label)
    kept: list[tuple[str, str | None]] = []
    duplicates = 0
    for uri, labels in labels_of.items():
        distinct = sorted({lab for lab in labels if lab is not None})
        if len(distinct) > 1:
            reason = "label_conflict: the manifest lists this uri under labels " + ", ".join(
                map(repr, distinct)
            )
            skipped.append({"path": uri, "reason": reason})
            continue
        duplicates += len(labels) - 1
        kept.append((uri, distinct[0] if distinct else None))
    kept.sort(key=lambda item: item[0])
    return InputListing(
        source=source,
        uris=[uri for uri, _ in kept],
        labels=[label for _, label in kept],
        skipped=sorted(skipped, key=lambda s: s["path"]),
        duplicate_rows=duplicates,
    )


@dataclass(frozen=True)
class PreparedSplit:
    """One split of prepared data (``tljob.data.prepared``): its shards, how their images
    are stored, and its classes. Rows are read with their ``uri`` and ``label``."""

    folder_uri: str  # <prepared_path>/<fingerprint>
    split: str
    files: tuple[str, ...]  # shard paths relative to the folder
    stored_size: int
    pixels: str
    classes: tuple[str, ...]
    rows: int

    @classmethod
    def from_prepared(cls, prepared_uri: str, split: str = "val") -> PreparedSplit:
        """The split ``split`` of the prepared data at ``prepared_uri`` (the folder that
        holds ``manifest.json``); ``InputError`` when there is none."""
        folder = storage.resolve(prepared_uri)
        manifest = read_manifest(folder)
        if manifest is None:
            raise InputError(f"{prepared_uri}: no published {MANIFEST_FILE} (prepared data)")
        if split not in manifest.files:
            raise InputError(
                f"{prepared_uri}: the prepared data has no {split!r} split (it has "
                f"{', '.join(sorted(manifest.files))})"
            )
        store = StoreSettings(**manifest.store)
        return cls(
            folder_uri=folder.uri,
            split=split,
            files=tuple(manifest.files[split]),
            stored_size=store.size_of(split),
            pixels=store.pixels,
            classes=tuple(manifest.classes),
            rows=int(manifest.per_split.get(split, {}).get("used", 0)),
        )


def decode_input(data: bytes, size: int) -> tuple[np.ndarray | None, str]:
    """One input's bytes -> (uint8 (size, size, 3) RGB as the model resizes it, "") or
    (None, reason)."""
    if not data:
        return None, "empty_file: the file has 0 bytes"
    try:
        width, height = image_dimensions(data)
        if width * height > MAX_IMAGE_PIXELS:
            return None, (
                f"too_many_pixels: {width}x{height} = {width * height} pixels, more than "
                f"{MAX_IMAGE_PIXELS}"
            )
        return resize_bilinear_uint8(decode_rgb(data), size), ""
    except TooManyPixelsError as e:
        return None, f"too_many_pixels: {e}"
    except UnsupportedImageError as e:
        return None, f"unsupported_image: {e}"
    except ImageDecodeError as e:
        return None, f"corrupt_image: {e}"


def read_input(uri: str, size: int) -> tuple[np.ndarray | None, str]:
    """Read one input through ``storage`` and decode it (``decode_input``)."""
    try:
        data = storage.read_bytes(storage.resolve(uri))
    except (OSError, storage.StorageError) as e:
        return None, f"unreadable_file: {clean_reason(str(e))}"
    return decode_input(data, size)


def read_row_group(
    fs: Any,
    path: str,
    group: int,
    stored_size: int,
    pixels: str,
    image_size: int,
    rows: np.ndarray | None = None,
) -> dict[str, np.ndarray]:
    """One row group of a prepared shard (``rows``: only those, in that order) -> ``image``
    (at ``image_size``, resized with the model's kernel where stored at another size),
    ``label``, ``uri``."""
    from tljob.data.stream import decode_all  # Ray's side; this module stays pure

    with fs.open_input_file(str(path)) as handle:
        table = pq.ParquetFile(handle).read_row_group(int(group), columns=["image", "label", "uri"])
    if rows is not None:
        table = table.take(pa.array(np.asarray(rows, np.int64)))
    images = decode_all(table["image"], stored_size, pixels)
    if stored_size != image_size:
        images = np.stack([resize_bilinear_uint8(im, image_size) for im in images])
    return {
        "image": images,
        "label": table["label"].to_numpy().astype(np.int64),
        "uri": table["uri"].to_numpy(zero_copy_only=False).astype(object),
    }


def read_prepared(
    batch: dict[str, np.ndarray], fs: Any, stored_size: int, pixels: str, image_size: int
) -> dict[str, np.ndarray]:
    """The row groups named in ``batch`` -> rows of ``image``, ``label``, ``uri``
    (``read_row_group``), ``error``."""
    parts = [
        read_row_group(fs, path, group, stored_size, pixels, image_size)
        for path, group in zip(batch["path"], batch["row_group"], strict=True)
    ]
    rows = {key: np.concatenate([p[key] for p in parts]) for key in parts[0]}
    rows["error"] = np.array([""] * len(rows["label"]), dtype=object)
    return rows
