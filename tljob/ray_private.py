"""Every use tljob makes of Ray's private APIs, in one room.

Ray offers no public way to do these seven things, so tljob reaches inside; each function
below says what it relies on, and ``tests/test_ray_private.py`` has a test per use that
fails when Ray changes the behaviour relied on. They were verified on the Ray versions in
``VERIFIED_RAY_VERSIONS``; ``check_ray_version`` refuses any other (the escape hatch is
``TLJOB_ALLOW_UNTESTED_RAY=1``).

1. ``DataContext._execution_idx``: how many times a dataset has been executed, which is the
   epoch of an augmented training stream (read in tasks, and written when a restarted worker
   group resumes; see ``tljob.data.views``).
2. ``Tuner._local_tuner``: the RunConfig a restored Tuner runs with, whose verbosity
   ``Tuner.restore`` takes no parameter for.
3. ``ray._private.worker.global_worker_stdstream_dispatcher``: the handler that prints
   output forwarded from workers, replaced to print only tljob's lines, clean.
4. ``ray._private.worker.print_to_stdstream``: the function that prints raylet warnings,
   wrapped to drop Ray's housekeeping notices.
5. The logger ``ray._private.authentication.authentication_token_setup``, silenced for its
   start-up notice unless ``--verbose``.
6. ``ray.experimental.internal_kv``'s ``_internal_kv_put/get/del``: the cluster's key-value
   store (in the GCS, not on the run's storage), where rank 0 notes each checkpoint it
   saved so that a run whose storage failed can still name where a rerun resumes.
7. ``StreamSplitDataIterator._coord_actor.stats``: a streaming split's execution
   statistics as data (rows out, the tasks' CPU time), for the stream's rate per CPU.

Nothing here imports Ray at module level: the driver-side helpers of ``tljob.output`` use
it lazily.
"""

from __future__ import annotations

import functools
import logging
import os
import sys
from collections.abc import Callable
from typing import Any

from tljob.errors import UserError

VERIFIED_RAY_VERSIONS = ("2.60.0",)
ALLOW_UNTESTED_ENV = "TLJOB_ALLOW_UNTESTED_RAY"
AUTH_NOTICE_LOGGER = "ray._private.authentication.authentication_token_setup"
_PRINT_LOGS_HANDLER = "ray_print_logs"

log = logging.getLogger("tljob.ray_private")


class UntestedRayError(UserError, RuntimeError):
    """The installed Ray is not one tljob's private-API uses were verified on."""


def installed_ray_version() -> str:
    """The installed Ray's version, read from its package metadata: checking it costs no
    import of Ray (a bad config is refused before Ray is loaded)."""
    import importlib.metadata

    return importlib.metadata.version("ray")


def check_ray_version(version: str | None = None) -> None:
    """Refuse (``UntestedRayError``, exit 2) a Ray other than ``VERIFIED_RAY_VERSIONS``
    unless ``TLJOB_ALLOW_UNTESTED_RAY=1``, in which case only warn. ``version`` defaults to
    the installed Ray's (``installed_ray_version``)."""
    if version is None:
        version = installed_ray_version()
    if version in VERIFIED_RAY_VERSIONS:
        return
    verified = ", ".join(VERIFIED_RAY_VERSIONS)
    if os.environ.get(ALLOW_UNTESTED_ENV) == "1":
        log.warning(
            f"Ray {version} is not one tljob was verified on ({verified}); running anyway "
            f"({ALLOW_UNTESTED_ENV}=1)"
        )
        return
    raise UntestedRayError(
        f"Ray {version} is installed, but tljob relies on Ray internals verified only on "
        f"Ray {verified} (epoch counting of augmented streams, log filtering, sweep "
        f"resume): install one of those (pip install 'ray[default,train,tune,data]=="
        f"{VERIFIED_RAY_VERSIONS[-1]}'), or set {ALLOW_UNTESTED_ENV}=1 to run at your own "
        "risk and check the results"
    )


# 1. Ray Data's execution counter


def execution_index(context: Any) -> int:
    """Executions of the dataset that owns ``context`` (a ``ray.data.DataContext``) so
    far; inside a task, ``DataContext.get_current()`` is the executing dataset's context."""
    return context._execution_idx


def set_execution_index(context: Any, value: int) -> None:
    """Make the next execution of the dataset owning ``context`` count as ``value``."""
    context._execution_idx = value


# 2. A restored Tuner's run config


def set_restored_tuner_verbosity(tuner: Any, verbose: int) -> None:
    """Set the Ray Tune verbosity (0..3) a ``tune.Tuner`` (restored or new) runs with."""
    tuner._local_tuner.get_run_config().verbose = verbose


def tuner_verbosity(tuner: Any) -> int:
    """The verbosity a ``tune.Tuner`` will run with (for the tests)."""
    return tuner._local_tuner.get_run_config().verbose


# 3 and 4. What a driver prints of forwarded output


