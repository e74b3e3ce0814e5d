"""Checks made before training starts, so a job that cannot work fails in seconds, saying
what to change, instead of hanging forever or being killed by the cluster.

Everything here is a pure function of the config and of plain numbers: this module imports
neither Ray nor TensorFlow, so it is tested without a cluster. The driver passes it what Ray
reports (``ray.nodes()``), and the image counts of the listing and of the corrupt-file scan::

    check_batches(train_images, val_images, job.train.batch_size, job.scaling.num_workers)
    if job.scaling.resource_wait_seconds > 0:   # autoscaling: ask for the nodes first
        ray.autoscaler.sdk.request_resources(bundles=resource_request(job.scaling))
    nodes = wait_for_resources(job.scaling, lambda: nodes_from_ray(ray.nodes()))
    check_memory(job, nodes, num_classes=len(classes))

Every failure is a ``PreflightError``, a ``UserError`` (the CLI prints it and exits 2).
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from tljob.backbones import get_backbone
from tljob.config import JobConfig, ScalingSection
from tljob.errors import UserError

GIB = 1024**3
FLOAT32_BYTES = 4
# Ray counts resources in fixed point, in units of 1/10000.
_RAY_UNITS = 10_000
# Copies of every parameter a training step holds: weights, gradients, Adam's 2 moments.
_PARAMETER_COPIES = 4
# A worker process with TensorFlow and tf_keras imported, before any model: 646 MiB RSS
# measured on this project's machine; 0.5 GiB keeps the estimate on the low side.
RUNTIME_BYTES = GIB // 2
_POLL_SECONDS = 10.0


class PreflightError(UserError):
    """A job that cannot run as configured; the message names the settings to change."""


class ClusterTooSmallError(PreflightError):
    """The cluster's nodes cannot hold the workers plus the CPUs left for Ray Data."""


class ResourceWaitTimeoutError(ClusterTooSmallError):
    """``scaling.resource_wait_seconds`` passed and the cluster still cannot hold the job."""


class WorkerMemoryError(PreflightError):
    """The workers Ray would place on a node need more memory than the node has."""


class TooFewImagesError(PreflightError):
    """Too few images for one training step, or for every worker to validate on."""


# --- cluster resources ------------------------------------------------------------------------


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


def _describe_cluster(nodes: Sequence[Node], gpus: bool) -> str:
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
            + f". Cluster: {_describe_cluster(nodes, scaling.use_gpu)}. "
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
                f"Cluster now: {_describe_cluster(nodes, scaling.use_gpu)}. Check that the "
                "autoscaler can add nodes of that size, raise `scaling.resource_wait_seconds`, "
                "or ask for less. " + _what_to_do(scaling, nodes)
            )
        if say is not None and not told:
            say(f"waiting up to {_num(timeout)} s for the cluster to grow: {'; '.join(missing)}")
            told = True
        sleep(min(poll_seconds, remaining))


# --- memory --------------------------------------------------------------------------------


@dataclass(frozen=True)
class WorkerMemory:
    """Bytes one worker needs, at least, in host memory for one training step."""

    parameters: int  # weights, gradients and Adam's two moments, float32
    activations: int  # layer outputs of one worker batch, kept for backprop (CPU training)
    input_batches: int  # a global batch in the input pipeline, as uint8 and as float32
    runtime: int  # the TensorFlow process itself

    @property
    def total(self) -> int:
        return self.parameters + self.activations + self.input_batches + self.runtime

    def describe(self) -> str:
        return (
            f"{self.total / GIB:.1f} GiB (model parameters {self.parameters / GIB:.2f} GiB, "
            f"activations for backprop {self.activations / GIB:.2f} GiB, input batches "
            f"{self.input_batches / GIB:.2f} GiB, TensorFlow runtime {self.runtime / GIB:.2f} GiB)"
        )


def head_parameters(features: int, dense_units: Sequence[int], num_classes: int) -> int:
    """Weights and biases of the Dense layers after pooling."""
    sizes = [features, *dense_units, num_classes]
    return sum((a + 1) * b for a, b in zip(sizes, sizes[1:], strict=False))


def estimate_worker_memory(
    backbone: str,
    image_size: int,
    batch_size: int,
    num_workers: int,
    *,
    num_classes: int = 2,
    dense_units: Sequence[int] = (),
    use_gpu: bool = False,
) -> WorkerMemory:
    """Host memory one worker needs, from the backbone registry's measured sizes.

    A floor rather than a bound: every stage is assumed able to train the whole backbone,
    and what the estimate leaves out (Ray Data's blocks, prefetched batches, temporaries)
    only adds to it. With ``use_gpu`` the activations live in GPU memory, which is not
    checked, so they are left out.
    """
    spec = get_backbone(backbone)
    parameters = spec.parameters + head_parameters(spec.feature_channels, dense_units, num_classes)
    pixels = image_size * image_size
    activations = 0
    if not use_gpu:
        activations = round(batch_size * pixels * spec.activations_per_pixel) * FLOAT32_BYTES
    global_batch_values = batch_size * num_workers * pixels * 3
    return WorkerMemory(
        parameters=parameters * _PARAMETER_COPIES * FLOAT32_BYTES,
        activations=activations,
        input_batches=global_batch_values * (1 + FLOAT32_BYTES),
        runtime=RUNTIME_BYTES,
    )


def _job_estimate(job: JobConfig, num_classes: int, **changes: int) -> WorkerMemory:
    return estimate_worker_memory(
        job.model.backbone,
        changes.get("image_size", job.image_size),
        changes.get("batch_size", job.train.batch_size),
        changes.get("num_workers", job.scaling.num_workers),
        num_classes=num_classes,
        dense_units=job.model.head.dense_units,
        use_gpu=job.scaling.use_gpu,
    )


