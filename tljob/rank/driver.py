"""``tljob backbones rank`` on Ray (``rank_driver_fn``): prepare (or find) the job's data as
training does, choose the subsample, then per candidate resolve its weights, find or
compute its features (``tljob.rank.extract``), probe them (``tljob.rank.probe``); write the
outputs (``tljob.rank.outputs``). TensorFlow is imported only in the actors (and, once, on
this process where torchvision weights must first be converted, as a run's driver does).
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from tljob import output, storage
from tljob.config import JobConfig
from tljob.data.features import SPLITS, FeatureKey
from tljob.errors import UserError
from tljob.rank import extract
from tljob.rank.choose import Candidate, stratified_subsample, validation_rows
from tljob.rank.probe import probe
from tljob.zoo import WeightsSource, get_backbone
from tljob.zoo.weights_record import tensors_sha256

log = output.logger("rank")


@dataclass
class Ranked:
    """One candidate's row of the table (``skipped``: why it was not scored, else "")."""

    candidate: str
    backbone: str
    weights: str
    image_size: int
    parameters: int
    val_accuracy: float = float("nan")
    val_macro_f1: float = float("nan")
    train_accuracy: float = float("nan")
    images_per_s: float = float("nan")
    ms_per_image: float = float("nan")
    features: str = ""  # "computed" or "found", and where
    skipped: str = ""
    notes: list[str] = field(default_factory=list)


def candidate_weights(job: JobConfig, candidate: Candidate) -> WeightsSource:
    """The weights a candidate starts from: its own choice, else the job's; a weights file
    is for the job's backbone, so other candidates take 'imagenet'."""
    if candidate.weights:
        return WeightsSource(candidate.weights)
    weights = job.model.weights
    if weights.kind == "file" and candidate.backbone != job.model.backbone:
        return WeightsSource("imagenet")
    return weights


def candidate_job(job: JobConfig, candidate: Candidate, size: int) -> JobConfig:
    model = job.model.model_copy(
        update={"backbone": candidate.backbone, "weights": candidate_weights(job, candidate)}
    )
    data = job.data.model_copy(update={"image_size": size})
    return job.model_copy(update={"model": model, "data": data})


def choose_rows(prepared_uri: str, n: int, seed: int) -> extract.Subsample:
    """The stratified subsample: ``n`` training rows, ``validation_rows(n)`` validation rows."""
    from tljob.infer.inputs import PreparedSplit

    units, uris, labels = {}, {}, {}
    for split, rows in (("train", n), ("val", validation_rows(n))):
        prepared = PreparedSplit.from_prepared(prepared_uri, split)
        stored = {"stored_size": prepared.stored_size, "pixels": prepared.pixels}
        all_units, all_uris, all_labels = extract.split_rows(prepared)
        chosen = stratified_subsample(all_labels, rows, seed)
        starts = np.cumsum([0] + [u["rows"] for u in all_units])
        picked = []
        for i, unit in enumerate(all_units):
            keep = chosen[(chosen >= starts[i]) & (chosen < starts[i + 1])] - starts[i]
            if len(keep):
                picked.append({**unit, **stored, "keep": [int(k) for k in keep]})
        units[split], uris[split], labels[split] = picked, all_uris[chosen], all_labels[chosen]
    return extract.Subsample(units, uris, labels, storage.resolve(prepared_uri).uri)


def _resolve(job: JobConfig) -> str | None:
    from tljob.run.job import resolve_weights

    return resolve_weights(job)


