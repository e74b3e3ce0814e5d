"""Running the staged fine-tune as a Ray Train job.

``run_training_driver_fn`` (driver) prepares the data, writes the run's metadata, runs a
``TensorflowTrainer`` and writes the summary. ``train_per_worker`` (on each worker) builds
the model under ``MultiWorkerMirroredStrategy`` and runs the stages with plain
``model.fit``; after every epoch all workers call ``ray.train.report`` and rank 0 attaches
a checkpoint. Resuming = running again with the same ``run.name`` and ``run.storage_path``:
the last checkpoint says which stage and epoch come next.

Run directory ``<storage_path>/<run.name>/``::

    config.yaml      resolved config          labels.json     index -> class name
    data_report.json counts + quarantine      history.csv     one row per epoch
    checkpoint_*/    Ray checkpoints          summary.json    final/best metrics, timing
    model/model.keras  best epoch, uint8 RGB images of any size -> class probabilities
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
import os
import sys
import tempfile
import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import ray
import ray.train
import tensorflow as tf
import yaml
from ray.train import CheckpointConfig, FailureConfig, RunConfig, ScalingConfig
from ray.train.tensorflow import TensorflowTrainer

from tljob import model as keras_model
from tljob import storage
from tljob.config import JobConfig, StageSection, dump_config
from tljob.data import ImageListing, PreparedData, list_images, prepare_data
from tljob.errors import UserError
from tljob.report import data_summary_line, set_aside_lines

HISTORY_COLUMNS = (
    "global_epoch",
    "stage",
    "stage_index",
    "epoch",
    "loss",
    "accuracy",
    "val_loss",
    "val_accuracy",
    "learning_rate",
    "trainable_tensors",
    "seconds",
)
# How to read each history.csv column back (float covers "nan" from a diverged epoch).
_HISTORY_TYPES: dict[str, Any] = {
    **dict.fromkeys(HISTORY_COLUMNS, float),
    **dict.fromkeys(("global_epoch", "stage_index", "epoch", "trainable_tensors"), int),
    "stage": str,
}
WEIGHTS_FILE = "model.weights.h5"
BEST_WEIGHTS_FILE = "best.weights.h5"
STATE_FILE = "state.json"
OPTIMIZER_FILE = "optimizer.npz"


@dataclass
class TrainState:
    """Where training stands; saved in every checkpoint as ``state.json``.

    ``stage_index``/``epoch`` point at the *next* epoch to run (0-based within the stage).
    """

    stage_index: int = 0
    epoch: int = 0
    learning_rate: float | None = None  # current LR of the stage in progress
    callbacks: dict[str, dict[str, float]] = field(default_factory=dict)
    history: list[dict[str, Any]] = field(default_factory=list)
    best: dict[str, Any] | None = None  # history row of the best epoch so far

    def to_json(self) -> str:
        return json.dumps(self.__dict__, indent=1)

    @classmethod
    def from_json(cls, text: str) -> TrainState:
        return cls(**json.loads(text))


def _rank(row: dict[str, Any]) -> tuple[float, float]:
    """Epochs compare by val_accuracy, then by lower val_loss; on a tie the earlier wins."""
    return (row["val_accuracy"], -row["val_loss"])


def _is_better(row: dict[str, Any], best: dict[str, Any] | None) -> bool:
    return best is None or _rank(row) > _rank(best)


def _best_row(rows: list[dict[str, Any]]) -> dict[str, Any]:
    return max(rows, key=lambda r: (*_rank(r), -r["global_epoch"]))


def _to_tf_per_worker(
    shard: Any, batch_size: int, world_size: int, image_size: int, training: bool, shuffle: int
) -> tf.data.Dataset:
    """The worker's Ray Data shard as a tf.data pipeline of (uint8 images, int64 labels).

    Under MultiWorkerMirroredStrategy Keras treats each batch of this dataset as a global
    batch and splits it across the ``world_size`` replicas, so batches of
    ``batch_size * world_size`` give every worker ``batch_size`` images per step. Training
    drops the last partial batch (and shuffles when ``shuffle`` > 0); validation keeps all.
    """
    global_batch = batch_size * world_size
    return shard.to_tf(
        feature_columns="image",
        label_columns="label",
        batch_size=global_batch,
        drop_last=training,
        prefetch_batches=2,
        local_shuffle_buffer_size=max(shuffle, global_batch) if training and shuffle else None,
        feature_type_spec=tf.TensorSpec(
            shape=(None, image_size, image_size, 3), dtype=tf.uint8, name="image"
        ),
        label_type_spec=tf.TensorSpec(shape=(None,), dtype=tf.int64, name="label"),
    )


def _history_csv(rows: list[dict[str, Any]]) -> str:
    out = io.StringIO()
    writer = csv.DictWriter(out, fieldnames=HISTORY_COLUMNS, lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    return out.getvalue()


def _say(message: str) -> None:
    # Plain stdout write: Ray Train's patched print() would log the line twice here.
    sys.stdout.write(f"[tljob] {message}\n")
    sys.stdout.flush()


@dataclass
class _Restored:
    state: TrainState
    weights: list[np.ndarray] | None = None
    best_weights: list[np.ndarray] | None = None
    optimizer: list[np.ndarray] | None = None


def _restore(plain: Any) -> _Restored:
    """Read the latest checkpoint (if any) through the plain model copy."""
    checkpoint = ray.train.get_checkpoint()
    if checkpoint is None:
        return _Restored(TrainState())
    with checkpoint.as_directory() as ckpt_dir:
        with open(os.path.join(ckpt_dir, STATE_FILE)) as f:
            state = TrainState.from_json(f.read())
        best = keras_model.load_weights(plain, os.path.join(ckpt_dir, BEST_WEIGHTS_FILE))
        current = keras_model.load_weights(plain, os.path.join(ckpt_dir, WEIGHTS_FILE))
        with np.load(os.path.join(ckpt_dir, OPTIMIZER_FILE)) as npz:
            optimizer = [npz[f"v{i}"] for i in range(len(npz.files))]
    return _Restored(state, current, best, optimizer)


def _write_checkpoint(
    plain: Any,
    weights: list[np.ndarray],
    best_weights: list[np.ndarray],
    optimizer: list[np.ndarray],
    state: TrainState,
    directory: str,
) -> None:
    keras_model.save_weights(plain, weights, os.path.join(directory, WEIGHTS_FILE))
    keras_model.save_weights(plain, best_weights, os.path.join(directory, BEST_WEIGHTS_FILE))
    np.savez(
        os.path.join(directory, OPTIMIZER_FILE), **{f"v{i}": a for i, a in enumerate(optimizer)}
    )
    with open(os.path.join(directory, STATE_FILE), "w") as f:
        f.write(state.to_json())


def weights_digest(weights: list[np.ndarray]) -> str:
    """sha256 over every weight tensor's bytes, in model order."""
    h = hashlib.sha256()
    for w in weights:
        h.update(np.ascontiguousarray(w).tobytes())
    return h.hexdigest()


