"""Keep credentials out of every message tljob prints, logs or saves (pure).

``redact(text)`` replaces the values of the AWS credentials this process can see (the
``AWS_ACCESS_KEY_ID``, ``AWS_SECRET_ACCESS_KEY``, ``AWS_SESSION_TOKEN`` and
``AWS_SECURITY_TOKEN`` variables, and the keys of the shared credentials file) and anything
shaped like an access key id or a request signature with ``[redacted]``. Error texts from
pyarrow, boto3 and the object store pass through it before they reach a user.
"""

from __future__ import annotations

import configparser
import os
import re
from pathlib import Path

REDACTED = "[redacted]"
SECRET_ENV = (
    "AWS_ACCESS_KEY_ID",
    "AWS_SECRET_ACCESS_KEY",
    "AWS_SESSION_TOKEN",
    "AWS_SECURITY_TOKEN",
)
_FILE_KEYS = ("aws_access_key_id", "aws_secret_access_key", "aws_session_token")
_PATTERNS = [
    re.compile(r"\b(?:AKIA|ASIA|AROA|AIDA)[A-Z0-9]{16}\b"),  # AWS access key ids
    re.compile(r"(?i)(credential=)[^,\s&]+"),
    re.compile(r"(?i)(signature=)[0-9a-f]+"),
    re.compile(r"(?i)(x-amz-(?:security-token|credential|signature)[=:]\s*)[^&\s]+"),
    re.compile(r"(?i)(aws_(?:secret_access_key|session_token|access_key_id)\s*[=:]\s*)\S+"),
]
_MIN_SECRET_LENGTH = 4  # shorter values would blank out ordinary words
_file_cache: dict[str, tuple[float, tuple[str, ...]]] = {}


def _credentials_file_values() -> tuple[str, ...]:
    path = os.environ.get("AWS_SHARED_CREDENTIALS_FILE") or str(
        Path.home() / ".aws" / "credentials"
    )
    try:
        mtime = os.stat(path).st_mtime
    except OSError:
        return ()
    cached = _file_cache.get(path)
    if cached and cached[0] == mtime:
        return cached[1]
    parser = configparser.RawConfigParser()
    try:
        parser.read(path)
    except (configparser.Error, OSError, UnicodeDecodeError):
        return ()
    values = tuple(
        parser.get(section, key)
        for section in parser.sections()
        for key in _FILE_KEYS
        if parser.has_option(section, key)
    )
    _file_cache[path] = (mtime, values)
    return values


def secret_values() -> list[str]:
    """The credential strings this process knows of, longest first."""
    found = {os.environ.get(name, "") for name in SECRET_ENV}
    found.update(_credentials_file_values())
    return sorted((v for v in found if len(v) >= _MIN_SECRET_LENGTH), key=len, reverse=True)


def redact(text: str) -> str:
    """``text`` with every known credential and credential-shaped string replaced."""
    for value in secret_values():
        text = text.replace(value, REDACTED)
    for pattern in _PATTERNS:
        text = pattern.sub(lambda m: (m.group(1) if m.groups() else "") + REDACTED, text)
    return text
