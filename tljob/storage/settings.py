"""How ``s3://`` URIs are reached: endpoint, region, addressing, plain http (pure).

``S3Settings`` holds only what is not secret. Credentials never pass through tljob: pyarrow
and boto3 each find them with the standard AWS chain of the process that makes the request
(``AWS_ACCESS_KEY_ID``/``AWS_SECRET_ACCESS_KEY``/``AWS_SESSION_TOKEN``, the shared profile
of ``AWS_PROFILE``, web identity on Kubernetes, instance metadata).

The settings in force in a process, in order of precedence:

1. what ``configure(settings)`` set (the driver, from the job's ``s3`` section; the Train
   workers, from the ``LoopConfig``);
2. the JSON in the ``TLJOB_S3`` environment variable, which the driver puts in the Ray
   ``runtime_env`` (``worker_env()``) so that Ray Data tasks and every other process of the
   job resolve URIs as the driver does;
3. the standard AWS variables: ``AWS_ENDPOINT_URL_S3`` / ``AWS_ENDPOINT_URL``,
   ``AWS_REGION`` / ``AWS_DEFAULT_REGION``.

``from_config`` fills each setting the config leaves empty from (3), so the driver ships
the settings it actually uses.
"""

from __future__ import annotations

import json
import os
import threading
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from typing import Any
from urllib.parse import urlsplit

from tljob.errors import UserError

ENV_VAR = "TLJOB_S3"
ENDPOINT_ENV = ("AWS_ENDPOINT_URL_S3", "AWS_ENDPOINT_URL")
REGION_ENV = ("AWS_REGION", "AWS_DEFAULT_REGION")
ATTEMPTS_ENV = "AWS_MAX_ATTEMPTS"
DEFAULT_MAX_ATTEMPTS = 12  # about 102 s of waiting between them (location.retry_budget_s)
MAX_ATTEMPTS_RANGE = (1, 16)
ADDRESSING_STYLES = ("auto", "path", "virtual")
DEFAULT_CUSTOM_REGION = "us-east-1"  # what S3-compatible stores expect when none is given


class StorageError(UserError, ValueError):
    """A URI or storage setting that cannot be used; the message names it and says why."""


