"""The run directory: checked writable before Ray starts, and one run at a time in it (pure).

``<run_dir>/run.lock`` holds who owns the run (host, pid, start time) and a heartbeat the
owner refreshes while it lives. A second run with the same ``run.name`` is refused with the
holder's details. A lock whose owner is gone is taken over: on the same host when its pid
is no longer running, from any host when its heartbeat is older than ``stale_after_s``.
Each heartbeat first reads the lock and refreshes it only while it is still this run's: a
run that was taken over (it looked stale: a long pause, a partition) stops refreshing and
warns, instead of overwriting its successor's lock. (Read, then write: a takeover in the
few milliseconds between them would still be overwritten; a conditional write on the
object's ETag would close that, where the store supports ``If-Match``.)

With ``wait_s``, a live-looking lock is waited for instead of refused at once: a RayJob's
retry starts a new cluster while the crashed driver's last heartbeat is still fresh, and
would otherwise spend a retry on a refusal.
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import socket
import threading
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from tljob import storage
from tljob.errors import UserError

LOCK_FILE = "run.lock"


class RunLockedError(UserError):
    """Another live tljob process holds the run directory."""


class StoragePathError(UserError):
    """``run.storage_path`` cannot hold the run."""


def _run_dir_location(storage_path: str, name: str) -> tuple[storage.Location, str]:
    """``<run.storage_path>/<run.name>`` resolved, neither of them an existing file; and
    the field to name in errors."""
    field = f"`run.storage_path` ({storage_path!r})"
    try:
        root = storage.resolve(storage_path)
    except storage.StorageError as e:
        raise StoragePathError(f"{field}: {e}") from None
    run_dir = root.join(name)
    for loc in (root, run_dir):
        info = loc.fs.get_file_info(loc.path)
        if info.type == storage.pafs.FileType.File:
            raise StoragePathError(
                f"{field}: {loc.uri} is an existing file, not a directory; point "
                "`run.storage_path` at a directory (it is created if missing)"
            )
    return run_dir, field


def _unwritable(field: str, run_dir: storage.Location, reason: str) -> StoragePathError:
    return StoragePathError(
        f"{field}: cannot write the run directory {run_dir.uri} ({reason}); choose a "
        "directory this user can write to"
    )


def prepare_run_dir(storage_path: str, name: str) -> storage.Location:
    """Resolve and create ``<run.storage_path>/<run.name>``; raise ``StoragePathError``
    (exit 2, before Ray starts) when it is not a directory that can be written."""
    run_dir, field = _run_dir_location(storage_path, name)
    try:
        run_dir.fs.create_dir(run_dir.path, recursive=True)
        probe = run_dir.join(".tljob-write-test")
        storage.write_bytes(probe, b"")
        storage.delete_file(probe)
    except OSError as e:
        raise _unwritable(field, run_dir, storage.redact(e.strerror or str(e))) from None
    return run_dir


def check_run_dir(storage_path: str, name: str) -> tuple[storage.Location, bool]:
    """What ``prepare_run_dir`` checks, creating and writing nothing: the run directory
    and whether it exists already. Raises ``StoragePathError`` as it would. A local
    directory is judged by the permissions of itself or of its nearest existing parent; an
    ``s3://`` one by the write probe of ``tljob.preflight.check_storage``."""
    run_dir, field = _run_dir_location(storage_path, name)
    exists = run_dir.fs.get_file_info(run_dir.path).type == storage.pafs.FileType.Directory
    if run_dir.is_local():
        nearest = Path(run_dir.path)
        while not nearest.exists() and nearest != nearest.parent:
            nearest = nearest.parent
        if not nearest.is_dir():
            raise _unwritable(field, run_dir, os.strerror(errno.ENOTDIR))
        if not os.access(nearest, os.W_OK | os.X_OK):
            raise _unwritable(field, run_dir, os.strerror(errno.EACCES))
    return run_dir, exists


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, owned by someone else
        return True
    return True


