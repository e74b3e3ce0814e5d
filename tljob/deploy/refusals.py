"""What ``render`` refuses (pure): option combinations that contradict each other or
KubeRay's rules, and clusters the job could never run on, each with a message that names
the flag or setting, its value and the rule (``UserError``, exit 2).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from tljob import storage
from tljob.config import JobConfig
from tljob.deploy import pods
from tljob.deploy.options import FLAGS, RenderOptions
from tljob.errors import UserError
from tljob.preflight.cluster import Node, missing_resources

if TYPE_CHECKING:
    from tljob.deploy.predict import PredictCommand


def refuse(job: JobConfig, options: RenderOptions, trials: int = 1) -> None:
    """``UserError`` for a combination that cannot run as rendered; ``trials``: the trials
    of a sweep running at once (``tune.max_concurrent_trials``), 1 for a run."""
    problems = _cleanup_order(options)
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
    wait = options.resource_wait_seconds
    if own_cluster and scaling.resource_wait_seconds < wait:
        problems.append(
            f"`scaling.resource_wait_seconds` ({scaling.resource_wait_seconds:g}) is shorter "
            f"than the {wait} s the driver waits for its worker pods on KubeRay (it starts "
            "with the head; a new GPU node starts, then pulls the image: "
            f"--resource-wait-seconds {wait}); leave it out of the config so render writes "
            f"{wait}, raise it, or lower --resource-wait-seconds"
        )
    pods_needed = scaling.num_workers * trials
    if own_cluster and options.max_train_pods is not None and pods_needed > options.max_train_pods:
        sweep = f" x `tune.max_concurrent_trials` ({trials})" if trials > 1 else ""
        problems.append(
            f"--max-train-pods ({options.max_train_pods}): the training group needs "
            f"{pods_needed} pods (`scaling.num_workers` ({scaling.num_workers}){sweep}), one "
            "per worker; lower "
            + ("`tune.max_concurrent_trials` or " if trials > 1 else "")
            + "`scaling.num_workers`, or raise the cap"
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


def _cleanup_order(options: RenderOptions) -> list[str]:
    """KubeRay's deletion order (``validate.DELETION_ORDER``) in the flags' terms."""
    if options.cluster_selector is None and options.keep_job_seconds < options.grace_seconds:
        return [
            f"--keep-job-seconds ({options.keep_job_seconds}) must be >= --grace-seconds "
            f"({options.grace_seconds}): KubeRay deletes a RayJob's cluster no later than the "
            "RayJob (DeleteCluster TTL <= DeleteSelf TTL)"
        ]
    return []


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
        "keep_job_seconds",
        "head_cpus",
        "head_memory",
        "submitter",
        "max_train_pods",
        "train_idle_seconds",
        "resource_wait_seconds",
    )
}


# Render flags a predict job has no use for, and why.
_NOT_FOR_PREDICT = {
    "tune": "--tune renders a sweep",
    "resume": "--resume continues a sweep",
    "overrides": "--set before `--` overrides a job config; predict's own --set s3.KEY=VALUE "
    "goes after `--`",
    "cpu_workers": "--cpu-workers sizes the Ray Data group, which a predict job does not have "
    "(its images are decoded on the predict pods)",
    "data_worker_cpus": "--data-worker-cpus sizes the Ray Data pods, which a predict job does "
    "not have",
    "data_worker_memory": "--data-worker-memory sizes the Ray Data pods, which a predict job "
    "does not have",
    "submitter": "--submitter: a predict job is submitted over HTTP once every pod is up "
    "(HTTPMode), since predict sizes its actor pool from the cluster it finds",
    "max_train_pods": "--max-train-pods caps the training group, which a predict job does not "
    "have (its --workers pods are a fixed group)",
    "train_idle_seconds": "--train-idle-seconds is the autoscaler's, which a predict job does "
    "not have",
    "resource_wait_seconds": "--resource-wait-seconds goes into a job config, which a predict "
    "job does not have",
}
# Predict's flags that name a place: the pods read and write them, so never this machine.
PATH_FLAGS = {
    "model": "--model",
    "source": "--source",
    "out": "--out",
    "as_manifest": "--as-manifest",
}


def refuse_predict(
    command: PredictCommand, options: RenderOptions, workers: int, gpus: int
) -> None:
    """``UserError`` for a predict job that could not run as rendered: a render flag it has
    no use for, a place the pods cannot reach, more model actors than the cluster holds."""
    problems = [why for name, why in _NOT_FOR_PREDICT.items() if name in options.model_fields_set]
    problems += _cleanup_order(options)
    own_cluster = options.cluster_selector is None
    if options.role_arn and not options.service_account:
        problems.append("--role-arn annotates the ServiceAccount: it needs --service-account")
    for name, flag in PATH_FLAGS.items():
        uri = getattr(command, name)
        if uri is not None:
            problems += _unreachable(flag, uri)
    if not own_cluster:
        # --workers and --gpus-per-worker shape only the cluster here (no job config).
        shaping = {**_CLUSTER_FLAGS, **{n: FLAGS[n] for n in ("workers", "gpus_per_worker")}}
        ignored = sorted(
            flag
            for name, flag in shaping.items()
            if name in options.model_fields_set and name not in _NOT_FOR_PREDICT
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
    elif gpus == 0:
        for name in ("gpu_node_selector", "gpu_tolerations"):
            if getattr(options, name):
                problems.append(
                    f"{FLAGS[name]}: the predict pods have no GPUs (--gpus-per-worker 0)"
                )
    elif options.worker_cpus <= gpus:
        problems.append(
            f"--worker-cpus ({options.worker_cpus}) must exceed --gpus-per-worker ({gpus}): each "
            "GPU model actor takes one CPU, and the images are decoded on the CPUs beside them"
        )
    if own_cluster and command.actors is not None:
        room = workers * (gpus or options.worker_cpus)
        if command.actors > room:
            each = (
                f"one per GPU: {workers} pod(s) of --gpus-per-worker {gpus}"
                if gpus
                else (f"one per CPU: {workers} pod(s) of --worker-cpus {options.worker_cpus}")
            )
            problems.append(
                f"--actors {command.actors}: the rendered cluster has room for {room} model "
                f"actors ({each}); ask for at most {room}, or render more pods (--workers)"
            )
    if problems:
        raise UserError("tljob k8s render --predict: " + "; ".join(problems))


def _unreachable(flag: str, uri: str) -> list[str]:
    """Why a pod could not reach ``uri`` (empty when it can: a valid ``s3://`` URI)."""
    scheme = uri.split("://", 1)[0].lower() if "://" in uri else ""
    if scheme in ("", "file"):
        return [
            f"{flag} {uri!r} is a local path, which the pods cannot see: copy it to the "
            "object store and give its s3:// URI"
        ]
    if scheme != "s3":
        return [
            f"{flag} {uri!r}: the pods reach storage through S3 only, and {scheme}:// is "
            "not supported; give an s3:// URI"
        ]
    try:
        storage.resolve(uri)  # the bucket and key rules every tljob command applies
    except storage.StorageError as e:
        return [f"{flag}: {e}"]
    return []
