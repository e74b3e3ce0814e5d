"""A tiny real ``tljob train`` with ``data.test_fraction``, run once for two contracts.

1. The driver process never imports TensorFlow (issue 20): the trainer is Ray Train's
   ``DataParallelTrainer`` with tljob's own ``TF_CONFIG`` backend (``tljob.run.tf_config``),
   and the preflight, summary, learning curves and scoring leave TensorFlow to the workers
   and the scoring actors. ``sys.modules`` is read in the driver after the whole run.
2. The exported model is scored once on the test split at the end, on the workers, and the
   figures recorded in summary.json, test_metrics.json and the end table are the model's
   own on exactly those images (computed here from the split's rule and the exported model).
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys

import numpy as np
import pytest
import yaml
from conftest import write_digits_tree
from test_train_cli import job_yaml

from tljob.data.listing import list_images
from tljob.data.split import split_listing
from tljob.evaluate.metrics import score
from tljob.images import load_image

pytestmark = pytest.mark.ray

# `tljob train` in this process, then the TensorFlow modules it holds at the very end
DRIVER = (
    "import sys; from tljob.cli import main; rc = main(sys.argv[1:]); "
    "print('TF-MODULES', sorted(m for m in sys.modules if m in ('tensorflow', 'tf_keras') "
    "or m.startswith(('tensorflow.', 'tf_keras.')))); sys.exit(rc)"
)


def test_a_run_scores_its_test_split_and_its_driver_imports_no_tensorflow(tmp_path, ray_cluster):
    data = write_digits_tree(tmp_path / "digits", classes=3, per_class=12)
    config = job_yaml(
        tmp_path,
        data,
        "tested",
        train={
            "batch_size": 4,
            "stages": [{"name": "head", "epochs": 1, "learning_rate": 1e-2, "trainable": "head"}],
        },
        scaling={"num_workers": 1, "cpus_per_worker": 1},
    )
    tree = yaml.safe_load(config.read_text())
    tree["data"].update(test_fraction=0.25, val_fraction=0.25)
    config.write_text(yaml.safe_dump(tree))
    env = {**os.environ, "RAY_ADDRESS": ray_cluster["gcs"], "PYTHONUNBUFFERED": "1"}
    proc = subprocess.run(
        [sys.executable, "-c", DRIVER, "train", "--config", str(config)],
        capture_output=True, text=True, timeout=900, env=env,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert proc.stdout.splitlines()[-1] == "TF-MODULES []", proc.stdout[-3000:]
    run_dir = tmp_path / "runs" / "tested"
    summary = json.loads((run_dir / "summary.json").read_text())
    assert (run_dir / "learning_curves.png").stat().st_size > 0
    assert summary["replica_weights_identical"] is True

    # the test images by the split's rule: 3 of each class's 12
    split = split_listing(list_images(str(data)), 0.25, seed=1, test_fraction=0.25)
    test = sorted(split.test, key=lambda item: item["path"])
    assert len(test) == 9 and summary["data"]["splits"]["test"]["used"] == 9
    from tljob.nn import io as nn_io

    model = nn_io.load_exported(run_dir / "model" / "model.keras")
    images = np.stack([load_image(item["path"], 32) for item in test])
    probs = nn_io.predict_probabilities(model, images)
    expected = score(np.array([item["label"] for item in test]), probs, summary["classes"])
    recorded = json.loads((run_dir / "test_metrics.json").read_text())
    assert recorded["confusion_matrix"] == expected["confusion_matrix"]
    assert summary["test"]["images"] == 9
    for key in ("accuracy", "macro_f1", "nll", "brier", "ece"):
        assert summary["test"][key] == pytest.approx(expected[key], abs=1e-5), key
    row = re.search(r"test split +9 images: accuracy (\S+), macro-F1 (\S+),", proc.stdout)
    assert row, proc.stdout[-3000:]
    assert float(row.group(1)) == pytest.approx(expected["accuracy"], abs=1e-4)
    # the validation re-check counted only validation images
    assert summary["exported_model"]["images"] == summary["data"]["splits"]["val"]["used"] == 9
