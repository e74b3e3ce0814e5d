"""``tljob predict``: every input of a source scored on the workers, written in resumable
parts, with a summary and, on request, a pseudo-label manifest. Ray, never TensorFlow.

The parts still missing from ``--out`` (``parts.claim``) are scored in one Ray Data pass
(``pipeline``: decoding tasks, the model's actor pool) whose rows reach the driver in input
order, each tagged with its part; a part is written as soon as all its rows are in. So a
run that is killed keeps every part it finished, and its rerun scores only the rest. At the
end every part is read back (uri, top-1, error): each input must be there exactly once,
and the counts (``inputs = predicted + unreadable``) and the manifest come from them.

``TLJOB_PREDICT_KILL_AFTER_PARTS=N`` (tests only): the driver kills itself with SIGKILL
right after writing its N-th part, as a lost pod or ``kill -9`` would.
"""

from __future__ import annotations

import json
import os
import signal
import sys
import time
from collections import Counter
from dataclasses import dataclass
from typing import Any

import numpy as np
import pyarrow as pa

from tljob import output, storage
from tljob.errors import UserError
from tljob.infer import parts
from tljob.infer.inputs import InputListing, list_inputs
from tljob.infer.model_file import ModelFile, resolve_model
from tljob.infer.pipeline import listing_dataset, plan_workers, score_dataset
from tljob.progress import format_eta

log = output.logger("infer")
say = log.info

DEFAULT_TOP_K = 5
DEFAULT_PART_SIZE = 10_000
KILL_AFTER_PARTS_ENV = "TLJOB_PREDICT_KILL_AFTER_PARTS"


@dataclass(frozen=True)
class PredictRequest:
    """What ``tljob predict`` was asked (the flags, checked)."""

    model: str
    source: str
    out: str
    format: str = "parquet"
    top_k: int | None = None  # None: min(DEFAULT_TOP_K, classes)
    batch_size: int | None = None
    actors: int | None = None
    part_size: int = DEFAULT_PART_SIZE
    min_confidence: float | None = None
    as_manifest: str | None = None
    verbose: bool = False
    progress_seconds: float = 10.0


def run_predict(request: PredictRequest) -> dict[str, Any]:
    """Score every input of ``request.source`` into ``request.out`` (see the module
    docstring); returns the summary written to ``_SUCCESS.json``. ``UserError`` (exit 2)
    for a model, source or output that cannot be used, before Ray starts."""
    started = time.monotonic()
    model = resolve_model(request.model)
    k = request.top_k or min(DEFAULT_TOP_K, model.num_classes)
    if not 1 <= k <= model.num_classes:
        raise UserError(f"--top-k {k}: the model has {model.num_classes} classes")
    listing = list_inputs(request.source)
    out = _resolve("--out", request.out)
    if request.as_manifest:
        _resolve("--as-manifest", request.as_manifest)  # a bad URI is exit 2 before any work
    plan = parts.PartPlan(
        inputs=len(listing),
        inputs_sha256=listing.fingerprint(),
        part_size=request.part_size,
        top_k=k,
        format=request.format,
        model=model.identity(),
        source=request.source,
    )
    done = parts.claim(out, plan)
    for leftover in parts.leftover_temporaries(out):
        storage.delete_file(leftover)  # a part a killed run was writing: never complete
    todo = [i for i in range(plan.parts) if i not in set(done)]
    skipped = f"; {len(listing.skipped)} other entries skipped" if listing.skipped else ""
    say(
        f"predict: {len(listing)} images in {request.source}{skipped}, "
        f"{plan.parts} part(s) of up to {plan.part_size} in {out.uri}"
        + (f"; {len(done)} already complete" if done else "")
    )
    written = _score_parts(request, model, listing, plan, out, todo) if todo else 0
    rows = pa.concat_tables(
        [parts.read_part(out.join(plan.name(i)), plan.format) for i in range(plan.parts)]
    )
    parts.check_rows(rows, listing.uris, out.uri)
    seconds = time.monotonic() - started
    summary: dict[str, Any] = {
        "model": model.uri,
        "source": request.source,
        "out": out.uri,
        "format": plan.format,
        "top_k": k,
        **parts.counts(rows),
        "skipped_at_listing": len(listing.skipped),
        "skipped_reasons": listing.skipped_reasons(),
        "duplicate_rows": listing.duplicate_rows,
        "parts": plan.parts,
        "parts_written": written,
        "parts_reused": plan.parts - written,
        "seconds": round(seconds, 1),
    }
    if request.as_manifest:
        summary["pseudo_labels"] = _write_manifest(request, rows)
    storage.write_text(out.join(parts.SUCCESS_FILE), json.dumps(summary, indent=1))
    reasons = ", ".join(f"{kind} {n}" for kind, n in summary["unreadable_reasons"].items())
    say(
        f"predict: {summary['inputs']} inputs = {summary['predicted']} predicted + "
        f"{summary['unreadable']} unreadable"
        + (f" ({reasons})" if reasons else "")
        + f"; {out.join(parts.SUCCESS_FILE).uri}"
    )
    return summary


def _resolve(flag: str, uri: str) -> storage.Location:
    try:
        return storage.resolve(uri)
    except storage.StorageError as e:
        raise UserError(f"{flag} {uri!r}: {e}") from None


