"""Checks made before training starts, so a job that cannot work fails in seconds, saying
what to change, instead of hanging forever or being killed by the cluster.

Everything here (``cluster``, ``memory``, ``batches``, ``storage``) is a pure function of
the config, of plain numbers and of requests to the object store: this package imports
neither Ray nor TensorFlow, so it is tested without a cluster. The driver passes it what Ray
reports (``ray.nodes()``, and what a storage probe found on every node), and the image
counts of the listing and of the corrupt-file scan::

    check_storage(job)                # s3:// source readable, run directory writable
    check_batches(train_images, val_images, job.train.batch_size, job.scaling.num_workers)
    if job.scaling.resource_wait_seconds > 0:   # autoscaling: ask for the nodes first
        ray.autoscaler.sdk.request_resources(bundles=resource_request(job.scaling))
    nodes = wait_for_resources(job.scaling, lambda: nodes_from_ray(ray.nodes()))
    check_memory(job, nodes, num_classes=len(classes))
    check_worker_probes(probes_per_node, driver_credentials)   # tljob.run.storage_check

Every failure is a ``PreflightError``, a ``UserError`` (the CLI prints it and exits 2).
"""

from tljob.preflight._common import (
    GIB,
    ClusterTooSmallError,
    PreflightError,
    ResourceWaitTimeoutError,
    TooFewImagesError,
    WorkerMemoryError,
)
from tljob.preflight.batches import check_batches, steps_per_epoch
from tljob.preflight.cluster import (
    Node,
    check_resources,
    describe_cluster,
    missing_resources,
    nodes_from_ray,
    resource_request,
    wait_for_resources,
    workers_per_node,
)
from tljob.preflight.memory import WorkerMemory, check_memory, estimate_worker_memory
from tljob.preflight.storage import (
    StorageAccessError,
    Target,
    check_storage,
    check_worker_probes,
    probe_targets,
    targets,
)

__all__ = [
    "GIB",
    "ClusterTooSmallError",
    "Node",
    "PreflightError",
    "ResourceWaitTimeoutError",
    "StorageAccessError",
    "Target",
    "TooFewImagesError",
    "WorkerMemory",
    "WorkerMemoryError",
    "check_batches",
    "check_memory",
    "check_resources",
    "check_storage",
    "check_worker_probes",
    "describe_cluster",
    "estimate_worker_memory",
    "missing_resources",
    "nodes_from_ray",
    "probe_targets",
    "resource_request",
    "steps_per_epoch",
    "targets",
    "wait_for_resources",
    "workers_per_node",
]
