"""URIs to pyarrow filesystems: ``resolve`` and ``Location`` (pure).

Local paths and ``file://`` URIs resolve to the local filesystem with an absolute path;
``s3://bucket/prefix`` to a ``pyarrow.fs.S3FileSystem`` built from the settings in force
(``settings.current_settings()``), with the path ``bucket/prefix``. One filesystem object is
kept per settings in each process. It is built without credentials, so it pickles without
any: every process that unpickles it (Ray Train's controller and workers) finds its own
through the AWS chain.

Every S3 request is retried (``S3Settings.max_attempts`` attempts, the wait doubling from
50 ms: ``retry_budget_s``), so a store that is down for a while (a restart, a network
blip) stalls reads, checkpoint uploads and Ray Train's own writes instead of failing them.
pyarrow's pickle of an ``S3FileSystem`` drops its retry strategy, so the filesystem
pickles as its settings instead (``RetryingS3FileSystem``): Ray Data tasks, Ray Train's
controller and its workers rebuild it with the same retries.
"""

from __future__ import annotations

import os
import posixpath
import re
import threading
from dataclasses import dataclass

import pyarrow.fs as pafs

from tljob.storage.settings import S3Settings, StorageError, current_settings

SCHEMES = ("file", "s3")
_BUCKET = re.compile(r"^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$")


@dataclass(frozen=True)
class Location:
    """A resolved URI: the filesystem and the path inside it, and the URI itself."""

    fs: pafs.FileSystem
    path: str
    uri: str

    def join(self, *parts: str) -> Location:
        path = posixpath.join(self.path, *parts)
        return Location(self.fs, path, _join_uri(self.uri, *parts))

    def at(self, path: str) -> Location:
        """The ``Location`` of another ``path`` on the same filesystem (e.g. one that
        ``walk_files`` returned), with its URI."""
        if self.is_local():
            return Location(self.fs, path, path)
        return Location(self.fs, path, f"s3://{path}")

    def is_local(self) -> bool:
        return isinstance(self.fs, pafs.LocalFileSystem)

    @property
    def bucket(self) -> str:
        """The bucket of an ``s3://`` location ("" for a local one)."""
        return "" if self.is_local() else self.path.split("/", 1)[0]

    @property
    def key(self) -> str:
        """The key (prefix) inside the bucket of an ``s3://`` location."""
        return "" if self.is_local() else self.path.partition("/")[2]

    @property
    def parent(self) -> Location:
        return self.at(posixpath.dirname(self.path))

    @property
    def name(self) -> str:
        return posixpath.basename(self.path)


def _join_uri(uri: str, *parts: str) -> str:
    return uri.rstrip("/") + "/" + "/".join(p.strip("/") for p in parts)


def resolve(uri: str) -> Location:
    """Resolve a local path, ``file://`` URI or ``s3://bucket/prefix`` to a ``Location``.

    Raises ``StorageError`` (exit 2) naming the URI and the rule it breaks."""
    if not uri:
        raise StorageError("empty path or URI")
    scheme = uri.split("://", 1)[0].lower() if "://" in uri else ""
    if scheme in ("", "file"):
        path = uri[len("file://") :] if scheme else uri
        absolute = os.path.abspath(os.path.expanduser(path))
        return Location(_local_fs(), absolute, absolute)
    if scheme == "s3":
        return _resolve_s3(uri)
    raise StorageError(
        f"{uri!r}: the {scheme}:// scheme is not supported; use a local path, a file:// "
        "URI or s3://bucket/prefix (any S3-compatible store, see `s3.endpoint_url`)"
    )


def _resolve_s3(uri: str) -> Location:
    rest = uri[len("s3://") :]
    bucket, _, key = rest.partition("/")
    key = key.strip("/")
    if not _BUCKET.match(bucket) or ".." in bucket:
        raise StorageError(
            f"{uri!r}: {bucket!r} is not a valid bucket name (3 to 63 lowercase letters, "
            "digits, '.' and '-', starting and ending with a letter or digit); write "
            "s3://bucket/prefix"
        )
    if any(part in ("", ".", "..") for part in key.split("/")) and key:
        raise StorageError(f"{uri!r}: the key has an empty, '.' or '..' part")
    path = f"{bucket}/{key}" if key else bucket
    return Location(s3_filesystem(current_settings()), path, f"s3://{path}")


_lock = threading.Lock()
_filesystems: dict[S3Settings, pafs.S3FileSystem] = {}
_local: list[pafs.LocalFileSystem] = []


def _local_fs() -> pafs.LocalFileSystem:
    if not _local:
        _local.append(pafs.LocalFileSystem())
    return _local[0]


def forget_filesystems() -> None:
    """Drop the cached S3 filesystems (tests; a process whose credentials changed)."""
    with _lock:
        _filesystems.clear()


class RetryingS3FileSystem(pafs.S3FileSystem):
    """pyarrow's S3 filesystem with ``settings.max_attempts`` attempts per request; pickles
    as its (non-secret) settings, so every process rebuilds it with the same retries."""

    def __init__(self, settings: S3Settings) -> None:
        super().__init__(
            region=settings.effective_region,
            endpoint_override=settings.endpoint_host,
            scheme=settings.scheme,
            force_virtual_addressing=settings.addressing_style == "virtual",
            connect_timeout=5,
            request_timeout=60,
            # the AWS SDK's default strategy: network errors, throttling and 5xx answers
            # are retried, waiting 25 ms x 2^n before the n-th retry (no retry quota)
            retry_strategy=pafs.AwsDefaultS3RetryStrategy(max_attempts=settings.max_attempts),
        )
        self.settings = settings

    def __reduce__(self) -> tuple[object, tuple[S3Settings]]:
        return s3_filesystem, (self.settings,)


def retry_budget_s(max_attempts: int) -> float:
    """Seconds an S3 request waits in all between its ``max_attempts`` attempts before it
    fails (the AWS SDK's default strategy: 25 ms x 2^n before the n-th retry)."""
    return 0.025 * sum(2**n for n in range(1, max_attempts))


def s3_filesystem(settings: S3Settings) -> pafs.S3FileSystem:
    """The pyarrow S3 filesystem for ``settings`` (one per settings per process). No
    credentials are given to it: pyarrow's AWS SDK finds them itself."""
    with _lock:
        fs = _filesystems.get(settings)
        if fs is None:
            fs = _filesystems[settings] = RetryingS3FileSystem(settings)
        return fs
