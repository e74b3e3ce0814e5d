"""What ``tljob k8s render`` is asked for besides the job config (pure): the image, where the
pods go, their sizes, the submitter, the deadlines, the driver's wait and the cleanup.
``RenderOptions`` validates every value, and ``parse_node_selector`` / ``parse_toleration``
turn the command line's ``key=value`` and ``key[=value]:effect`` words into Kubernetes
fields.
"""

from __future__ import annotations

import re
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from tljob.config.load import error_lines
from tljob.errors import UserError

# A placeholder registry: build ./Dockerfile and push it to your own (docs/pages/kubernetes.md,
# "The container image").
DEFAULT_IMAGE = "ghcr.io/example/tljob:0.1.0"
# How long the driver waits for its worker pods by default: a new GPU node takes a few
# minutes to join, then pulls the multi-GB image (docs/pages/kubernetes.md, "The container
# image"), before Ray Train can start.
DEFAULT_RESOURCE_WAIT_S = 1200
SUBMITTERS = {"sidecar": "SidecarMode", "k8s-job": "K8sJobMode"}
# Kubernetes quantities as the API server accepts them for CPU and memory (a subset: plain
# or decimal numbers with a binary or decimal suffix, or millicores).
_QUANTITY = re.compile(r"^[0-9]+(\.[0-9]+)?(m|k|M|G|T|Ki|Mi|Gi|Ti)?$")
# A label key (optional DNS-subdomain prefix and a name) and a label value.
_LABEL_KEY = re.compile(
    r"^([a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*/)?"
    r"[A-Za-z0-9]([-A-Za-z0-9_.]{0,61}[A-Za-z0-9])?$"
)
_LABEL_VALUE = re.compile(r"^([A-Za-z0-9]([-A-Za-z0-9_.]{0,61}[A-Za-z0-9])?)?$")
# DNS-1123 subdomain: namespace, ServiceAccount and RayCluster names.
_DNS_NAME = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
TAINT_EFFECTS = ("NoSchedule", "PreferNoSchedule", "NoExecute")
# An image reference as the OCI distribution spec's grammar defines it:
# [registry[:port]/]path[:tag][@algorithm:hex]. Registry hosts may hold capitals; path
# components are lowercase alphanumerics joined by '.', '_', '__' or dashes.
_REGISTRY = r"(?:[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?(?:\.[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?)*|\[[0-9A-Fa-f:]+\])(?::[0-9]+)?"  # noqa: E501
_PATH_COMPONENT = r"[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*"
_TAG_DIGEST = (
    r"(?::[A-Za-z0-9_][A-Za-z0-9_.-]{0,127})?"
    r"(?:@[A-Za-z][A-Za-z0-9]*(?:[-_+.][A-Za-z][A-Za-z0-9]*)*:[0-9a-fA-F]{32,})?"
)
_IMAGE_WITH_REGISTRY = re.compile(
    rf"{_REGISTRY}/{_PATH_COMPONENT}(?:/{_PATH_COMPONENT})*{_TAG_DIGEST}"
)
_IMAGE_ON_DOCKER_HUB = re.compile(rf"{_PATH_COMPONENT}(?:/{_PATH_COMPONENT})*{_TAG_DIGEST}")


