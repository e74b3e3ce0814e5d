"""The evaluation's PNGs (pure): ``confusion_matrix.png``, ``reliability.png``,
``learning_curves.png`` and ``robustness.png``.

Each ``*_png`` function writes a PNG to a path or a binary file (callers on S3 write a
``BytesIO``'s bytes with ``tljob.storage.write_bytes``); each ``*_figure`` function returns
the matplotlib Figure it saves, on an Agg canvas (no pyplot state), for tests to read.
Matplotlib is imported only when drawing.
"""

from __future__ import annotations

import math
import os
from collections.abc import Mapping, Sequence
from typing import IO, TYPE_CHECKING, Any

import numpy as np

from tljob.evaluate.corruptions import CLEAN, MEAN, RobustnessRow
from tljob.run.ledger import EpochRow

if TYPE_CHECKING:
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure

Out = str | os.PathLike[str] | IO[bytes]
DPI = 100
RELIABILITY_IN = (6.0, 7.0)  # reliability.png is 600 x 700 pixels
LEARNING_CURVES_IN = (15.0, 4.5)  # learning_curves.png is 1500 x 450 pixels
ROBUSTNESS_IN = (8.0, 5.0)  # robustness.png is 800 x 500 pixels
LABELLED_CLASSES = 50  # beyond this many classes, every k-th class name is shown
ANNOTATED_CLASSES = 20  # beyond this many classes, cells carry no numbers
NAME_CHARS = 18  # longer class names are cut, with an ellipsis


def _figure(size: tuple[float, float], **kwargs: Any) -> Figure:
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    figure = Figure(figsize=size, **kwargs)
    FigureCanvasAgg(figure)
    return figure


def _save(figure: Figure, out: Out) -> None:
    figure.savefig(out, format="png", dpi=DPI)


def confusion_size(classes: int) -> tuple[float, float]:
    """The confusion figure's inches for ``classes`` classes: panels of side
    ``clip(3 + 0.15 * classes, 5, 12)`` in, the figure ``(2 * side + 2, side + 1.5)``; at
    ``DPI`` 100, 3 classes give 1200 x 650 pixels, 50 give 2300 x 1200."""
    side = min(12.0, max(5.0, 3.0 + 0.15 * classes))
    return (2 * side + 2.0, side + 1.5)


def confusion_png(metrics: Mapping[str, Any], out: Out) -> None:
    """Write ``confusion_matrix.png`` from ``metrics.score``'s ``confusion_matrix`` and
    ``classes`` (size: ``confusion_size``)."""
    _save(confusion_figure(metrics["confusion_matrix"], metrics["classes"]), out)


def confusion_figure(matrix: Sequence[Sequence[int]], classes: Sequence[str]) -> Figure:
    """Two panels: the counts (left) and the rows divided by their totals (right, a row
    without images stays 0); rows the true class, columns the predicted one, class names on
    both axes (every ``ceil(C / 50)``-th name beyond 50 classes, smaller fonts from 16),
    the numbers in the cells up to 20 classes."""
    counts = np.asarray(matrix, dtype=np.int64)
    c = len(classes)
    totals = counts.sum(axis=1, keepdims=True)
    normalised = np.divide(counts, totals, out=np.zeros(counts.shape), where=totals > 0)
    figure = _figure(confusion_size(c), layout="constrained")
    left, right = figure.subplots(1, 2)
    font = 10.0 if c <= 15 else max(6.0, 10.0 - (c - 15) / 7)
    step = max(1, math.ceil(c / LABELLED_CLASSES))
    names = [n if len(n) <= NAME_CHARS else n[: NAME_CHARS - 1] + "…" for n in map(str, classes)]
    panels = ((left, counts, "counts", "d"), (right, normalised, "row-normalised (recall)", ".2f"))
    for axes, values, title, fmt in panels:
        vmax = max(1, values.max())
        image = axes.imshow(values, cmap="Blues", vmin=0, vmax=vmax)
        figure.colorbar(image, ax=axes, fraction=0.046, pad=0.02)
        ticks = np.arange(0, c, step)
        axes.set_xticks(ticks, [names[i] for i in ticks], fontsize=font, rotation=90)
        axes.set_yticks(ticks, [names[i] for i in ticks], fontsize=font)
        axes.set_xlabel("predicted class")
        axes.set_ylabel("true class")
        axes.set_title(f"{title}, {int(counts.sum())} images")
        if c <= ANNOTATED_CLASSES:
            threshold = vmax / 2  # white numbers on the darker half of the colour map
            for (row, column), value in np.ndenumerate(values):
                axes.text(
                    column, row, format(value, fmt), ha="center", va="center",
                    fontsize=8 if c <= 10 else 6,
                    color="white" if value > threshold else "black",
                )  # fmt: skip
    return figure


def reliability_png(metrics: Mapping[str, Any], out: Out) -> None:
    """Write ``reliability.png`` (``RELIABILITY_IN`` at ``DPI``) from ``metrics.score``'s
    ``calibration``, ``ece`` and ``images``."""
    _save(reliability_figure(metrics["calibration"], metrics["ece"], metrics["images"]), out)


