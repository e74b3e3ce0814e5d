"""tljob.evaluate.plots and report: real PNGs of the documented sizes that show the data
they are given, and report.md linking exactly the files written beside it."""

from __future__ import annotations

import csv
import io
import math
import re

import numpy as np
import pytest
from matplotlib.colors import to_hex
from PIL import Image

from tljob.evaluate import report
from tljob.evaluate.corruptions import robustness_rows
from tljob.evaluate.metrics import mistakes, score
from tljob.evaluate.plots import (
    confusion_figure,
    confusion_png,
    confusion_size,
    learning_curves_figure,
    learning_curves_png,
    reliability_figure,
    reliability_png,
    robustness_figure,
    robustness_png,
)
from tljob.run.ledger import EpochRow, history_csv, parse_history_csv

CLASSES = ["cat", "dog", "fox"]
TRUTH = [0, 0, 1, 1, 1, 2]
PROBS = np.array(
    [[0.8, 0.1, 0.1], [0.3, 0.6, 0.1], [0.1, 0.7, 0.2], [0.2, 0.7, 0.1], [0.5, 0.4, 0.1],
     [0.2, 0.7, 0.1]]
)  # fmt: skip


def png(draw, *args) -> np.ndarray:
    """The pixels of the PNG ``draw(*args, out)`` writes into memory, checked to be a PNG."""
    buffer = io.BytesIO()
    draw(*args, buffer)
    with Image.open(io.BytesIO(buffer.getvalue())) as image:
        assert image.format == "PNG"
        return np.asarray(image.convert("RGB"))


def history() -> list[EpochRow]:
    """Two stages, 'head' (global epochs 1-3) and 'finetune' (4-5); the first rows have no
    macro-F1 (nan), as runs from before it was recorded."""
    rows = []
    for g, (stage, index, epoch) in enumerate(
        [("head", 0, 1), ("head", 0, 2), ("head", 0, 3), ("finetune", 1, 1), ("finetune", 1, 2)],
        1,
    ):
        f1 = math.nan if g < 3 else 0.5 + g / 20
        rows.append(
            EpochRow(
                g,
                stage,
                index,
                epoch,
                1.0 / g,
                0.5 + g / 20,
                f1,
                1.2 / g,
                0.45 + g / 20,
                f1 - 0.05,
                (0.5, 0.5, 0.5),
                1e-3,
                4,
                1.0,
            )  # fmt: skip
        )
    return rows


def test_confusion_png_size_and_it_shows_the_matrix():
    m = score(TRUTH, PROBS, CLASSES)
    assert m["confusion_matrix"] == [[1, 1, 0], [1, 2, 0], [0, 1, 0]]
    pixels = png(confusion_png, m)
    assert confusion_size(3) == (12.0, 6.5) and pixels.shape == (650, 1200, 3)
    # The same matrix draws the same pixels; one image's prediction changed, other pixels.
    assert np.array_equal(png(confusion_png, m), pixels)
    changed = score(TRUTH, np.vstack([PROBS[:5], [[0.1, 0.1, 0.8]]]), CLASSES)
    assert not np.array_equal(png(confusion_png, changed), pixels)

    counts, normalised = confusion_figure(m["confusion_matrix"], CLASSES).axes[:2]
    assert counts.images[0].get_array().tolist() == [[1, 1, 0], [1, 2, 0], [0, 1, 0]]
    assert np.allclose(normalised.images[0].get_array(), [[0.5, 0.5, 0], [1 / 3, 2 / 3, 0],
                                                          [0, 1, 0]])  # fmt: skip
    for axes in (counts, normalised):
        assert [t.get_text() for t in axes.get_xticklabels()] == CLASSES
        assert [t.get_text() for t in axes.get_yticklabels()] == CLASSES
        assert (axes.get_xlabel(), axes.get_ylabel()) == ("predicted class", "true class")
    assert [t.get_text() for t in counts.texts] == ["1", "1", "0", "1", "2", "0", "0", "1", "0"]


def test_confusion_of_many_classes_skips_names_and_numbers():
    names = [f"class number {i:02d} with a long name" for i in range(60)]
    matrix = np.eye(60, dtype=int).tolist()
    matrix[3][3] = 0  # a class without images stays a row of zeros, not nan
    counts, normalised = confusion_figure(matrix, names).axes[:2]
    labels = [t.get_text() for t in counts.get_xticklabels()]
    assert len(labels) == 30 and labels[:2] == ["class number 00 w…", "class number 02 w…"]
    assert len(counts.texts) == 0 and len(normalised.texts) == 0
    assert np.isfinite(normalised.images[0].get_array()).all()
    assert normalised.images[0].get_array()[3].sum() == 0
    assert counts.get_xticklabels()[0].get_fontsize() == 6.0
    assert confusion_size(60) == (26.0, 13.5)


def test_reliability_png_shows_the_bins():
    m = score(TRUTH, PROBS, CLASSES)
    assert png(reliability_png, m).shape == (700, 600, 3)
    top, bottom = reliability_figure(m["calibration"], m["ece"], m["images"]).axes
    # confidences 0.8 (right), 0.6 (wrong), 0.7 x3 (right, right, wrong), 0.5 (wrong):
    # bins 11 (0.8), 10 (0.7), 8 (0.6), 7 (0.5)
    accuracy_bars = [(round(p.get_x() * 15), p.get_height()) for p in top.patches]
    assert accuracy_bars == [(7, 0.0), (8, 0.0), (10, pytest.approx(2 / 3)), (11, 1.0)]
    assert [p.get_height() for p in bottom.patches] == [0] * 7 + [1, 1, 0, 3, 1, 0, 0, 0]
    assert f"ECE {m['ece']:.4f}" in top.get_title()


