"""Whether the object store can be used as configured, before any data is read (pure).

For every ``s3://`` location of a job, ``check_storage`` makes the requests the run will
make: a list under ``data.source`` (each of its sources); a list, a small write and a
delete under the run directory (``<run.storage_path>/<run.name>``). The first failure is a
``StorageAccessError`` (exit 2) with one paragraph: what was tried (endpoint, bucket or
URI, S3 operation), what the store answered, where this process found its credentials and
what to check. No secret is ever in it: texts from boto3 and the store are redacted.

The same probe runs as a Ray task on every node (``tljob.run.storage_check``), because Ray
workers find their own credentials; ``check_worker_probes`` judges what they found.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from tljob import storage
from tljob.preflight._common import PreflightError
from tljob.storage import s3api
from tljob.storage.s3api import S3Problem


class StorageAccessError(PreflightError):
    """The object store cannot be reached, or refuses what the run needs to do there."""


@dataclass(frozen=True)
class Target:
    """One location a run uses: the setting it comes from, its URI, whether it is written."""

    field: str
    uri: str
    write: bool


def targets(job) -> list[Target]:  # job: tljob.config.JobConfig
    """The ``s3://`` locations of ``job``: the sources (read) and the run directory (write)."""
    found = []
    sources = job.data.sources
    for index, source in enumerate(sources):
        if source.startswith("s3://"):
            field = "`data.source`" if len(sources) == 1 else f"`data.source[{index}]`"
            found.append(Target(field, source, False))
    if (job.data.test_source or "").startswith("s3://"):
        found.append(Target("`data.test_source`", job.data.test_source, False))
    if job.run.storage_path.startswith("s3://"):
        run_dir = storage.resolve(job.run.storage_path).join(job.run.name)
        found.append(Target("`run.storage_path` + `run.name`", run_dir.uri, True))
    return found


def probe_targets(found: Sequence[Target]) -> list[tuple[Target, S3Problem]]:
    """Probe every target with the settings in force; the failures, with their target."""
    problems = []
    for target in found:
        problem = s3api.probe(storage.resolve(target.uri), write=target.write)
        if problem is not None:
            problems.append((target, problem))
    return problems


def check_storage(job) -> None:
    """Raise ``StorageAccessError`` when this process cannot use the job's object store."""
    problems = probe_targets(targets(job))
    if problems:
        target, problem = problems[0]
        raise StorageAccessError(describe(problem, target, "this process"))


_SOURCES = {
    "env": "the environment variables AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY",
    "shared-credentials-file": "the shared credentials file",
    "config-file": "the AWS config file",
    "assume-role-with-web-identity": "web identity (AWS_WEB_IDENTITY_TOKEN_FILE, AWS_ROLE_ARN)",
    "iam-role": "the instance metadata service",
    "container-role": "the container credentials endpoint",
}


def credentials_text(method: str) -> str:
    """Where credentials came from, in words (never the credentials)."""
    text = _SOURCES.get(method, method or "nowhere")
    if method in ("shared-credentials-file", "config-file"):
        text += f" (profile {os.environ.get('AWS_PROFILE') or 'default'})"
    return text


def describe(problem: S3Problem, target: Target, who: str) -> str:
    """One paragraph: what ``who`` tried, what the store answered, what to check."""
    settings = storage.current_settings()
    endpoint = settings.describe()
    bucket = storage.resolve(target.uri).bucket
    tried = f"{problem.operation} on {problem.uri} ({target.field}) at {endpoint}"
    creds = credentials_text(problem.credentials)
    chain = (
        "AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY (plus AWS_SESSION_TOKEN for temporary "
        "keys), a shared profile named by AWS_PROFILE, or web identity on Kubernetes"
    )
    if problem.kind == "unreachable":
        return (
            f"cannot reach the S3 endpoint: {who} tried {tried} and got no answer "
            f"({problem.detail}). Check the endpoint URL and port ({settings.endpoint_source}"
            " or AWS_ENDPOINT_URL), that the server is running, and that it can be reached "
            "from here (DNS, proxy, firewall)."
        )
    if problem.kind == "no_credentials":
        return (
            f"no S3 credentials: {who} tried {tried} but found none in the standard AWS "
            f"chain. Give it {chain}; credentials are never read from the config."
        )
    if problem.kind == "bad_credentials":
        return (
            f"the S3 endpoint refused the credentials: {who} tried {tried} with credentials "
            f"from {creds}, and the store answered {problem.detail}. Check the access key "
            "id, secret key and session token there (they are not shown here), and that "
            f"they belong to this store ({endpoint})."
        )
    if problem.kind == "no_bucket":
        return (
            f"the bucket {bucket!r} does not exist: {who} tried {tried} and the store "
            "answered NoSuchBucket. Check the bucket name, and that `s3.endpoint_url` and "
            "`s3.region` point at the store that holds it; tljob never creates buckets."
        )
    if problem.kind == "access_denied":
        if target.write:
            need = (
                "s3:ListBucket on the bucket and s3:PutObject, s3:GetObject and "
                f"s3:DeleteObject under {target.uri}/, or choose a `run.storage_path` "
                "they may write to"
            )
        else:
            need = f"s3:ListBucket on bucket {bucket!r} and s3:GetObject under {target.uri}/"
        return (
            f"no permission: {who} tried {tried} with credentials from {creds}, and the "
            f"store answered AccessDenied. Grant those credentials {need}."
        )
    return (
        f"the object store failed a request: {who} tried {tried} and got: {problem.detail}. "
        "Check the `s3` settings and the store's logs."
    )


def check_worker_probes(
    results: Mapping[str, Sequence[tuple[Target, S3Problem]]], driver_credentials: str
) -> None:
    """Raise ``StorageAccessError`` when the probe failed on any Ray node; ``results`` maps
    each node's address to the failures a Ray task found there."""
    failed = {node: found for node, found in results.items() if found}
    if not failed:
        return
    nodes = sorted(failed)
    target, problem = failed[nodes[0]][0]
    who = f"a Ray task on node {nodes[0]}"
    others = (
        f" (and the same check failed on {len(nodes) - 1} more node(s): "
        + ", ".join(nodes[1:])
        + ")"
        if len(nodes) > 1
        else ""
    )
    raise StorageAccessError(
        "the Ray workers cannot use the object store as the driver can (the driver found "
        f"its credentials in {credentials_text(driver_credentials)}): "
        + describe(problem, target, who)
        + others
        + " Every Ray node finds its own credentials; tljob never copies them from the "
        "driver. On KubeRay give the worker pods the same AWS variables from the Secret as "
        "the head (as `tljob k8s render` does) or a service account with web identity; on a "
        "cluster started with `ray start`, start each node with the credentials in its "
        "environment, or submit the job with `ray job submit --runtime-env-json` setting "
        "AWS_PROFILE and AWS_SHARED_CREDENTIALS_FILE (a file every node can read)."
    )
