"""sweep.png: its size, one point and one curve per trial, one colour per backbone."""

from __future__ import annotations

import io
import subprocess
import sys

from matplotlib.colors import to_hex
from PIL import Image

from tljob.tune.plot import sweep_figure, sweep_png
from tljob.tune.results import TrialRecord

LR = "train.stages.0.learning_rate"


def trials() -> tuple[list[TrialRecord], dict[str, list[dict]]]:
    plan = [  # id, backbone, learning rate, val_accuracy per epoch, stopped early
        ("t1", "resnet50", 1e-4, [0.5, 0.6, 0.7, 0.8], False),
        ("t2", "resnet50", 1e-2, [0.3], True),
        ("t3", "mobilenet_v2", 1e-3, [0.4, 0.5, 0.55, 0.9], False),
        ("t4", "mobilenet_v2", 1e-5, [0.2, 0.25], True),
    ]
    records, histories = [], {}
    for trial_id, backbone, lr, curve, early in plan:
        best = max(curve)
        records.append(
            TrialRecord(
                trial_id,
                "TERMINATED",
                sampled={"model.backbone": backbone, LR: lr},
                final={"val_accuracy": curve[-1]},
                best_value=best,
                best_epoch=curve.index(best) + 1,
                epochs_run=len(curve),
                stopped_early=early,
            )
        )
        histories[trial_id] = [
            {"global_epoch": e, "val_accuracy": v, "val_loss": 1 - v}
            for e, v in enumerate(curve, 1)
        ]
    return records, histories


def _points(axes) -> list[tuple[str, list[tuple[float, float]]]]:
    """(label, offsets) of every scatter series of the left axes but the best-trial ring."""
    return [
        (c.get_label(), [tuple(p) for p in c.get_offsets()])
        for c in axes.collections
        if c.get_label() != "best"
    ]


def test_the_png_has_the_expected_size(tmp_path):
    records, histories = trials()
    out = tmp_path / "sweep.png"
    sweep_png(records, histories, "val_accuracy", "max", LR, "model.backbone", out)
    with Image.open(out) as image:
        assert image.format == "PNG" and image.size == (1200, 500)
    buffer = io.BytesIO()  # a binary file works too (storage writes bytes)
    sweep_png(records, histories, "val_accuracy", "max", None, None, buffer)
    assert Image.open(io.BytesIO(buffer.getvalue())).size == (1200, 500)


def test_one_point_and_one_curve_per_trial_one_colour_per_backbone():
    records, histories = trials()
    figure = sweep_figure(records, histories, "val_accuracy", "max", LR, "model.backbone")
    left, right = figure.axes
    assert left.get_xscale() == "log" and left.get_xlabel() == LR
    assert _points(left) == [
        ("mobilenet_v2", [(1e-3, 0.9), (1e-5, 0.25)]),
        ("resnet50", [(1e-4, 0.8), (1e-2, 0.3)]),
    ]
    ring = [c for c in left.collections if c.get_label() == "best"]
    assert [tuple(p) for p in ring[0].get_offsets()] == [(1e-3, 0.9)]  # t3 is the best
    lines = right.lines
    assert len(lines) == len(records)
    colours = [to_hex(line.get_color()) for line in lines]  # trials in id order t1..t4
    assert colours[0] == colours[1] != colours[2] == colours[3]
    assert [len(line.get_xdata()) for line in lines] == [4, 1, 4, 2]
    assert [line.get_linestyle() for line in lines] == ["-", "--", "-", "--"]
    legend = [text.get_text() for text in left.get_legend().get_texts()]
    assert legend == ["mobilenet_v2", "resnet50", "best"]


def test_without_a_learning_rate_trials_are_placed_by_index_and_failures_have_no_point():
    records, histories = trials()
    records.append(TrialRecord("t5", "ERROR", sampled={"model.backbone": "resnet50"}, error="x"))
    figure = sweep_figure(records, histories, "val_loss", "min", None, None)
    left, right = figure.axes
    assert left.get_xscale() == "linear"
    assert _points(left) == [("trials", [(1.0, 0.8), (2.0, 0.3), (3.0, 0.9), (4.0, 0.25)])]
    assert len(right.lines) == 4  # t5 reported nothing
    assert len({to_hex(line.get_color()) for line in right.lines}) == 1
    assert list(right.lines[0].get_ydata()) == [0.5, 0.4, 0.30000000000000004, 0.19999999999999996]


def test_importing_the_module_does_not_import_matplotlib():
    code = "import sys, tljob.tune.plot; print('matplotlib' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"
