"""What pyarrow's filesystem API cannot say: conditional writes and precise S3 errors (pure).

boto3 is used for two things. ``put_if_absent`` is a create-exclusive ``PutObject`` with
``If-None-Match: *``; whether the store honours it is found out once per endpoint and
bucket (``conditional_put_supported``: a probe object written twice, the second write must
be refused with 412) and then remembered. ``probe`` makes the requests a run needs
(list, then optionally write and delete a small object; two attempts each, not
``s3.max_attempts``: a store that does not answer is said at once) and returns an
``S3Problem`` classifying the first failure by the store's error code;
``tljob.preflight`` turns it into the message a user sees. Credentials come from boto3's
standard chain, as for pyarrow.
"""

from __future__ import annotations

import contextlib
import dataclasses
import threading
import uuid
from dataclasses import dataclass
from typing import Any

from tljob import output
from tljob.storage.location import Location
from tljob.storage.redact import redact
from tljob.storage.settings import S3Settings, current_settings

log = output.logger("storage")

BAD_CREDENTIAL_CODES = {
    "InvalidAccessKeyId": "the access key id is not known to the store",
    "SignatureDoesNotMatch": "the secret access key does not match the access key id",
    "InvalidToken": "the session token is not valid",
    "ExpiredToken": "the session token has expired",
    "TokenRefreshRequired": "the session token has expired",
    "InvalidSecurity": "the security token is not valid",
}
NO_BUCKET_CODES = ("NoSuchBucket",)
DENIED_CODES = ("AccessDenied", "AllAccessDisabled", "Forbidden", "403")
_CONDITION_FAILED = ("PreconditionFailed", "412", "ConditionalRequestConflict", "409")
# Answers of a store that does not understand the conditional header.
_NOT_UNDERSTOOD = ("NotImplemented", "501", "InvalidArgument", "InvalidRequest", "400")


@dataclass(frozen=True)
class S3Problem:
    """Why an S3 request failed. ``kind``: unreachable, no_credentials, bad_credentials,
    no_bucket, access_denied or error. ``detail`` is redacted."""

    kind: str
    operation: str  # the S3 API call, e.g. ListObjectsV2
    uri: str  # what it was made on
    detail: str
    credentials: str = ""  # where boto3 found the credentials (env, shared-credentials-file…)


_lock = threading.Lock()
_clients: dict[S3Settings, tuple[Any, Any]] = {}  # settings -> (boto3 session, client)
_conditional: dict[tuple[S3Settings, str], bool] = {}


def forget_clients() -> None:
    """Drop cached boto3 clients (they keep the credentials found when they were made) and
    what is known about conditional writes."""
    with _lock:
        _clients.clear()
        _conditional.clear()


def client(settings: S3Settings | None = None) -> Any:
    """A boto3 S3 client for ``settings`` (default: those in force), one per process."""
    return _session_and_client(settings or current_settings())[1]


def _session_and_client(settings: S3Settings) -> tuple[Any, Any]:
    with _lock:
        found = _clients.get(settings)
        if found is None:
            import boto3
            from botocore.config import Config

            style = settings.addressing_style
            if style == "auto":
                style = "path" if settings.endpoint_url else "auto"
            session = boto3.session.Session()
            s3 = session.client(
                "s3",
                endpoint_url=settings.endpoint_url,
                region_name=settings.effective_region,
                config=Config(
                    s3={"addressing_style": style},
                    # as pyarrow's (location.RetryingS3FileSystem); the standard mode's
                    # waits are random, at most 20 s each
                    retries={"mode": "standard", "max_attempts": settings.max_attempts},
                    connect_timeout=5,
                    read_timeout=60,
                ),
            )
            found = _clients[settings] = (session, s3)
        return found


def credentials_source(settings: S3Settings | None = None) -> str:
    """Where boto3 finds credentials in this process ('' when it finds none)."""
    session = _session_and_client(settings or current_settings())[0]
    try:
        creds = session.get_credentials()
    except Exception:  # a broken profile: the failing request says more
        return ""
    return getattr(creds, "method", "") if creds is not None else ""


def error_code(error: BaseException) -> str:
    response = getattr(error, "response", None) or {}
    code = str(response.get("Error", {}).get("Code", ""))
    status = response.get("ResponseMetadata", {}).get("HTTPStatusCode")
    return code or (str(status) if status else "")


def classify(error: BaseException, operation: str, uri: str, settings: S3Settings) -> S3Problem:
    """The ``S3Problem`` for an exception raised by a boto3 call."""
    from botocore import exceptions as bex

    detail = redact(str(error))
    code = error_code(error)
    source = ""
    if isinstance(error, bex.NoCredentialsError | bex.PartialCredentialsError):
        kind = "no_credentials"
    elif isinstance(error, bex.ConnectionError | bex.ConnectionClosedError | bex.ReadTimeoutError):
        kind = "unreachable"
    elif code in BAD_CREDENTIAL_CODES:
        kind, detail = "bad_credentials", f"{code}: {BAD_CREDENTIAL_CODES[code]}"
    elif code in NO_BUCKET_CODES:
        kind = "no_bucket"
    elif code in DENIED_CODES:
        kind = "access_denied"
    else:
        kind = "error"
    if kind in ("bad_credentials", "access_denied"):
        source = credentials_source(settings)
    return S3Problem(kind, operation, uri, detail, source)