@dataclass(frozen=True)
class S3Settings:
    """Non-secret S3 connection settings (picklable, hashable; safe to log and to ship)."""

    endpoint_url: str | None = None  # scheme://host[:port]; None: AWS itself
    region: str | None = None
    addressing_style: str = "auto"  # auto: virtual-hosted on AWS, path-style elsewhere
    allow_http: bool = False
    endpoint_source: str = "`s3.endpoint_url`"  # where the endpoint came from, for messages
    max_attempts: int = DEFAULT_MAX_ATTEMPTS  # of every request, the first included

    def __post_init__(self) -> None:
        self.check()

    def check(self) -> None:
        """Raise ``StorageError`` for settings no request could use."""
        low, high = MAX_ATTEMPTS_RANGE
        if (
            isinstance(self.max_attempts, bool)
            or not isinstance(self.max_attempts, int)
            or not (low <= self.max_attempts <= high)
        ):
            raise StorageError(
                f"`s3.max_attempts` ({self.max_attempts!r}) must be a whole number from {low} "
                f"to {high} (or {ATTEMPTS_ENV} in the environment)"
            )
        if self.addressing_style not in ADDRESSING_STYLES:
            raise StorageError(
                f"`s3.addressing_style` ({self.addressing_style!r}) must be one of "
                + ", ".join(ADDRESSING_STYLES)
            )
        if self.endpoint_url is None:
            if self.addressing_style == "path":
                raise StorageError(
                    "`s3.addressing_style` ('path') needs `s3.endpoint_url`: against AWS "
                    "itself pyarrow always uses virtual-hosted addressing"
                )
            return
        parts = urlsplit(self.endpoint_url)
        where = f"{self.endpoint_source} ({self.endpoint_url!r})"
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise StorageError(f"{where} must look like https://host[:port]")
        if parts.username or parts.password:
            raise StorageError(
                f"{self.endpoint_source} must not hold credentials; they come from the AWS "
                "chain (environment, profile, web identity)"
            )
        if parts.path.strip("/") or parts.query or parts.fragment:
            raise StorageError(f"{where} must be scheme://host[:port], without a path")
        if parts.scheme == "http" and not self.allow_http:
            raise StorageError(
                f"{where} is plain http, which sends data and request signatures "
                "unencrypted; use https, or set `s3.allow_http: true` for a local or "
                "otherwise trusted server"
            )

    @property
    def scheme(self) -> str:
        return urlsplit(self.endpoint_url).scheme if self.endpoint_url else "https"

    @property
    def endpoint_host(self) -> str | None:
        """``host[:port]`` of the endpoint (pyarrow's ``endpoint_override``)."""
        return urlsplit(self.endpoint_url).netloc if self.endpoint_url else None

    @property
    def effective_region(self) -> str | None:
        if self.region:
            return self.region
        return DEFAULT_CUSTOM_REGION if self.endpoint_url else None

    def describe(self) -> str:
        """Where requests go, for messages: the endpoint (or AWS) and the region."""
        where = self.endpoint_url or "AWS S3"
        return f"{where} (region {self.effective_region or 'from the AWS configuration'})"

    def to_env(self) -> dict[str, str]:
        """``{TLJOB_S3: json}``: the settings for the ``runtime_env`` of Ray processes."""
        return {ENV_VAR: json.dumps(asdict(self), sort_keys=True)}

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> S3Settings:
        """The settings a process has without ``configure``: ``TLJOB_S3``, else the AWS
        variables."""
        environ = os.environ if environ is None else environ
        shipped = environ.get(ENV_VAR)
        if shipped:
            try:
                return cls(**json.loads(shipped))
            except (ValueError, TypeError) as e:
                raise StorageError(f"environment variable {ENV_VAR} is not valid: {e}") from None
        return cls.from_config(None, environ)

    @classmethod
    def from_config(cls, section: Any, environ: Mapping[str, str] | None = None) -> S3Settings:
        """The job's ``s3`` section (any object with its attributes, or None) with every
        empty setting taken from the AWS environment variables."""
        environ = os.environ if environ is None else environ
        endpoint = getattr(section, "endpoint_url", None) or None
        source = "`s3.endpoint_url`"
        if endpoint is None:
            name = next((n for n in ENDPOINT_ENV if environ.get(n)), None)
            if name:
                endpoint, source = environ[name], f"environment variable {name}"
        region = getattr(section, "region", None) or next(
            (environ[n] for n in REGION_ENV if environ.get(n)), None
        )
        attempts = getattr(section, "max_attempts", None)
        if attempts is None and environ.get(ATTEMPTS_ENV):
            try:
                attempts = int(environ[ATTEMPTS_ENV])
            except ValueError:
                raise StorageError(
                    f"environment variable {ATTEMPTS_ENV} ({environ[ATTEMPTS_ENV]!r}) must be "
                    "a whole number"
                ) from None
        return cls(
            endpoint_url=endpoint.rstrip("/") if endpoint else None,
            region=region,
            addressing_style=getattr(section, "addressing_style", "auto"),
            allow_http=bool(getattr(section, "allow_http", False)),
            endpoint_source=source,
            max_attempts=DEFAULT_MAX_ATTEMPTS if attempts is None else attempts,
        )


_lock = threading.Lock()
_configured: S3Settings | None = None


def configure(settings: S3Settings | None) -> None:
    """Use ``settings`` for every URI this process resolves from now on (None: back to the
    environment)."""
    global _configured
    with _lock:
        _configured = settings


def current_settings() -> S3Settings:
    """The settings in force in this process (see the module docstring)."""
    with _lock:
        configured = _configured
    return configured if configured is not None else S3Settings.from_env()


def worker_env() -> dict[str, str]:
    """Environment variables (none secret) that give Ray processes this process's settings."""
    return current_settings().to_env()
