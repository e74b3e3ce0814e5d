"""The inference path: Ray Data tasks decode, an actor pool runs the exported model.
Ray, never TensorFlow in the calling process: only ``Predictor`` imports it, in its actors.

``infer(model, inputs)`` returns a lazy ``ray.data.Dataset`` with one row per input:

    uri               string   the input ("" when the inputs had none)
    label             int64    its true class index when known, else -1
    error             string   why it could not be scored ("" when it was)
    probabilities     float32 (C,)  the model's output (NaN when not scored), or, with
    top_index         int64 (k,)    ``top_k``: the k most probable class indices
    top_probability   float32 (k,)  and their probabilities, largest first (-1 / NaN
                                    when not scored)

and every other column of the inputs, passed through. Inputs: a source URI or its
``inputs.InputListing`` (read and decoded in Ray Data tasks, an unreadable image a row with
its reason), a prepared split (``inputs.PreparedSplit``: its row groups, read as training
streams them), or a ``ray.data.Dataset`` whose ``image`` column holds uint8 images at the
model's input size (``label``: class indices or probability rows).

Workers: one actor loads the model once and scores batch after batch. On a cluster with
GPUs every actor takes one GPU (and one CPU), one actor per GPU; without, one CPU each and
one actor per CPU, TensorFlow limited to that many threads. Either way no more actors than
the inputs keep busy (``BATCHES_PER_ACTOR`` batches each: an actor's start, a TensorFlow
import and a model load, costs seconds). On CPU Ray Data runs the decoding in the actors
themselves (their tasks fuse: same resources), on GPU in tasks on the CPUs beside them.
The batch size is the caller's, else ``auto_batch_size``.
"""

from __future__ import annotations

import math
import os
import tempfile
from collections.abc import Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import numpy as np
import pyarrow as pa
import ray
import ray.data

from tljob import output, storage
from tljob.data.stream import shard_units
from tljob.errors import UserError
from tljob.infer.inputs import (
    InputListing,
    PreparedSplit,
    list_inputs,
    read_input,
    read_prepared,
)
from tljob.infer.model_file import ModelFile, resolve_model
from tljob.infer.results import Scored, class_indices, top_k

log = output.logger("infer")

# An actor's start (a TensorFlow import and a model load) costs seconds: each actor should
# have at least this many batches to score, or fewer actors start.
BATCHES_PER_ACTOR = 4
# The uint8 input of one automatically sized batch: CPU / GPU.
BATCH_INPUT_BYTES = {False: 8 * 2**20, True: 32 * 2**20}
BATCH_LIMITS = {False: (8, 256), True: (8, 1024)}
# Objects read at once by one decoding task (object-store latency, not CPU, bounds them).
READ_THREADS = 8


class InferenceError(UserError):
    """The inference cannot run as asked (resources, sizes, classes); exit 2."""