class _WorkerRun:
    """One worker's view of a run: the distributed model, its plain copy, the state, and the
    per-epoch bookkeeping. Every method runs on every worker, in the same order, because
    reading weights under MultiWorkerMirroredStrategy is a collective; only rank 0 writes."""

    def __init__(self, job: JobConfig, loop_config: dict[str, Any]) -> None:
        context = ray.train.get_context()
        self.rank, self.world_size = context.get_world_rank(), context.get_world_size()
        self.job = job
        self.stages = job.train.stages
        self.run_dir = storage.resolve(loop_config["run_dir"])
        # Each worker's shard is cut into global batches (drop_last), each split into
        # world_size replica batches that this worker steps through.
        shard_rows = loop_config["train_images"] // self.world_size
        global_batch = job.train.batch_size * self.world_size
        self.steps_per_epoch = shard_rows // global_batch * self.world_size

        self.strategy = tf.distribute.MultiWorkerMirroredStrategy()
        self.train_ds = _to_tf_per_worker(
            ray.train.get_dataset_shard("train"),
            job.train.batch_size,
            self.world_size,
            job.image_size,
            training=True,
            shuffle=job.data.shuffle_buffer,
        )
        self.val_ds = _to_tf_per_worker(
            ray.train.get_dataset_shard("val"),
            job.train.batch_size,
            self.world_size,
            job.image_size,
            training=False,
            shuffle=0,
        )
        with self.strategy.scope():
            self.net = keras_model.build_model(
                job.model, len(loop_config["classes"]), job.image_size
            )
        self.plain = keras_model.plain_copy(self.net)  # outside the scope: weight files

        restored = _restore(self.plain)
        self.state = restored.state
        self.best_weights = restored.best_weights
        self.restored_optimizer = restored.optimizer
        if restored.weights is not None:
            keras_model.set_weights(self.net, restored.weights)
            last = self.state.history[-1]
            self.say(
                f"resuming after stage {last['stage']!r} epoch {last['epoch']} "
                f"(global epoch {last['global_epoch']}) from the last checkpoint"
            )
        # set per stage / epoch by run_stage and the hooks
        self.stage_index, self.stage = 0, self.stages[0]
        self.trainable_tensors = 0
        self.callbacks: list[Any] = []
        self.epoch, self.epoch_start, self.epoch_learning_rate = 0, time.monotonic(), 0.0

    def say(self, message: str) -> None:
        if self.rank == 0:
            _say(message)

    def _where(self) -> str:
        return (
            f"stage {self.stage_index + 1}/{len(self.stages)} {self.stage.name!r} "
            f"epoch {self.epoch + 1}/{self.stage.epochs}"
        )

    def run(self) -> None:
        for stage_index, stage in enumerate(self.stages):
            if stage_index >= self.state.stage_index:
                self.run_stage(stage_index, stage)
        self.finish()

    def run_stage(self, stage_index: int, stage: StageSection) -> None:
        state, net = self.state, self.net
        self.stage_index, self.stage = stage_index, stage
        resuming = stage_index == state.stage_index and state.epoch > 0
        with self.strategy.scope():
            self.trainable_tensors = keras_model.set_trainable(net, stage.trainable)
            keras_model.compile_for_stage(net, stage.optimizer, stage.learning_rate)
            if resuming and self.restored_optimizer:
                keras_model.restore_optimizer_state(net, self.restored_optimizer)
        if resuming and state.learning_rate:
            keras_model.set_learning_rate(net, state.learning_rate)
        self.say(
            f"stage {stage_index + 1}/{len(self.stages)} {stage.name!r}: trainable="
            f"{stage.trainable} ({self.trainable_tensors} trainable tensors), "
            f"{stage.optimizer} lr={keras_model.current_learning_rate(net):.2e}, "
            f"{stage.epochs} epochs"
        )
        self.callbacks = keras_model.stage_callbacks(
            self.job.train.reduce_lr,
            self.job.train.early_stopping,
            state.callbacks if resuming else {},
        )
        net.fit(
            self.train_ds,
            validation_data=self.val_ds,
            epochs=stage.epochs,
            initial_epoch=state.epoch if resuming else 0,
            callbacks=[
                *self.callbacks,
                keras_model.BatchProgress(self.on_progress, self.job.run.progress_seconds),
                keras_model.EpochHooks(self.on_epoch_begin, self.on_epoch_end),
            ],
            verbose=0,
        )

    def on_epoch_begin(self, epoch: int, net: Any) -> None:
        self.epoch, self.epoch_start = epoch, time.monotonic()
        self.epoch_learning_rate = keras_model.current_learning_rate(net)

    def on_progress(self, steps: int, logs: dict[str, float]) -> None:
        rate = (
            steps
            * self.job.train.batch_size
            * self.world_size
            / (time.monotonic() - self.epoch_start)
        )
        self.say(
            f"{self._where()}: step {steps}/{self.steps_per_epoch} "
            f"loss={logs.get('loss', 0.0):.4f} accuracy={logs.get('accuracy', 0.0):.4f} "
            f"({rate:.0f} images/s)"
        )

    def on_epoch_end(self, epoch: int, logs: dict[str, float], net: Any) -> None:
        state, stage = self.state, self.stage
        row = {
            "global_epoch": len(state.history) + 1,
            "stage": stage.name,
            "stage_index": self.stage_index,
            "epoch": epoch + 1,
            "loss": float(logs["loss"]),
            "accuracy": float(logs["accuracy"]),
            "val_loss": float(logs["val_loss"]),
            "val_accuracy": float(logs["val_accuracy"]),
            "learning_rate": self.epoch_learning_rate,  # what this epoch trained with
            "trainable_tensors": self.trainable_tensors,
            "seconds": round(time.monotonic() - self.epoch_start, 3),
        }
        state.history.append(row)
        stage_done = epoch + 1 >= stage.epochs or bool(net.stop_training)
        state.stage_index, state.epoch = (
            (self.stage_index + 1, 0) if stage_done else (self.stage_index, epoch + 1)
        )
        state.learning_rate = keras_model.current_learning_rate(net)  # after ReduceLR
        state.callbacks = keras_model.callback_state(self.callbacks)
        weights = keras_model.get_weights(net)  # collective: every worker calls it
        if _is_better(row, state.best):
            state.best, self.best_weights = row, weights
        metrics = {k: v for k, v in row.items() if k != "seconds"}
        if self.rank != 0:
            ray.train.report(metrics)
            return
        self.say(
            f"{self._where()}: loss={row['loss']:.4f} accuracy={row['accuracy']:.4f} "
            f"val_loss={row['val_loss']:.4f} val_accuracy={row['val_accuracy']:.4f} "
            f"lr={row['learning_rate']:.2e} ({row['seconds']:.1f}s)"
        )
        storage.write_text(self.run_dir.join("history.csv"), _history_csv(state.history))
        with tempfile.TemporaryDirectory() as ckpt_dir:
            _write_checkpoint(
                self.plain,
                weights,
                self.best_weights,
                keras_model.optimizer_state(net),
                state,
                ckpt_dir,
            )
            ray.train.report(
                metrics,
                checkpoint=ray.train.Checkpoint.from_directory(ckpt_dir),
                checkpoint_dir_name=f"checkpoint_epoch_{row['global_epoch']:04d}",
            )

    def finish(self) -> None:
        """Record this replica's weight digest; rank 0 exports the best epoch."""
        # Gradients are all-reduced, so every replica must end with the same weights; each
        # worker records a digest and the driver checks that they agree.
        final_weights = keras_model.get_weights(self.net)
        storage.write_text(
            self.run_dir.join("replicas", f"rank_{self.rank}.sha256"),
            weights_digest(final_weights),
        )
        if self.rank != 0:
            return
        with tempfile.TemporaryDirectory() as export_dir:
            best = self.best_weights if self.best_weights is not None else final_weights
            self.plain.set_weights(best)
            keras_model.export_model(self.plain, os.path.join(export_dir, "model.keras"))
            storage.upload_dir(export_dir, self.run_dir.join("model"))
        best_epoch = self.state.best["global_epoch"] if self.state.best else "-"
        self.say(
            f"exported the best epoch ({best_epoch}) to "
            f"{self.run_dir.join('model', 'model.keras').uri}"
        )