def probe(loc: Location, write: bool, settings: S3Settings | None = None) -> S3Problem | None:
    """Make the requests a run needs at ``loc`` and return the first failure, or None.

    Lists one key under ``loc`` (reachable endpoint, existing bucket, valid keys, list
    permission); with ``write``, also writes and deletes a small object below it."""
    from botocore import exceptions as bex

    settings = settings or current_settings()
    # A store that does not answer is a misconfiguration to say at once, not an outage to
    # wait out for `s3.max_attempts`: the probe tries twice.
    s3 = client(dataclasses.replace(settings, max_attempts=min(settings.max_attempts, 2)))
    prefix = loc.key + "/" if loc.key else ""
    steps: list[tuple[str, Any]] = [
        ("ListObjectsV2", lambda: s3.list_objects_v2(Bucket=loc.bucket, Prefix=prefix, MaxKeys=1))
    ]
    if write:
        key = f"{prefix}.tljob-preflight-{uuid.uuid4().hex}"
        steps += [
            ("PutObject", lambda: s3.put_object(Bucket=loc.bucket, Key=key, Body=b"")),
            ("DeleteObject", lambda: s3.delete_object(Bucket=loc.bucket, Key=key)),
        ]
    for operation, call in steps:
        try:
            call()
        except (bex.BotoCoreError, bex.ClientError) as e:
            return classify(e, operation, loc.uri, settings)
    return None


def conditional_put_supported(loc: Location, settings: S3Settings | None = None) -> bool:
    """Whether the store refuses a second ``PutObject`` with ``If-None-Match: *`` to the same
    key (found out once per endpoint and bucket, with a probe object next to ``loc``)."""
    from botocore import exceptions as bex

    settings = settings or current_settings()
    cache_key = (settings, loc.bucket)
    with _lock:
        known = _conditional.get(cache_key)
    if known is not None:
        return known
    s3 = client(settings)
    key = f"{loc.parent.key}/.tljob-conditional-probe-{uuid.uuid4().hex}".lstrip("/")
    supported = False
    try:
        s3.put_object(Bucket=loc.bucket, Key=key, Body=b"1", IfNoneMatch="*")
        try:
            s3.put_object(Bucket=loc.bucket, Key=key, Body=b"2", IfNoneMatch="*")
        except bex.ClientError as e:
            supported = error_code(e) in _CONDITION_FAILED
    except bex.ClientError as e:
        if error_code(e) not in _NOT_UNDERSTOOD:  # not an answer about the header
            raise OSError(redact(f"PutObject {loc.uri}: {e}")) from None
    except bex.BotoCoreError as e:
        raise OSError(redact(f"PutObject {loc.uri}: {e}")) from None
    finally:
        with contextlib.suppress(bex.BotoCoreError, bex.ClientError):
            s3.delete_object(Bucket=loc.bucket, Key=key)
    if not supported:
        log.info(
            f"the object store {settings.describe()} does not honour conditional writes "
            f"(If-None-Match: *) in bucket {loc.bucket!r}: locks there are taken by "
            "check-then-write, which cannot tell apart two runs started at the same moment"
        )
    with _lock:
        _conditional[cache_key] = supported
    return supported


def put_if_absent(loc: Location, data: bytes, settings: S3Settings | None = None) -> bool:
    """Create the object at ``loc`` unless one exists; True when this call created it.

    A conditional ``PutObject`` where the store honours it, else check-then-write."""
    from botocore import exceptions as bex

    settings = settings or current_settings()
    s3 = client(settings)
    if conditional_put_supported(loc, settings):
        try:
            s3.put_object(Bucket=loc.bucket, Key=loc.key, Body=data, IfNoneMatch="*")
        except (bex.BotoCoreError, bex.ClientError) as e:
            if error_code(e) in _CONDITION_FAILED:
                return False
            raise OSError(redact(f"PutObject {loc.uri}: {e}")) from None
        return True
    try:
        s3.head_object(Bucket=loc.bucket, Key=loc.key)
        return False
    except (bex.BotoCoreError, bex.ClientError) as e:
        if error_code(e) not in ("404", "NoSuchKey", "NotFound"):
            raise OSError(redact(f"HeadObject {loc.uri}: {e}")) from None
    try:
        s3.put_object(Bucket=loc.bucket, Key=loc.key, Body=data)
    except (bex.BotoCoreError, bex.ClientError) as e:
        raise OSError(redact(f"PutObject {loc.uri}: {e}")) from None
    return True
