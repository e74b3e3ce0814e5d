"""``tljob evaluate``: an exported model scored on a labelled source, on the workers, and the
evaluation folder written from it (``tljob.evaluate`` computes and draws, here it is run).

The source is listed and checked on the driver (labels from class folders or a manifest's
``label`` column; a label the model does not know is exit 2, naming it), then one inference
pass (``tljob.infer.pipeline``: decoding tasks and the model's actor pool) scores every
image. With ``corruptions`` the same pass also scores each image under every corruption and
severity of ``tljob.evaluate.corruptions``, made in the decoding tasks at the model's input
size, seeded by the image's uri. Unreadable images are not scored: they are counted
(``metrics.json["unreadable"]``) and listed with their reason in ``unreadable.csv``.

Written to ``out``: metrics.json, per_class.csv, mistakes.csv, confusion_matrix.png,
reliability.png, report.md; learning_curves.png when the model's run has a history.csv;
robustness.csv and robustness.png with ``corruptions``.
"""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import pyarrow as pa
import ray.data

from tljob import output, storage
from tljob.evaluate import corruptions as corruption_registry
from tljob.evaluate import metrics as scores
from tljob.evaluate import plots, report
from tljob.infer.inputs import InputError, InputListing, list_inputs
from tljob.infer.model_file import ModelFile, resolve_model
from tljob.infer.pipeline import InferenceError, decode_rows, plan_workers, score_dataset
from tljob.infer.results import Scored

log = output.logger("evaluate")
say = log.info

UNREADABLE_CSV = "unreadable.csv"


@dataclass(frozen=True)
class EvaluateRequest:
    """What ``tljob evaluate`` was asked: ``model`` and ``source`` as the flags take them,
    ``out`` the folder (None: ``<run>/evaluation`` beside the model's run)."""

    model: str
    source: str
    out: str | None = None
    batch_size: int | None = None
    actors: int | None = None
    use_gpu: bool | None = None
    corruptions: bool = False
    verbose: bool = False


@dataclass
class Evaluation:
    out: str
    metrics: dict[str, Any]
    robustness: list[corruption_registry.RobustnessRow] | None


def default_out(model: ModelFile) -> storage.Location:
    """``<run>/evaluation``: the run of ``model/model.keras``, else the model's folder."""
    model_loc = storage.resolve(model.uri)
    folder = model_loc.parent
    run = folder.parent if folder.path.rstrip("/").endswith("/model") else folder
    return run.join("evaluation")


def labelled_listing(source: str, model: ModelFile) -> InputListing:
    """``source`` listed, every input labelled with one of ``model``'s classes; else
    ``InputError`` / ``InferenceError`` (exit 2) naming what is missing."""
    listing = list_inputs(source)
    unlabelled = [u for u, label in zip(listing.uris, listing.labels, strict=True) if not label]
    if unlabelled:
        raise InputError(
            f"--source {source!r}: {len(unlabelled)} of {len(listing)} images have no label "
            f"(e.g. {unlabelled[0]}); evaluate needs labelled images: class folders "
            "(<source>/<class>/<image>) or a manifest with columns uri,label"
        )
    unknown = listing.unknown_labels(model.classes)
    if unknown:
        raise InferenceError(
            f"--source {source!r}: the label(s) {', '.join(map(repr, unknown))} are not classes "
            f"of the model {model.uri} ({', '.join(map(repr, model.classes))}); evaluate on "
            "images of the model's classes"
        )
    return listing


