"""``tljob predict`` as a KubeRay RayJob (pure): ``render_predict(command, options)``.

The job is the predict command's own flags (``PredictCommand``, parsed by that command's
parser in ``tljob.cli.k8s``), and the entrypoint runs ``ray_jobs/predict.py`` with them as
they were written. There is no job config, so no ConfigMap: the RayJob, and the
ServiceAccount with ``--service-account``. The cluster is the head and one fixed group of
``--workers`` predict pods (default 1) with ``--gpus-per-worker`` GPUs each (default 0:
CPU model actors), no autoscaler.

The operator submits the job over HTTP once every pod is up (``HTTPMode``): predict sizes
its actor pool from the cluster it finds when it starts, so it must not start beside a
lone head, as it would under a SidecarMode submitter (which submits as soon as the head
answers). A failed job is retried on a new cluster; the rerun writes only the parts still
missing from ``--out``.
"""

from __future__ import annotations

import posixpath
import shlex
from dataclasses import dataclass
from typing import Any

from tljob.deploy import pods
from tljob.deploy.options import RenderOptions
from tljob.deploy.refusals import refuse_predict
from tljob.deploy.render import (
    CLUSTER_SELECTOR_KEY,
    ENTRYPOINTS,
    RAY_VERSION,
    Rendered,
    deletion_rules,
    job_name,
    object_metadata,
    service_account,
)
from tljob.deploy.yaml_out import note

SCRIPT = f"{ENTRYPOINTS}/predict.py"
DEFAULT_WORKERS = 1
NAME_PREFIX = "tljob-predict-"


@dataclass(frozen=True)
class PredictCommand:
    """``tljob predict``'s flags as its own parser accepted them: ``words`` (what the
    entrypoint runs) and the values the render checks."""

    words: tuple[str, ...]
    model: str
    source: str
    out: str
    as_manifest: str | None = None
    actors: int | None = None

    def argv(self) -> list[str]:
        """The driver's command line on the head."""
        return ["python", SCRIPT, *self.words]


def predict_pods(options: RenderOptions) -> tuple[int, int]:
    """Predict pods and GPUs per pod: ``--workers`` (default 1), ``--gpus-per-worker``
    (default 0)."""
    workers = DEFAULT_WORKERS if options.workers is None else options.workers
    return workers, options.gpus_per_worker or 0


def render_predict(command: PredictCommand, options: RenderOptions) -> Rendered:
    """The objects that run ``command`` on KubeRay (see the module docstring); ``UserError``
    for what could not run there (``refusals.refuse_predict``)."""
    workers, gpus = predict_pods(options)
    refuse_predict(command, options, workers, gpus)
    folder = posixpath.basename(command.out.rstrip("/").split("://", 1)[-1])
    name = job_name(options, folder, "the last folder of --out", prefix=NAME_PREFIX)
    entry = shlex.join(command.argv())
    if options.cluster_selector is not None:
        return Rendered([_selector_rayjob(name, entry, options)])
    documents = []
    if options.service_account is not None:
        documents.append(service_account(name, options))
    documents.append(_rayjob(name, entry, options, workers, gpus))
    return Rendered(documents)


def _rayjob(
    name: str, entry: str, options: RenderOptions, workers: int, gpus: int
) -> dict[str, Any]:
    group = pods.worker_group(
        name,
        pods.GROUP_PREDICT,
        workers,
        gpus,
        options,
        "--workers: fixed size, so predict finds every actor's CPU or GPU when it starts",
    )
    cluster: dict[str, Any] = {
        "rayVersion": note(RAY_VERSION, "the image's Ray"),
        "enableInTreeAutoscaling": note(False, "one fixed group: the job starts on all of it"),
        "headGroupSpec": pods.head_group(name, options),
        "workerGroupSpecs": [group],
    }
    spec = {
        "entrypoint": note(entry, "tljob predict's flags, as checked by render"),
        "submissionMode": note(
            "HTTPMode",
            "the operator submits once every pod is up: predict sizes its actor pool from "
            "the cluster it finds",
        ),
        "backoffLimit": note(
            options.effective_backoff_limit(),
            "retries on a new cluster; a rerun writes only the parts still missing",
        ),
        "preRunningDeadlineSeconds": note(
            options.pre_running_deadline, "fail if the pods are not all up by then"
        ),
        "activeDeadlineSeconds": note(options.active_deadline, "fail a job running longer"),
        "deletionStrategy": deletion_rules(False, options.grace_seconds, options.keep_job_seconds),
        "rayClusterSpec": cluster,
    }
    return {
        "apiVersion": "ray.io/v1",
        "kind": "RayJob",
        "metadata": object_metadata(name, options),
        "spec": spec,
    }


def _selector_rayjob(name: str, entry: str, options: RenderOptions) -> dict[str, Any]:
    spec = {
        "clusterSelector": note(
            {CLUSTER_SELECTOR_KEY: options.cluster_selector}, "an existing RayCluster"
        ),
        "entrypoint": note(entry, "tljob predict's flags, as checked by render"),
        "submissionMode": note("HTTPMode", "the operator submits over HTTP: no submitter pod"),
        "backoffLimit": note(0, "KubeRay does not retry on an existing cluster"),
        "preRunningDeadlineSeconds": options.pre_running_deadline,
        "activeDeadlineSeconds": options.active_deadline,
    }
    return {
        "apiVersion": "ray.io/v1",
        "kind": "RayJob",
        "metadata": object_metadata(name, options),
        "spec": spec,
    }
