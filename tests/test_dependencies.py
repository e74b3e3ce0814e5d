"""Every third-party package tljob imports is declared in pyproject.toml: the core ones in
``dependencies``, the few that only some installs need in the extra that brings them."""

from __future__ import annotations

import ast
import importlib.metadata
import re
import sys
import tomllib
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
PYPROJECT = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]

# Imported only inside the code that needs them, and installed by an extra:
# TensorFlow by `cpu` or `cuda` (the image picks one), tf_keras by `cuda` (and by hand with
# --no-deps beside `cpu`, see the README), optuna by `optuna` (tune.searcher: optuna),
# tf2onnx by `onnx` (tljob export --format onnx).
EXTRA_ONLY = {
    "tensorflow": {"cpu": "tensorflow-cpu", "cuda": "tensorflow"},
    "tf_keras": {"cuda": "tf-keras"},
    "optuna": {"optuna": "optuna"},
    "tf2onnx": {"onnx": "tf2onnx"},
}


def _name(requirement: str) -> str:
    return re.split(r"[\s\[<>=!~;]", requirement, maxsplit=1)[0].lower().replace("_", "-")


def imported_top_level_modules() -> dict[str, list[str]]:
    """Third-party top-level module -> the tljob files importing it (absolute imports)."""
    found: dict[str, list[str]] = {}
    for path in sorted((REPO / "tljob").rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            names = []
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                names = [node.module]
            for name in names:
                top = name.split(".")[0]
                if top != "tljob" and top not in sys.stdlib_module_names:
                    found.setdefault(top, []).append(str(path.relative_to(REPO)))
    return found


def distribution_of(module: str) -> set[str]:
    """The installed distributions providing top-level ``module`` (normalised names)."""
    providers = importlib.metadata.packages_distributions().get(module, [])
    return {p.lower().replace("_", "-") for p in providers}


def test_every_imported_package_is_declared_where_it_belongs():
    core = {_name(r) for r in PYPROJECT["dependencies"]}
    extras = {
        extra: {_name(r) for r in requirements}
        for extra, requirements in PYPROJECT["optional-dependencies"].items()
    }
    problems = []
    for module, files in imported_top_level_modules().items():
        providers = distribution_of(module)
        assert providers, f"{module} (imported by {files[0]}) is not installed"
        if module in EXTRA_ONLY:
            for extra, distribution in EXTRA_ONLY[module].items():
                if distribution not in extras[extra]:
                    problems.append(f"{module}: {distribution} not in extra {extra!r}")
            continue
        if not providers & core:
            problems.append(
                f"{module} (imported by {', '.join(sorted(set(files))[:2])}) comes from "
                f"{sorted(providers)}, not declared in [project].dependencies"
            )
    assert problems == []


def test_tensorflow_is_never_a_core_dependency():
    assert not {"tensorflow", "tensorflow-cpu", "tf-keras"} & {
        _name(r) for r in PYPROJECT["dependencies"]
    }


def test_the_extra_only_packages_are_imported_lazily():
    """A module-level import of TensorFlow, tf_keras or optuna would make every command
    need the extra; they are imported inside the functions that use them, or in modules
    only the Ray workers import (tljob.nn, tljob.run.worker), or that ``tljob export``
    imports once its inputs are checked (tljob.serving.graph, .exif, .formats)."""
    worker_side = (
        "tljob/nn/",
        "tljob/run/worker.py",
        "tljob/run/loop.py",
        "tljob/run/feed.py",
        "tljob/run/feed_arrays.py",
        "tljob/serving/graph.py",
        "tljob/serving/exif.py",
        "tljob/serving/formats.py",
    )
    for path in sorted((REPO / "tljob").rglob("*.py")):
        rel = str(path.relative_to(REPO))
        if rel.startswith(worker_side):
            continue
        for node in ast.parse(path.read_text()).body:
            names = []
            if isinstance(node, ast.Import):
                names = [a.name.split(".")[0] for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                names = [node.module.split(".")[0]]
            assert not set(names) & set(EXTRA_ONLY), f"{rel}: module-level import of {names}"


def test_requires_python_admits_the_versions_tensorflow_and_ray_publish_wheels_for():
    # TensorFlow 2.21 and Ray 2.60 publish wheels for CPython 3.11, 3.12 and 3.13
    # (`pip install --dry-run --python-version 3.13 --only-binary=:all:` resolves them).
    spec = PYPROJECT["requires-python"]
    assert spec == ">=3.11,<3.14"