def _overfull_node(
    job: JobConfig, nodes: Sequence[Node], num_classes: int, **changes: int
) -> tuple[Node, int, WorkerMemory] | None:
    """The node most short of memory when Ray places there as many workers as its CPUs
    (and GPUs) allow, as Ray Train's default PACK placement does; None if all fit."""
    scaling = job.scaling
    if "num_workers" in changes:
        scaling = scaling.model_copy(update={"num_workers": changes["num_workers"]})
    estimate = _job_estimate(job, num_classes, **changes)
    worst: tuple[float, Node, int] | None = None
    for node in nodes:
        workers = min(scaling.num_workers, workers_per_node(scaling, node))
        if node.memory_bytes is None or workers == 0:
            continue
        excess = workers * estimate.total - node.memory_bytes
        if excess > 0 and (worst is None or excess > worst[0]):
            worst = (excess, node, workers)
    return None if worst is None else (worst[1], worst[2], estimate)


def _largest(low: int, high: int, fits: Callable[[int], bool]) -> int | None:
    """The largest value in [low, high] for which ``fits`` (monotone) holds, or None."""
    if low > high or not fits(low):
        return None
    while low < high:
        mid = (low + high + 1) // 2
        if fits(mid):
            low = mid
        else:
            high = mid - 1
    return low


def check_memory(job: JobConfig, nodes: Sequence[Node], num_classes: int = 2) -> WorkerMemory:
    """Refuse (``WorkerMemoryError``) a job whose workers cannot fit in a node's memory;
    return the per-worker estimate otherwise. Nodes without a ``memory`` figure are not
    judged. Call after ``wait_for_resources``, with ``num_classes`` once the data is listed
    (the head's size depends on it)."""
    found = _overfull_node(job, nodes, num_classes)
    if found is None:
        return _job_estimate(job, num_classes)
    node, workers, estimate = found
    size, batch, n = job.image_size, job.train.batch_size, job.scaling.num_workers
    assert node.memory_bytes is not None

    def fits(**changes: int) -> bool:
        return _overfull_node(job, nodes, num_classes, **changes) is None

    min_size = get_backbone(job.model.backbone).min_image_size
    options = []
    best_size = _largest(min_size, size - 1, lambda s: fits(image_size=s))
    if best_size:
        options.append(f"`data.image_size` <= {best_size}")
    best_batch = _largest(1, batch - 1, lambda b: fits(batch_size=b))
    if best_batch:
        options.append(f"`train.batch_size` <= {best_batch}")
    best_workers = next((k for k in range(n - 1, 0, -1) if fits(num_workers=k)), None)
    if best_workers:
        options.append(f"`scaling.num_workers` <= {best_workers}")
    advice = (
        "Any one of these fits: " + ", or ".join(options) + "."
        if options
        else "No single one of them fits these nodes; lower several, or use nodes with more memory."
    )
    raise WorkerMemoryError(
        f"the workers would run out of memory: at `data.image_size` {size}, "
        f"`train.batch_size` {batch} and `scaling.num_workers` {n}, a "
        f"{job.model.backbone} worker needs about {estimate.describe()}. Ray can place "
        f"{workers} worker{'s' if workers != 1 else ''} on node {node.name} (by its "
        f"{'CPUs and GPUs' if _needs_gpu(job.scaling) else 'CPUs'}), "
        f"which has {node.memory_bytes / GIB:.1f} GiB of Ray `memory`: "
        f"{workers * estimate.total / GIB:.1f} GiB needed, and Ray kills workers when a node "
        f"runs out. Lower `data.image_size`, `train.batch_size` or `scaling.num_workers`. " + advice
    )


# --- images per batch ----------------------------------------------------------------------


def check_batches(train_images: int, val_images: int, batch_size: int, num_workers: int) -> None:
    """Refuse (``TooFewImagesError``) image counts that give a training epoch no step, or
    leave a worker nothing to validate on.

    Ray Train splits each dataset evenly: every worker gets ``images // num_workers`` rows.
    A worker's training rows are cut into global batches of ``batch_size * num_workers``
    (Keras splits each across the replicas), and the last partial batch is dropped; so an
    epoch has no step when a worker's share is smaller than one global batch.
    """
    per_worker = train_images // num_workers
    global_batch = batch_size * num_workers
    workers = f"{num_workers} worker{'s' if num_workers != 1 else ''}"
    if per_worker < global_batch:
        largest_batch = per_worker // num_workers
        most_workers = next(
            (k for k in range(num_workers - 1, 0, -1) if train_images // k >= batch_size * k),
            None,
        )
        options = []
        if largest_batch:
            options.append(f"`train.batch_size` <= {largest_batch}")
        if most_workers:
            options.append(f"`scaling.num_workers` <= {most_workers}")
        options.append("more training images")
        none_works = "" if largest_batch else f" No `train.batch_size` works with {workers}."
        raise TooFewImagesError(
            f"too few training images for one step: {train_images} training images over "
            f"{workers} (`scaling.num_workers`) give each worker {per_worker}, fewer than "
            f"one global batch of `train.batch_size` ({batch_size}) × {num_workers} = "
            f"{global_batch} images (the last partial batch is dropped), so an epoch would "
            f"have no steps.{none_works} Use " + ", or ".join(options) + "."
        )
    if val_images < num_workers:
        options = [f"`scaling.num_workers` <= {val_images}"] if val_images else []
        options += ["a larger `data.val_fraction`", "more images"]
        raise TooFewImagesError(
            f"too few validation images: {val_images} for {workers} "
            f"(`scaling.num_workers`); the validation set is split evenly, so each worker "
            f"gets {val_images // num_workers} and would validate on nothing. Use "
            + ", or ".join(options)
            + "."
        )
