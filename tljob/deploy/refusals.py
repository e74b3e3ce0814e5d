"""What ``render`` refuses (pure): option combinations that contradict each other or
KubeRay's rules, and clusters the job could never run on, each with a message that names
the flag or setting, its value and the rule (``UserError``, exit 2).
"""

from __future__ import annotations

from tljob.config import JobConfig
from tljob.deploy import pods
from tljob.deploy.options import FLAGS, RenderOptions
from tljob.errors import UserError
from tljob.preflight.cluster import Node, missing_resources


def refuse(job: JobConfig, options: RenderOptions) -> None:
    """``UserError`` for a combination that cannot run as rendered."""
    problems = []
    scaling = job.scaling
    own_cluster = options.cluster_selector is None
    if options.resume and not options.tune:
        problems.append("--resume continues a sweep: it needs --tune")
    if options.tune and options.backoff_limit:
        problems.append(
            f"--backoff-limit ({options.backoff_limit}) with --tune: a rerun of the same "
            "sweep needs --resume, so render again with --resume instead"
        )
    if options.role_arn and not options.service_account:
        problems.append("--role-arn annotates the ServiceAccount: it needs --service-account")
    if not own_cluster:
        ignored = sorted(
            flag for name, flag in _CLUSTER_FLAGS.items() if name in options.model_fields_set
        )
        if ignored:
            problems.append(
                f"--cluster-selector runs on an existing RayCluster, so {', '.join(ignored)} "
                "would have no effect"
            )
        if options.backoff_limit:
            problems.append(
                f"--backoff-limit ({options.backoff_limit}) with --cluster-selector: KubeRay "
                "retries only jobs that create their cluster"
            )
    if own_cluster and scaling.resource_wait_seconds == 0:
        problems.append(
            "`scaling.resource_wait_seconds` (0): on KubeRay the driver starts with the head "
            "pod, before the worker pods are up; set it (e.g. 600) so the driver waits for them"
        )
    whole = scaling.gpus_per_worker >= 1 and scaling.gpus_per_worker.is_integer()
    if own_cluster and scaling.use_gpu and not whole:
        problems.append(
            f"`scaling.gpus_per_worker` ({scaling.gpus_per_worker:g}): each training pod "
            "runs one worker with whole GPUs, so it must be a whole number >= 1"
        )
    if own_cluster and not scaling.use_gpu:
        for name in ("gpu_node_selector", "gpu_tolerations"):
            if getattr(options, name):
                problems.append(
                    f"{FLAGS[name]}: the job trains without GPUs (`scaling.use_gpu` false)"
                )
    if own_cluster and scaling.cpus_per_worker > options.worker_cpus:
        problems.append(
            f"--worker-cpus ({options.worker_cpus}) must hold `scaling.cpus_per_worker` "
            f"({scaling.cpus_per_worker:g}): a worker cannot span pods"
        )
    if own_cluster and not problems:
        problems += _cpu_shortfall(job, options)
    if problems:
        raise UserError("tljob k8s render: " + "; ".join(problems))


def _cpu_shortfall(job: JobConfig, options: RenderOptions) -> list[str]:
    """Why the driver's cluster check (``tljob.preflight``) would refuse the rendered
    cluster, judged on the training pods, or on them and one Ray Data pod when the
    ``scaling.data_cpus`` the driver asks the autoscaler for fit on one; empty if it fits."""
    scaling = job.scaling
    gpus = scaling.gpus_per_worker if scaling.use_gpu else 0.0
    nodes = [
        Node(f"train pod {i}", cpus=options.worker_cpus, gpus=gpus)
        for i in range(scaling.num_workers)
    ]
    missing = missing_resources(scaling, nodes)
    if not missing:
        return []
    data_pod = Node("data pod", cpus=options.data_worker_cpus)
    autoscaler_can_help = pods.data_pods(job, options) >= 1 and scaling.data_cpus <= data_pod.cpus
    if autoscaler_can_help and not missing_resources(scaling, [*nodes, data_pod]):
        return []
    return [
        f"the cluster as rendered could never run this job: {'; '.join(missing)} (training "
        f"pods of --worker-cpus {options.worker_cpus}; the driver asks the autoscaler for "
        f"`scaling.data_cpus` ({scaling.data_cpus:g}) on one Ray Data pod of "
        f"--data-worker-cpus {options.data_worker_cpus}, with --cpu-workers "
        f"{pods.data_pods(job, options)})"
    ]


# Flags that shape the cluster tljob creates: with --cluster-selector they would be ignored.
_CLUSTER_FLAGS = {
    name: FLAGS[name]
    for name in (
        "image",
        "cpu_workers",
        "worker_cpus",
        "worker_memory",
        "data_worker_cpus",
        "data_worker_memory",
        "gpu_node_selector",
        "gpu_tolerations",
        "service_account",
        "role_arn",
        "grace_seconds",
    )
}
