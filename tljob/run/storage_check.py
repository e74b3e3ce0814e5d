"""Do the Ray nodes reach the object store as the driver does? One Ray task per node.

The driver found its credentials; Ray Data tasks and Train workers find their own, on
their own nodes (tljob never ships credentials). Before any data is read, a zero-CPU task
pinned to every alive node makes the same requests as ``tljob.preflight.check_storage``
with the driver's non-secret settings, and ``tljob.preflight.check_worker_probes`` refuses
the job (exit 2) naming the nodes that failed and why.
"""

from __future__ import annotations

from typing import Any

import ray
from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

from tljob import preflight, storage
from tljob.storage import s3api

PROBE_TIMEOUT_S = 180.0


def _probe_here(
    settings: storage.S3Settings, found: list[preflight.Target]
) -> list[tuple[preflight.Target, s3api.S3Problem]]:
    storage.configure(settings)
    return preflight.probe_targets(found)


def check_workers_reach_storage(job: Any, say: Any = None) -> None:
    """Raise ``StorageAccessError`` unless a task on every alive node can do what the run
    needs at the job's ``s3://`` locations. Needs a running Ray; no-op without S3."""
    found = preflight.targets(job)
    if not found:
        return
    settings = storage.current_settings()
    probe = ray.remote(num_cpus=0, max_retries=0)(_probe_here)
    nodes = [n for n in ray.nodes() if n.get("Alive")]
    addresses = [str(node.get("NodeManagerAddress") or node["NodeID"]) for node in nodes]
    refs = {
        # several nodes on one host (a test cluster) are told apart by their id
        (
            address if addresses.count(address) == 1 else f"{address} ({node['NodeID'][:8]})"
        ): probe.options(
            scheduling_strategy=NodeAffinitySchedulingStrategy(node["NodeID"], soft=False),
            name="tljob-storage-check",
        ).remote(settings, found)
        for address, node in zip(addresses, nodes, strict=True)
    }
    try:
        answers = ray.get(list(refs.values()), timeout=PROBE_TIMEOUT_S)
    except ray.exceptions.GetTimeoutError:
        for ref in refs.values():
            ray.cancel(ref, force=True)
        raise preflight.StorageAccessError(
            f"the object-store check on the Ray nodes did not finish within "
            f"{PROBE_TIMEOUT_S:.0f} s ({len(refs)} node(s)); check that the nodes can reach "
            f"{settings.describe()}"
        ) from None
    preflight.check_worker_probes(dict(zip(refs, answers, strict=True)), s3api.credentials_source())
    if say is not None:
        say(f"object store reachable from all {len(refs)} Ray node(s): {settings.describe()}")
