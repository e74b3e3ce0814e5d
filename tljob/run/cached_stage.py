"""The features a cached stage trains on, in the Ray Train worker loop
(``tljob.config.features`` says which stages; ``tljob.data.features`` where they live).

``features_per_worker`` is called by every worker at the first cached stage. Rank 0 looks
for published features of the run's ``FeatureKey`` and tells every worker what it found
(so all take the same path):

- found: each worker reads its equal, contiguous share of the rows (``rows // world`` of
  each split; the few left over are left out, as the equal split of the images leaves them);
- not found: each worker runs the frozen backbone once over its own shares of the training
  and validation images (one pass of the Ray Data shards, on its GPU when it has one),
  writes them as its part, and after all have written rank 0 publishes ``features.json``.

Either way the worker holds (features, labels) for both splits in memory: a few KiB per
image against the image's pixels.

With ``features: views K`` the training split is K splits, ``train-view-<k>``: the pass
over the training images runs K times over the worker's shard of ``VIEWS_DATASET`` (the
training stream with its augmentation, started at epoch 0 whatever the run's epoch; its
k-th execution draws the views of epoch k), and the stage's epoch e trains on view
e mod K (``tljob.run.feed.in_memory_train``).
"""

from __future__ import annotations

import io
import json
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import ray.train
import ray.train.collective

from tljob import storage
from tljob.config.features import job_feature_views
from tljob.data.features import (
    RUN_RECORD,
    FeatureKey,
    FeaturesManifest,
    augment_sha256,
    features_dir,
    image_dataset,
    part_name,
    publish,
    read_manifest,
)
from tljob.nn import io as keras_io
from tljob.nn.features import (
    compute_features,
    feature_dim,
    features_model,
    head_layers,
    head_model,
)
from tljob.run import feed, feed_arrays
from tljob.zoo import get_backbone

_READ_ROWS = 1024  # images per batch of the one pass over a shard


@dataclass
class WorkerFeatures:
    """A worker's features: per split, (float32 features (N, dim), int64 labels (N,))."""

    arrays: dict[str, tuple[np.ndarray, np.ndarray]]
    folder: str  # the features' folder URI
    fingerprint: str
    computed: bool  # True: this run's backbone pass made them; False: found
    seconds: float  # the pass (or the read), on rank 0
    # of a pass: waiting for the shards' images, and the backbone's calls (tracing included)
    pass_seconds: dict[str, float] | None = None
    views: int = 0  # K augmented views of the training images (``features: views K``)

    @property
    def train(self) -> Any:
        """The training arrays: one (features, labels), or the K views' in order."""
        if not self.views:
            return self.arrays["train"]
        return [a for split, a in self.arrays.items() if split != "val"]

    def record(self, stage: str) -> dict[str, Any]:
        """``features.json`` of the run (and ``summary.json["features"]``)."""
        return {
            "stage": stage,
            "folder": self.folder,
            "fingerprint": self.fingerprint,
            "computed": self.computed,
            "views": self.views,
            "seconds": round(self.seconds, 3),
            **(
                {"pass_seconds": {k: round(v, 3) for k, v in self.pass_seconds.items()}}
                if self.pass_seconds
                else {}
            ),
            "rows_per_worker": {s: int(len(a[1])) for s, a in self.arrays.items()},
        }


def feature_key(job: Any, prepared_uri: str, weights_sha256: str) -> FeatureKey:
    """The fingerprint parts of a run's features (``tljob.data.features``)."""
    spec = get_backbone(job.model.backbone)
    views = job_feature_views(job)
    seed = job.augment.seed if job.augment.seed is not None else job.data.seed
    return FeatureKey(
        prepared_fingerprint=prepared_uri.rstrip("/").rsplit("/", 1)[-1],
        backbone=spec.name,
        weights_sha256=weights_sha256,
        image_size=job.image_size,
        preprocessing=spec.preprocessing,
        precision=job.train.precision,
        views=views,
        augment=augment_sha256(job.augment.model_dump(mode="json"), seed) if views else "",
    )


def _part_bytes(features: np.ndarray, labels: np.ndarray) -> bytes:
    dim = features.shape[1]
    table = pa.table(
        {
            "feature": pa.FixedSizeListArray.from_arrays(
                pa.array(features.reshape(-1), pa.float32()), dim
            ),
            "label": pa.array(labels.astype(np.int64), pa.int64()),
        }
    )
    sink = io.BytesIO()
    pq.write_table(table, sink)
    return sink.getvalue()


def _rows_of(table: pa.Table) -> tuple[np.ndarray, np.ndarray]:
    column = table["feature"].combine_chunks()
    dim = column.type.list_size
    features = column.flatten().to_numpy().astype(np.float32).reshape(-1, dim)
    return features, table["label"].to_numpy().astype(np.int64)


