"""A candidate's pooled features over the subsample, through the inference path: Ray Data
tasks read the chosen rows of the prepared shards, an actor pool (``tljob.infer.pipeline``'s
``plan_workers``: one actor per GPU, else per CPU) runs the candidate's features model
(``tljob.nn.features``), and the features are kept as fingerprinted shards
(``tljob.data.features``) that a rerun reads instead. TensorFlow is imported only in the
actors.

Each actor times its own forward passes: its first model batch is run once untimed (the
graph is traced then), and again timed; every later batch is timed. The model build is
never timed. ``Timing`` sums them over the actors: images per second of one actor.
"""

from __future__ import annotations

import io
import json
import tempfile
import time
import uuid
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import ray
import ray.data

from tljob import output, storage
from tljob.data.features import (
    SPLITS,
    FeatureKey,
    FeaturesManifest,
    features_dir,
    publish,
    read_manifest,
)
from tljob.data.stream import shard_units
from tljob.infer.inputs import PreparedSplit, read_row_group
from tljob.infer.pipeline import Workers

TIMING_FILE = "timing.json"  # in the features' attempt folder
PART = "part-00000.parquet"


@dataclass(frozen=True)
class Subsample:
    """The chosen rows of the prepared splits: per split, the row groups that hold any,
    with the row indices to keep; and the chosen rows' uris and labels, in that order."""

    units: dict[str, list[dict[str, Any]]]  # each also names its split's storage
    uris: dict[str, np.ndarray]
    labels: dict[str, np.ndarray]
    folder_uri: str

    def digest(self) -> str:
        """What identifies the rows (``FeatureKey.subsample``): their uris, per split."""
        import hashlib

        h = hashlib.sha256()
        for split in SPLITS:
            h.update(split.encode() + b"\0" + "\0".join(sorted(self.uris[split])).encode())
        return h.hexdigest()


def split_rows(split: PreparedSplit) -> tuple[list[dict[str, Any]], np.ndarray, np.ndarray]:
    """Every row group of ``split`` (``shard_units``) and, in the same order, each row's
    uri and label: read from the shards' ``uri`` and ``label`` columns only."""
    folder = storage.resolve(split.folder_uri)
    units = shard_units(folder, split.files)
    uris, labels = [], []
    for unit in units:
        with folder.fs.open_input_file(unit["path"]) as handle:
            table = pq.ParquetFile(handle).read_row_group(
                unit["row_group"], columns=["uri", "label"]
            )
        uris.append(table["uri"].to_numpy(zero_copy_only=False).astype(object))
        labels.append(table["label"].to_numpy().astype(np.int64))
    return units, np.concatenate(uris), np.concatenate(labels)


def read_chosen(batch: dict[str, np.ndarray], fs: Any, image_size: int) -> dict[str, np.ndarray]:
    """The rows ``keep`` of the row groups in ``batch`` (stored at ``stored_size`` as
    ``pixels``) -> ``image`` (at ``image_size``), ``label``, ``uri``, ``split``."""
    parts = []
    for path, group, keep, split, stored_size, pixels in zip(
        batch["path"],
        batch["row_group"],
        batch["keep"],
        batch["split"],
        batch["stored_size"],
        batch["pixels"],
        strict=True,
    ):
        part = read_row_group(fs, path, group, int(stored_size), str(pixels), image_size, keep)
        part["split"] = np.array([str(split)] * len(part["label"]), dtype=object)
        parts.append(part)
    return {key: np.concatenate([p[key] for p in parts]) for key in parts[0]}


def images_dataset(subsample: Subsample, image_size: int) -> ray.data.Dataset:
    """The subsample's images (both splits), read once and kept in Ray's object store for
    every candidate."""
    items = [{**unit, "split": split} for split in SPLITS for unit in subsample.units[split]]
    fs = storage.resolve(subsample.folder_uri).fs
    return (
        ray.data.from_items(items, override_num_blocks=max(1, len(items)))
        .map_batches(
            read_chosen,
            fn_kwargs={"fs": fs, "image_size": image_size},
            batch_size=1,
            udf_modifying_row_count=True,
        )
        .materialize()
    )


class FeatureActor:
    """One actor of the pool: builds the candidate's features model once (weights fetched
    from where the driver put them), then turns blocks of images into pooled features,
    ``batch_size`` images per model call, timing each call (see the module docstring)."""

    def __init__(
        self,
        backbone: str,
        image_size: int,
        weights: str,
        weights_uri: str,
        weights_sha256: str,
        seed: int,
        threads: int,
        batch_size: int,
    ) -> None:
        import tensorflow as tf

        try:  # one actor per CPU: TensorFlow would otherwise use every core of the node
            if threads:
                tf.config.threading.set_intra_op_parallelism_threads(threads)
                tf.config.threading.set_inter_op_parallelism_threads(threads)
        except RuntimeError:
            pass
        from tljob.config.schema import ModelSection
        from tljob.nn.features import features_model
        from tljob.nn.keras import tf_keras
        from tljob.nn.model import build_model
        from tljob.run.shipped import fetch

        weights_file = None
        with tempfile.TemporaryDirectory() as tmp:
            if weights_uri:
                weights_file = fetch(weights_uri, weights_sha256, tmp)
            else:  # random weights: the same on every actor and every rerun
                tf_keras.utils.set_random_seed(seed)
            section = ModelSection(backbone=backbone, weights=weights)
            net = build_model(section, 2, image_size, weights_file)
        self.model = features_model(net)
        self.call = tf.function(lambda x: self.model(x, training=False), reduce_retracing=True)
        self.batch_size = batch_size
        self.warm = False

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        images = batch.pop("image")
        chunks, seconds = [], np.full(len(images), np.nan)
        for start in range(0, len(images), self.batch_size):
            chunk = np.ascontiguousarray(images[start : start + self.batch_size])
            if not self.warm:
                np.asarray(self.call(chunk))  # traces the graph: not timed
                self.warm = True
            began = time.perf_counter()
            chunks.append(np.asarray(self.call(chunk), dtype=np.float32))
            seconds[start : start + len(chunk)] = (time.perf_counter() - began) / len(chunk)
        batch["feature"] = np.concatenate(chunks) if chunks else np.zeros((0, 1), np.float32)
        batch["forward_seconds"] = seconds
        return batch


