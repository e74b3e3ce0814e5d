"""Reading and writing whole files on any ``Location`` (pure).

Writes that others read appear whole or not at all, on every filesystem: the data goes to
a hidden temporary name next to the target (``.tljob-tmp-<random>-<name>``), which is then
renamed (local disk) or copied and deleted (object stores: a server-side copy is atomic)
onto the target. A failed write deletes its temporary object. This matters on S3, where a
pyarrow output stream that is closed after an error completes the upload with whatever was
written so far.
"""

from __future__ import annotations

import contextlib
import os
import posixpath
import uuid
from collections.abc import Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pyarrow.fs as pafs

from tljob.storage.location import Location

TMP_PREFIX = ".tljob-tmp-"
_CHUNK = 8 * 1024 * 1024


def exists(loc: Location) -> bool:
    return loc.fs.get_file_info(loc.path).type != pafs.FileType.NotFound


def is_dir(loc: Location) -> bool:
    return loc.fs.get_file_info(loc.path).type == pafs.FileType.Directory


def read_bytes(loc: Location) -> bytes:
    with loc.fs.open_input_stream(loc.path) as f:
        return f.read()


def read_text(loc: Location) -> str:
    return read_bytes(loc).decode("utf-8")


def _temporary(loc: Location) -> str:
    parent, name = posixpath.split(loc.path)
    return posixpath.join(parent, f"{TMP_PREFIX}{uuid.uuid4().hex[:12]}-{name}")


def write_stream(loc: Location, chunks: Iterable[bytes]) -> None:
    """Write the concatenated ``chunks`` as the whole file at ``loc``, creating parent
    directories. Readers see the old file or the new one, never a part; when ``chunks``
    raises, the target is untouched and no temporary file is left."""
    parent = posixpath.dirname(loc.path)
    if loc.is_local():
        os.makedirs(parent, exist_ok=True)
    tmp = _temporary(loc)
    try:
        with loc.fs.open_output_stream(tmp) as f:
            for chunk in chunks:
                f.write(chunk)
        loc.fs.move(tmp, loc.path)  # local: rename; S3: server-side copy, then delete
    except BaseException:
        with contextlib.suppress(OSError):
            loc.fs.delete_file(tmp)
        raise


def write_bytes(loc: Location, data: bytes) -> None:
    """Write a whole file atomically (see ``write_stream``)."""
    write_stream(loc, [data])


def write_text(loc: Location, text: str) -> None:
    write_bytes(loc, text.encode("utf-8"))


def put_file(local_path: str | os.PathLike[str], dest: Location) -> None:
    """Upload one local file to ``dest``, atomically (see ``write_stream``)."""

    def chunks() -> Iterable[bytes]:
        with open(local_path, "rb") as f:
            while block := f.read(_CHUNK):
                yield block

    write_stream(dest, chunks())


def upload_dir(
    local_dir: str | os.PathLike[str],
    dest: Location,
    last: Sequence[str] = (),
    threads: int = 1,
) -> int:
    """Copy a local directory tree to ``dest`` (replacing files of the same name); returns
    the number of files copied.

    Every file is written atomically. Files whose name is in ``last`` (e.g. a manifest) are
    written after all others, so a reader that finds them finds the rest. ``threads`` > 1
    uploads that many files at a time. On local disk, directories and files get the
    default permissions of new files at ``dest``, not those of ``local_dir`` (a
    ``tempfile`` directory is private, the run directory is not).
    """
    if dest.is_local():
        os.makedirs(dest.path, exist_ok=True)
    files: list[tuple[str, str]] = []  # (local path, relative posix path)
    for folder, _, names in os.walk(local_dir):
        for name in names:
            path = os.path.join(folder, name)
            files.append((path, Path(os.path.relpath(path, local_dir)).as_posix()))
    files.sort(key=lambda f: (posixpath.basename(f[1]) in last, f[1]))
    first = [f for f in files if posixpath.basename(f[1]) not in last]
    final = files[len(first) :]

    def copy(item: tuple[str, str]) -> None:
        put_file(item[0], dest.join(item[1]))

    for batch in (first, final):
        if threads > 1 and len(batch) > 1:
            with ThreadPoolExecutor(threads) as pool:
                list(pool.map(copy, batch))
        else:
            for item in batch:
                copy(item)
    return len(files)


def create_exclusive(loc: Location, data: bytes) -> bool:
    """Create ``loc`` holding ``data`` unless it exists; return whether this call created it.

    Local disk: ``O_EXCL``. S3: a ``PutObject`` with ``If-None-Match: *`` where the store
    honours it (AWS S3, SeaweedFS, recent MinIO), so of two callers exactly one wins;
    elsewhere check-then-write, said once in the log (``s3api.put_if_absent``).
    """
    if loc.is_local():
        os.makedirs(os.path.dirname(loc.path), exist_ok=True)
        try:
            fd = os.open(loc.path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
        except FileExistsError:
            return False
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        return True
    from tljob.storage import s3api

    return s3api.put_if_absent(loc, data)


def delete_file(loc: Location) -> None:
    """Delete a file; a file that is already gone is fine."""
    with contextlib.suppress(FileNotFoundError):
        loc.fs.delete_file(loc.path)


def delete_dir(loc: Location) -> None:
    """Delete a directory tree; one that is already gone is fine."""
    with contextlib.suppress(FileNotFoundError):
        loc.fs.delete_dir(loc.path)
