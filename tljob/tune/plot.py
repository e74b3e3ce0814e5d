"""``sweep.png`` (pure): a sweep's trials at a glance.

Left: each trial's best validation metric against its learning rate (log axis; against the
trial's index when no learning rate is searched), one colour per backbone (per value of
``colour_path``), the best trial ringed. Right: every trial's metric per epoch in the same
colours; a trial the scheduler stopped early is dashed, ends with an 'x', and is visibly
shorter. Matplotlib (its Agg canvas, no pyplot state) is imported only when drawing.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from typing import IO, TYPE_CHECKING, Any

from tljob.tune.results import TrialRecord, best_trial

if TYPE_CHECKING:
    from matplotlib.figure import Figure

FIGSIZE_IN = (12.0, 5.0)
DPI = 100  # sweep.png is 1200 x 500 pixels


def sweep_png(
    records: Sequence[TrialRecord],
    histories: Mapping[str, Sequence[Mapping[str, Any]]],
    metric: str,
    mode: str,
    learning_rate_path: str | None,
    colour_path: str | None,
    out: str | os.PathLike[str] | IO[bytes],
) -> None:
    """Write ``sweep.png`` (``FIGSIZE_IN`` at ``DPI``) to ``out``, a path or a binary file.
    ``histories`` maps a trial id to its reported epochs (dicts holding ``metric``, and
    ``global_epoch`` or ``training_iteration``; else the position counts from 1)."""
    figure = sweep_figure(records, histories, metric, mode, learning_rate_path, colour_path)
    figure.savefig(out, format="png", dpi=DPI)


def sweep_figure(
    records: Sequence[TrialRecord],
    histories: Mapping[str, Sequence[Mapping[str, Any]]],
    metric: str,
    mode: str,
    learning_rate_path: str | None,
    colour_path: str | None,
) -> Figure:
    """The figure ``sweep_png`` saves: the left axes hold one scatter point per trial with a
    value, the right axes one line per trial with a history (see the module doc)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure
    from matplotlib.ticker import MaxNLocator

    figure = Figure(figsize=FIGSIZE_IN)
    FigureCanvasAgg(figure)
    left, right = figure.subplots(1, 2)
    ordered = sorted(records, key=lambda r: r.trial_id)
    groups = sorted({_group(r, colour_path) for r in ordered})
    colours = {g: f"C{i % 10}" for i, g in enumerate(groups)}
    best = best_trial(ordered, metric, mode)

    for group in groups:
        members = [(i, r) for i, r in enumerate(ordered, 1) if _group(r, colour_path) == group]
        points = [(_x(i, r, learning_rate_path), r.best_value) for i, r in members if r.has_value()]
        if points:
            left.scatter(*zip(*points, strict=True), color=colours[group], label=group, s=40)
    if best is not None:
        index = ordered.index(best) + 1
        left.scatter(
            [_x(index, best, learning_rate_path)], [best.best_value], s=200,
            facecolors="none", edgecolors="black", label="best",
        )  # fmt: skip
    if learning_rate_path is not None:
        left.set_xscale("log")
        left.set_xlabel(learning_rate_path)
    else:
        left.set_xlabel("trial (by id)")
    left.set_ylabel(f"best {metric}")
    left.set_title(f"best {metric} per trial ({mode})")
    if colour_path is not None or best is not None:
        left.legend(title=colour_path, fontsize="small")

    for r in ordered:
        rows = histories.get(r.trial_id) or []
        xs, ys = [], []
        for i, row in enumerate(rows, 1):
            if row.get(metric) is not None:
                xs.append(row.get("global_epoch", row.get("training_iteration", i)))
                ys.append(row[metric])
        if not xs:
            continue
        right.plot(
            xs, ys, color=colours[_group(r, colour_path)],
            linestyle="--" if r.stopped_early else "-",
            marker="x" if r.stopped_early else "", markevery=[len(xs) - 1], alpha=0.8,
        )  # fmt: skip
    right.xaxis.set_major_locator(MaxNLocator(integer=True))
    right.set_xlabel("epoch")
    right.set_ylabel(metric)
    right.set_title("learning curves (dashed: stopped early)")
    figure.tight_layout()
    return figure


def _group(record: TrialRecord, colour_path: str | None) -> str:
    if colour_path is None:
        return "trials"
    return str(record.sampled.get(colour_path, "-"))


def _x(index: int, record: TrialRecord, learning_rate_path: str | None) -> float:
    if learning_rate_path is None:
        return float(index)
    return float(record.sampled[learning_rate_path])