class Toleration(BaseModel):
    """One pod toleration of the training group (Kubernetes ``Toleration``)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    key: str = Field(description="Taint key the toleration matches.")
    operator: Literal["Exists", "Equal"] = Field(
        description="'Exists' (any value of the key) or 'Equal' (exactly `value`)."
    )
    value: str | None = Field(None, description="Taint value, with operator 'Equal' only.")
    effect: Literal["NoSchedule", "PreferNoSchedule", "NoExecute"] = Field(
        description="Taint effect the toleration matches."
    )

    def manifest(self) -> dict[str, str]:
        """The toleration as it goes into a pod spec."""
        entry = {"key": self.key, "operator": self.operator}
        if self.value is not None:
            entry["value"] = self.value
        entry["effect"] = self.effect
        return entry


# Every GPU node pool of the managed clouds (and the NVIDIA GPU operator's own docs) taints
# its nodes with nvidia.com/gpu so that only pods that ask for GPUs land there.
GPU_TOLERATION = Toleration(key="nvidia.com/gpu", operator="Exists", effect="NoSchedule")


class RenderOptions(BaseModel):
    """Everything ``render`` needs besides the job config. The ``workers`` /
    ``gpus_per_worker`` overrides are applied to the job's ``scaling`` section too, so the
    ConfigMap and the worker groups agree."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    image: str = Field(DEFAULT_IMAGE, min_length=1, description="Image of every Ray pod.")
    namespace: str | None = Field(None, description="metadata.namespace of every object.")
    name: str | None = Field(
        None, description="RayJob name; empty: 'tljob-' + run.name (tune.name for a sweep)."
    )
    tune: bool = Field(False, description="The config is a sweep file (ray_jobs/tune.py).")
    overrides: tuple[str, ...] = Field(
        (),
        description="`--set dotted.path=value` overrides of the config, written into the "
        "ConfigMap (before --workers and --gpus-per-worker).",
    )
    resume: bool = Field(False, description="Sweep only: continue the sweep (tune --resume).")
    workers: int | None = Field(
        None, ge=1, description="scaling.num_workers and the training group's pods."
    )
    gpus_per_worker: int | None = Field(
        None,
        ge=0,
        description="GPUs per training pod and scaling.gpus_per_worker; 0: scaling.use_gpu "
        "false (a CPU-only job).",
    )
    cpu_workers: int | None = Field(
        None,
        ge=0,
        description="Most pods of the autoscaled CPU group for Ray Data; 0: no such group.",
    )
    max_train_pods: int | None = Field(
        None,
        ge=1,
        description="Most pods the training group may grow to (e.g. the GPU node pool's "
        "size); a job or sweep that needs more is refused; empty: no cap.",
    )
    train_idle_seconds: int = Field(
        30,
        ge=0,
        description="Seconds a training pod (its GPUs) may sit idle before the autoscaler "
        "removes it: autoscalerOptions.idleTimeoutSeconds.",
    )
    worker_cpus: int = Field(8, ge=1, description="CPUs of each training pod.")
    worker_memory: str = Field("32Gi", description="Memory of each training pod.")
    data_worker_cpus: int = Field(4, ge=1, description="CPUs of each Ray Data pod.")
    data_worker_memory: str = Field("16Gi", description="Memory of each Ray Data pod.")
    head_cpus: str = Field(
        "2", description="CPUs of the head pod (the driver, Ray's GCS and dashboard)."
    )
    head_memory: str = Field("8Gi", description="Memory of the head pod.")
    submitter: Literal["sidecar", "k8s-job"] = Field(
        "sidecar",
        description="Who runs `ray job submit`: 'sidecar', a container of the head pod "
        "(SidecarMode), or 'k8s-job', a Kubernetes Job of its own (K8sJobMode).",
    )
    gpu_node_selector: dict[str, str] = Field(
        default_factory=dict, description="nodeSelector of the training pods."
    )
    gpu_tolerations: tuple[Toleration, ...] = Field(
        (), description="Tolerations of the training pods, after the nvidia.com/gpu one."
    )
    service_account: str | None = Field(
        None,
        description="Pods run as this ServiceAccount (IRSA / EKS Pod Identity) and get no "
        "S3 keys from Secret tljob-s3.",
    )
    role_arn: str | None = Field(
        None, description="IRSA: the IAM role the ServiceAccount is annotated with."
    )
    cluster_selector: str | None = Field(
        None, description="Run on this existing RayCluster instead of creating one."
    )
    backoff_limit: int | None = Field(
        None,
        ge=0,
        description="Reruns of a failed job, each on a new cluster; empty: 2 for a run "
        "(the rerun resumes), 0 for a sweep and with --cluster-selector.",
    )
    pre_running_deadline: int = Field(
        900, ge=1, description="Seconds for the cluster's pods to be up, else the job fails."
    )
    active_deadline: int = Field(86400, ge=1, description="Seconds the whole RayJob may run.")
    grace_seconds: int = Field(
        120, ge=0, description="Seconds a finished job's cluster is kept, success or failure."
    )
    keep_job_seconds: int = Field(
        600,
        ge=0,
        description="Seconds a finished RayJob (its status) is kept before it deletes itself, "
        "after which applying the same manifest runs it again; >= --grace-seconds.",
    )
    resource_wait_seconds: int = Field(
        DEFAULT_RESOURCE_WAIT_S,
        ge=1,
        description="Seconds the driver waits for its worker pods: written into the "
        "ConfigMap as `scaling.resource_wait_seconds` when the config leaves it out; a "
        "config value below it is refused.",
    )

    @field_validator("image")
    @classmethod
    def _image_reference(cls, value: str) -> str:
        # as Docker reads it: the first of several components is a registry only when it
        # looks like a host (a '.', a ':' or localhost); otherwise the name is on Docker Hub
        first, slash, _ = value.partition("/")
        registry = slash and ("." in first or ":" in first or first == "localhost")
        pattern = _IMAGE_WITH_REGISTRY if registry else _IMAGE_ON_DOCKER_HUB
        name = value.split("@")[0]
        name = name[: name.rfind(":")] if name.rfind(":") > name.rfind("/") else name
        if not pattern.fullmatch(value) or len(name) > 255:
            raise ValueError(
                "must be an image reference such as registry.example.com/team/tljob:0.1.0 "
                "(lowercase path, optional :tag of letters, digits, '_', '.', '-', optional "
                "@sha256:digest; no spaces)"
            )
        return value

    @field_validator("worker_memory", "data_worker_memory", "head_cpus", "head_memory")
    @classmethod
    def _quantity(cls, value: str) -> str:
        if not _QUANTITY.match(value):
            raise ValueError("must be a Kubernetes quantity such as 2, 500m, 32Gi or 16000Mi")
        return value

    @field_validator("namespace", "service_account", "cluster_selector")
    @classmethod
    def _dns_name(cls, value: str | None) -> str | None:
        if value is not None and (len(value) > 63 or not _DNS_NAME.match(value)):
            raise ValueError(
                "must be a Kubernetes name: lowercase letters, digits and '-', at most 63, "
                "starting and ending with a letter or digit"
            )
        return value

    @field_validator("gpu_node_selector")
    @classmethod
    def _labels(cls, selector: dict[str, str]) -> dict[str, str]:
        for key, value in selector.items():
            if not _LABEL_KEY.match(key) or not _LABEL_VALUE.match(value):
                raise ValueError(f"{key}={value} is not a Kubernetes label key=value")
        return selector

    def effective_backoff_limit(self) -> int:
        """``backoff_limit``, or its default: 2 for a run on its own cluster (a rerun of the
        same command resumes from the newest checkpoint), else 0."""
        if self.backoff_limit is not None:
            return self.backoff_limit
        return 0 if self.tune or self.cluster_selector else 2