def evaluate_driver_fn(request: EvaluateRequest) -> Evaluation:
    """Score ``request.source`` with ``request.model`` on the workers and write the
    evaluation folder (see the module docstring). The driver never imports TensorFlow."""
    from tljob.run.connect import ensure_ray

    model = resolve_model(request.model)
    listing = labelled_listing(request.source, model)
    out = storage.resolve(request.out) if request.out else default_out(model)
    cells = _cells(request.corruptions)
    ensure_ray(request.verbose)
    workers = plan_workers(
        len(listing) * len(cells), model.image_size, request.batch_size, request.actors,
        request.use_gpu,
    )  # fmt: skip
    say(
        f"evaluate: scoring {len(listing)} images"
        + (f" clean and under {len(cells) - 1} corruptions" if len(cells) > 1 else "")
        + f" with {workers.describe()}"
    )
    ds = _decoded(listing, model, workers.rows_per_task(len(listing)), cells)
    by_cell = _collect(score_dataset(ds, model, workers), cells, request.verbose)
    clean = by_cell[cells[0]]
    scored = clean.scored
    classes = list(model.classes)
    if not scored.any():
        raise InputError(f"--source {request.source!r}: no image could be read; see the reasons "
                         f"({clean.unreadable_reasons()})")  # fmt: skip
    result = scores.score(clean.truth[scored], clean.probs[scored], classes)
    result["unreadable"] = int((~scored).sum())
    robustness = _robustness(by_cell) if request.corruptions else None
    history = _history(model)
    _write(out, request, model, clean, result, robustness, history)
    say(
        f"evaluate: accuracy {result['accuracy']:.4f}, macro-F1 {result['macro_f1']:.4f}, "
        f"NLL {result['nll']:.4f}, ECE {result['ece']:.4f} on {result['images']} images"
        + (
            f" ({result['unreadable']} unreadable, in {UNREADABLE_CSV})"
            if result["unreadable"]
            else ""
        )  # fmt: skip
    )
    if robustness is not None:
        say(f"evaluate: mean accuracy under corruption {robustness[-1].accuracy:.4f}")
    say(f"evaluate: report {out.join(report.REPORT_MD).uri}")
    return Evaluation(out.uri, result, robustness)


Cell = tuple[str, int]  # (corruption, severity); ("clean", 0) for the images as they are


def _cells(corruptions: bool) -> list[Cell]:
    cells: list[Cell] = [(corruption_registry.CLEAN, 0)]
    if corruptions:
        cells += [
            (c.name, s)
            for c in corruption_registry.select()
            for s in corruption_registry.SEVERITIES
        ]
    return cells


def _decoded(
    listing: InputListing, model: ModelFile, rows_per_task: int, cells: list[Cell]
) -> ray.data.Dataset:
    """The listing decoded at the model's size in Ray Data tasks, each image once per cell
    (its corrupted copies made in the same task): ``cell`` is the cell's index."""
    table = pa.table(
        {
            "uri": pa.array(listing.uris, type=pa.string()),
            "label": pa.array(listing.label_indices(model.classes), type=pa.int64()),
        }
    )
    blocks = [table.slice(i, rows_per_task) for i in range(0, len(table), rows_per_task)]
    return ray.data.from_arrow(blocks).map_batches(
        _decode_and_corrupt,
        fn_kwargs={"image_size": model.image_size, "cells": cells},
        batch_size=None,
        batch_format="numpy",
        udf_modifying_row_count=len(cells) > 1,
    )


def _decode_and_corrupt(
    batch: dict[str, np.ndarray], image_size: int, cells: list[Cell]
) -> dict[str, np.ndarray]:
    decoded = decode_rows(batch, image_size)
    if len(cells) == 1:
        return {**decoded, "cell": np.zeros(len(decoded["uri"]), np.int64)}
    parts: list[dict[str, np.ndarray]] = []
    for index, (name, severity) in enumerate(cells):
        images = decoded["image"].copy()
        if severity:
            for i, uri in enumerate(decoded["uri"]):
                if not decoded["error"][i]:
                    images[i] = corruption_registry.corrupt(name, images[i], severity, str(uri))
        parts.append({**decoded, "image": images, "cell": np.full(len(images), index, np.int64)})
    return {key: np.concatenate([p[key] for p in parts]) for key in parts[0]}


