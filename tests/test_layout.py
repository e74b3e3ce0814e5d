"""Import contracts per layer, each checked in a fresh interpreter: what a module imports
at import time, not what happened to be loaded by earlier tests."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

PURE = [
    "tljob.errors",
    "tljob.config",
    "tljob.config.reference",
    "tljob.config.search",
    "tljob.config.sweep",
    "tljob.zoo",
    "tljob.zoo.listing",
    "tljob.zoo.convert.pth",
    "tljob.zoo.convert.pth_pickle",
    "tljob.report",
    "tljob.storage",
    "tljob.storage.s3api",
    "tljob.storage.seaweed",
    "tljob.images",
    "tljob.augment",
    "tljob.augment.keys",
    "tljob.augment.geometry",
    "tljob.augment.pipeline",
    "tljob.augment.colour",
    "tljob.augment.photometric",
    "tljob.augment.ops",
    "tljob.augment.ops.base",
    "tljob.augment.ops.random_resized_crop",
    "tljob.augment.ops.rotation",
    "tljob.augment.ops.shift",
    "tljob.augment.ops.shear",
    "tljob.augment.ops.zoom",
    "tljob.augment.ops.flip",
    "tljob.augment.ops.brightness",
    "tljob.augment.ops.channel_shift",
    "tljob.augment.ops.color_jitter",
    "tljob.augment.ops.randaugment",
    "tljob.augment.ops.random_erasing",
    "tljob.augment.ops.mixing",
    "tljob.output",
    "tljob.progress",
    "tljob.data.listing",
    "tljob.data.split",
    "tljob.data.manifest",
    "tljob.data.sources",
    "tljob.data.merge",
    "tljob.data.prepared",
    "tljob.data.plan",
    "tljob.data.testset",
    "tljob.run.ledger",
    "tljob.run.lock",
    "tljob.run.checkpoint",
    "tljob.run.attempts",
    "tljob.run.failures",
    "tljob.run.timings",
    "tljob.run.input_wait",
    "tljob.run.rescore",
    "tljob.run.loop",
    "tljob.run.job",
    "tljob.run.plan",
    "tljob.run.dry_run",
    "tljob.run.terminate",
    "tljob.preflight",
    "tljob.demo",
    "tljob.cli",
    "tljob.cli._args",
    "tljob.cli.train",
    "tljob.cli.prepare",
    "tljob.cli.demo",
    "tljob.cli.backbones",
    "tljob.cli.config",
    "tljob.cli.weights",
    "tljob.cli.augment",
    "tljob.cli.tune",
    "tljob.cli.k8s",
    "tljob.cli.export",
    "tljob.serving",
    "tljob.serving.locate",
    "tljob.serving.card",
    "tljob.serving.publish",
    "tljob.serving.export",
    "tljob.augment.preview",
    "tljob.augment.preview_source",
    "tljob.tune",
    "tljob.tune.results",
    "tljob.tune.interrupt",
    "tljob.tune.plot",
    "tljob.deploy",
    "tljob.deploy.options",
    "tljob.deploy.pods",
    "tljob.deploy.predict",
    "tljob.deploy.render",
    "tljob.deploy.refusals",
    "tljob.deploy.validate",
    "tljob.deploy.kustomize",
    "tljob.deploy.yaml_out",
    "tljob.ray_private",
    "tljob.config.yaml_in",
    "tljob.docs_gen",
    "tljob.evaluate",
    "tljob.evaluate.metrics",
    "tljob.evaluate.corruptions",
    "tljob.evaluate.plots",
    "tljob.evaluate.report",
    "tljob.infer",
    "tljob.infer.model_file",
    "tljob.infer.inputs",
    "tljob.infer.results",
    "tljob.infer.parts",
    "tljob.cli.predict",
    "tljob.cli.evaluate",
]
RAY = ("ray",)
TENSORFLOW = ("tensorflow", "tf_keras", "keras")


def _importing(module: str) -> subprocess.Popen[str]:
    code = (
        f"import sys, {module}; print(' '.join(sorted({{m.split('.')[0] for m in sys.modules}})))"
    )
    return subprocess.Popen(
        [sys.executable, "-c", code], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )


def _packages(proc: subprocess.Popen[str]) -> set[str]:
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 0, err
    return set(out.split())


def imported_after(module: str) -> set[str]:
    """Top-level packages in sys.modules after importing ``module`` in a new interpreter."""
    return _packages(_importing(module))


@pytest.fixture(scope="module")
def pure_imports() -> dict[str, set[str]]:
    """The top-level packages in sys.modules after importing each pure module, in ``PURE``'s
    order, all in one new interpreter (one each took 14 s of the suite): each set also holds
    what the modules before it loaded, so a module whose set holds Ray or TensorFlow is
    checked again alone (``imported_after``) before it is blamed."""
    code = (
        "import importlib, json, sys\n"
        "seen = {}\n"
        f"for module in {PURE!r}:\n"
        "    importlib.import_module(module)\n"
        "    seen[module] = sorted({m.split('.')[0] for m in sys.modules})\n"
        "print(json.dumps(seen))\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    return {module: set(packages) for module, packages in json.loads(proc.stdout).items()}


@pytest.mark.parametrize("module", PURE)
def test_pure_modules_import_neither_ray_nor_tensorflow(module, pure_imports):
    assert "tljob" in pure_imports[module]
    if pure_imports[module] & {*RAY, *TENSORFLOW}:  # this one, or one imported before it?
        assert imported_after(module) & {*RAY, *TENSORFLOW} == set()


def test_nn_and_zoo_never_import_ray():
    # One interpreter imports them all (each would cost a TensorFlow import, 3-4 s): if any
    # of them imported Ray, Ray would be among what they import together.
    loaded = imported_after(
        "tljob.nn, tljob.nn.model, tljob.nn.io, tljob.nn.callbacks, tljob.nn.schedules, "
        "tljob.nn.metrics, tljob.nn.labels, tljob.nn.augment_layers, tljob.zoo, "
        "tljob.serving.graph, tljob.serving.exif, tljob.serving.formats"
    )
    assert "tensorflow" in loaded  # the check is meaningful: these are the TensorFlow side
    assert loaded & set(RAY) == set()


@pytest.mark.parametrize(
    # tljob.run.restart: Ray Train's controller unpickles the training dataset's factory
    "module",
    [
        "tljob.data.pipeline",
        "tljob.data.shards",
        "tljob.data.lookup",
        "tljob.run.connect",
        "tljob.run.restart",
        "tljob.run.driver",  # the trainer's module and its backend (tljob.run.tf_config)
        "tljob.infer.pipeline",  # the driver's side of inference: TensorFlow in the actors
        "tljob.infer.predict",
        "tljob.infer.evaluate",
    ],
)
def test_ray_data_side_never_imports_tensorflow(module):
    loaded = imported_after(module)
    assert "ray" in loaded  # the check is meaningful: this module is the Ray side
    assert loaded & set(TENSORFLOW) == set()


def test_the_storage_probe_on_ray_nodes_never_imports_tensorflow():
    loaded = imported_after("tljob.run.storage_check")
    assert "ray" in loaded
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
    loaded = imported_modules("tljob.demo")
    assert "tljob.demo" in loaded  # the check is meaningful
    assert {m for m in loaded if m == "tljob.cli" or m.startswith("tljob.cli.")} == set()


def imported_modules(module: str) -> set[str]:
    code = f"import sys, {module}; print(' '.join(sorted(sys.modules)))"
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    return set(proc.stdout.split())
