"""A manifest's rows as columns: read, their ``size`` checked, their uris resolved, and the
rows grouped by uri. Pure (pyarrow, numpy and ``tljob.storage``; no Ray, no TensorFlow).

At a million rows the driver cannot afford Python objects per row while it reads a manifest:
every step here works on whole columns, and only the rows that need a rule applied one by
one (a uri written unusually, a uri listed twice, an empty uri) become Python objects.
``tljob.data.sources.list_manifest`` turns the result into an ``ImageListing``.

The optional ``size`` column holds each object's size in bytes, as a ``HEAD`` would give it
(``aws s3api list-objects-v2`` and S3 Inventory reports list it): a row with a size is
trusted to exist and is not looked at; a row with an empty size is looked at, as every row
of a manifest without the column is. A size that is not a whole number >= 0 is refused
(``DataError``, exit 2) naming the manifest, the row, the column, the value and the rule.
"""

from __future__ import annotations

import io
import posixpath
from dataclasses import dataclass

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv
import pyarrow.fs as pafs
import pyarrow.parquet as pq

from tljob import storage
from tljob.data.listing import DataError

SIZE_COLUMN = "size"
NO_SIZE = -1  # in ``ManifestRows.sizes``: the row gave none, so its object is looked at
_WHOLE_NUMBER = r"^[0-9]{1,18}$"  # int64 holds every 18-digit number
# A uri written plainly (no empty, "." or ".." part, no trailing "/"): resolved by string
# concatenation, as ``resolve_row_uri`` would resolve it, without a Python call per row.
_PLAIN_PATH = r"^[^/]+(/[^/]+)*$"
_DOT_PART = r"(^|/)\.\.?(/|$)"
_PLAIN_S3 = r"^s3://[a-z0-9][a-z0-9.-]{1,61}[a-z0-9](/[^/]+)+$"


@dataclass
class ManifestRows:
    """The data rows of a manifest, in file order (row i is data row i + 1)."""

    uris: pa.Array  # string: resolved as readers resolve them; "" for a row without one
    labels: pa.Array  # string, whitespace trimmed ("" for none)
    sizes: np.ndarray  # int64 bytes, ``NO_SIZE`` where the row gave none
    written_as_folder: np.ndarray  # bool: the uri was written with a trailing "/"


def read_table(loc: storage.Location, source: str, field: str) -> pa.Table:
    """The manifest's table (``uri``, ``label``, and ``size`` when it has one: CSV columns
    read as text). ``DataError`` when it is not a readable manifest with uri and label."""
    info = loc.fs.get_file_info(loc.path)
    if info.type != pafs.FileType.File:
        raise DataError(f"`{field}` ({source!r}) is not an existing manifest file")
    try:
        if loc.path.lower().endswith(".parquet"):
            table = pq.read_table(loc.path, filesystem=loc.fs)
        else:
            types = {name: pa.string() for name in ("uri", "label", SIZE_COLUMN)}
            options = pacsv.ConvertOptions(column_types=types)
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


def read_rows(base: storage.Location, table: pa.Table, source: str, field: str) -> ManifestRows:
    """``table``'s rows with sizes checked and uris resolved against the manifest's folder
    ``base`` (see the module docstring)."""
    written = pc.utf8_trim_whitespace(_text(table.column("uri")))
    labels = pc.utf8_trim_whitespace(_text(table.column("label")))
    sizes = (
        check_sizes(table.column(SIZE_COLUMN), source, field)
        if SIZE_COLUMN in table.column_names
        else np.full(len(table), NO_SIZE, dtype=np.int64)
    )
    folder = pc.ends_with(written, "/").to_numpy(zero_copy_only=False)
    # writable: the sizes looked up are filled in
    return ManifestRows(resolve_uris(base, written), labels, np.array(sizes), folder)


def _text(column: pa.ChunkedArray) -> pa.Array:
    """A column as one string array, nulls as "" (a Parquet manifest may hold other types)."""
    array = column.combine_chunks()
    if not pa.types.is_string(array.type):
        array = pc.cast(array, pa.string())
    return pc.fill_null(array, "")