def replace_worker_output_printer(select: Callable[[str], str | None]) -> bool:
    """In a driver joined with ``log_to_driver=True``, print forwarded lines as ``select``
    returns them, without Ray's ``(name pid=…)`` prefix, its colour codes or its
    de-duplication, each to the stream it came from; lines it maps to None are not
    printed (they stay in Ray's session log files). Returns whether the printer was
    replaced: False when this is not such a driver or Ray's internals moved."""
    try:
        from ray._private import worker as ray_worker

        dispatcher = ray_worker.global_worker_stdstream_dispatcher
    except (ImportError, AttributeError):
        return False
    handlers = getattr(dispatcher, "handlers", [])
    if not any(name == _PRINT_LOGS_HANDLER for name, _ in handlers):
        return False

    def selected_lines_only(data: dict[str, Any]) -> None:
        chosen = [select(line) for line in data.get("lines", [])]
        text = "".join(f"{line}\n" for line in chosen if line is not None)
        if text:
            sink = sys.stderr if data.get("is_err") else sys.stdout
            sink.write(text)
            sink.flush()

    dispatcher.remove_handler(_PRINT_LOGS_HANDLER)
    dispatcher.add_handler(_PRINT_LOGS_HANDLER, selected_lines_only)
    return True


def filter_stdstream_prints(drop: Callable[[str], bool]) -> bool:
    """Wrap Ray's ``print_to_stdstream`` (raylet warnings and forwarded output) so that
    lines for which ``drop`` is true are not printed. Idempotent; returns whether the
    filter is on (False when Ray's internals moved)."""
    try:
        from ray._private import worker as ray_worker

        original = ray_worker.print_to_stdstream
    except (ImportError, AttributeError):
        return False
    if getattr(original, "_tljob_filter", False):
        return True

    @functools.wraps(original)  # its signature and __wrapped__ stay Ray's
    def without_dropped(data: dict[str, Any], ignore_prefix: bool) -> None:
        lines = [line for line in data.get("lines", []) if not drop(line)]
        if lines:
            original({**data, "lines": lines}, ignore_prefix=ignore_prefix)

    without_dropped._tljob_filter = True  # type: ignore[attr-defined]
    ray_worker.print_to_stdstream = without_dropped
    return True


# 5. Ray's token-authentication notice


def silence_auth_notice() -> None:
    """Hide Ray's start-up notice that a local cluster uses token authentication."""
    logging.getLogger(AUTH_NOTICE_LOGGER).setLevel(logging.ERROR)


# 6. The cluster's key-value store


def kv_put(key: str, value: str, namespace: str) -> None:
    """Store ``value`` under ``key`` in the cluster's key-value store (overwriting)."""
    from ray.experimental import internal_kv

    internal_kv._internal_kv_put(key, value, overwrite=True, namespace=namespace)


def kv_get(key: str, namespace: str) -> bytes | None:
    """The value stored under ``key``, or None."""
    from ray.experimental import internal_kv

    return internal_kv._internal_kv_get(key, namespace=namespace)


def kv_del(key: str, namespace: str) -> None:
    """Remove ``key`` from the cluster's key-value store."""
    from ray.experimental import internal_kv

    internal_kv._internal_kv_del(key, namespace=namespace)


def requested_resources() -> list[dict[str, float]]:
    """The bundles of the standing ``ray.autoscaler.sdk.request_resources`` request, as the
    autoscaler reads it ([] when none): the GCS's cluster resource constraint under
    autoscaler v2 (KubeRay with ``RAY_enable_autoscaler_v2``), else the internal KV
    channel that autoscaler v1 polls."""
    from ray.autoscaler.v2.utils import is_autoscaler_v2

    if is_autoscaler_v2():
        import ray
        from ray._raylet import GcsClient
        from ray.autoscaler.v2.sdk import get_cluster_resource_state

        gcs = GcsClient(address=ray.get_runtime_context().gcs_address)
        constraints = get_cluster_resource_state(gcs).cluster_resource_constraints
        return [
            dict(bundle.request.resources_bundle)
            for constraint in constraints
            for bundle in constraint.resource_requests
            for _ in range(bundle.count)
        ]
    import json

    from ray._private.ray_constants import AUTOSCALER_RESOURCE_REQUEST_CHANNEL
    from ray.experimental.internal_kv import _internal_kv_get

    raw = _internal_kv_get(AUTOSCALER_RESOURCE_REQUEST_CHANNEL)
    return json.loads(raw) if raw else []


# 7. A streaming split's execution statistics


def stream_images_per_cpu_s(shard: Any) -> float | None:
    """Rows the current execution of a ``streaming_split`` shard's dataset produced per
    CPU-second its tasks used (every operator's remote CPU time), or None when unknown.

    Relies on ``StreamSplitDataIterator._coord_actor.stats`` (the split coordinator's
    ``DatasetStats``; the public ``stats()`` gives only its text), whose summary holds the
    split operator and, in its ``parents``, the operators before it: their
    ``output_num_rows`` and ``get_total_cpu_time()``."""
    try:
        import ray

        summary = ray.get(shard._coord_actor.stats.remote(), timeout=30).to_summary()
        cpu = summary.get_total_cpu_time()
        rows, pending = 0, [summary]
        while pending and not rows:  # the rows out of the operator nearest the split
            node = pending.pop(0)
            rows = next(
                (op.output_num_rows.sum for op in node.operators_stats if op.output_num_rows),
                0,
            )
            pending.extend(node.parents)
    except Exception:  # a figure for the summary: never a reason to stop training
        log.debug("no stream statistics", exc_info=True)
        return None
    return round(rows / cpu, 1) if cpu > 0 and rows > 0 else None
