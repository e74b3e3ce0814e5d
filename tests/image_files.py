"""The image's files as the static image tests read them: the Dockerfile (parsed by
``dockerfile_stages``), pyproject.toml, k8s/image/constraints.txt and requirements.txt, and
the script that writes them."""

from __future__ import annotations

import importlib.util
import re
import tomllib
from pathlib import Path
from types import ModuleType

from dockerfile_stages import Dockerfile, Instruction, parse
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

REPO = Path(__file__).resolve().parents[1]
DOCKERFILE = REPO / "Dockerfile"
CONSTRAINTS = REPO / "k8s" / "image" / "constraints.txt"
REQUIREMENTS = REPO / "k8s" / "image" / "requirements.txt"
COMPILER = REPO / "k8s" / "image" / "compile_constraints.py"
RAY_BASE = re.compile(r"rayproject/ray:(?P<ray>\d+\.\d+\.\d+)-py(?P<major>3)(?P<minor>\d+)")
ENTRY_POINTS = "/home/ray/tljob/ray_jobs/"  # the rendered RayJobs run <this>train.py


def dockerfile() -> Dockerfile:
    return parse(DOCKERFILE.read_text())


def pyproject() -> dict:
    return tomllib.loads((REPO / "pyproject.toml").read_text())["project"]


def project_requirement(name: str, extra: str | None = None) -> Requirement:
    """The requirement on ``name`` in pyproject's dependencies, or in extra ``extra``."""
    project = pyproject()
    listed = project["optional-dependencies"][extra] if extra else project["dependencies"]
    (found,) = [Requirement(r) for r in listed if canonicalize_name(Requirement(r).name) == name]
    return found


def pins(text: str) -> dict[str, str]:
    """A constraints file's ``name==version`` lines as {canonical name: version}; fails on
    any other kind of line and on a name pinned twice."""
    found: dict[str, str] = {}
    for line in text.splitlines():
        if not line.strip() or line.startswith("#"):
            continue
        match = re.fullmatch(r"([A-Za-z0-9][A-Za-z0-9._-]*)==([^\s=;]+)", line)
        assert match, f"not a name==version pin: {line!r}"
        name = canonicalize_name(match.group(1))
        assert name not in found, f"{name} pinned twice"
        found[name] = match.group(2)
    return found


def constraint_pins() -> dict[str, str]:
    return pins(CONSTRAINTS.read_text())


def compiler() -> ModuleType:
    """k8s/image/compile_constraints.py, imported (it is a script, not a package module)."""
    spec = importlib.util.spec_from_file_location("compile_constraints", COMPILER)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def ray_base_tags() -> list[re.Match[str]]:
    """The parsed rayproject/ray tag of every stage; fails unless each stage has one."""
    matches = [RAY_BASE.fullmatch(stage.base) for stage in dockerfile().stages]
    assert all(matches), f"every stage builds on rayproject/ray:<x.y.z>-py3<n>: {matches}"
    return matches


def context_copies(instructions: list[Instruction]) -> list[Instruction]:
    """COPY/ADD instructions that take files from the build context (no --from)."""
    return [i for i in instructions if i.keyword in ("COPY", "ADD") and "from" not in i.flags()]