def auto_batch_size(image_size: int, gpu: bool) -> int:
    """Images per batch when none is given: as many as fill ``BATCH_INPUT_BYTES`` with
    uint8 pixels (8 MiB on CPU, 32 MiB on GPU), rounded down to a power of two, between 8
    and 256 (CPU) or 1024 (GPU). 224 px: 32 on CPU, 128 on GPU; 32 px: 256 / 1024."""
    low, high = BATCH_LIMITS[gpu]
    fits = max(1, BATCH_INPUT_BYTES[gpu] // (image_size * image_size * 3))
    return int(min(high, max(low, 2 ** int(math.log2(fits)))))


@dataclass(frozen=True)
class Workers:
    """The actor pool: how many actors, and what each takes."""

    actors: int
    cpus: float
    gpus: float
    batch_size: int
    fixed: bool = False  # exactly ``actors``; else from 1 up to ``actors``, all asked at once

    def rows_per_task(self, rows: int) -> int:
        """Inputs per decoding task: a batch, fewer when that leaves an actor idle."""
        return max(1, min(self.batch_size, math.ceil(rows / self.actors)))

    def pool(self) -> ray.data.ActorPoolStrategy:
        """Ray Data's strategy: a pool that starts scoring as soon as one actor is up
        (resources freed late, e.g. right after training, cannot hold it up), unless fixed."""
        if self.fixed:
            return ray.data.ActorPoolStrategy(size=self.actors)
        return ray.data.ActorPoolStrategy(
            min_size=1, max_size=self.actors, initial_size=self.actors
        )

    def describe(self) -> str:
        what = f"1 GPU + {self.cpus:g} CPU" if self.gpus else f"{self.cpus:g} CPU"
        return f"{self.actors} actor(s) of {what}, batches of {self.batch_size}"


def plan_workers(
    rows: int | None,
    image_size: int,
    batch_size: int | None = None,
    actors: int | None = None,
    use_gpu: bool | None = None,
) -> Workers:
    """The actor pool for ``rows`` inputs (None: unknown) on the cluster this process is
    connected to (see the module docstring); ``InferenceError`` when it cannot be placed."""
    resources = ray.cluster_resources()
    gpus, cpus = int(resources.get("GPU", 0)), int(resources.get("CPU", 0))
    gpu = gpus > 0 if use_gpu is None else use_gpu
    if gpu and gpus == 0:
        raise InferenceError("inference on GPU was asked for, but the Ray cluster has no GPU")
    capacity = gpus if gpu else cpus
    if capacity < 1:
        raise InferenceError(
            f"the Ray cluster has no whole {'GPU' if gpu else 'CPU'} for a model actor"
        )
    if actors is not None and actors > capacity:
        raise InferenceError(
            f"{actors} model actors were asked for, but the cluster has room for {capacity} "
            f"(one {'GPU' if gpu else 'CPU'} each); ask for at most {capacity}"
        )
    size = batch_size or auto_batch_size(image_size, gpu)
    fixed = actors is not None
    if actors is None:
        needed = capacity if rows is None else math.ceil(rows / (size * BATCHES_PER_ACTOR))
        actors = max(1, min(capacity, needed))
    return Workers(actors, cpus=1.0, gpus=1.0 if gpu else 0.0, batch_size=size, fixed=fixed)


class Predictor:
    """One actor of the pool: loads the exported model once (through ``tljob.storage``,
    so ``s3://`` too), then scores what it is given (see the module docstring for the
    columns), ``batch_size`` images per model call.

    It takes whole blocks (Ray Data's ``batch_size=None``) and cuts them into model batches
    itself: a batch size given to Ray Data would also bundle that many rows of the fused
    decoding step's input into one task, e.g. that many row groups of a prepared split,
    leaving other actors idle."""

    def __init__(self, model_uri: str, top: int | None, threads: int, batch_size: int) -> None:
        import tensorflow as tf

        try:  # one actor per CPU: TensorFlow would otherwise use every core of the node
            if threads:
                tf.config.threading.set_intra_op_parallelism_threads(threads)
                tf.config.threading.set_inter_op_parallelism_threads(threads)
        except RuntimeError:  # already initialised in this process: keep its pools
            pass
        from tljob.nn import io as keras_io

        with tempfile.TemporaryDirectory() as tmp:
            local = os.path.join(tmp, "model.keras")
            with open(local, "wb") as f:
                f.write(storage.read_bytes(storage.resolve(model_uri)))
            self.model = keras_io.load_exported(local)
        self.predict = keras_io.predict_probabilities
        self.classes = int(self.model.output_shape[-1])
        self.top, self.batch_size = top, batch_size

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        images = batch.pop("image")
        n = len(images)
        errors = batch.get("error")
        errors = np.array([""] * n, dtype=object) if errors is None else errors.astype(object)
        ok = errors == ""
        probs = np.full((n, self.classes), np.nan, dtype=np.float32)
        rows = np.flatnonzero(ok)
        for start in range(0, len(rows), self.batch_size):
            chosen = rows[start : start + self.batch_size]
            probs[chosen] = self.predict(self.model, np.ascontiguousarray(images[chosen]))
        batch["error"] = errors
        batch["label"] = (
            class_indices(batch["label"]) if "label" in batch else np.full(n, -1, np.int64)
        )
        if "uri" not in batch:
            batch["uri"] = np.array([""] * n, dtype=object)
        if self.top is None:
            batch["probabilities"] = probs
        else:
            index, value = top_k(np.nan_to_num(probs, nan=-1.0), self.top)
            index[~ok], value[~ok] = -1, np.nan
            batch["top_index"], batch["top_probability"] = index, value
        return batch


def decode_rows(batch: dict[str, np.ndarray], image_size: int) -> dict[str, np.ndarray]:
    """Listing rows (``uri`` and any other columns) -> the same rows with ``image`` (zeros
    where unreadable) and ``error``."""
    uris = [str(u) for u in batch["uri"]]
    with ThreadPoolExecutor(min(READ_THREADS, max(1, len(uris)))) as pool:
        decoded = list(pool.map(lambda u: read_input(u, image_size), uris))
    images = np.zeros((len(uris), image_size, image_size, 3), dtype=np.uint8)
    for i, (pixels, _) in enumerate(decoded):
        if pixels is not None:
            images[i] = pixels
    return {
        **batch,
        "image": images,
        "error": np.array([reason for _, reason in decoded], dtype=object),
    }


def listing_dataset(
    listing: InputListing,
    image_size: int,
    rows_per_task: int,
    classes: tuple[str, ...] | None = None,
    extra: dict[str, np.ndarray] | None = None,
) -> ray.data.Dataset:
    """The inputs of ``listing`` decoded in Ray Data tasks of ``rows_per_task`` inputs:
    ``uri``, ``label`` (index into ``classes``, -1 unknown), ``image``, ``error``, and the
    ``extra`` columns (one value per input, passed through)."""
    labels = listing.label_indices(classes) if classes else np.full(len(listing), -1, np.int64)
    table = pa.table(
        {
            "uri": pa.array(listing.uris, type=pa.string()),
            "label": pa.array(labels, type=pa.int64()),
            **{name: pa.array(values) for name, values in (extra or {}).items()},
        }
    )
    blocks = [table.slice(i, rows_per_task) for i in range(0, len(table), rows_per_task)]
    return ray.data.from_arrow(blocks).map_batches(
        decode_rows,
        fn_kwargs={"image_size": image_size},
        batch_size=None,
        batch_format="numpy",
        udf_modifying_row_count=False,
    )


def prepared_dataset(split: PreparedSplit, image_size: int) -> ray.data.Dataset:
    """A prepared split's rows, one task per row group (see ``read_prepared``)."""
    folder = storage.resolve(split.folder_uri)
    units = shard_units(folder, split.files)
    return ray.data.from_items(units, override_num_blocks=max(1, len(units))).map_batches(
        read_prepared,
        fn_kwargs={
            "fs": folder.fs,
            "stored_size": split.stored_size,
            "pixels": split.pixels,
            "image_size": image_size,
        },
        batch_size=1,
        udf_modifying_row_count=True,
    )


def infer(
    model: ModelFile | str,
    inputs: str | InputListing | PreparedSplit | ray.data.Dataset,
    *,
    batch_size: int | None = None,
    top: int | None = None,
    actors: int | None = None,
    use_gpu: bool | None = None,
) -> ray.data.Dataset:
    """Score ``inputs`` with ``model`` (a ``ModelFile`` or what ``--model`` takes) on the
    workers; a lazy Dataset of the columns in the module docstring (``top``: top-k
    columns instead of the probability vectors). Needs a connected Ray; never imports
    TensorFlow here. ``InferenceError`` / ``ModelError`` / ``InputError`` (exit 2) for a
    request that cannot run (labels the model does not know, too many actors, a prepared
    split of other classes, ...), before any work on the cluster."""
    resolved = model if isinstance(model, ModelFile) else resolve_model(model)
    if top is not None and not 1 <= top <= resolved.num_classes:
        raise InferenceError(f"top-k must be between 1 and {resolved.num_classes}, not {top}")
    if isinstance(inputs, str):
        inputs = list_inputs(inputs)
    if isinstance(inputs, InputListing) and inputs.unknown_labels(resolved.classes):
        unknown = inputs.unknown_labels(resolved.classes)
        raise InferenceError(
            f"{inputs.source}: the label(s) {', '.join(map(repr, unknown))} are not classes of "
            f"the model {resolved.uri} ({', '.join(map(repr, resolved.classes))}); score "
            "images of the model's classes, or a source without labels"
        )
    rows = len(inputs) if isinstance(inputs, InputListing) else getattr(inputs, "rows", None)
    workers = plan_workers(rows, resolved.image_size, batch_size, actors, use_gpu)
    if isinstance(inputs, InputListing):
        per_task = workers.rows_per_task(len(inputs))
        ds = listing_dataset(inputs, resolved.image_size, per_task, resolved.classes)
    elif isinstance(inputs, PreparedSplit):
        if inputs.classes != resolved.classes:
            raise InferenceError(
                f"the prepared {inputs.split} split at {inputs.folder_uri} has classes "
                f"{list(inputs.classes)}, the model {resolved.uri} {list(resolved.classes)}"
            )
        ds = prepared_dataset(inputs, resolved.image_size)
    else:
        ds = inputs
    return score_dataset(ds, resolved, workers, top)


def score_dataset(
    ds: ray.data.Dataset, model: ModelFile, workers: Workers, top: int | None = None
) -> ray.data.Dataset:
    """``ds`` (an ``image`` column at the model's size; see ``infer``) through the model's
    actor pool ``workers``."""
    log.debug(f"inference with {model.uri}: {workers.describe()}")
    return ds.map_batches(
        Predictor,
        fn_constructor_kwargs={
            "model_uri": model.uri,
            "top": top,
            "threads": 0 if workers.gpus else max(1, int(workers.cpus)),  # 0: TF's own
            "batch_size": workers.batch_size,
        },
        compute=workers.pool(),
        batch_size=None,  # whole blocks: see Predictor
        batch_format="numpy",
        # The same CPU as the decoding tasks ask for: on CPU Ray Data fuses them into the
        # actors (separate tasks would wait for a CPU the actors hold).
        num_cpus=workers.cpus,
        num_gpus=workers.gpus or None,
        udf_modifying_row_count=False,
    )


def collect(ds: ray.data.Dataset, verbose: bool = False) -> Scored:
    """The rows of an ``infer`` Dataset (without ``top``) on the driver, as numpy."""
    with output.ray_actor_notices_hidden(verbose):
        return scored_of(ds.iter_batches(batch_size=None, batch_format="numpy"))


def scored_of(batches: Iterable[dict[str, np.ndarray]]) -> Scored:
    """``Predictor`` output batches (without ``top``) joined into one ``Scored``."""
    parts: dict[str, list[np.ndarray]] = {k: [] for k in ("uri", "label", "probabilities", "error")}
    for batch in batches:
        for key, found in parts.items():
            found.append(np.asarray(batch[key]))
    if not parts["uri"]:
        return Scored(
            np.array([], object),
            np.array([], np.int64),
            np.zeros((0, 0), np.float32),
            np.array([], object),
        )
    joined = {k: np.concatenate(v) for k, v in parts.items()}
    return Scored(
        uris=joined["uri"].astype(object),
        truth=joined["label"].astype(np.int64),
        probs=joined["probabilities"].astype(np.float32),
        errors=joined["error"].astype(object),
    )


def score_prepared(
    model_uri: str,
    prepared_uri: str,
    split: str = "val",
    batch_size: int | None = None,
    use_gpu: bool | None = None,
    verbose: bool = False,
) -> Scored:
    """Every row of a prepared split scored by the exported model at ``model_uri`` on the
    workers (none dropped, none sharded away), sorted by uri: what a run re-checks at its
    end (``Scored.summary()`` is ``summary.json``'s ``exported_model``)."""
    split_rows = PreparedSplit.from_prepared(prepared_uri, split)
    scored = infer(model_uri, split_rows, batch_size=batch_size, use_gpu=use_gpu)
    return collect(scored, verbose).sorted_by_uri()
