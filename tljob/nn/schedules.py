"""A stage's optimizer and its learning rate as a function of the optimizer step.

Every stage compiles a fresh optimizer whose learning rate is a ``StageSchedule`` of the
optimizer's own step counter (``iterations``, 0 at the stage's first update), so the rate
at any step follows from the step alone: a resumed stage that sets ``iterations`` to the
steps already done continues the curve exactly. With ``s`` the step, ``n`` the steps per
epoch, ``T = epochs * n`` the stage's steps, ``W`` the warmup steps and ``r`` the rate:

    constant  r
    step      r * step_factor ** floor(s / (step_epochs * n))
    cosine    r * (f + (1 - f) * (1 + cos(pi * min(1, max(0, s - W) / (T - W)))) / 2)
    plateau   the level ReduceLROnPlateau sets (``level``, starting at r)

then, with warmup, times ``min(1, (s + 1) / W)``. The plateau level is the schedule's one
piece of state; a checkpoint keeps it (``TrainState.learning_rate``).
"""

from __future__ import annotations

import math
from typing import Any

import tensorflow as tf

from tljob.config import StageSection
from tljob.config.train import stage_momentum
from tljob.nn.keras import tf_keras


@tf_keras.saving.register_keras_serializable(package="tljob")
class StageSchedule(tf_keras.optimizers.schedules.LearningRateSchedule):
    """The learning rate of one stage at optimizer step ``s`` (see the module docstring)."""

    def __init__(
        self,
        kind: str,
        learning_rate: float,
        steps_per_epoch: int,
        epochs: int,
        warmup_steps: int = 0,
        step_epochs: int = 1,
        step_factor: float = 0.1,
        final_fraction: float = 0.0,
    ) -> None:
        if steps_per_epoch < 1:
            raise ValueError(f"steps_per_epoch ({steps_per_epoch}) must be >= 1")
        self.kind, self.learning_rate = kind, float(learning_rate)
        self.steps_per_epoch, self.epochs = int(steps_per_epoch), int(epochs)
        self.warmup_steps = int(warmup_steps)
        self.step_epochs, self.step_factor = int(step_epochs), float(step_factor)
        self.final_fraction = float(final_fraction)
        # Created in the strategy's scope (compile_stage is called there): a mirrored
        # variable that callbacks assign on every worker alike.
        self.level = (
            tf.Variable(self.learning_rate, trainable=False, dtype=tf.float32, name="lr_level")
            if kind == "plateau"
            else None
        )

    @classmethod
    def for_stage(cls, stage: StageSection, steps_per_epoch: int) -> StageSchedule:
        if isinstance(stage.learning_rate, str):  # 'auto': tljob.run.lr_auto gives the number
            raise ValueError(f"stage {stage.name!r}: learning rate {stage.learning_rate!r} not set")
        sched = stage.schedule
        warmup = sched.warmup_steps or sched.warmup_epochs * steps_per_epoch
        return cls(
            sched.kind,
            stage.learning_rate,
            steps_per_epoch,
            stage.epochs,
            warmup_steps=warmup,
            step_epochs=sched.step_epochs,
            step_factor=sched.step_factor,
            final_fraction=sched.final_fraction,
        )

    def __call__(self, step: Any) -> tf.Tensor:
        s = tf.cast(step, tf.float32)
        base = tf.constant(self.learning_rate, tf.float32)
        if self.kind == "constant":
            rate = base
        elif self.kind == "plateau":
            rate = tf.identity(self.level)
        elif self.kind == "step":
            drops = tf.floor(s / float(self.step_epochs * self.steps_per_epoch))
            rate = base * tf.pow(tf.constant(self.step_factor, tf.float32), drops)
        elif self.kind == "cosine":
            span = float(max(1, self.epochs * self.steps_per_epoch - self.warmup_steps))
            progress = tf.clip_by_value((s - float(self.warmup_steps)) / span, 0.0, 1.0)
            f = self.final_fraction
            rate = base * (f + (1.0 - f) * 0.5 * (1.0 + tf.cos(math.pi * progress)))
        else:
            raise ValueError(f"unknown schedule kind {self.kind!r}")
        if self.warmup_steps:
            rate = rate * tf.minimum(1.0, (s + 1.0) / float(self.warmup_steps))
        return rate

    def get_config(self) -> dict[str, Any]:
        return {
            "kind": self.kind,
            "learning_rate": self.learning_rate,
            "steps_per_epoch": self.steps_per_epoch,
            "epochs": self.epochs,
            "warmup_steps": self.warmup_steps,
            "step_epochs": self.step_epochs,
            "step_factor": self.step_factor,
            "final_fraction": self.final_fraction,
        }


def make_optimizer(stage: StageSection, schedule: StageSchedule) -> Any:
    """The stage's optimizer (Adam, AdamW, SGD or RMSprop) driven by ``schedule``."""
    momentum = stage_momentum(stage.optimizer, stage.momentum)
    optimizers = tf_keras.optimizers
    if stage.optimizer == "adam":
        return optimizers.Adam(learning_rate=schedule)
    if stage.optimizer == "adamw":
        return optimizers.AdamW(learning_rate=schedule, weight_decay=stage.weight_decay)
    if stage.optimizer == "sgd":
        return optimizers.SGD(learning_rate=schedule, momentum=momentum)
    if stage.optimizer == "rmsprop":
        return optimizers.RMSprop(learning_rate=schedule, momentum=momentum)
    raise ValueError(f"unknown optimizer {stage.optimizer!r}")


def inner_optimizer(model: tf_keras.Model) -> Any:
    """The model's optimizer, unwrapped from mixed_float16's loss scaling."""
    return getattr(model.optimizer, "inner_optimizer", model.optimizer)


def schedule_of(model: tf_keras.Model) -> StageSchedule:
    return inner_optimizer(model)._learning_rate


def current_learning_rate(model: tf_keras.Model) -> float:
    """The rate the next optimizer step uses."""
    optimizer = inner_optimizer(model)
    return float(schedule_of(model)(optimizer.iterations))


def start_at_step(model: tf_keras.Model, step: int) -> None:
    """Continue the stage's schedule (and Adam's bias correction) from ``step``: where a
    resumed stage left off. Call in the strategy's scope, after any optimizer restore."""
    optimizer = inner_optimizer(model)
    optimizer.build(model.trainable_variables)
    optimizer.iterations.assign(step)