def train_per_worker(loop_config: dict[str, Any]) -> None:
    """Ray Train worker loop: build, (resume,) run every stage, export the best epoch."""
    tf.get_logger().setLevel("ERROR")
    _WorkerRun(JobConfig.model_validate(loop_config["job"]), loop_config).run()


def evaluate_exported(model_uri: str, val: ray.data.Dataset, batch_size: int) -> dict[str, Any]:
    """Accuracy of the saved model on the whole validation set (not sharded, no drops)."""
    with tempfile.TemporaryDirectory() as tmp:
        local = os.path.join(tmp, "model.keras")
        with open(local, "wb") as f:
            f.write(storage.read_bytes(storage.resolve(model_uri)))
        net = keras_model.load_exported(local)
        correct = total = 0
        for batch in val.iter_batches(batch_size=batch_size, batch_format="numpy"):
            probs = keras_model.predict_probabilities(net, batch["image"])
            correct += int((probs.argmax(axis=1) == batch["label"]).sum())
            total += len(batch["label"])
    return {"images": total, "correct": correct, "accuracy": correct / total}


@dataclass
class TrainOutcome:
    run_dir: str
    summary: dict[str, Any]


class RunMismatchError(UserError):
    """A rerun whose classes or network differ from the run it would resume."""


def check_resumable(run_dir: storage.Location, job: JobConfig, classes: list[str]) -> None:
    """Refuse to resume a run trained on other classes or with another network.

    Stages, learning rates and epochs may change between reruns (e.g. to extend training);
    the classes, ``model`` section and image size may not, since the checkpointed weights
    would not fit.
    """
    labels = run_dir.join("labels.json")
    if storage.exists(labels):
        previous = json.loads(storage.read_text(labels))
        previous_classes = [previous[str(i)] for i in range(len(previous))]
        if previous_classes != classes:
            raise RunMismatchError(
                f"run {run_dir.uri!r} was trained on classes {previous_classes}, but "
                f"`data.source` now has {classes}; choose a new `run.name` to start afresh"
            )
    saved = run_dir.join("config.yaml")
    if storage.exists(saved):
        before = yaml.safe_load(storage.read_text(saved))
        now = job.model_dump(mode="json")
        changed = [
            f"`{section}.{key}` ({before.get(section, {}).get(key)!r} -> {now[section][key]!r})"
            for section, keys in (("model", now["model"]), ("data", ["image_size"]))
            for key in keys
            if before.get(section, {}).get(key) != now[section][key]
        ]
        if changed:
            raise RunMismatchError(
                f"run {run_dir.uri!r} cannot resume with a different network: "
                f"{', '.join(changed)}; choose a new `run.name` to start afresh"
            )


