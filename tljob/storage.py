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
from dataclasses import dataclass, field
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


@dataclass
class FileWalk:
    """What ``walk_files`` found below a directory (paths inside the ``Location``'s fs).

    ``files``: regular files (a symlink to a file counts as a file, under its own path),
    sorted. ``directories``: every directory whose entries were listed, as reached, in the
    order listed (the root first). ``skipped``: ``{"path", "reason"}`` for what was not
    listed: ``hidden`` (a name starting with "."; a hidden folder is one entry, its files are
    not looked at), ``directory_cycle`` (a symlink to a folder that contains the link),
    ``directory_already_listed`` (a symlink, or bind mount, to a folder listed elsewhere),
    ``broken_symlink``, ``not_a_regular_file`` (fifo, socket, device) and
    ``unreadable_directory``.
    """

    files: list[str] = field(default_factory=list)
    directories: list[str] = field(default_factory=list)
    skipped: list[dict[str, str]] = field(default_factory=list)


def walk_files(loc: Location) -> FileWalk:
    """Every file below ``loc``, recursively, skipping hidden entries at every depth.

    On a local filesystem every real directory is listed at most once: the real tree below
    ``loc`` first (so a folder is always listed at its own path), then the symlinked
    folders it reaches, each followed once, in the order found. A symlink to a folder that
    contains it (``ln -s . loop``) or to one already listed is skipped and recorded, never
    followed. Other filesystems (object stores) have no symlinks; they are listed with
    pyarrow and hidden entries are skipped the same way.
    """
    if loc.is_local():
        return _walk_local(loc.path)
    return _walk_pyarrow(loc)


def list_files(loc: Location) -> list[str]:
    """The sorted file paths of ``walk_files(loc)``."""
    return walk_files(loc).files


def _is_within(path: str, folder: str) -> bool:
    return path == folder or path.startswith(folder.rstrip("/") + "/")


class _LocalWalk:
    """State of one ``_walk_local``: real directories seen, by (st_dev, st_ino)."""

    def __init__(self) -> None:
        self.found = FileWalk()
        self.visited: set[tuple[int, int]] = set()
        self.linked_dirs: list[str] = []  # symlinks to folders, followed after the real tree

    def skip(self, path: str, reason: str) -> None:
        self.found.skipped.append({"path": path, "reason": reason})

    def enter(self, path: str, via_link: bool = False) -> bool:
        """Mark the real directory at ``path`` visited. False (and recorded as skipped) for a
        folder that contains the entry pointing at it, or one already listed."""
        if via_link and _is_within(os.path.realpath(os.path.dirname(path)), os.path.realpath(path)):
            self.skip(path, "directory_cycle")  # following it would list it again, forever
            return False
        try:
            st = os.stat(path)
        except OSError:
            self.skip(path, "unreadable_directory")
            return False
        key = (st.st_dev, st.st_ino)
        if key in self.visited:
            self.skip(path, "directory_already_listed")
            return False
        self.visited.add(key)
        return True

    def walk_tree(self, top: str) -> None:
        """List ``top`` and its real sub-folders; symlinked sub-folders are queued."""
        stack = [top]
        while stack:
            folder = stack.pop()
            try:
                with os.scandir(folder) as it:
                    entries = sorted(it, key=lambda e: e.name)
            except OSError:
                self.skip(folder, "unreadable_directory")
                continue
            self.found.directories.append(folder)
            subfolders = []
            for entry in entries:
                reason = self._classify(entry)
                if reason == "file":
                    self.found.files.append(entry.path)
                elif reason == "linked_dir":
                    self.linked_dirs.append(entry.path)
                elif reason == "dir":
                    subfolders.append(entry.path)
                else:
                    self.skip(entry.path, reason)
            # A real sub-folder can still be a repeat (a bind mount of an ancestor).
            stack += [d for d in reversed(subfolders) if self.enter(d)]

    @staticmethod
    def _classify(entry: os.DirEntry[str]) -> str:
        if entry.name.startswith("."):
            return "hidden"
        try:
            if entry.is_symlink():
                if entry.is_dir():  # follows the link
                    return "linked_dir"
                if entry.is_file():
                    return "file"
                return "broken_symlink" if not os.path.exists(entry.path) else "not_a_regular_file"
            if entry.is_dir(follow_symlinks=False):
                return "dir"
            if entry.is_file(follow_symlinks=False):
                return "file"
        except OSError:  # e.g. a symlink loop (ELOOP)
            return "broken_symlink" if entry.is_symlink() else "not_a_regular_file"
        return "not_a_regular_file"


def _walk_local(root: str) -> FileWalk:
    walk = _LocalWalk()
    if walk.enter(root):
        walk.walk_tree(root)
    # Symlinked folders after the whole real tree, so that a link to a folder that is also
    # in the tree is the one skipped, not the folder; links found inside followed folders
    # join the end of the queue.
    queued = 0
    while queued < len(walk.linked_dirs):
        link = walk.linked_dirs[queued]
        queued += 1
        if walk.enter(link, via_link=True):
            walk.walk_tree(link)
    walk.found.files.sort()
    return walk.found


def _walk_pyarrow(loc: Location) -> FileWalk:
    found = FileWalk(directories=[loc.path])
    hidden: set[str] = set()
    infos = loc.fs.get_file_info(pafs.FileSelector(loc.path, recursive=True))
    for info in sorted(infos, key=lambda i: i.path):
        parts = posixpath.relpath(info.path, loc.path).split("/")
        first_hidden = next((i for i, p in enumerate(parts) if p.startswith(".")), None)
        if first_hidden is not None:
            top = posixpath.join(loc.path, *parts[: first_hidden + 1])
            if top not in hidden:  # one entry per hidden file or folder, as locally
                hidden.add(top)
                found.skipped.append({"path": top, "reason": "hidden"})
        elif info.type == pafs.FileType.File:
            found.files.append(info.path)
        elif info.type == pafs.FileType.Directory:
            found.directories.append(info.path)
        else:
            found.skipped.append({"path": info.path, "reason": "not_a_regular_file"})
    return found


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