@dataclass(frozen=True)
class Timing:
    """The forward passes' time over the actors: images per second of one actor."""

    images: int
    seconds: float
    actors: int
    batch_size: int

    @property
    def images_per_second(self) -> float:
        return self.images / self.seconds if self.seconds > 0 else float("nan")

    @property
    def ms_per_image(self) -> float:
        return 1000.0 * self.seconds / self.images if self.images else float("nan")


@dataclass
class Features:
    """A candidate's features: per split (float32 (N, dim), int64 labels (N,)) in the
    subsample's row order, the timing, and whether this run computed them."""

    arrays: dict[str, tuple[np.ndarray, np.ndarray]]
    timing: Timing
    computed: bool
    folder: str


def compute(
    images: ray.data.Dataset,
    subsample: Subsample,
    actor_args: dict[str, Any],
    workers: Workers,
    verbose: bool = False,
) -> tuple[dict[str, tuple[np.ndarray, np.ndarray]], Timing]:
    """Run the candidate's ``FeatureActor`` pool over ``images``; the features in the
    subsample's row order and the timing."""
    ds = images.map_batches(
        FeatureActor,
        fn_constructor_kwargs={
            **actor_args,
            "threads": 0 if workers.gpus else max(1, int(workers.cpus)),
            "batch_size": workers.batch_size,
        },
        compute=workers.pool(),
        batch_size=None,
        batch_format="numpy",
        num_cpus=workers.cpus,
        num_gpus=workers.gpus or None,
        udf_modifying_row_count=False,
    )
    rows: dict[str, list[np.ndarray]] = {k: [] for k in ("feature", "uri", "split", "forward")}
    with output.ray_actor_notices_hidden(verbose):
        for batch in ds.iter_batches(batch_size=None, batch_format="numpy"):
            rows["feature"].append(np.asarray(batch["feature"], np.float32))
            rows["uri"].append(np.asarray(batch["uri"]).astype(object))
            rows["split"].append(np.asarray(batch["split"]).astype(object))
            rows["forward"].append(np.asarray(batch["forward_seconds"], np.float64))
    joined = {k: np.concatenate(v) for k, v in rows.items()}
    timed = ~np.isnan(joined["forward"])
    timing = Timing(
        int(timed.sum()), float(joined["forward"][timed].sum()), workers.actors, workers.batch_size
    )
    arrays = {}
    for split in SPLITS:
        at = {uri: i for i, uri in enumerate(joined["uri"]) if joined["split"][i] == split}
        order = np.array([at[uri] for uri in subsample.uris[split]], np.int64)
        arrays[split] = (joined["feature"][order], subsample.labels[split])
    return arrays, timing


def _part_bytes(features: np.ndarray, labels: np.ndarray) -> bytes:
    table = pa.table(
        {
            "feature": pa.FixedSizeListArray.from_arrays(
                pa.array(features.reshape(-1), pa.float32()), features.shape[1]
            ),
            "label": pa.array(labels.astype(np.int64), pa.int64()),
        }
    )
    sink = io.BytesIO()
    pq.write_table(table, sink)
    return sink.getvalue()


def store(prepared_uri: str, key: FeatureKey, arrays: dict[str, Any], timing: Timing) -> str:
    """Write the features (one part per split) and the timing; publish; the folder URI."""
    folder = features_dir(prepared_uri, key)
    attempt = uuid.uuid4().hex[:12]
    for split, (features, labels) in arrays.items():
        storage.write_bytes(folder.join(attempt, split, PART), _part_bytes(features, labels))
    storage.write_text(folder.join(attempt, TIMING_FILE), json.dumps(asdict(timing)))
    publish(
        folder,
        FeaturesManifest(
            fingerprint=key.fingerprint(),
            attempt=attempt,
            key=asdict(key),
            rows={split: len(arrays[split][1]) for split in SPLITS},
            parts={split: [PART] for split in SPLITS},
            dim=int(arrays["train"][0].shape[1]),
        ),
    )
    return folder.uri


def load(prepared_uri: str, key: FeatureKey) -> Features | None:
    """The published features of ``key`` and their timing, or None (none yet)."""
    folder = features_dir(prepared_uri, key)
    manifest = read_manifest(folder)
    if manifest is None or not storage.exists(folder.join(manifest.attempt, TIMING_FILE)):
        return None
    arrays = {}
    for split in SPLITS:
        loc = storage.resolve(manifest.part_uris(folder, split)[0])
        with loc.fs.open_input_file(loc.path) as f:
            table = pq.read_table(f)
        column = table["feature"].combine_chunks()
        features = column.flatten().to_numpy().astype(np.float32).reshape(-1, manifest.dim)
        arrays[split] = (features, table["label"].to_numpy().astype(np.int64))
    timing = Timing(**json.loads(storage.read_text(folder.join(manifest.attempt, TIMING_FILE))))
    return Features(arrays, timing, computed=False, folder=folder.uri)