def rank_driver_fn(
    job: JobConfig,
    candidates: list[Candidate],
    subsample: int,
    out: storage.Location,
    verbose: bool = False,
) -> tuple[list[Ranked], dict[str, Any]]:
    """Score every candidate (see the module docstring); the rows in candidate order and
    what was ranked on (classes, rows per split, prepared data)."""
    from tljob import preflight
    from tljob.data.pipeline import prepare_data
    from tljob.data.plan import plan_data
    from tljob.data.sources import list_source
    from tljob.infer.pipeline import plan_workers
    from tljob.run.connect import ensure_ray
    from tljob.run.shipped import ship

    storage.configure(storage.S3Settings.from_config(job.s3))
    preflight.check_storage(job)
    listing = list_source(job.data)
    ensure_ray(verbose)
    with output.native_logs_hidden(verbose):
        prepared = prepare_data(job, plan_data(job, listing, batches=False))
    rows = choose_rows(prepared.prepared_uri, subsample, job.data.seed)
    classes = len(prepared.classes)
    counts = {s: len(rows.labels[s]) for s in SPLITS}
    log.info(
        f"ranking {len(candidates)} backbone(s) by a linear probe on {counts['train']} "
        f"training and {counts['val']} validation images (stratified, seed {job.data.seed}) "
        f"of {classes} classes"
    )
    images = None
    results = []
    for index, candidate in enumerate(candidates, 1):
        spec = get_backbone(candidate.backbone)
        size = max(job.image_size, spec.min_image_size)
        cjob = candidate_job(job, candidate, size)
        weights = cjob.model.weights
        row = Ranked(candidate.label, spec.name, str(weights), size, spec.parameters)
        if weights.kind == "none":
            row.notes.append(f"random weights (seed {job.data.seed})")
        if size > job.image_size:
            row.notes.append(f"at its minimum size {size} px, not the job's {job.image_size}")
        head = f"[{index}/{len(candidates)}] {candidate.label}"
        try:
            with output.native_logs_hidden(verbose):
                local = _resolve(cjob)
        except UserError as e:
            row.skipped = str(e)
            log.info(f"{head}: skipped: {e}")
            results.append(row)
            continue
        sha = tensors_sha256(local) if local else f"random:seed={job.data.seed}"
        key = FeatureKey(
            prepared_fingerprint=prepared.prepared_uri.rstrip("/").rsplit("/", 1)[-1],
            backbone=spec.name,
            weights_sha256=sha,
            image_size=size,
            preprocessing=spec.preprocessing,
            precision="float32",
            subsample=rows.digest(),
        )
        found = extract.load(prepared.prepared_uri, key)
        if found is None:
            if images is None:
                images = extract.images_dataset(rows, job.image_size)
            workers = plan_workers(sum(counts.values()), size)
            log.info(
                f"{head}: computing the features of {sum(counts.values())} images at {size} px "
                f"({workers.describe()})"
            )
            shipped = ship(out, local, log.debug)
            began = time.monotonic()
            arrays, timing = extract.compute(
                images,
                rows,
                {
                    "backbone": spec.name,
                    "image_size": size,
                    "weights": weights.kind if weights.kind != "file" else str(weights),
                    "weights_uri": shipped.uri if shipped else "",
                    "weights_sha256": shipped.sha256 if shipped else "",
                    "seed": job.data.seed,
                },
                workers,
                verbose,
            )
            folder = extract.store(prepared.prepared_uri, key, arrays, timing)
            row.features = f"computed in {time.monotonic() - began:.1f}s, {folder}"
        else:
            arrays, timing = found.arrays, found.timing
            row.features = f"found, {found.folder}"
        score = probe(*arrays["train"], *arrays["val"], classes)
        row.val_accuracy, row.val_macro_f1 = score.val_accuracy, score.val_macro_f1
        row.train_accuracy = score.train_accuracy
        row.images_per_s, row.ms_per_image = timing.images_per_second, timing.ms_per_image
        log.info(
            f"{head}: probe val_accuracy {score.val_accuracy:.4f}, macro-F1 "
            f"{score.val_macro_f1:.4f}; {timing.images_per_second:.0f} images/s per actor "
            f"({row.features.split(',')[0]})"
        )
        results.append(row)
    context = {
        "classes": list(prepared.classes),
        "rows": counts,
        "seed": job.data.seed,
        "prepared": prepared.prepared_uri,
    }
    return results, context