def _share(
    folder: storage.Location, manifest: FeaturesManifest, split: str, rank: int, world: int
) -> tuple[np.ndarray, np.ndarray]:
    """Rows ``[rank * n, (rank + 1) * n)`` of ``split``'s parts in order, n = rows // world."""
    per = manifest.rows[split] // world
    start, end = rank * per, (rank + 1) * per
    parts, offset = [], 0
    for uri in manifest.part_uris(folder, split):
        if offset >= end:
            break
        loc = storage.resolve(uri)
        with loc.fs.open_input_file(loc.path) as f:
            part = pq.ParquetFile(f)
            rows = part.metadata.num_rows
            if offset + rows > start:
                table = part.read()
                parts.append(table.slice(max(0, start - offset), end - max(start, offset)))
        offset += rows
    if not parts:
        return np.zeros((0, manifest.dim), np.float32), np.zeros(0, np.int64)
    return _rows_of(pa.concat_tables(parts))


def _one_pass(
    shard: Any, extractor: Any, seconds: dict[str, float], chunk_bytes: int
) -> tuple[np.ndarray, np.ndarray]:
    """The features and labels of every row of a Ray Data shard (one pass of it), read in
    chunks of about ``chunk_bytes`` of pixels, each chunk's features computed once it is
    read: the backbone then does not share the CPUs with the shard's reading (on 2 CPUs,
    the demo's backbone time went from 16.8 to 13.5 s). Adds the backbone's seconds
    (tracing included) to ``seconds["backbone"]`` and the rest to ``seconds["read"]``."""
    labels: list[np.ndarray] = []
    features: list[np.ndarray] = []
    chunk: list[np.ndarray] = []
    started, backbone = time.monotonic(), 0.0

    def compute() -> None:
        nonlocal backbone
        began = time.monotonic()
        features.append(compute_features(extractor, chunk))
        backbone += time.monotonic() - began
        chunk.clear()

    for batch in shard.iter_batches(batch_size=_READ_ROWS, batch_format="numpy"):
        labels.append(np.asarray(batch["label"], np.int64))
        chunk.append(np.ascontiguousarray(batch["image"], dtype=np.uint8))
        if sum(part.nbytes for part in chunk) >= chunk_bytes:
            compute()
    compute()
    seconds["backbone"] += backbone
    seconds["read"] += time.monotonic() - started - backbone
    return np.concatenate(features), (np.concatenate(labels) if labels else np.zeros(0, np.int64))


def backbone_passes(
    shards: dict[str, Any],
    extractor: Any,
    key: FeatureKey,
    seconds: dict[str, float] | None = None,
    chunk_bytes: int = 2**30,
) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """The features of every split of ``key``, one pass of its images' shard (``shards``:
    the trainer's dataset name -> this worker's shard) each, in order: with views, the
    k-th pass of ``VIEWS_DATASET`` (its k-th execution) is view k. ``seconds`` and
    ``chunk_bytes``: as ``_one_pass``'s."""
    seconds = {"read": 0.0, "backbone": 0.0} if seconds is None else seconds
    return {
        split: _one_pass(shards[image_dataset(split)], extractor, seconds, chunk_bytes)
        for split in key.splits
    }


def features_per_worker(
    local_model: Callable[[], Any],
    key: FeatureKey,
    prepared_uri: str,
    shards: dict[str, Any],
    chunk_bytes: int,
) -> WorkerFeatures:
    """This worker's features for the cached stages (see the module docstring); every
    worker calls it together. ``shards``: the split name -> this worker's image shard,
    read ``chunk_bytes`` of pixels at a time before the backbone runs over them;
    ``local_model``: called (by every worker, only when the features are computed) for a
    copy of the model outside the strategy with the model's weights, which the backbone
    pass runs: reading the distributed model's BatchNorm statistics outside a replica is a
    collective between the workers, on every call of it. With ``key.views`` = K, ``shards``
    holds ``VIEWS_DATASET`` too, iterated K times: its k-th execution is view k."""
    context = ray.train.get_context()
    rank, world = context.get_world_rank(), context.get_world_size()
    folder = features_dir(prepared_uri, key)
    started = time.monotonic()

    def held(arrays: dict, computed: bool, parts: dict[str, float] | None) -> WorkerFeatures:
        seconds = time.monotonic() - started
        return WorkerFeatures(
            arrays, folder.uri, key.fingerprint(), computed, seconds, parts, key.views
        )

    found = read_manifest(folder) if rank == 0 else None
    found = ray.train.collective.broadcast_from_rank_zero(found)
    if found is not None:
        return held({s: _share(folder, found, s, rank, world) for s in key.splits}, False, None)
    net = local_model()
    parts = {"read": 0.0, "backbone": 0.0}
    arrays = backbone_passes(shards, features_model(net), key, parts, chunk_bytes)
    attempt = ray.train.collective.broadcast_from_rank_zero(uuid.uuid4().hex[:12])
    for split, (features, labels) in arrays.items():
        storage.write_bytes(
            folder.join(attempt, split, part_name(rank)), _part_bytes(features, labels)
        )
    ray.train.collective.barrier()  # every part is written
    if rank == 0:
        # the equal split gives every worker as many rows as this one
        rows = {split: len(arrays[split][1]) * world for split in key.splits}
        names = [part_name(r) for r in range(world)]
        publish(
            folder,
            FeaturesManifest(
                fingerprint=key.fingerprint(),
                attempt=attempt,
                key=key.__dict__.copy(),
                rows=rows,
                parts={split: names for split in key.splits},
                dim=feature_dim(net),
            ),
        )
    return held(arrays, True, parts)


