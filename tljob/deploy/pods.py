"""The pod templates of a rendered RayJob (pure): the head, the training group and the
Ray Data group (both autoscaled from 0), and in K8sJobMode the submitter's, each with the
restricted security context and the S3 credentials from a Secret (or a ServiceAccount's
identity), never a literal key; the submitter needs none.
"""

from __future__ import annotations

import math
from typing import Any

from tljob.config import JobConfig
from tljob.deploy.options import GPU_TOLERATION, RenderOptions
from tljob.deploy.yaml_out import note

S3_SECRET = "tljob-s3"
S3_SECRET_KEYS = ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY")
CONFIG_DIR = "/etc/tljob"
# The image's non-root user `ray` (uid 1000, group `users`, gid 100), owner of its Python.
RAY_UID, RAY_GID = 1000, 100
# KubeRay's own size for its submitter container (v1.7 GetDefaultSubmitterContainer's limits):
# it only runs `ray job submit` and follows the logs.
SUBMITTER_CPUS, SUBMITTER_MEMORY = "1", "1Gi"
# The submitter Job's retries (KubeRay's default, written out): a retry finds the job
# already submitted (`ray job status`) and only follows its logs again.
SUBMITTER_BACKOFF_LIMIT = 2
# Autoscaler v2 removes a Ray Data pod after this long without tasks.
DATA_IDLE_SECONDS = 60
GROUP_TRAIN, GROUP_DATA, GROUP_PREDICT = "train", "data", "predict"


def labels(name: str) -> dict[str, str]:
    """The labels of every object and pod of the RayJob ``name``."""
    return {"app.kubernetes.io/name": "tljob", "app.kubernetes.io/instance": name}


def container_security() -> dict[str, Any]:
    """A container's part of the Kubernetes 'restricted' Pod Security Standard."""
    return {"allowPrivilegeEscalation": False, "capabilities": {"drop": ["ALL"]}}


def pod_security() -> Any:
    """The pod's part of the 'restricted' standard. It is all that the submitter container
    KubeRay adds in SidecarMode gets: KubeRay (v1.7) sets no container security context on
    it."""
    return note(
        {
            "runAsNonRoot": True,
            "runAsUser": RAY_UID,
            "runAsGroup": RAY_GID,
            "fsGroup": RAY_GID,
            "seccompProfile": {"type": "RuntimeDefault"},
        },
        "restricted: non-root uid of the image's `ray` user, the runtime's seccomp profile",
    )


def s3_env(options: RenderOptions) -> list[dict[str, Any]]:
    """The S3 key variables, each from Secret ``tljob-s3``; none with a ServiceAccount
    (IRSA / Pod Identity give the pods their own credentials)."""
    if options.service_account is not None:
        return []
    return [
        {"name": key, "valueFrom": {"secretKeyRef": {"name": S3_SECRET, "key": key}}}
        for key in S3_SECRET_KEYS
    ]


def _resources(cpus: str | int, memory: str, gpus: int = 0) -> dict[str, Any]:
    amounts: dict[str, Any] = {"cpu": str(cpus), "memory": memory}
    if gpus:
        amounts["nvidia.com/gpu"] = gpus
    # Requests = limits: Ray counts a pod's CPUs and GPUs from its limits, and the pod is
    # never squeezed by neighbours (Guaranteed QoS).
    return note({"requests": amounts, "limits": dict(amounts)}, "requests = limits")


def _container(name: str, image: str, resources: Any, options: RenderOptions) -> dict[str, Any]:
    container: dict[str, Any] = {
        "name": name,
        "image": image,
        "imagePullPolicy": "IfNotPresent",
        "resources": resources,
    }
    env = s3_env(options)
    if env:
        container["env"] = note(env, f"S3 keys from Secret {S3_SECRET}, never in this file")
    container["securityContext"] = container_security()
    return container


def _pod_spec(containers: list[dict[str, Any]], options: RenderOptions) -> dict[str, Any]:
    spec: dict[str, Any] = {}
    if options.service_account is not None:
        spec["serviceAccountName"] = note(
            options.service_account, "S3 credentials from this identity (IRSA / Pod Identity)"
        )
    spec["securityContext"] = pod_security()
    spec["containers"] = containers
    return spec


def head_group(
    name: str, options: RenderOptions, configmap: str | None = None, config_file: str = ""
) -> Any:
    """The head: the job driver (and in SidecarMode the submitter), with the job config
    mounted at ``CONFIG_DIR`` when there is one (``configmap``); no Ray tasks or actors
    (0 CPUs for Ray)."""
    resources = _resources(options.head_cpus, options.head_memory)
    container = _container("ray-head", options.image, resources, options)
    container["ports"] = [
        {"name": "gcs-server", "containerPort": 6379},
        {"name": "dashboard", "containerPort": 8265},
        {"name": "client", "containerPort": 10001},
    ]
    if configmap is not None:
        container["volumeMounts"] = note(
            [{"name": "job-config", "mountPath": CONFIG_DIR, "readOnly": True}],
            f"the ConfigMap's {config_file}, read by the driver",
        )
    spec = _pod_spec([container], options)
    if configmap is not None:
        spec["volumes"] = [{"name": "job-config", "configMap": {"name": configmap}}]
    return {
        "rayStartParams": note(
            {"num-cpus": "0"}, "no Ray tasks or actors on the head: the driver has it"
        ),
        "template": {"metadata": {"labels": labels(name)}, "spec": spec},
    }