FLAGS = {
    "image": "--image",
    "namespace": "--namespace",
    "name": "--name",
    "overrides": "--set",
    "workers": "--workers",
    "gpus_per_worker": "--gpus-per-worker",
    "cpu_workers": "--cpu-workers",
    "worker_cpus": "--worker-cpus",
    "worker_memory": "--worker-memory",
    "data_worker_cpus": "--data-worker-cpus",
    "data_worker_memory": "--data-worker-memory",
    "head_cpus": "--head-cpus",
    "head_memory": "--head-memory",
    "submitter": "--submitter",
    "max_train_pods": "--max-train-pods",
    "train_idle_seconds": "--train-idle-seconds",
    "gpu_node_selector": "--gpu-node-selector",
    "gpu_tolerations": "--gpu-toleration",
    "service_account": "--service-account",
    "role_arn": "--role-arn",
    "cluster_selector": "--cluster-selector",
    "backoff_limit": "--backoff-limit",
    "pre_running_deadline": "--pre-running-deadline",
    "active_deadline": "--active-deadline",
    "grace_seconds": "--grace-seconds",
    "keep_job_seconds": "--keep-job-seconds",
    "resource_wait_seconds": "--resource-wait-seconds",
}


def render_options(**values: object) -> RenderOptions:
    """``RenderOptions`` from keyword values; ``UserError`` naming each flag at fault, its
    value and the rule."""
    try:
        return RenderOptions(**values)
    except ValidationError as e:
        errors = []
        for error in e.errors():
            field = str(error["loc"][0]) if error["loc"] else ""
            errors.append({**error, "loc": (FLAGS.get(field, field),)})
        lines = [line.replace("`", "") for line in error_lines(errors)]
        raise UserError("tljob k8s render: " + "; ".join(lines)) from None


def parse_node_selector(words: list[str]) -> dict[str, str]:
    """``["key=value", ...]`` as a nodeSelector mapping; ``UserError`` for a word without
    '=' or a key given twice."""
    selector: dict[str, str] = {}
    for word in words:
        key, sep, value = word.partition("=")
        if not sep or not key:
            raise UserError(f"tljob k8s render: --gpu-node-selector {word!r} must be key=value")
        if key in selector:
            raise UserError(f"tljob k8s render: --gpu-node-selector names {key!r} twice")
        selector[key] = value
    return selector


def parse_toleration(word: str) -> Toleration:
    """``key:effect`` (operator Exists) or ``key=value:effect`` (operator Equal), as in
    ``kubectl taint``; ``UserError`` naming the word and the form otherwise."""
    taint, sep, effect = word.rpartition(":")
    key, eq, value = taint.partition("=")
    if not sep or not key or effect not in TAINT_EFFECTS:
        raise UserError(
            f"tljob k8s render: --gpu-toleration {word!r} must be key:effect or "
            f"key=value:effect, effect one of {', '.join(TAINT_EFFECTS)}"
        )
    if not _LABEL_KEY.match(key) or (eq and not _LABEL_VALUE.match(value)):
        raise UserError(f"tljob k8s render: --gpu-toleration {word!r}: {taint!r} is not a taint")
    if eq:
        return Toleration(key=key, operator="Equal", value=value, effect=effect)
    return Toleration(key=key, operator="Exists", effect=effect)
