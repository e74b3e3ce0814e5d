"""The Ray Train worker loop: ``train_fn_per_worker`` runs the stages with plain ``model.fit``.

Every worker builds the model under ``MultiWorkerMirroredStrategy`` and runs the same
callbacks in the same order (reading weights is a collective there); only rank 0 writes.
After every epoch all workers call ``ray.train.report`` and rank 0 attaches a checkpoint,
then writes ``history.csv`` from the checkpointed state, so the history on storage never
runs ahead of the newest complete checkpoint. A NaN or infinite loss stops every worker at
the same step; that epoch is not recorded, and rank 0 leaves ``diverged.json`` for the driver.
Rank 0 logs its ``[tljob]`` lines; when the driver shows a live display
(``LoopConfig.progress``), it sends them there instead, with its epoch starts and steps.
Every worker of a (re)started worker group restores the checkpoint its attempt record names
(``tljob.run.attempts``) and continues from there; rank 0 records each epoch it begins.
"""

from __future__ import annotations

import functools
import json
import math
import os
import tempfile
import time
from typing import Any

import numpy as np
import ray
import ray.train
import tensorflow as tf

from tljob import output, storage
from tljob import progress as live
from tljob.config import REPORTED_METRICS, StageSection
from tljob.config.features import cached_stage_indices
from tljob.nn import callbacks as keras_callbacks
from tljob.nn import io as keras_io
from tljob.nn import model as keras_model
from tljob.nn import schedules as keras_schedules
from tljob.nn.labels import LabelFormat
from tljob.run import checkpoint as ckpt_files
from tljob.run import failures, feed, lr_auto, shipped
from tljob.run.attempts import record_epoch_begun
from tljob.run.cached_stage import (
    StageInput,
    WorkerFeatures,
    cached_input_per_worker,
    whole_weights,
)
from tljob.run.failed_run import note_checkpoint
from tljob.run.input_clock import InputWaitCallback
from tljob.run.ledger import EpochRow, history_csv, is_better
from tljob.run.loop import LoopConfig
from tljob.run.restore import restore_attempt
from tljob.run.tensorboard import epoch_summaries
from tljob.run.timings import epoch_timing
from tljob.run.worker_end import finish_per_worker, write_epoch_checkpoint

log = output.logger("run")