def run_training_driver_fn(job: JobConfig, listing: ImageListing | None = None) -> TrainOutcome:
    """Prepare data, train (or resume) on the Ray cluster, export, and summarise.

    Expects ``ray.init`` to have been called. Raises a ``UserError`` (exit 2) for unusable
    input or a run it cannot resume.
    """
    started = time.monotonic()
    storage_root = storage.resolve(job.run.storage_path)
    run_dir = storage_root.join(job.run.name)
    if listing is None:
        listing = list_images(job.data.source, job.data.max_images_per_class)
    check_resumable(run_dir, job, listing.classes)
    prepared: PreparedData = prepare_data(job.data, job.image_size, listing)
    storage.write_text(run_dir.join("config.yaml"), dump_config(job))
    storage.write_text(
        run_dir.join("labels.json"),
        json.dumps({str(i): c for i, c in enumerate(prepared.classes)}, indent=1),
    )
    data_report = prepared.report()
    storage.write_text(run_dir.join("data_report.json"), json.dumps(data_report, indent=1))
    _print_data_summary(prepared)

    resources = {"CPU": job.scaling.cpus_per_worker}
    if job.scaling.use_gpu:
        resources["GPU"] = job.scaling.gpus_per_worker
    trainer = TensorflowTrainer(
        train_per_worker,
        train_loop_config={
            "job": job.model_dump(mode="json"),
            "classes": prepared.classes,
            "run_dir": run_dir.uri,
            "train_images": prepared.counts["train"].used,
        },
        scaling_config=ScalingConfig(
            num_workers=job.scaling.num_workers,
            use_gpu=job.scaling.use_gpu,
            resources_per_worker=resources,
        ),
        run_config=RunConfig(
            name=job.run.name,
            storage_path=storage_root.uri,
            checkpoint_config=CheckpointConfig(num_to_keep=job.run.checkpoints_to_keep),
            failure_config=FailureConfig(max_failures=0),
        ),
        datasets={"train": prepared.train, "val": prepared.val},
    )
    result = trainer.fit()
    history = list(csv.DictReader(io.StringIO(storage.read_text(run_dir.join("history.csv")))))
    exported = evaluate_exported(
        run_dir.join("model", "model.keras").uri, prepared.val, job.train.batch_size
    )
    summary = _summary(job, prepared, history, exported, time.monotonic() - started)
    summary["checkpoint"] = result.checkpoint.path if result.checkpoint else None
    digests = [
        storage.read_text(run_dir.join("replicas", f"rank_{r}.sha256")).strip()
        for r in range(job.scaling.num_workers)
    ]
    summary["replica_weights_identical"] = len(set(digests)) == 1
    if not summary["replica_weights_identical"]:
        _say(f"WARNING: workers ended with different weights: {digests}")
    storage.write_text(run_dir.join("summary.json"), json.dumps(summary, indent=1))
    return TrainOutcome(run_dir=run_dir.uri, summary=summary)