def test_learning_curves_from_rows_or_history_csv():
    rows = history()
    pixels = png(learning_curves_png, rows)
    assert pixels.shape == (450, 1500, 3)
    # history.csv read back as plain string rows draws the same picture
    as_read = list(csv.DictReader(io.StringIO(history_csv(rows))))
    assert np.array_equal(png(learning_curves_png, as_read), pixels)
    assert parse_history_csv(history_csv(rows))[0].stage == "head"

    loss, accuracy, f1 = learning_curves_figure(rows).axes
    assert [a.get_title() for a in (loss, accuracy, f1)] == ["loss", "accuracy", "macro-F1"]
    train, val = (line for line in loss.lines if line.get_label() in ("train", "validation"))
    assert list(train.get_xdata()) == [1, 2, 3, 4, 5]
    assert list(train.get_ydata()) == pytest.approx([1.0, 0.5, 1 / 3, 0.25, 0.2])
    assert list(val.get_ydata()) == pytest.approx([1.2, 0.6, 0.4, 0.3, 0.24])
    f1_train = next(line for line in f1.lines if line.get_label() == "train").get_ydata()
    assert np.isnan(f1_train[:2]).all() and list(f1_train[2:]) == pytest.approx([0.65, 0.7, 0.75])
    for axes in (loss, accuracy, f1):
        boundaries = [line.get_xdata()[0] for line in axes.lines if line.get_linestyle() == ":"]
        assert boundaries == [3.5]  # finetune starts at global epoch 4
        stages = [(t.get_text(), t.get_position()[0]) for t in axes.texts]
        assert stages == [("head", 2.0), ("finetune", 4.5)]

    empty = learning_curves_figure([]).axes[0]
    assert [t.get_text() for t in empty.texts] == ["no finished epoch"]


def test_robustness_png_one_line_per_corruption_and_the_mean():
    rows = robustness_rows(
        (9, 10), {("jpeg", 1): (8, 10), ("jpeg", 2): (6, 10), ("contrast", 1): (5, 10)}
    )
    assert png(robustness_png, rows).shape == (500, 800, 3)
    axes = robustness_figure(rows).axes[0]
    lines = {line.get_label(): line for line in axes.lines}
    assert list(lines["jpeg"].get_ydata()) == [0.9, 0.8, 0.6]  # from the clean accuracy
    assert list(lines["contrast"].get_xdata()) == [0, 1]
    assert list(lines["mean"].get_ydata()) == pytest.approx([0.9, 0.65, 0.6])
    assert to_hex(lines["mean"].get_color()) == "#000000"
    assert list(lines["clean 0.900"].get_ydata()) == [0.9, 0.9]


def test_report_links_exactly_the_files_written_beside_it(tmp_path):
    m = score(TRUTH, PROBS, CLASSES)
    wrong = mistakes([f"img/{i}.png" for i in range(6)], TRUTH, PROBS, CLASSES)
    rows = robustness_rows((4, 6), {("jpeg", 1): (3, 6)})
    confusion_png(m, tmp_path / report.CONFUSION_PNG)
    reliability_png(m, tmp_path / report.RELIABILITY_PNG)
    learning_curves_png(history(), tmp_path / report.LEARNING_CURVES_PNG)
    robustness_png(rows, tmp_path / report.ROBUSTNESS_PNG)
    for name in (
        report.METRICS_JSON, report.PER_CLASS_CSV, report.MISTAKES_CSV, report.ROBUSTNESS_CSV
    ):  # fmt: skip
        (tmp_path / name).write_text("")
    text = report.report_markdown(
        m, model="runs/demo", source="s3://bucket/test", mistakes=wrong, robustness=rows,
        history=history(),
    )  # fmt: skip
    links = re.findall(r"\]\(([^)]+)\)", text)
    assert sorted(set(links)) == sorted(p.name for p in tmp_path.iterdir())
    # The scores beside the run's best validation epoch (val_accuracy 0.7 at epoch 5).
    assert (
        "| figure | this evaluation | the run's best validation epoch (epoch 5, stage finetune) |"
    ) in text
    assert "| accuracy | 0.5000 | 0.7000 |" in text
    assert "| Brier score | " in text and "top-5" not in text
    # dog: 2 right of 4 predicted (P 1/2) and of 3 images (R 2/3): F1 (2/3) / (7/6) = 4/7
    assert "| dog | 0.5000 | 0.6667 | 0.5714 | 3 |" in text
    assert "3 of 3:" in text and "| img/5.png | fox | dog | 0.7000 |" in text
    assert "| mean | all | 0.5000 | 6 |" in text

    bare = report.report_markdown(m, model="m.keras", source="test/")
    assert "No run history" in bare and report.LEARNING_CURVES_PNG not in bare
    assert report.ROBUSTNESS_PNG not in bare and "best validation epoch" not in bare