def _collect(ds: ray.data.Dataset, cells: list[Cell], verbose: bool) -> dict[Cell, Scored]:
    """Every scored row on the driver, one ``Scored`` per cell, sorted by uri."""
    keys = ("uri", "label", "probabilities", "error", "cell")
    found: dict[str, list[np.ndarray]] = {k: [] for k in keys}
    with output.ray_actor_notices_hidden(verbose):
        for batch in ds.iter_batches(batch_size=None, batch_format="numpy"):
            for key in keys:
                found[key].append(np.asarray(batch[key]))
    joined = {k: np.concatenate(v) for k, v in found.items()}
    by_cell = {}
    for index, cell in enumerate(cells):
        mine = joined["cell"] == index
        by_cell[cell] = Scored(
            uris=joined["uri"][mine].astype(object),
            truth=joined["label"][mine].astype(np.int64),
            probs=np.stack(list(joined["probabilities"][mine])).astype(np.float32),
            errors=joined["error"][mine].astype(object),
        ).sorted_by_uri()
    return by_cell


def _robustness(by_cell: dict[Cell, Scored]) -> list[corruption_registry.RobustnessRow]:
    counts = {cell: _correct_of(scored) for cell, scored in by_cell.items()}
    clean = counts.pop((corruption_registry.CLEAN, 0))
    return corruption_registry.robustness_rows(clean, counts)


def _correct_of(scored: Scored) -> tuple[int, int]:
    summary = scored.summary()
    return summary["correct"], summary["images"]


def _history(model: ModelFile) -> list[Any] | None:
    from tljob.tune.trial import read_history

    run = storage.resolve(model.labels_uri).parent  # labels.json lives in the run
    return read_history(run) or None  # none when the run has no history.csv


def _png(draw: Callable[[io.BytesIO], None]) -> bytes:
    buffer = io.BytesIO()
    draw(buffer)
    return buffer.getvalue()


def _write(
    out: storage.Location,
    request: EvaluateRequest,
    model: ModelFile,
    clean: Scored,
    result: dict[str, Any],
    robustness: list[corruption_registry.RobustnessRow] | None,
    history: list[Any] | None,
) -> None:
    scored = clean.scored
    classes = list(model.classes)
    wrong = scores.mistakes(
        list(clean.uris[scored]), clean.truth[scored], clean.probs[scored], classes
    )
    files: dict[str, bytes] = {
        report.METRICS_JSON: scores.metrics_json(result).encode(),
        report.PER_CLASS_CSV: scores.per_class_csv(result).encode(),
        report.MISTAKES_CSV: scores.mistakes_csv(wrong).encode(),
        report.CONFUSION_PNG: _png(lambda f: plots.confusion_png(result, f)),
        report.RELIABILITY_PNG: _png(lambda f: plots.reliability_png(result, f)),
        UNREADABLE_CSV: _unreadable_csv(clean).encode(),
    }
    if history:
        files[report.LEARNING_CURVES_PNG] = _png(lambda f: plots.learning_curves_png(history, f))
    if robustness is not None:
        files[report.ROBUSTNESS_CSV] = corruption_registry.robustness_csv(robustness).encode()
        files[report.ROBUSTNESS_PNG] = _png(lambda f: plots.robustness_png(robustness, f))
    files[report.REPORT_MD] = report.report_markdown(
        result,
        model=storage.redact(model.uri),
        source=storage.redact(request.source),
        mistakes=wrong,
        robustness=robustness,
        history=history,
    ).encode()
    for name, data in files.items():  # the report last: it links the others
        storage.write_bytes(out.join(name), data)
    storage.write_text(
        out.join("evaluation.json"),
        json.dumps({"model": model.identity(), "source": storage.redact(request.source),
                    "corruptions": request.corruptions}, indent=1),
    )  # fmt: skip


def _unreadable_csv(scored: Scored) -> str:
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(["uri", "reason"])
    for uri, error in zip(scored.uris, scored.errors, strict=True):
        if error:
            writer.writerow([uri, error])
    return buffer.getvalue()