def _summary(
    job: JobConfig,
    prepared: PreparedData,
    history: list[dict[str, str]],
    exported: dict[str, Any],
    wall_seconds: float,
) -> dict[str, Any]:
    rows = [{k: _HISTORY_TYPES[k](v) for k, v in row.items()} for row in history]
    best = _best_row(rows)
    per_stage: dict[str, dict[str, Any]] = {}
    for row in rows:
        stage = per_stage.setdefault(row["stage"], {"epochs": 0})
        stage.update(
            epochs=stage["epochs"] + 1,
            final_val_accuracy=row["val_accuracy"],
            final_val_loss=row["val_loss"],
        )
        stage["best_val_accuracy"] = max(stage.get("best_val_accuracy", 0.0), row["val_accuracy"])
    return {
        "run": job.run.name,
        "backbone": job.model.backbone,
        "weights": job.model.weights,
        "image_size": job.image_size,
        "num_workers": job.scaling.num_workers,
        "classes": prepared.classes,
        "data": prepared.summary(),
        "epochs": len(rows),
        "final": rows[-1],
        "best": best,
        "stages": per_stage,
        "exported_model": {"path": "model/model.keras", **exported},
        "wall_seconds": round(wall_seconds, 1),
    }


def _print_data_summary(prepared: PreparedData) -> None:
    _say(data_summary_line(prepared.summary()))
    for line in set_aside_lines(prepared.quarantined, prepared.duplicates):
        _say(line)


def ensure_ray() -> None:
    """Join the cluster in RAY_ADDRESS (as under ``ray job submit``), else start a local one."""
    if not ray.is_initialized():
        ray.init(address=os.environ.get("RAY_ADDRESS") or None, log_to_driver=True)
