"""What the ``tljob k8s render --predict`` tests share: predict's flags for a job whose
places are all in S3, and the command run as a user runs it."""

from __future__ import annotations

from typing import Any

import pytest
import yaml

from tljob.cli import main

SCRIPT = "/home/ray/tljob/ray_jobs/predict.py"
FLAGS = [
    "--model", "s3://tljob-runs/flowers-resnet50",
    "--source", "s3://tljob-data/new-images/",
    "--out", "s3://tljob-data/predictions/flowers-2026",
]  # fmt: skip


def rendered(
    capsys: pytest.CaptureFixture[str], render_flags: list[str], predict_flags: list[str]
) -> tuple[str, list[dict[str, Any]]]:
    """The text ``tljob k8s render --predict`` prints, and its documents."""
    assert main(["k8s", "render", "--predict", *render_flags, "--", *predict_flags]) == 0
    out = capsys.readouterr().out
    return out, [d for d in yaml.safe_load_all(out) if d]


def refusal(capsys: pytest.CaptureFixture[str], argv: list[str]) -> str:
    """The one error line of a render that exits 2 (and prints nothing on stdout)."""
    assert main(["k8s", "render", *argv]) == 2
    captured = capsys.readouterr()
    assert captured.out == ""
    assert captured.err.startswith("tljob: error: ") and captured.err.endswith("\n")
    return captured.err[len("tljob: error: ") : -1]