def _write_manifest(request: PredictRequest, rows: pa.Table) -> dict[str, Any]:
    assert request.min_confidence is not None and request.as_manifest
    chosen = parts.pseudo_labels(rows, request.min_confidence)
    target = _resolve("--as-manifest", request.as_manifest)
    storage.write_text(target, parts.manifest_csv(chosen))
    per_class = dict(sorted(Counter(label for _, label in chosen).items()))
    say(
        f"predict: {len(chosen)} of {rows.num_rows} inputs have a top-1 probability >= "
        f"{request.min_confidence:g}: manifest {target.uri} ({len(per_class)} classes)"
    )
    if len(per_class) < 2:
        say("predict: WARNING: a manifest needs two classes or more to train on (data.source)")
    return {
        "manifest": target.uri,
        "min_confidence": request.min_confidence,
        "rows": len(chosen),
        "per_class": per_class,
    }


def _score_parts(
    request: PredictRequest,
    model: ModelFile,
    listing: InputListing,
    plan: parts.PartPlan,
    out: storage.Location,
    todo: list[int],
) -> int:
    """Score the inputs of the parts ``todo`` and write each part when its rows are in;
    returns how many parts were written."""
    from tljob.run.connect import ensure_ray

    index = np.concatenate([np.arange(*plan.bounds(i)) for i in todo])
    part_of = np.concatenate([np.full(plan.rows_of(i), i, np.int32) for i in todo])
    subset = InputListing(
        listing.source, [listing.uris[i] for i in index], [listing.labels[i] for i in index]
    )
    ensure_ray(request.verbose)
    workers = plan_workers(
        len(subset), model.image_size, request.batch_size, request.actors, use_gpu=None
    )
    say(f"predict: scoring {len(subset)} images with {workers.describe()}")
    per_task = workers.rows_per_task(len(subset))
    decoded = listing_dataset(subset, model.image_size, per_task, extra={"part": part_of})
    scored = score_dataset(decoded, model, workers, top=plan.top_k)
    # Rows in input order: parts complete one after another, and only a few are in memory.
    scored.context.execution_options.preserve_order = True
    writer = _PartWriter(out, plan, model.classes)
    progress = _Progress(len(subset), len(todo), request.progress_seconds)
    kill_after = int(os.environ.get(KILL_AFTER_PARTS_ENV, "0") or 0)
    with output.ray_actor_notices_hidden(request.verbose):
        for batch in scored.iter_batches(batch_size=None, batch_format="numpy"):
            finished = writer.add(batch)
            progress.update(len(batch["uri"]), writer.written)
            if finished and kill_after and writer.written >= kill_after:
                sys.stdout.flush()
                os.kill(os.getpid(), signal.SIGKILL)
    progress.close(writer.written)
    if writer.pending:
        raise RuntimeError(f"parts {sorted(writer.pending)} did not receive all their rows")
    return writer.written


class _PartWriter:
    """Collects scored rows by part; writes a part as soon as all its rows are in."""

    def __init__(self, out: storage.Location, plan: parts.PartPlan, classes: tuple[str, ...]):
        self.out, self.plan, self.classes = out, plan, classes
        self.pending: dict[int, list[dict[str, np.ndarray]]] = {}
        self.received: Counter[int] = Counter()
        self.written = 0

    def add(self, batch: dict[str, np.ndarray]) -> list[int]:
        finished = []
        for part in np.unique(batch["part"]):
            mask = batch["part"] == part
            self.pending.setdefault(int(part), []).append(
                {key: np.asarray(batch[key])[mask] for key in _COLUMNS}
            )
            self.received[int(part)] += int(mask.sum())
            if self.received[int(part)] == self.plan.rows_of(int(part)):
                self._write(int(part))
                finished.append(int(part))
        return finished

    def _write(self, part: int) -> None:
        chunks = self.pending.pop(part)
        joined = {key: np.concatenate([c[key] for c in chunks]) for key in _COLUMNS}
        table = parts.part_table(
            joined["uri"].astype(object),
            joined["top_index"],
            joined["top_probability"],
            joined["error"].astype(object),
            self.classes,
        )
        parts.write_part(self.out.join(self.plan.name(part)), table, self.plan.format)
        self.written += 1


_COLUMNS = ("uri", "top_index", "top_probability", "error")


class _Progress:
    """Progress for people: a bar on a terminal, else a line every ``every`` seconds."""

    def __init__(self, total: int, parts_total: int, every: float) -> None:
        self.total, self.parts_total, self.every = total, parts_total, every
        self.done = self.said = 0
        self.started = self.last = time.monotonic()
        self.bar = None
        if sys.stdout.isatty():
            from rich.progress import BarColumn, Progress, TextColumn, TimeRemainingColumn

            self.bar = Progress(
                TextColumn("[tljob] predict"),
                BarColumn(),
                TextColumn("{task.completed}/{task.total} images"),
                TimeRemainingColumn(),
                transient=True,
            )
            self.bar.start()
            self.task = self.bar.add_task("predict", total=total)

    def update(self, rows: int, parts_written: int) -> None:
        self.done += rows
        if self.bar is not None:
            self.bar.update(self.task, completed=self.done)
            return
        now = time.monotonic()
        if now - self.last >= self.every:
            self.last = now
            self.said = self.done
            say(self.line(parts_written))

    def line(self, parts_written: int) -> str:
        elapsed = time.monotonic() - self.started
        rate = self.done / max(elapsed, 1e-9)
        eta = (self.total - self.done) / rate if rate > 0 else None
        return (
            f"predict: {self.done}/{self.total} images ({rate:.0f} images/s since the start, ETA "
            f"{format_eta(eta)}), {parts_written}/{self.parts_total} parts written"
        )

    def close(self, parts_written: int) -> None:
        if self.bar is not None:
            self.bar.stop()
        if self.said != self.done or self.bar is not None:
            say(self.line(parts_written))