def reliability_figure(calibration: Sequence[Mapping[str, Any]], ece: float, images: int) -> Figure:
    """Top: each non-empty bin's accuracy as a bar over its confidence range, its mean
    confidence as a dot, the diagonal of perfect calibration; bottom: images per bin."""
    figure = _figure(RELIABILITY_IN, layout="constrained")
    top, bottom = figure.subplots(2, 1, sharex=True, height_ratios=(3, 1))
    lows = [b["low"] for b in calibration]
    widths = [b["high"] - b["low"] for b in calibration]
    full = [b for b in calibration if b["images"]]
    top.bar(
        [b["low"] for b in full], [b["accuracy"] for b in full],
        width=[b["high"] - b["low"] for b in full], align="edge",
        color="C0", edgecolor="black", label="accuracy in bin",
    )  # fmt: skip
    top.plot(
        [(b["low"] + b["high"]) / 2 for b in full], [b["confidence"] for b in full],
        "o", color="C3", label="mean confidence in bin",
    )  # fmt: skip
    top.plot([0, 1], [0, 1], "--", color="grey", label="perfect calibration")
    top.set_xlim(0, 1)
    top.set_ylim(0, 1)
    top.set_ylabel("accuracy")
    top.set_title(f"reliability: ECE {ece:.4f}, {images} images, {len(calibration)} bins")
    top.legend(loc="upper left", fontsize="small")
    bottom.bar(lows, [b["images"] for b in calibration], width=widths, align="edge",
               color="grey", edgecolor="black")  # fmt: skip
    bottom.set_xlabel("confidence (probability of the predicted class)")
    bottom.set_ylabel("images")
    return figure


def learning_curves_png(rows: Sequence[EpochRow | Mapping[str, Any]], out: Out) -> None:
    """Write ``learning_curves.png`` (``LEARNING_CURVES_IN`` at ``DPI``) from a run's
    epochs: ``EpochRow``s, or mappings with ``history.csv``'s columns (strings read as
    floats)."""
    _save(learning_curves_figure(rows), out)


CURVES = (("loss", "loss"), ("accuracy", "accuracy"), ("macro_f1", "macro-F1"))


def learning_curves_figure(rows: Sequence[EpochRow | Mapping[str, Any]]) -> Figure:
    """Three panels (loss, accuracy, macro-F1), each the training figure and the ``val_``
    one against ``global_epoch``; a dotted vertical line where a stage starts (between
    its first epoch and the one before) and each stage's name over its span. Missing
    figures (nan: runs from before macro-F1 was recorded) leave gaps. No rows: the
    panels say so."""
    values = [r.to_dict() if isinstance(r, EpochRow) else dict(r) for r in rows]
    epochs = [int(v["global_epoch"]) for v in values]
    figure = _figure(LEARNING_CURVES_IN, layout="constrained")
    panels = figure.subplots(1, len(CURVES))
    spans = _stage_spans(values)
    for axes, (key, label) in zip(panels, CURVES, strict=True):
        axes.plot(epochs, [float(v[key]) for v in values], "o-", ms=3, label="train")
        axes.plot(epochs, [float(v[f"val_{key}"]) for v in values], "o-", ms=3,
                  label="validation")  # fmt: skip
        axes.set_xlabel("epoch (over the whole run)")
        axes.set_title(label, pad=14)  # room for the stage names between title and axes
        if not values:
            axes.text(0.5, 0.5, "no finished epoch", transform=axes.transAxes, ha="center")
            continue
        for name, first, last in spans:
            if first != epochs[0]:
                axes.axvline(first - 0.5, color="black", linestyle=":", linewidth=1)
            axes.text(
                (first + last) / 2, 1.0, name, transform=axes.get_xaxis_transform(),
                ha="center", va="bottom", fontsize=8,
            )  # fmt: skip
        axes.legend(fontsize="small")
        _integer_epochs(axes)
    return figure


def _stage_spans(values: Sequence[Mapping[str, Any]]) -> list[tuple[str, int, int]]:
    """(stage name, first global epoch, last global epoch), one per run of rows with the
    same stage index."""
    spans: list[tuple[str, int, int]] = []
    index = None
    for v in values:
        epoch = int(v["global_epoch"])
        if index is not None and int(v["stage_index"]) == index:
            spans[-1] = (spans[-1][0], spans[-1][1], epoch)
        else:
            spans.append((str(v["stage"]), epoch, epoch))
            index = int(v["stage_index"])
    return spans


def _integer_epochs(axes: Axes) -> None:
    from matplotlib.ticker import MaxNLocator

    axes.xaxis.set_major_locator(MaxNLocator(integer=True))


def robustness_png(rows: Sequence[RobustnessRow], out: Out) -> None:
    """Write ``robustness.png`` (``ROBUSTNESS_IN`` at ``DPI``) from
    ``corruptions.robustness_rows``."""
    _save(robustness_figure(rows), out)


def robustness_figure(rows: Sequence[RobustnessRow]) -> Figure:
    """Accuracy against severity (0: clean), one line per corruption starting at the clean
    accuracy, the mean over corruptions in thick black, the clean accuracy dashed."""
    figure = _figure(ROBUSTNESS_IN, layout="constrained")
    axes = figure.subplots()
    clean = next(r for r in rows if r.corruption == CLEAN)
    names = list(dict.fromkeys(r.corruption for r in rows if r.corruption not in (CLEAN, MEAN)))
    for i, name in enumerate([*names, MEAN]):
        cells = [r for r in rows if r.corruption == name and r.severity is not None]
        if not cells:
            continue
        xs = [0, *(r.severity for r in cells)]
        ys = [clean.accuracy, *(r.accuracy for r in cells)]
        if name == MEAN:
            axes.plot(xs, ys, "o-", color="black", linewidth=3, label="mean")
        else:
            axes.plot(xs, ys, "o-", color=f"C{i % 10}", label=name)
    axes.axhline(clean.accuracy, color="grey", linestyle="--", label=f"clean {clean.accuracy:.3f}")
    axes.set_xticks([0, 1, 2, 3], ["clean", "1", "2", "3"])
    axes.set_xlabel("severity")
    axes.set_ylabel("accuracy")
    axes.set_ylim(0, 1.02)
    axes.set_title(f"accuracy under corruptions, {clean.images} images")
    axes.legend(fontsize="small", loc="lower left")
    return figure
