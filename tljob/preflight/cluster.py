"""Whether the cluster's nodes can place the workers and leave CPUs for Ray Data (pure)."""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from tljob.config import ScalingSection
from tljob.preflight._common import ClusterTooSmallError, ResourceWaitTimeoutError

# Ray counts resources in fixed point, in units of 1/10000.
_RAY_UNITS = 10_000
_POLL_SECONDS = 10.0


@dataclass(frozen=True)
class Node:
    """One alive Ray node: its total CPUs and GPUs, and Ray's ``memory`` resource in bytes
    (heap memory for tasks and actors; None when the node does not report it)."""

    name: str
    cpus: float
    gpus: float = 0.0
    memory_bytes: float | None = None


def nodes_from_ray(ray_nodes: Iterable[Mapping[str, Any]]) -> list[Node]:
    """The alive nodes of a ``ray.nodes()`` answer, as ``Node`` values."""
    nodes = []
    for i, entry in enumerate(ray_nodes):
        if not entry.get("Alive", True):
            continue
        resources = entry.get("Resources") or {}
        name = entry.get("NodeManagerAddress") or entry.get("NodeID") or f"node {i}"
        memory = resources.get("memory")
        nodes.append(
            Node(
                name=str(name),
                cpus=float(resources.get("CPU", 0.0)),
                gpus=float(resources.get("GPU", 0.0)),
                memory_bytes=None if memory is None else float(memory),
            )
        )
    return nodes


def _units(amount: float) -> int:
    return round(amount * _RAY_UNITS)


def _num(amount: float) -> str:
    return f"{amount:g}"


def _needs_gpu(scaling: ScalingSection) -> bool:
    return scaling.use_gpu and scaling.gpus_per_worker > 0


