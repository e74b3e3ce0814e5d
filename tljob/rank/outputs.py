"""What ``tljob backbones rank`` writes into its folder, and prints. Pure (no Ray, no
TensorFlow; matplotlib only when drawing).

    rank.csv / rank.json   one row per candidate, best probe first, skipped ones last
    rank.png               probe validation accuracy against ms per image (log x), labelled
    sweep.yaml             the job with `search: {model.backbone: {grid: top K}}` and a
                           `tune` section: a sweep file for `tljob tune`
"""

from __future__ import annotations

import csv
import io
import json
import math
from dataclasses import asdict
from typing import Any

import yaml

from tljob import storage
from tljob.config import JobConfig
from tljob.config.load import dump_config
from tljob.rank.driver import Ranked

COLUMNS = (
    "rank",
    "candidate",
    "backbone",
    "weights",
    "image_size",
    "val_accuracy",
    "val_macro_f1",
    "images_per_s",
    "ms_per_image",
    "parameters",
    "skipped",
)
FIGSIZE_IN = (8.0, 5.5)
DPI = 100  # rank.png is 800 x 550 pixels


def ordered(rows: list[Ranked]) -> list[Ranked]:
    """Best first: probe validation accuracy, then macro-F1, then the faster; the skipped
    last, in their given order."""
    scored = [r for r in rows if not r.skipped]
    scored.sort(key=lambda r: (-r.val_accuracy, -r.val_macro_f1, r.ms_per_image))
    return scored + [r for r in rows if r.skipped]


def _plain(value: Any) -> Any:
    if isinstance(value, float):
        return None if math.isnan(value) else round(value, 6)
    return value


def records(rows: list[Ranked]) -> list[dict[str, Any]]:
    """``rank.json``'s rows, in ``ordered`` order (``rank`` from 1; None when skipped)."""
    out = []
    for i, row in enumerate(ordered(rows), 1):
        record = {k: _plain(v) for k, v in asdict(row).items()}
        record["rank"] = None if row.skipped else i
        out.append(record)
    return out


def rank_csv(rows: list[Ranked]) -> str:
    sink = io.StringIO()
    writer = csv.writer(sink, lineterminator="\n")
    writer.writerow(COLUMNS)
    for record in records(rows):
        writer.writerow(["" if record[c] is None else record[c] for c in COLUMNS])
    return sink.getvalue()


def top_backbones(rows: list[Ranked], k: int) -> list[str]:
    """The backbones of the ``k`` best scored candidates (each backbone once)."""
    names: list[str] = []
    for row in ordered(rows):
        if not row.skipped and row.backbone not in names and len(names) < k:
            names.append(row.backbone)
    return names


def sweep_tree(job: JobConfig, backbones: list[str]) -> dict[str, Any]:
    """``sweep.yaml``: the resolved job (its image size written out, so every trial trains
    at the size it was ranked at) with a grid over ``backbones`` and a grid-searcher
    ``tune`` section named after the run."""
    tree = yaml.safe_load(dump_config(job))
    tree["data"]["image_size"] = job.image_size
    tree["search"] = {"model.backbone": {"grid": list(backbones)}}
    tree["tune"] = {"name": f"{job.run.name}-backbones", "searcher": "grid", "scheduler": "asha"}
    return tree


def rank_png(rows: list[Ranked], title: str, out: Any) -> None:
    """Probe validation accuracy against ms per image (log x), each point labelled; to the
    path or binary file ``out``."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    figure = Figure(figsize=FIGSIZE_IN)
    FigureCanvasAgg(figure)
    axes = figure.subplots()
    scored = [r for r in rows if not r.skipped and r.ms_per_image > 0]
    for i, row in enumerate(ordered(scored)):
        axes.scatter([row.ms_per_image], [row.val_accuracy], color=f"C{i % 10}", zorder=3)
        axes.annotate(
            row.candidate,
            (row.ms_per_image, row.val_accuracy),
            textcoords="offset points",
            xytext=(5, 4),
            fontsize=8,
        )
    axes.set_xscale("log")
    axes.set_xlabel("forward pass, ms per image per actor (log)")
    axes.set_ylabel("linear probe: validation accuracy")
    axes.set_title(title)
    axes.grid(True, which="both", alpha=0.3)
    figure.tight_layout()
    figure.savefig(out, format="png", dpi=DPI)


def write_outputs(
    out: storage.Location,
    rows: list[Ranked],
    job: JobConfig,
    top: int,
    context: dict[str, Any],
) -> dict[str, str]:
    """Write every file into ``out``; their URIs by name."""
    written = {}
    storage.write_text(out.join("rank.csv"), rank_csv(rows))
    storage.write_text(
        out.join("rank.json"),
        json.dumps({**context, "candidates": records(rows)}, indent=1),
    )
    png = io.BytesIO()
    rank_png(rows, f"backbones ranked on {job.run.name!r}", png)
    storage.write_bytes(out.join("rank.png"), png.getvalue())
    for name in ("rank.csv", "rank.json", "rank.png"):
        written[name] = out.join(name).uri
    backbones = top_backbones(rows, top)
    if backbones:
        text = yaml.safe_dump(sweep_tree(job, backbones), sort_keys=False)
        storage.write_text(out.join("sweep.yaml"), text)
        written["sweep.yaml"] = out.join("sweep.yaml").uri
    return written


def format_table(rows: list[Ranked], written: dict[str, str]) -> str:
    """The table printed at the end: one line per candidate, best first, then the files."""
    head = (
        f"{'#':>2}  {'candidate':<24} {'weights':<9} {'px':>4} {'val_acc':>7} {'macro_f1':>8} "
        f"{'img/s':>7} {'ms/img':>7} {'params':>7}"
    )
    lines = ["tljob backbones rank", head]
    for record, row in zip(records(rows), ordered(rows), strict=True):
        weights = row.weights if len(row.weights) <= 9 else "file"
        if row.skipped:
            reason = row.skipped if len(row.skipped) <= 90 else row.skipped[:87] + "..."
            lines.append(f"{'-':>2}  {row.candidate:<24} {weights:<9} skipped: {reason}")
            continue
        lines.append(
            f"{record['rank']:>2}  {row.candidate:<24} {weights:<9} {row.image_size:>4} "
            f"{row.val_accuracy:>7.4f} {row.val_macro_f1:>8.4f} {row.images_per_s:>7.0f} "
            f"{row.ms_per_image:>7.2f} {row.parameters / 1e6:>6.1f}M"
            + (f"  ({'; '.join(row.notes)})" if row.notes else "")
        )
    if any(row.skipped for row in rows):
        lines.append("(rank.csv and rank.json give each skipped candidate's whole reason)")
    lines += [f"{name}: {uri}" for name, uri in written.items()]
    return "\n".join(lines)
