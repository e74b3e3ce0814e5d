"""Every file below a directory, for local disks and object stores alike (pure).

``walk_files`` skips hidden entries (a name starting with ".") at every depth, on every
filesystem, so temporary keys of ``write_bytes`` (``.tljob-tmp-…``) and probe objects are
never listed as data.
"""

from __future__ import annotations

import os
import posixpath
from dataclasses import dataclass, field

import pyarrow.fs as pafs

from tljob.storage.location import Location


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
    # Object stores only: path -> (size, mtime_ns or -1), from the listing itself, so that
    # nobody has to look at each object again (a local stat is cheap; a HEAD is not).
    stats: dict[str, tuple[int, int]] = field(default_factory=dict)
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
            mtime = info.mtime_ns if info.mtime_ns is not None else -1
            found.stats[info.path] = (int(info.size or 0), int(mtime))
        elif info.type == pafs.FileType.Directory:
            found.directories.append(info.path)
        else:
            found.skipped.append({"path": info.path, "reason": "not_a_regular_file"})
    return found