def _iso(seconds: float) -> str:
    return datetime.fromtimestamp(seconds, UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


class RunLock:
    """Hold ``<run_dir>/run.lock`` from ``acquire`` to ``release`` (or use ``with``)."""

    def __init__(
        self,
        run_dir: storage.Location,
        heartbeat_s: float = 30.0,
        stale_after_s: float = 300.0,
        say: Any = None,
        wait_s: float = 0.0,
    ) -> None:
        self.location = run_dir.join(LOCK_FILE)
        self.heartbeat_s, self.stale_after_s = heartbeat_s, stale_after_s
        self.wait_s = wait_s
        self._say = say or (lambda message: None)
        self._token = uuid.uuid4().hex
        self._owner = {
            "host": socket.gethostname(),
            "pid": os.getpid(),
            "started": time.time(),
            "token": self._token,
        }
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.lost = False  # another run took the lock over while this one held it

    def _record(self) -> bytes:
        return json.dumps({**self._owner, "heartbeat": time.time()}, indent=1).encode()

    def _holder(self) -> dict[str, Any] | None:
        try:
            return json.loads(storage.read_text(self.location))
        except FileNotFoundError:
            return None
        except (OSError, ValueError):
            return {}  # unreadable or half-written: treat as held, judged by its age below

    def _is_stale(self, holder: dict[str, Any]) -> tuple[bool, str]:
        if holder.get("host") == self._owner["host"] and isinstance(holder.get("pid"), int):
            if not _pid_alive(holder["pid"]):
                return True, f"pid {holder['pid']} is no longer running"
            return False, ""
        age = time.time() - float(holder.get("heartbeat", 0.0))
        if age > self.stale_after_s:
            return True, f"its heartbeat is {age:.0f} s old"
        return False, ""

    def acquire(self) -> RunLock:
        """Take the lock or raise ``RunLockedError`` naming the holder; a live holder is
        waited for up to ``wait_s`` (until it releases the lock or goes stale)."""
        deadline = time.monotonic() + self.wait_s
        waiting_said = False
        changes = 0
        while changes < 3:
            if storage.create_exclusive(self.location, self._record()):
                self._start_heartbeat()
                return self
            holder = self._holder()
            if holder is None:
                changes += 1
                continue  # released in between: try again
            stale, why = self._is_stale(holder)
            if not stale:
                left = deadline - time.monotonic()
                if left <= 0:
                    raise RunLockedError(self._held_message(holder))
                if not waiting_said:
                    self._say(
                        f"the run lock is held by pid {holder.get('pid', '?')} on host "
                        f"{holder.get('host', '?')!r}; waiting up to {self.wait_s:.0f} s for it "
                        f"to be released or go stale (no heartbeat for {self.stale_after_s:.0f} s)"
                    )
                    waiting_said = True
                time.sleep(min(left, max(self.heartbeat_s, 0.05)))
                continue
            changes += 1
            self._say(
                f"taking over the stale lock of pid {holder.get('pid', '?')} on host "
                f"{holder.get('host', '?')!r} ({why})"
            )
            storage.delete_file(self.location)
        raise RunLockedError(f"could not take the lock {self.location.uri}: it keeps changing")

    def check(self) -> str:
        """What ``acquire`` would find, in words, taking nothing and writing nothing:
        free, a stale lock it would take over, or a live one it would wait for (up to
        ``wait_s``); raises ``RunLockedError`` as ``acquire`` would without a wait."""
        holder = self._holder()
        if holder is None:
            return f"free ({self.location.uri})"
        who = f"pid {holder.get('pid', '?')} on host {holder.get('host', '?')!r}"
        stale, why = self._is_stale(holder)
        if stale:
            return f"held by {who}, stale ({why}): the run would take it over"
        if self.wait_s <= 0:
            raise RunLockedError(self._held_message(holder))
        return f"held by {who}: the run would wait up to {self.wait_s:.0f} s for it"

    def _held_message(self, holder: dict[str, Any]) -> str:
        waited = f" (waited {self.wait_s:.0f} s)" if self.wait_s > 0 else ""
        return (
            f"run directory {self.location.uri.rsplit('/', 1)[0]!r} is in use by another "
            f"tljob run{waited}: pid {holder.get('pid', '?')} on host "
            f"{holder.get('host', '?')!r}, started {_iso(float(holder.get('started', 0.0)))} "
            f"(lock file {self.location.uri}). Wait for it to finish or choose another "
            "`run.name`; if that process is gone, delete the lock file"
        )

    def _start_heartbeat(self) -> None:
        def beat() -> None:
            while not self._stop.wait(self.heartbeat_s):
                with contextlib.suppress(OSError):  # a storage hiccup: the next beat retries
                    holder = self._holder()
                    if holder is not None and holder.get("token") not in (None, self._token):
                        self._lost(holder)
                        return
                    storage.write_bytes(self.location, self._record())

        self._thread = threading.Thread(target=beat, name="tljob-run-lock", daemon=True)
        self._thread.start()

    def _lost(self, holder: dict[str, Any]) -> None:
        """Another run took the lock over (this process looked stale to it, e.g. after a
        long pause): stop refreshing, never overwrite its lock, and say so."""
        self.lost = True
        self._say(
            f"WARNING: the run lock {self.location.uri} now belongs to pid "
            f"{holder.get('pid', '?')} on host {holder.get('host', '?')!r}, which took it over "
            "as stale; this run no longer refreshes it. Two runs may now write this run "
            "directory: stop one of them"
        )

    def release(self) -> None:
        """Stop the heartbeat and delete the lock file if it is still ours."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=10)
        holder = self._holder()
        if holder and holder.get("token") == self._token:
            storage.delete_file(self.location)

    def __enter__(self) -> RunLock:
        return self.acquire()

    def __exit__(self, *exc: object) -> None:
        self.release()
