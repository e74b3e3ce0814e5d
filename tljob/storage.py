"""Where files live: URIs to pyarrow filesystems, and small read/write helpers.

Every input and output path in tljob goes through ``resolve`` so that one place decides
how a URI is reached. This version handles local paths and ``file://`` URIs; object
storage (``s3://``) is rejected with a clear message until it is supported here.
"""

from __future__ import annotations

import contextlib
import os
import posixpath
import shutil
from dataclasses import dataclass
from pathlib import Path

import pyarrow.fs as pafs

from tljob.errors import UserError


class StorageError(UserError, ValueError):
    """A URI that cannot be used; the message names it and says why."""


@dataclass(frozen=True)
class Location:
    """A resolved URI: the filesystem and the path inside it."""

    fs: pafs.FileSystem
    path: str
    uri: str

    def join(self, *parts: str) -> Location:
        path = posixpath.join(self.path, *parts)
        return Location(self.fs, path, _join_uri(self.uri, *parts))

    def is_local(self) -> bool:
        return isinstance(self.fs, pafs.LocalFileSystem)


def _join_uri(uri: str, *parts: str) -> str:
    return uri.rstrip("/") + "/" + "/".join(p.strip("/") for p in parts)


def resolve(uri: str) -> Location:
    """Resolve a local path or ``file://`` URI to an absolute ``Location``."""
    if not uri:
        raise StorageError("empty path or URI")
    scheme = uri.split("://", 1)[0] if "://" in uri else ""
    if scheme in ("", "file"):
        path = uri[len("file://") :] if scheme else uri
        absolute = os.path.abspath(os.path.expanduser(path))
        return Location(pafs.LocalFileSystem(), absolute, absolute)
    raise StorageError(
        f"{uri!r}: the {scheme}:// scheme is not supported by this version of tljob; "
        "use a local directory or a file:// URI"
    )


def exists(loc: Location) -> bool:
    return loc.fs.get_file_info(loc.path).type != pafs.FileType.NotFound


def is_dir(loc: Location) -> bool:
    return loc.fs.get_file_info(loc.path).type == pafs.FileType.Directory


def read_bytes(loc: Location) -> bytes:
    with loc.fs.open_input_stream(loc.path) as f:
        return f.read()


def read_text(loc: Location) -> str:
    return read_bytes(loc).decode("utf-8")


def write_bytes(loc: Location, data: bytes) -> None:
    """Write a whole file, creating parent directories; readers never see a partial file
    on local disk (write to a temporary name, then rename)."""
    parent = posixpath.dirname(loc.path)
    loc.fs.create_dir(parent, recursive=True)
    tmp = loc.path + ".partial" if loc.is_local() else loc.path
    with loc.fs.open_output_stream(tmp) as f:
        f.write(data)
    if tmp != loc.path:
        loc.fs.move(tmp, loc.path)


def write_text(loc: Location, text: str) -> None:
    write_bytes(loc, text.encode("utf-8"))


def upload_dir(local_dir: str | Path, dest: Location) -> None:
    """Copy a local directory tree to ``dest`` (replacing files of the same name).

    Directories and files get the default permissions of new files at ``dest``, not those
    of ``local_dir`` (a ``tempfile`` directory is private, the run directory is not).
    """
    if not dest.is_local():
        dest.fs.create_dir(dest.path, recursive=True)
        pafs.copy_files(str(local_dir), dest.path, destination_filesystem=dest.fs)
        return
    for folder, _, names in os.walk(local_dir):
        target = os.path.join(dest.path, os.path.relpath(folder, local_dir))
        os.makedirs(target, exist_ok=True)
        for name in names:
            shutil.copyfile(os.path.join(folder, name), os.path.join(target, name))


def list_files(loc: Location) -> list[str]:
    """All files below ``loc`` (recursive), as paths inside ``loc.fs``, sorted."""
    selector = pafs.FileSelector(loc.path, recursive=True)
    infos = loc.fs.get_file_info(selector)
    return sorted(i.path for i in infos if i.type == pafs.FileType.File)


def create_exclusive(loc: Location, data: bytes) -> bool:
    """Create ``loc`` holding ``data`` unless it exists; return whether this call created it.

    Atomic on local disk (``O_EXCL``). Object stores have no such primitive here, so there
    it is check-then-write, which is enough to stop a second run started by hand.
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
    if exists(loc):
        return False
    write_bytes(loc, data)
    return True


def delete_file(loc: Location) -> None:
    """Delete a file; a file that is already gone is fine."""
    with contextlib.suppress(FileNotFoundError):
        loc.fs.delete_file(loc.path)


def delete_dir(loc: Location) -> None:
    """Delete a directory tree; one that is already gone is fine."""
    with contextlib.suppress(FileNotFoundError):
        loc.fs.delete_dir(loc.path)