def check_sizes(column: pa.ChunkedArray, source: str, field: str) -> np.ndarray:
    """The ``size`` column as int64, ``NO_SIZE`` where empty; ``DataError`` naming the first
    row whose size is not a whole number >= 0."""
    array = column.combine_chunks()
    if pa.types.is_integer(array.type):
        values = pc.fill_null(pc.cast(array, pa.int64()), NO_SIZE).to_numpy()
        bad = np.flatnonzero((values < 0) & ~array.is_null().to_numpy(zero_copy_only=False))
        if len(bad):
            raise _size_error(source, field, int(bad[0]), str(values[bad[0]]))
        return values
    text = pc.utf8_trim_whitespace(_text(column))
    given = pc.not_equal(text, "")
    good = pc.match_substring_regex(text, _WHOLE_NUMBER)
    bad = np.flatnonzero(pc.and_(given, pc.invert(good)).to_numpy(zero_copy_only=False))
    if len(bad):
        raise _size_error(source, field, int(bad[0]), text[int(bad[0])].as_py())
    return pc.cast(pc.if_else(given, text, str(NO_SIZE)), pa.int64()).to_numpy()


def _size_error(source: str, field: str, index: int, value: str) -> DataError:
    return DataError(
        f"`{field}` ({source!r}): row {index + 1}, column `{SIZE_COLUMN}`: {value!r} is not "
        "a size in bytes: write the object's size as a whole number >= 0 (what a HEAD "
        "request or an object listing gives), or leave it empty to have the object looked at"
    )


def resolve_uris(base: storage.Location, written: pa.Array) -> pa.Array:
    """Every written uri resolved as ``resolve_row_uri`` resolves it ("" stays ""): plainly
    written ones by concatenation, the others one by one."""
    plain = pc.and_(
        pc.match_substring_regex(written, _PLAIN_PATH),
        pc.invert(pc.match_substring_regex(written, _DOT_PART)),
    )
    scheme = pc.match_substring(written, "://")
    relative = pc.and_(plain, pc.invert(scheme))
    prefix = (base.path if base.is_local() else base.uri).rstrip("/") + "/"
    joined = pc.binary_join_element_wise(prefix, written, "")
    absolute_s3 = pc.and_(
        pc.match_substring_regex(written, _PLAIN_S3),
        pc.invert(pc.match_substring_regex(written, _DOT_PART.replace("(^|/)", "/"))),
    )
    absolute_s3 = pc.and_(absolute_s3, pc.invert(pc.match_substring(written, "..")))
    absolute_local = pc.and_(
        pc.starts_with(written, "/"),
        pc.and_(
            pc.match_substring_regex(written, "^(/[^/]+)+$"),
            pc.invert(pc.match_substring_regex(written, _DOT_PART)),
        ),
    )
    resolved = pc.if_else(relative, joined, written)
    done = pc.or_(pc.or_(relative, absolute_s3), pc.or_(absolute_local, pc.equal(written, "")))
    others = np.flatnonzero(~done.to_numpy(zero_copy_only=False))
    if not len(others):
        return resolved
    values = resolved.to_pylist()
    for i in others:
        values[i] = resolve_row_uri(base, values[i])
    return pa.array(values, type=pa.string())


def resolve_row_uri(base: storage.Location, uri: str) -> str:
    """A manifest row's uri as readers resolve it: absolute ones as written (a local path
    made absolute), relative ones against the manifest's folder ``base``."""
    if "://" in uri or uri.startswith("/"):
        return storage.resolve(uri).uri
    if base.is_local():
        return posixpath.normpath(posixpath.join(base.path, uri))
    scheme, rest = base.uri.split("://", 1)
    return storage.resolve(f"{scheme}://{posixpath.normpath(posixpath.join(rest, uri))}").uri


def rows_of_repeated_uris(uris: pa.Array) -> list[list[int]]:
    """The rows of every non-empty uri that more than one row lists, each group in row
    order, the groups in the order of their first row."""
    codes = pc.dictionary_encode(uris).indices.to_numpy(zero_copy_only=False)
    counts = np.bincount(codes)
    repeated = np.flatnonzero(counts[codes] > 1)
    groups: dict[int, list[int]] = {}
    for row in repeated.tolist():
        groups.setdefault(int(codes[row]), []).append(row)
    return [rows for rows in groups.values() if uris[rows[0]].as_py()]
