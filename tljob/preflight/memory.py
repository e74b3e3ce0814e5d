"""Whether the workers a node would hold fit in its memory (pure)."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

from tljob.config import JobConfig
from tljob.preflight._common import GIB, WorkerMemoryError
from tljob.preflight.cluster import Node, _needs_gpu, workers_per_node
from tljob.zoo import get_backbone

FLOAT32_BYTES = 4
# Copies of every parameter a training step holds: weights, gradients, Adam's 2 moments.
_PARAMETER_COPIES = 4
# A worker process with TensorFlow and tf_keras imported, before any model: 646 MiB RSS
# measured on this project's machine; 0.5 GiB keeps the estimate on the low side.
RUNTIME_BYTES = GIB // 2


@dataclass(frozen=True)
class WorkerMemory:
    """Bytes one worker needs, at least, in host memory for one training step."""

    parameters: int  # weights, gradients and Adam's two moments, float32
    activations: int  # layer outputs of one worker batch, kept for backprop (CPU training)
    input_batches: int  # a global batch in the input pipeline, as uint8 and as float32
    runtime: int  # the TensorFlow process itself
    # the worker's share of the images, held in memory (``scaling.worker_cache_mib``)
    data_cache: int = 0

    @property
    def total(self) -> int:
        return (
            self.parameters + self.activations + self.input_batches + self.runtime + self.data_cache
        )

    def describe(self) -> str:
        cached = (
            f", its images held in memory {self.data_cache / GIB:.2f} GiB"
            if self.data_cache
            else ""
        )
        return (
            f"{self.total / GIB:.1f} GiB (model parameters {self.parameters / GIB:.2f} GiB, "
            f"activations for backprop {self.activations / GIB:.2f} GiB, input batches "
            f"{self.input_batches / GIB:.2f} GiB, TensorFlow runtime {self.runtime / GIB:.2f} GiB"
            f"{cached})"
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
    images: int = 0,
    cache_mib: float = 0.0,
) -> WorkerMemory:
    """Host memory one worker needs, from the backbone registry's measured sizes.

    A floor rather than a bound: every stage is assumed able to train the whole backbone,
    and what the estimate leaves out (Ray Data's blocks, prefetched batches, temporaries)
    only adds to it. With ``use_gpu`` the activations live in GPU memory, which is not
    checked, so they are left out. ``images`` listed and a worker cache of ``cache_mib``
    MiB add the worker's share of the images as uint8, up to the cache size (what
    ``scaling.worker_cache_mib`` lets it hold).
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
        data_cache=min(int(cache_mib * 2**20), -(-images // num_workers) * pixels * 3),
    )


def _job_estimate(
    job: JobConfig, num_classes: int, images: int = 0, **changes: int
) -> WorkerMemory:
    return estimate_worker_memory(
        job.model.backbone,
        changes.get("image_size", job.image_size),
        changes.get("batch_size", job.train.batch_size),
        changes.get("num_workers", job.scaling.num_workers),
        num_classes=num_classes,
        dense_units=job.model.head.dense_units,
        use_gpu=job.scaling.use_gpu,
        images=images,
        cache_mib=job.scaling.worker_cache_mib,
    )


def _overfull_node(
    job: JobConfig, nodes: Sequence[Node], num_classes: int, images: int, **changes: int
) -> tuple[Node, int, WorkerMemory] | None:
    """The node most short of memory when Ray places there as many workers as its CPUs
    (and GPUs) allow, as Ray Train's default PACK placement does; None if all fit."""
    scaling = job.scaling
    if "num_workers" in changes:
        scaling = scaling.model_copy(update={"num_workers": changes["num_workers"]})
    estimate = _job_estimate(job, num_classes, images, **changes)
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


def check_memory(
    job: JobConfig, nodes: Sequence[Node], num_classes: int = 2, images: int = 0
) -> WorkerMemory:
    """Refuse (``WorkerMemoryError``) a job whose workers cannot fit in a node's memory;
    return the per-worker estimate otherwise. Nodes without a ``memory`` figure are not
    judged. Call after ``wait_for_resources``, with ``num_classes`` once the data is listed
    (the head's size depends on it) and ``images``, the count to train and validate on
    (each worker may hold its share in memory)."""
    found = _overfull_node(job, nodes, num_classes, images)
    if found is None:
        return _job_estimate(job, num_classes, images)
    node, workers, estimate = found
    size, batch, n = job.image_size, job.train.batch_size, job.scaling.num_workers
    assert node.memory_bytes is not None

    def fits(**changes: int) -> bool:
        return _overfull_node(job, nodes, num_classes, images, **changes) is None

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
