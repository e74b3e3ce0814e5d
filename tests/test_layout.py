"""Import contracts per layer, each checked in a fresh interpreter: what a module imports
at import time, not what happened to be loaded by earlier tests."""

from __future__ import annotations

import subprocess
import sys

import pytest

PURE = [
    "tljob.errors",
    "tljob.config",
    "tljob.config.reference",
    "tljob.zoo",
    "tljob.report",
    "tljob.storage",
    "tljob.images",
    "tljob.output",
    "tljob.data.listing",
    "tljob.data.sources",
    "tljob.data.prepared",
    "tljob.run.ledger",
    "tljob.run.lock",
    "tljob.run.checkpoint",
    "tljob.run.loop",
    "tljob.run.job",
    "tljob.preflight",
    "tljob.demo",
    "tljob.cli",
]
RAY = ("ray",)
TENSORFLOW = ("tensorflow", "tf_keras", "keras")


def imported_after(module: str) -> set[str]:
    """Top-level packages in sys.modules after importing ``module`` in a new interpreter."""
    code = (
        f"import sys, {module}; print(' '.join(sorted({{m.split('.')[0] for m in sys.modules}})))"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    return set(proc.stdout.split())


@pytest.mark.parametrize("module", PURE)
def test_pure_modules_import_neither_ray_nor_tensorflow(module):
    assert imported_after(module) & {*RAY, *TENSORFLOW} == set()


@pytest.mark.parametrize("module", ["tljob.nn", "tljob.nn.model", "tljob.nn.io", "tljob.zoo"])
def test_nn_and_zoo_never_import_ray(module):
    assert imported_after(module) & set(RAY) == set()


@pytest.mark.parametrize(
    "module", ["tljob.data.pipeline", "tljob.data.shards", "tljob.run.connect"]
)
def test_ray_data_side_never_imports_tensorflow(module):
    loaded = imported_after(module)
    assert "ray" in loaded  # the check is meaningful: this module is the Ray side
    assert loaded & set(TENSORFLOW) == set()


def test_tf_keras_is_imported_by_one_module_only():
    from pathlib import Path

    root = Path(__file__).resolve().parents[1] / "tljob"
    importers = sorted(
        str(p.relative_to(root.parent))
        for p in root.rglob("*.py")
        if any(
            line.strip().startswith(("import tf_keras", "from tf_keras"))
            for line in p.read_text().splitlines()
        )
    )
    assert importers == ["tljob/nn/keras.py"]


def test_demo_does_not_import_the_cli():
    assert "tljob.cli" not in imported_modules("tljob.demo")


def imported_modules(module: str) -> set[str]:
    code = f"import sys, {module}; print(' '.join(sorted(sys.modules)))"
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    return set(proc.stdout.split())
