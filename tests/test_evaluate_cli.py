"""``tljob evaluate`` on the session's Ray cluster with the tiny exported model of
``infer_model``: every file it writes against figures computed here, in the test process,
from the model's own predictions (the corrupted images made here with the registry too)."""

from __future__ import annotations

import csv
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from infer_model import CLASSES, SIZE, TinyModel, digit_files

from tljob.evaluate import corruptions, metrics
from tljob.images import load_image

pytestmark = pytest.mark.ray


@pytest.fixture(scope="module")
def tiny(tmp_path_factory) -> TinyModel:
    return TinyModel(tmp_path_factory.mktemp("tiny") / "run")


@pytest.fixture(scope="module")
def source(tmp_path_factory) -> tuple[Path, list[Path]]:
    """12 digit images in class folders, and a broken PNG in digit_1's folder."""
    root = tmp_path_factory.mktemp("labelled")
    files = digit_files(root / "tree")
    (root / "tree" / "digit_1" / "zz_broken.png").write_bytes(b"\x89PNG\r\n\x1a\nnot an image")
    return root / "tree", files


def _read_csv(path: Path) -> list[dict[str, str]]:
    with path.open(newline="") as f:
        return list(csv.DictReader(f))


def test_evaluate_writes_the_models_exact_scores_robustness_and_the_unreadable(
    tmp_path, tiny, source, ray_connected
):
    from tljob.cli import main

    tree, files = source
    truth = np.array([CLASSES.index(p.parent.name) for p in files])
    probs = tiny.probabilities(files)
    out = tmp_path / "eval"
    assert (
        main(
            [
                "evaluate",
                "--model",
                str(tiny.run_dir),
                "--source",
                str(tree),
                "--out",
                str(out),
                "--corruptions",
                "--batch-size",
                "5",
            ]
        )  # fmt: skip
        == 0
    )
    written = json.loads((out / "metrics.json").read_text())
    expected = metrics.score(truth, probs, CLASSES)
    assert written["confusion_matrix"] == expected["confusion_matrix"]
    assert written["images"] == 12 and written["unreadable"] == 1
    for key in ("accuracy", "macro_f1", "nll", "brier", "ece"):
        assert written[key] == pytest.approx(expected[key], abs=1e-5), key
    assert 0 < written["accuracy"] < 1  # some right, some wrong: the figures mean something
    assert _read_csv(out / "unreadable.csv") == [
        {"uri": str(tree / "digit_1" / "zz_broken.png"), "reason": _read_csv(
            out / "unreadable.csv")[0]["reason"]}
    ]  # fmt: skip
    assert _read_csv(out / "unreadable.csv")[0]["reason"].startswith("corrupt_image")
    wrong = metrics.mistakes([str(p) for p in files], truth, probs, CLASSES)
    assert [r["uri"] for r in _read_csv(out / "mistakes.csv")] == [m.uri for m in wrong]
    for png in ("confusion_matrix.png", "reliability.png", "robustness.png"):
        assert (out / png).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n", png
    report = (out / "report.md").read_text()
    assert "(confusion_matrix.png)" in report and "(robustness.png)" in report

    # robustness.csv: each cell's accuracy is the model's on the images corrupted here
    images = np.stack([load_image(str(p), SIZE) for p in files])
    rows = {(r["corruption"], r["severity"]): r for r in _read_csv(out / "robustness.csv")}
    # (robustness.csv has 6 decimals)
    assert float(rows[("clean", "0")]["accuracy"]) == pytest.approx(expected["accuracy"], abs=1e-6)
    for corruption in corruptions.select():
        for severity in corruptions.SEVERITIES:
            changed = np.stack(
                [
                    corruptions.corrupt(corruption.name, image, severity, str(path))
                    for image, path in zip(images, files, strict=True)
                ]
            )
            right = int((tiny.net.predict_on_batch(changed).argmax(axis=1) == truth).sum())
            row = rows[(corruption.name, str(severity))]
            assert row["images"] == "12", row
            assert float(row["accuracy"]) == pytest.approx(right / 12, abs=1e-6), row
    assert len(rows) == 1 + 18 + 3 + 1  # clean, the cells, a mean per severity, the mean


def test_labels_the_model_does_not_know_and_unlabelled_images_are_refused(
    tmp_path, tiny, source, ray_connected, capsys
):
    from tljob.cli import EXIT_USER_ERROR, main

    tree, files = source
    other = tmp_path / "other"
    shutil.copytree(tree, other)
    (other / "digit_9").mkdir()
    shutil.copy(files[0], other / "digit_9" / "x.png")
    argv = ["evaluate", "--model", str(tiny.run_dir), "--out", str(tmp_path / "o")]
    assert main([*argv, "--source", str(other)]) == EXIT_USER_ERROR
    err = capsys.readouterr().err
    assert "the label(s) 'digit_9' are not classes of the model" in err
    flat = tmp_path / "flat"
    flat.mkdir()
    shutil.copy(files[0], flat / "a.png")
    assert main([*argv, "--source", str(flat)]) == EXIT_USER_ERROR
    assert "1 of 1 images have no label" in capsys.readouterr().err
    assert not (tmp_path / "o").exists()  # refused before any work
