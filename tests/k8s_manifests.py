"""What the ``tljob k8s render`` tests share: the example configs, a small CPU job and
accessors of rendered documents (their fixtures, ``cpu_job``, ``rayjob_schema`` and
``closed_validator``, are in conftest.py)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from tljob.deploy.validate import pod_templates

REPO = Path(__file__).resolve().parents[1]
EXAMPLES = REPO / "k8s" / "examples"
WAIT = "scaling.resource_wait_seconds=1200"  # what render writes into a config without one

CPU_JOB = """
data: {source: s3://bucket/flowers, image_size: 96}
model: {backbone: mobilenet_v2, weights: none}
scaling: {num_workers: 3, use_gpu: false, cpus_per_worker: 2, data_cpus: 6}
run: {name: Flowers_CPU.dev, storage_path: s3://bucket/runs}
"""


def rayjob_of(documents: list[dict[str, Any]]) -> dict[str, Any]:
    (rayjob,) = [d for d in documents if d["kind"] == "RayJob"]
    return rayjob


def containers(rayjob: dict[str, Any]) -> list[tuple[str, dict[str, Any]]]:
    return [
        (group, c)
        for group, template in pod_templates(rayjob)
        for c in template["spec"]["containers"]
    ]


def groups(rayjob: dict[str, Any]) -> dict[str, dict[str, Any]]:
    specs = rayjob["spec"]["rayClusterSpec"]["workerGroupSpecs"]
    return {g["groupName"]: g for g in specs}


def configmap_job(documents: list[dict[str, Any]], tmp_path: Path, file_name: str = "job.yaml"):
    (configmap,) = [d for d in documents if d["kind"] == "ConfigMap"]
    path = tmp_path / f"from-configmap-{file_name}"
    path.write_text(configmap["data"][file_name])
    return path