def train_group(name: str, job: JobConfig, options: RenderOptions, trials: int) -> dict[str, Any]:
    """Pods of one Ray Train worker each, with its ``scaling.gpus_per_worker`` GPUs (whole
    GPUs: requests = limits) when ``use_gpu``, autoscaled from 0 up to
    ``scaling.num_workers`` x ``trials`` (the trials running at once): the autoscaler adds
    them for the job's resource request and removes them ``--train-idle-seconds`` after
    the request is cleared and their workers are gone."""
    scaling = job.scaling
    gpus = int(scaling.gpus_per_worker) if scaling.use_gpu else 0
    most = scaling.num_workers * trials
    why = "scaling.num_workers" + (
        f" x tune.max_concurrent_trials ({trials})" if trials > 1 else ""
    )
    group = worker_group(
        name,
        GROUP_TRAIN,
        0,
        gpus,
        options,
        "autoscaled from 0: pods only while the job asks for them, so idle GPUs go",
    )
    group["minReplicas"] = 0
    group["maxReplicas"] = note(most, why)
    return group


def worker_group(
    name: str, group: str, pods: int, gpus: int, options: RenderOptions, why: str
) -> dict[str, Any]:
    """A group of ``pods`` pods (``minReplicas`` = ``maxReplicas`` = ``pods``: fixed) of
    ``--worker-cpus`` / ``--worker-memory`` and ``gpus`` whole GPUs each (requests =
    limits), on the GPU nodes when ``gpus``; ``why`` is the comment on its size."""
    resources = _resources(options.worker_cpus, options.worker_memory, gpus)
    container = _container("ray-worker", options.image, resources, options)
    spec = _pod_spec([container], options)
    if options.gpu_node_selector:
        spec["nodeSelector"] = note(dict(options.gpu_node_selector), "--gpu-node-selector")
    if gpus:
        tolerations = [GPU_TOLERATION, *options.gpu_tolerations]
        spec["tolerations"] = note(
            [t.manifest() for t in dict.fromkeys(tolerations)],
            "GPU nodes are tainted nvidia.com/gpu; more with --gpu-toleration",
        )
    return {
        "groupName": group,
        "replicas": note(pods, why),
        "minReplicas": pods,
        "maxReplicas": pods,
        "template": {"metadata": {"labels": labels(name)}, "spec": spec},
    }


def data_group(name: str, max_pods: int, options: RenderOptions) -> dict[str, Any]:
    """CPU-only pods for Ray Data's decoding, from 0 up to ``max_pods``: the autoscaler adds
    them while tasks wait for CPUs and removes them ``DATA_IDLE_SECONDS`` after."""
    resources = _resources(options.data_worker_cpus, options.data_worker_memory)
    container = _container("ray-worker", options.image, resources, options)
    return {
        "groupName": GROUP_DATA,
        "replicas": note(0, "autoscaled: pods only while Ray Data tasks wait for CPUs"),
        "minReplicas": 0,
        "maxReplicas": note(
            max_pods,
            "--cpu-workers"
            if options.cpu_workers is not None
            else "scaling.data_cpus of each trial at once, on --data-worker-cpus pods",
        ),
        "idleTimeoutSeconds": note(DATA_IDLE_SECONDS, "an idle pod goes after this (v2)"),
        "template": {"metadata": {"labels": labels(name)}, "spec": _pod_spec([container], options)},
    }


def autoscaler_options(options: RenderOptions) -> dict[str, Any]:
    """Autoscaler v2 (per-group idle timeouts), as small and as restricted as the rest; its
    idle timeout (``--train-idle-seconds``) is the training group's, the Ray Data group
    has its own."""
    return {
        "version": "v2",
        "upscalingMode": "Default",
        "idleTimeoutSeconds": note(
            options.train_idle_seconds, "an idle training pod (its GPUs) goes after this"
        ),
        "resources": {
            "requests": {"cpu": "500m", "memory": "512Mi"},
            "limits": {"cpu": "500m", "memory": "512Mi"},
        },
        "securityContext": container_security(),
    }


def data_pods(job: JobConfig, options: RenderOptions, trials: int = 1) -> int:
    """Most Ray Data pods: ``--cpu-workers``, else enough for ``scaling.data_cpus`` of each
    of the ``trials`` running at once (>= 1)."""
    if options.cpu_workers is not None:
        return options.cpu_workers
    return max(1, math.ceil(trials * job.scaling.data_cpus / options.data_worker_cpus))


def submitter_template(name: str, options: RenderOptions) -> dict[str, Any]:
    """The submitter Job's pod in K8sJobMode: KubeRay's default container (the head's image,
    its command filled in by the operator, 1 CPU / 1Gi) with the restricted security
    context, which KubeRay's default pod lacks; no S3 keys (it only submits)."""
    container = {
        "name": "ray-job-submitter",
        "image": options.image,
        "imagePullPolicy": "IfNotPresent",
        "resources": _resources(SUBMITTER_CPUS, SUBMITTER_MEMORY),
        "securityContext": container_security(),
    }
    spec = {"restartPolicy": "Never", "securityContext": pod_security(), "containers": [container]}
    return {"metadata": {"labels": labels(name)}, "spec": spec}
