"""The image and the rendered RayJob agree on Ray (the image alone: tests/test_image.py; the
KubeRay manifests: tests/test_k8s_render.py and tests/test_k8s_tree.py).

Fast and offline: nothing here builds an image.
"""

from __future__ import annotations

import re
import tomllib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from packaging.requirements import Requirement

from tljob.deploy.options import render_options
from tljob.deploy.render import render
from tljob.deploy.validate import pod_templates

REPO = Path(__file__).resolve().parents[1]
DOCKERFILE = REPO / "Dockerfile"

Manifest = dict[str, Any]


def ray_containers(rayjob: Manifest) -> Iterator[tuple[str, Manifest]]:
    """(group, container) for each container of the head group and of every worker group."""
    for group, template in pod_templates(rayjob):
        for container in template["spec"]["containers"]:
            yield group, container


def test_image_ray_version_matches_rayjob_and_project_pin() -> None:
    base = re.search(r"^FROM\s+rayproject/ray:(\d+\.\d+\.\d+)-\S+", DOCKERFILE.read_text(), re.M)
    assert base, "the Dockerfile must start from a pinned rayproject/ray:<x.y.z>-... image"
    image_ray = base.group(1)
    rayjob = render(REPO / "k8s" / "examples" / "job.yaml", render_options()).of_kind("RayJob")[0]
    assert rayjob["spec"]["rayClusterSpec"]["rayVersion"] == image_ray
    dependencies = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["dependencies"]
    (ray,) = [Requirement(d) for d in dependencies if Requirement(d).name == "ray"]
    assert ray.specifier.contains(image_ray), f"image Ray {image_ray} vs pyproject {ray}"
    images = {container["image"] for _, container in ray_containers(rayjob)}
    assert len(images) == 1, f"head and workers must run the same image, got {sorted(images)}"
