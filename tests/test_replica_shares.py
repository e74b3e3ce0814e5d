"""Validation under a 2-replica distribution strategy (2 logical CPUs, no Ray) when the last
global batch leaves a replica a short or an empty share: every image counts exactly once.

The evaluation runs in a process of its own (``replica_shares_eval.py``: logical devices
can only be set up before TensorFlow starts) on tljob's ``mobilenet_v2_tv`` with the
ImageNet weights converted from the offline package, the demo's backbone.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import REPO

SCRIPT = Path(__file__).with_name("replica_shares_eval.py")


@pytest.fixture(scope="module")
def evaluations(tmp_path_factory) -> dict[int, dict]:
    """rows -> what the script printed for that many validation images (batch 4 x 2)."""
    env = {
        **os.environ,
        "PYTHONPATH": str(REPO),
        "KERAS_HOME": str(tmp_path_factory.mktemp("keras")),  # the converted weights
        "TLJOB_OFFLINE": "1",
    }
    proc = subprocess.run(
        [sys.executable, str(SCRIPT), "9", "17", "18"],
        capture_output=True, text=True, timeout=900, env=env, cwd=REPO,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    results = [json.loads(line) for line in proc.stdout.splitlines() if line.startswith("{")]
    return {r["rows"]: r for r in results}


@pytest.mark.parametrize(
    ("rows", "shares", "right"),
    [
        # a reported job's worker: 18 validation images over 2 workers, 9 each, batches of
        # 4 x 2: its last global batch is 1 image, split over 2 replicas as 1 and 0
        (9, [[4, 4], [1, 0]], 4),
        (17, [[4, 4], [4, 4], [1, 0]], 7),
        (18, [[4, 4], [4, 4], [1, 1]], 7),
    ],
)
def test_two_replica_validation_counts_every_image_once(evaluations, rows, shares, right):
    result = evaluations[rows]
    assert result["shares"] == shares  # what Keras gave each replica, the empty share included
    # the labels make exactly `right` rows correct: those with i % 3 == 0, and the last one
    # (alone in its batch when a replica gets 0 rows): dropping it or counting a padding
    # row would change the figure
    assert sum(1 for i in range(rows) if i % 3 == 0 or i == rows - 1) == result["right"]
    assert result["right"] == right
    two, one = result["two"], result["one"]
    assert two["accuracy"] == pytest.approx(right / rows, abs=1e-7)
    assert two["accuracy"] == one["accuracy"]
    assert two["macro_f1"] == pytest.approx(one["macro_f1"], abs=1e-7)
    assert two["class_recall"] == pytest.approx(one["class_recall"], abs=1e-7)
    assert two["loss"] == pytest.approx(one["loss"], rel=1e-5)