@dataclass
class StageInput:
    """What a stage fits: ``model`` on ``input`` (``tljob.run.feed.WorkerInput``: images,
    or, with ``features``, this worker's cached features)."""

    model: Any
    input: feed.WorkerInput
    features: WorkerFeatures | None = None

    @property
    def train(self) -> Any:
        return self.input.train

    @property
    def val(self) -> Any:
        return self.input.val

    @property
    def steps(self) -> int:
        return self.input.steps_per_epoch

    @property
    def train_in_memory(self) -> bool:
        return self.input.train_in_memory

    def describe(self) -> str:
        """The tail of the stage's line: on what it trains, when on cached features."""
        if self.features is None:
            return ""
        how = "computed now" if self.features.computed else "found"
        views = f"{self.features.views} views, " if self.features.views else ""
        return f", on cached features ({views}{how}, {self.features.folder})"


def cached_input_per_worker(worker: Any, stage: str) -> StageInput:
    """A cached stage's input for the worker loop ``worker`` (``tljob.run.worker``): the
    model's head (built once, in the strategy's scope) and this worker's features, as
    ``tljob.run.feed`` serves in-memory arrays; the features are computed or read at the
    first cached stage (``features_per_worker``) and noted in ``features.json``."""
    loop = worker.loop
    if worker.features is None:
        key = feature_key(worker.job, loop.prepared_uri, loop.weights_content_sha256)
        names = {image_dataset(split) for split in key.splits}
        shards = {name: ray.train.get_dataset_shard(name) for name in names}
        found = features_per_worker(
            lambda: _local_copy(worker),
            key,
            loop.prepared_uri,
            shards,
            # images read before the backbone runs over them: what a worker may hold
            chunk_bytes=int(worker.job.scaling.worker_cache_mib * 2**20),
        )
        views = f" x {key.views} augmented views" if key.views else ""
        counts = (
            f"{len(found.arrays[key.splits[0]][1])} training{views} + "
            f"{len(found.arrays['val'][1])} validation images of this worker"
        )
        parts = found.pass_seconds or {}
        passes = f"{key.views + 1} passes" if key.views else "once"
        worker.say(
            f"features: the backbone ran {passes} over {counts} in {found.seconds:.1f}s "
            f"(reading images {parts.get('read', 0.0):.1f}s, the backbone "
            f"{parts.get('backbone', 0.0):.1f}s); stored in {found.folder}"
            if found.computed
            else f"features: found in {found.folder}; read {counts} in {found.seconds:.1f}s"
        )
        if worker.rank == 0:
            storage.write_text(
                worker.run_dir.join(RUN_RECORD), json.dumps(found.record(stage), indent=1)
            )
        with worker.strategy.scope():
            worker.head = head_model(worker.net)
        worker.features = found
    features, job = worker.features, worker.job
    worker_input = feed_arrays.arrays_input_per_worker(
        features.train,
        features.arrays["val"],
        worker.strategy,
        worker.world_size,
        batch_size=job.train.batch_size,
        shuffle=job.data.shuffle_buffer,
        seed=job.data.seed,
        first_epoch=lambda: len(worker.state.history),
        class_weights=loop.class_weights,
    )
    return StageInput(model=worker.head, input=worker_input, features=features)


def _local_copy(worker: Any) -> Any:
    """The worker's plain model (outside the strategy) holding the distributed model's
    weights, read once (a collective); the frozen part is kept for ``whole_weights``."""
    whole = keras_io.get_weights(worker.net)
    worker.plain.set_weights(whole)
    head = sum(len(layer.weights) for layer in head_layers(worker.plain))
    worker.frozen_weights = whole[: len(whole) - head]
    return worker.plain


def whole_weights(worker: Any, fitted: Any) -> list[np.ndarray]:
    """The whole model's weights after an epoch of ``fitted`` (the model a stage fits).

    Reading them is a collective under the strategy (BatchNorm statistics are synchronised
    on read): every worker calls this together. A cached stage fits the head, the rest is
    the frozen backbone: its weights are read once, at the stage's first epoch, and the
    head's (no synchronised variable) are read every epoch and appended, in model order."""
    if fitted is worker.net:
        worker.frozen_weights = None
        return keras_io.get_weights(worker.net)
    if worker.frozen_weights is None:
        whole = keras_io.get_weights(worker.net)
        worker.frozen_weights = whole[: len(whole) - len(fitted.weights)]
        return whole
    return worker.frozen_weights + [np.asarray(v.numpy()) for v in fitted.weights]
