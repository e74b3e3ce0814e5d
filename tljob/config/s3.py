"""The ``s3`` section: how ``s3://`` URIs are reached, and the rule that keeps credentials
out of every config (pure). The rules on the values themselves (http needs ``allow_http``,
path-style needs an endpoint) live with ``tljob.storage.S3Settings``, which applies them
again once the environment has filled in empty fields; ``JobConfig`` calls it.
"""

from __future__ import annotations

import re
from typing import Any, Literal

from pydantic import Field

from tljob.config._base import _Section

# Key names that hold credentials. They are refused anywhere in a config, with a message
# that never repeats the value: config.yaml is saved with every run and printed by
# `tljob config`, so a key written there would leak.
CREDENTIAL_KEY = re.compile(
    r"(?i)(secret|password|passwd|access_?key|session_?token|security_?token|credential"
    r"|api_?key|^token$|_token$)"
)
ADDRESSING_STYLES = ("auto", "path", "virtual")


class S3Section(_Section):
    endpoint_url: str | None = Field(
        None,
        description="S3 endpoint of a store other than AWS (MinIO, Ceph, SeaweedFS, ...), "
        "as scheme://host[:port]. Empty: AWS_ENDPOINT_URL_S3 or AWS_ENDPOINT_URL from the "
        "environment, else AWS S3 itself. Credentials never go here: every process takes "
        "them from the standard AWS chain (AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY / "
        "AWS_SESSION_TOKEN, the AWS_PROFILE profile, web identity on Kubernetes).",
    )
    region: str | None = Field(
        None,
        min_length=1,
        description="S3 region for request signing. Empty: AWS_REGION or AWS_DEFAULT_REGION "
        "from the environment, else us-east-1 with `s3.endpoint_url` and the AWS "
        "configuration without it.",
    )
    addressing_style: Literal["auto", "path", "virtual"] = Field(
        "auto",
        description="How buckets are addressed: path (http://host/bucket/key, what most "
        "self-hosted stores need), virtual (http://bucket.host/key), or auto (virtual on "
        "AWS, path with `s3.endpoint_url`). path needs `s3.endpoint_url`.",
    )
    allow_http: bool = Field(
        False,
        description="Allow a plain http `s3.endpoint_url` (data and request signatures "
        "unencrypted): only for a local or otherwise trusted server.",
    )
    max_attempts: int | None = Field(
        None,
        ge=1,
        le=16,
        description="Attempts of every S3 request before it fails (the first included), in "
        "every process of the job: a network error, throttling or a 5xx answer is retried "
        "after 50 ms, then a wait twice as long each time: 10 attempts wait about 26 s in "
        "all, 12 about 102 s, 14 about 7 min. A store down for longer fails the worker "
        "group, which Ray Train restarts from the newest complete checkpoint "
        "(`scaling.max_failures`). Empty: AWS_MAX_ATTEMPTS from the environment, else 12.",
    )


_REPORT = object()  # marks a stack entry of credential_keys that is a path to report


def credential_keys(tree: Any, prefix: str = "") -> list[str]:
    """Dotted paths of keys in a raw config tree whose names look like credentials.

    Each container is visited once, at the first path that reaches it: YAML aliases share
    one object between many places, and a walk of every place could take forever (a shared
    key is still reported, at that first path).
    """
    found: list[str] = []
    seen: set[int] = set()
    # entries: (a node to walk, its path prefix) or (_REPORT, a credential key's path),
    # pushed in reverse so that paths come out in the file's order
    stack: list[tuple[Any, str]] = [(tree, prefix)]
    while stack:
        node, path = stack.pop()
        if node is _REPORT:
            found.append(path)
            continue
        if not isinstance(node, dict | list) or id(node) in seen:
            continue
        seen.add(id(node))
        items = node.items() if isinstance(node, dict) else enumerate(node)
        for key, value in reversed(list(items)):
            here = f"{path}{key}"
            stack.append((value, f"{here}."))
            if isinstance(node, dict) and isinstance(key, str) and CREDENTIAL_KEY.search(key):
                stack.append((_REPORT, here))
    return found