class _WorkerRun:
    """One worker's view of a run: the distributed model, its plain copy, the state, and the
    per-epoch bookkeeping."""

    def __init__(self, loop: LoopConfig) -> None:
        context = ray.train.get_context()
        self.rank, self.world_size = context.get_world_rank(), context.get_world_size()
        self.job = job = loop.job
        self.stages = job.train.stages
        self.run_dir = storage.resolve(loop.run_dir)
        self.loop = loop
        shard_rows = loop.train_images // self.world_size
        self.strategy = tf.distribute.MultiWorkerMirroredStrategy()
        self.labels = LabelFormat.for_job(job.augment, len(loop.classes))  # the one switch
        self.shard_rows = shard_rows
        # training batches of batch_size per replica (tljob.run.feed): this worker's steps
        replicas_here = max(1, self.strategy.num_replicas_in_sync // self.world_size)
        self.steps_per_epoch = feed.training_steps(shard_rows, job.train.batch_size, replicas_here)
        # stages on cached features (tljob.config.features): their inputs, read at the first
        self.cached_stages = cached_stage_indices(job)
        self.features: WorkerFeatures | None = None
        self.frozen_weights: list[np.ndarray] | None = None  # tljob.run.cached_stage
        keras_model.set_precision(job.train.precision)  # before any layer is created
        self.local = tempfile.TemporaryDirectory(prefix="tljob-worker-")
        weights_file = None  # the driver's resolved file, shipped through the run directory
        if loop.weights_file is not None:
            weights_file = shipped.fetch(loop.weights_file, loop.weights_sha256, self.local.name)
        with self.strategy.scope():
            self.net = keras_model.build_job_model(job, len(loop.classes), weights_file)
        self.batchnorm_trains = not keras_model.batchnorm_frozen(job.model)  # as built
        self.plain = keras_io.plain_copy(self.net)  # outside the scope: weight files

        start = restore_attempt(self.plain, self.run_dir, job)  # this worker group's start
        self.attempt, self.start, restored = start.attempt, start.plan, start.restored
        self.state, self.best_weights = restored.state, restored.best_weights
        self.restored_optimizer = restored.optimizer
        if restored.weights is not None:
            keras_io.set_weights(self.net, restored.weights)
        # set per stage / epoch by run_stage and the hooks
        self.stage_index, self.stage = 0, self.stages[0]
        self.trainable_tensors = 0
        self.stage_steps = self.steps_per_epoch  # the fitted stage's steps per epoch
        self.fed: StageInput | None = None  # the stage's model and input (while it fits)
        self.schedule: Any = None  # the stage's StageSchedule
        self.callbacks: list[Any] = []
        self.nan_guard = keras_callbacks.StopOnNonFiniteLoss()
        self.clock = keras_callbacks.PhaseClock()
        self.timings: list[dict[str, Any]] = []  # rank 0: timings.json, one entry per epoch
        # rank 0: the best weights' file, written when an epoch becomes the best
        self.best_file = os.path.join(self.local.name, ckpt_files.BEST_WEIGHTS_FILE)
        self.diverged: dict[str, Any] | None = None
        self.epoch, self.epoch_start, self.epoch_learning_rate = 0, time.monotonic(), 0.0
        # rank 0 feeds the driver's live display, when there is one, instead of logging
        self.progress = loop.progress if self.rank == 0 else None
        self.tensorboard = epoch_summaries(job, self.rank, self.run_dir, loop.classes)

    @functools.cached_property
    def input(self) -> feed.WorkerInput:
        """The worker's images, read (or set up to stream) when an image stage first needs
        them: a run whose stages all train on cached features never reads an image."""
        job = self.job
        worker_input = feed.worker_input_per_worker(
            {split: ray.train.get_dataset_shard(split) for split in ("train", "val")},
            self.strategy,
            self.world_size,
            train_rows=self.shard_rows,
            batch_size=job.train.batch_size,
            image_size=job.image_size,
            shuffle=job.data.shuffle_buffer,
            seed=job.data.seed,
            limit_bytes=int(job.scaling.worker_cache_mib * 2**20),
            # the run's global epochs done when a stage's fit starts: the shuffle orders
            first_epoch=lambda: len(self.state.history),
            labels=self.labels,
            train_streamed_because=feed.train_streamed_because(job.augment),
            class_weights=self.loop.class_weights,  # as fit's class_weight would weigh rows
        )
        self.say(worker_input.describe())
        return worker_input

    def say(self, message: str, event: type[live.Line | live.EpochFinished] = live.Line) -> None:
        if self.rank != 0:
            return
        if self.progress is None or not self.progress.send(event(message)):
            log.info(message)

    def _where(self) -> str:
        return (
            f"stage {self.stage_index + 1}/{len(self.stages)} {self.stage.name!r} "
            f"epoch {self.epoch + 1}/{self.stage.epochs}"
        )

    def run(self) -> None:
        if self.loop.weights_file is not None:
            self.say(f"weights: the workers built the backbone from {self.loop.weights_file}")
        if self.attempt.number > 1:
            self.say(
                f"worker group restarted (attempt {self.attempt.number}); {self.start.message}"
            )
        if steps := keras_model.augmentation_steps(self.net):
            self.say(f"augment: in the model, training only: {', '.join(steps)}")
        for stage_index, stage in enumerate(self.stages):
            if stage_index >= self.start.stage_index and self.diverged is None:
                self.run_stage(stage_index, stage)
        self.finish()

    def stage_input(self, stage_index: int) -> StageInput:
        """What the stage fits: the full model on images, or, for a cached stage, the
        model's head on this worker's features (computed or read at the first)."""
        if stage_index not in self.cached_stages:
            return StageInput(self.net, self.input)
        cached = cached_input_per_worker(self, self.stages[stage_index].name)
        self.features = cached.features
        return cached

    def run_stage(self, stage_index: int, stage: StageSection) -> None:
        fed = self.stage_input(stage_index)
        self.fed = fed
        with fed.input.clock.gate.fitting():  # a streamed epoch waiting ends, however
            self._run_stage(stage_index, stage, fed)

    def _run_stage(self, stage_index: int, stage: StageSection, fed: StageInput) -> None:
        state = self.state
        self.stage_index, self.stage = stage_index, stage
        continuing = stage_index == self.start.stage_index and self.start.epoch > 0
        trains = keras_model.batchnorm_trains(self.job.model, stage)
        with self.strategy.scope():
            if trains != self.batchnorm_trains and fed.model is self.net:  # rewired
                self.net = fed.model = keras_model.with_batchnorm(self.net, trains)
                self.batchnorm_trains = trains
            net = fed.model
            self.trainable_tensors = keras_model.set_trainable(self.net, stage.trainable)
            # `learning_rate: auto`: a range test, or its record on resume, gives the number
            self.stage = stage = lr_auto.auto_stage_per_worker(self, stage_index, stage, fed)
            self.schedule = keras_model.compile_stage(
                net,
                stage,
                fed.steps,
                self.job.train.jit_compile,
                self.labels,
                fed.input.steps_per_execution,
            )
            if continuing:
                if self.restored_optimizer:
                    keras_io.restore_optimizer_state(net, self.restored_optimizer)
                # the schedule continues where the stage stopped, at this run's step size
                keras_schedules.start_at_step(net, self.start.epoch * fed.steps)
        if continuing and state.learning_rate and self.schedule.level is not None:
            keras_model.set_learning_rate(net, state.learning_rate)  # the plateau level
        self.stage_steps = fed.steps
        self.say(
            f"stage {stage_index + 1}/{len(self.stages)} {stage.name!r}: trainable="
            f"{stage.trainable} ({self.trainable_tensors} trainable tensors), "
            f"{stage.optimizer} lr={keras_model.current_learning_rate(net):.2e} "
            f"({stage.schedule.kind}), BatchNorm {'training' if trains else 'frozen'}, "
            f"{stage.epochs} epochs{fed.describe()}"
        )
        self.callbacks = keras_callbacks.stage_callbacks(
            self.schedule,
            self.job.train.reduce_lr,
            self.job.train.early_stopping,
            state.callbacks if continuing else {},
        )
        net.fit(
            fed.train,
            validation_data=fed.val,
            validation_steps=fed.input.validation_steps,
            steps_per_epoch=fed.steps,  # the training data is endless (run.feed)
            epochs=stage.epochs,
            initial_epoch=self.start.epoch if continuing else 0,
            callbacks=[
                self.nan_guard,
                self.clock,
                InputWaitCallback(fed.input.clock),  # tljob.run.input_wait
                *self.callbacks,
                keras_callbacks.BatchProgress(
                    self.on_progress,
                    live.STEP_INTERVAL_S if self.progress else self.job.run.progress_seconds,
                ),
                keras_callbacks.EpochHooks(self.on_epoch_begin, self.on_epoch_end),
            ],
            verbose=0,
        )

    def on_epoch_begin(self, epoch: int, net: Any) -> None:
        self.epoch, self.epoch_start = epoch, time.monotonic()
        self.epoch_learning_rate = keras_model.current_learning_rate(net)
        if self.rank == 0:  # how far this attempt got, should a worker die (run.attempts)
            global_epoch = len(self.state.history) + 1
            self.attempt = record_epoch_begun(self.run_dir, self.attempt, global_epoch)
        if self.progress is not None:
            self.progress.send(
                live.EpochStarted(
                    stage=self.stage.name,
                    stage_index=self.stage_index,
                    stages=len(self.stages),
                    epoch=epoch + 1,
                    epochs=self.stage.epochs,
                    steps=self.stage_steps,
                )
            )

    def on_progress(self, steps: int, logs: dict[str, float]) -> None:
        elapsed = time.monotonic() - self.epoch_start
        rate = steps * self.job.train.batch_size * self.world_size / elapsed
        if self.progress is not None:
            self.progress.send(
                live.StepDone(
                    step=steps,
                    loss=float(logs.get("loss", 0.0)),
                    accuracy=float(logs.get("accuracy", 0.0)),
                    images_per_s=rate,
                    elapsed_s=elapsed,
                    input_wait_ratio=self.fed.input.clock.epoch_figures()["input_wait_ratio"],
                )
            )
            return
        self.say(
            f"{self._where()}: step {steps}/{self.stage_steps} "
            f"loss={logs.get('loss', 0.0):.4f} accuracy={logs.get('accuracy', 0.0):.4f} "
            f"({rate:.0f} images/s)"
        )

    def _check_finite(self, logs: dict[str, float], net: Any) -> bool:
        """False (and training stopped, the reason kept) when a metric is NaN or infinite.

        The logs are global figures, identical on every worker, so all decide alike."""
        bad = {k: float(logs.get(k, math.nan)) for k in REPORTED_METRICS}
        bad = {k: v for k, v in bad.items() if not math.isfinite(v)}
        if not bad and self.nan_guard.step is None:
            return True
        net.stop_training = True
        step = self.nan_guard.step
        self.diverged = {
            "stage": self.stage.name,
            "stage_index": self.stage_index,
            "epoch": self.epoch + 1,
            "step": step,
            "loss": self.nan_guard.loss if step is not None else bad.get("loss"),
            "non_finite": sorted(bad) or ["loss"],
            "learning_rate": self.epoch_learning_rate,
        }
        return False

    def on_epoch_end(self, epoch: int, logs: dict[str, float], net: Any) -> None:
        if not self._check_finite(logs, net):
            return  # nothing of this epoch is recorded or saved
        marks = {**self.clock.times, "hooks": time.monotonic()}
        state, stage = self.state, self.stage
        row = EpochRow(
            global_epoch=len(state.history) + 1,
            stage=stage.name,
            stage_index=self.stage_index,
            epoch=epoch + 1,
            loss=float(logs["loss"]),
            accuracy=float(logs["accuracy"]),
            macro_f1=float(logs["macro_f1"]),
            val_loss=float(logs["val_loss"]),
            val_accuracy=float(logs["val_accuracy"]),
            val_macro_f1=float(logs["val_macro_f1"]),
            val_class_recall=tuple(float(v) for v in np.ravel(logs["val_class_recall"])),
            learning_rate=self.epoch_learning_rate,  # what this epoch's first step used
            trainable_tensors=self.trainable_tensors,
            seconds=round(time.monotonic() - self.epoch_start, 3),
        )
        state.history.append(row)
        if net.stop_training and epoch + 1 < stage.epochs:
            state.stopped_early.append(self.stage_index)  # EarlyStopping ended the stage
        # what a resumed stage restores: the plateau level after ReduceLROnPlateau (other
        # schedules follow from the step; their next rate is recorded for the reader)
        level = self.schedule.level
        state.learning_rate = (
            float(level.numpy()) if level is not None else keras_model.current_learning_rate(net)
        )
        state.callbacks = keras_callbacks.callback_state(self.callbacks)
        # the whole model's (a cached stage: its frozen part read once); every worker calls it
        weights = whole_weights(self, net)
        marks["weights_read"] = time.monotonic()
        if is_better(row, state.best, self.job.train.best_metric):
            state.best, self.best_weights = row, weights
        metrics = row.metrics()
        if self.rank != 0:
            ray.train.report(metrics)
            return
        self.say(
            f"{self._where()}: loss={row.loss:.4f} accuracy={row.accuracy:.4f} "
            f"val_loss={row.val_loss:.4f} val_accuracy={row.val_accuracy:.4f} "
            f"val_macro_f1={row.val_macro_f1:.4f} "
            f"lr={row.learning_rate:.2e} ({row.seconds:.1f}s, {self.fed.input.wait_text()})",
            live.EpochFinished,
        )
        with tempfile.TemporaryDirectory() as ckpt_dir:
            self._write_checkpoint(weights, keras_io.optimizer_state(net), ckpt_dir)
            marks["checkpoint_written"] = time.monotonic()
            ray.train.report(
                metrics,
                checkpoint=ray.train.Checkpoint.from_directory(ckpt_dir),
                checkpoint_dir_name=ckpt_files.checkpoint_name(row.global_epoch),
            )
            marks["reported"] = time.monotonic()
        note_checkpoint(self.loop.checkpoint_note, ckpt_files.checkpoint_name(row.global_epoch))
        # report() has uploaded the checkpoint: the history may now include this epoch.
        storage.write_text(self.run_dir.join("history.csv"), history_csv(state.history))
        marks["history_written"] = time.monotonic()
        self.tensorboard.write(row)
        # rank 0 rewrites timings.json: where each epoch of this process went
        self.timings.append(epoch_timing(row.global_epoch, marks, self.fed.input.epoch_figures()))
        storage.write_text(self.run_dir.join("timings.json"), json.dumps(self.timings, indent=1))

    def _write_checkpoint(
        self, weights: list[np.ndarray], optimizer: list[np.ndarray], directory: str
    ) -> None:
        write_epoch_checkpoint(self, weights, optimizer, directory)

    def finish(self) -> None:
        finish_per_worker(self)


def train_fn_per_worker(config: dict[str, Any]) -> None:
    """Ray Train worker loop: build, (resume,) run the remaining stages, export the best.

    ``config`` is ``LoopConfig.to_ray()``: one typed ``LoopConfig``. An exception that ends
    the worker is re-raised after its traceback is saved (``tljob.run.failures``)."""
    output.setup()
    if os.environ.get("TLJOB_QUIET_RAY"):
        output.quiet_ray(verbose=False)
    tf.get_logger().setLevel("ERROR")
    loop = LoopConfig.from_ray(config)
    if loop.storage is not None:
        storage.configure(loop.storage)  # s3:// as the driver resolves it
    try:
        _WorkerRun(loop).run()
    except Exception as e:  # Ray keeps a few lines of it: the whole traceback goes to a file
        rank = ray.train.get_context().get_world_rank()
        failures.save_worker_traceback(storage.resolve(loop.run_dir), rank, e)
        raise