def workers_per_node(scaling: ScalingSection, node: Node) -> int:
    """How many workers fit on ``node`` by CPUs (and GPUs when ``use_gpu``); a worker's
    resources cannot be split across nodes."""
    fit = _units(node.cpus) // max(1, _units(scaling.cpus_per_worker))
    if _needs_gpu(scaling):
        fit = min(fit, _units(node.gpus) // max(1, _units(scaling.gpus_per_worker)))
    return fit


def resource_request(scaling: ScalingSection) -> list[dict[str, float]]:
    """Bundles for ``ray.autoscaler.sdk.request_resources``: one per worker, plus the CPUs
    left for Ray Data. An autoscaler adds nodes only for resources someone asks for."""
    worker = {"CPU": scaling.cpus_per_worker}
    if _needs_gpu(scaling):
        worker["GPU"] = scaling.gpus_per_worker
    bundles = [dict(worker) for _ in range(scaling.num_workers)]
    if scaling.data_cpus > 0:
        bundles.append({"CPU": scaling.data_cpus})
    return bundles


def _worker_size(scaling: ScalingSection) -> str:
    size = f"{_num(scaling.cpus_per_worker)} CPU"
    if _needs_gpu(scaling):
        size += f" + {_num(scaling.gpus_per_worker)} GPU"
    return size


def describe_cluster(nodes: Sequence[Node], gpus: bool) -> str:
    """``2 nodes, 6 CPUs (10.0.0.1: 2 CPU; 10.0.0.2: 4 CPU)``: the first four named."""
    if not nodes:
        return "no alive nodes"
    total_cpus = sum(node.cpus for node in nodes)
    text = f"{len(nodes)} node{'s' if len(nodes) != 1 else ''}, {_num(total_cpus)} CPUs"
    if gpus:
        text += f", {_num(sum(node.gpus for node in nodes))} GPUs"
    shown = [
        f"{node.name}: {_num(node.cpus)} CPU" + (f", {_num(node.gpus)} GPU" if gpus else "")
        for node in nodes[:4]
    ]
    more = f", and {len(nodes) - 4} more" if len(nodes) > 4 else ""
    return f"{text} ({'; '.join(shown)}{more})"


def missing_resources(scaling: ScalingSection, nodes: Sequence[Node]) -> list[str]:
    """What the cluster lacks to run the workers and leave ``scaling.data_cpus`` CPUs to
    Ray Data, one sentence per shortfall; empty when the job fits.

    Judged on the nodes' total resources, not on what is free right now: these are
    requests the cluster can never grant, however long Ray waits.
    """
    n = scaling.num_workers
    if not nodes:
        return ["the cluster has no alive nodes"]
    missing = []
    room = sum(min(n, workers_per_node(scaling, node)) for node in nodes)
    if room == 0:
        largest = max(nodes, key=lambda node: (node.cpus, node.gpus))
        biggest = f"{_num(largest.cpus)} CPUs"
        if _needs_gpu(scaling):
            biggest += f" and {_num(largest.gpus)} GPUs"
        missing.append(
            f"no node can hold one worker: a worker needs {_worker_size(scaling)} on one node "
            f"(`scaling.cpus_per_worker` {_num(scaling.cpus_per_worker)}"
            + (
                f", `scaling.gpus_per_worker` {_num(scaling.gpus_per_worker)}"
                if _needs_gpu(scaling)
                else ""
            )
            + f"), the largest node has {biggest}"
        )
    elif room < n:
        missing.append(
            f"the nodes have room for {room} of the {n} workers (`scaling.num_workers`), "
            f"at {_worker_size(scaling)} each on one node"
        )
    total_cpus = sum(node.cpus for node in nodes)
    need = n * scaling.cpus_per_worker + scaling.data_cpus
    if _units(need) > _units(total_cpus):
        missing.append(
            f"CPUs: {n} workers (`scaling.num_workers`) × {_num(scaling.cpus_per_worker)} "
            f"(`scaling.cpus_per_worker`) + {_num(scaling.data_cpus)} left for Ray Data to "
            f"decode images (`scaling.data_cpus`) = {_num(need)} CPUs, the cluster has "
            f"{_num(total_cpus)}"
        )
    if _needs_gpu(scaling):
        total_gpus = sum(node.gpus for node in nodes)
        need_gpus = n * scaling.gpus_per_worker
        if _units(need_gpus) > _units(total_gpus):
            missing.append(
                f"GPUs: {n} workers × {_num(scaling.gpus_per_worker)} "
                f"(`scaling.gpus_per_worker`) = {_num(need_gpus)} GPUs, the cluster has "
                f"{_num(total_gpus)}"
                + (" (set `scaling.use_gpu: false` to train on CPUs)" if total_gpus == 0 else "")
            )
    return missing


def _fits(scaling: ScalingSection, nodes: Sequence[Node], **changes: Any) -> bool:
    return not missing_resources(scaling.model_copy(update=changes), nodes)


def _settings_that_fit(scaling: ScalingSection, nodes: Sequence[Node]) -> list[str]:
    """Single changes to ``scaling`` that make the job fit ``nodes``."""
    options = []
    workers = next(
        (k for k in range(scaling.num_workers - 1, 0, -1) if _fits(scaling, nodes, num_workers=k)),
        None,
    )
    if workers:
        options.append(f"`scaling.num_workers: {workers}`")
    total_cpus = sum(node.cpus for node in nodes)
    cpus = (total_cpus - scaling.data_cpus) / scaling.num_workers
    cpus = math.floor(min(cpus, scaling.cpus_per_worker) * 100) / 100
    if 0 < cpus < scaling.cpus_per_worker and _fits(scaling, nodes, cpus_per_worker=cpus):
        options.append(f"`scaling.cpus_per_worker: {_num(cpus)}`")
    left = math.floor((total_cpus - scaling.num_workers * scaling.cpus_per_worker) * 100) / 100
    if 0 < left < scaling.data_cpus and _fits(scaling, nodes, data_cpus=left):
        options.append(
            f"`scaling.data_cpus: {_num(left)}` (fewer CPUs to decode images: slower input)"
        )
    no_gpus = sum(node.gpus for node in nodes) == 0
    if _needs_gpu(scaling) and no_gpus and _fits(scaling, nodes, use_gpu=False):
        options.append("`scaling.use_gpu: false`")
    return options


def _what_to_do(scaling: ScalingSection, nodes: Sequence[Node]) -> str:
    options = _settings_that_fit(scaling, nodes)
    if options:
        return "It fits this cluster with " + ", or ".join(options) + "; or add nodes."
    return "No single change to `scaling` fits this cluster: add nodes, or ask for less."


def check_resources(scaling: ScalingSection, nodes: Sequence[Node]) -> None:
    """Refuse (``ClusterTooSmallError``) a job a fixed cluster can never hold: Ray would
    wait for its workers forever."""
    missing = missing_resources(scaling, nodes)
    if missing:
        raise ClusterTooSmallError(
            "the Ray cluster can never run this job (Ray would wait for the workers forever): "
            + "; ".join(missing)
            + f". Cluster: {describe_cluster(nodes, scaling.use_gpu)}. "
            + _what_to_do(scaling, nodes)
            + " On an autoscaling cluster, set `scaling.resource_wait_seconds` to wait for "
            "nodes to appear."
        )


def wait_for_resources(
    scaling: ScalingSection,
    snapshot: Callable[[], Sequence[Node]],
    *,
    clock: Callable[[], float] = time.monotonic,
    sleep: Callable[[float], None] = time.sleep,
    poll_seconds: float = _POLL_SECONDS,
    say: Callable[[str], None] | None = None,
) -> list[Node]:
    """Return the nodes once the job fits them, polling ``snapshot()`` (the cluster's
    nodes now, e.g. ``nodes_from_ray(ray.nodes())``) for at most
    ``scaling.resource_wait_seconds``.

    With a wait of 0 (a fixed cluster) one look decides: ``ClusterTooSmallError`` when it
    can never fit. Otherwise ``ResourceWaitTimeoutError`` after the wait, naming what is
    still missing. ``clock`` and ``sleep`` are injectable for tests; ``say`` is told once
    that the wait has begun.
    """
    timeout = scaling.resource_wait_seconds
    deadline = clock() + timeout
    told = False
    while True:
        nodes = list(snapshot())
        missing = missing_resources(scaling, nodes)
        if not missing:
            return nodes
        if timeout <= 0:
            check_resources(scaling, nodes)  # raises
        remaining = deadline - clock()
        if remaining <= 0:
            raise ResourceWaitTimeoutError(
                f"waited {_num(timeout)} s (`scaling.resource_wait_seconds`) for the Ray "
                f"cluster to grow, but it still cannot run this job: {'; '.join(missing)}. "
                f"Cluster now: {describe_cluster(nodes, scaling.use_gpu)}. Check that the "
                "autoscaler can add nodes of that size, raise `scaling.resource_wait_seconds`, "
                "or ask for less. " + _what_to_do(scaling, nodes)
            )
        if say is not None and not told:
            say(f"waiting up to {_num(timeout)} s for the cluster to grow: {'; '.join(missing)}")
            told = True
        sleep(min(poll_seconds, remaining))
