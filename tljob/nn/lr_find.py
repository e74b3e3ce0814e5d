"""The learning-rate range test on a Keras model (``learning_rate: auto``): ``range_test``
trains a bounded number of steps at exponentially rising rates, records each step's loss,
and puts every weight back. The rates, the smoothing, the stop and the rule are
``tljob.run.lr_curve``'s.

Under ``MultiWorkerMirroredStrategy`` every worker calls it alike: the logs are global
figures, so all stop at the same step.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Sequence
from typing import Any

import tensorflow as tf

from tljob.config import StageSection
from tljob.config.train import ScheduleSection
from tljob.nn import io as keras_io
from tljob.nn import model as keras_model
from tljob.nn.keras import tf_keras
from tljob.nn.labels import SPARSE, LabelFormat
from tljob.run import lr_curve


class _RisingRate(tf_keras.callbacks.Callback):
    """Sets each step's rate on the plateau level and records the step's own loss (Keras
    logs the epoch's running mean: step ``i``'s loss is ``(i + 1) m_i - i m_(i-1)``)."""

    def __init__(self, level: tf.Variable, rates: list[float], can_stop: bool) -> None:
        super().__init__()
        self.level, self.rates, self.can_stop = level, rates, can_stop
        self.losses: list[float] = []
        self.mean = 0.0
        self.done = False

    def on_train_batch_begin(self, batch: int, logs: Any = None) -> None:
        # After the stop, a stream that must be read to its end trains at rate 0 (Keras
        # also begins one step past the end of a dataset of unknown length, then stops).
        stopped = self.done or batch >= len(self.rates)
        self.level.assign(0.0 if stopped else self.rates[batch])

    def on_train_batch_end(self, batch: int, logs: Any = None) -> None:
        mean = float((logs or {})["loss"])
        loss, self.mean = (batch + 1) * mean - batch * self.mean, mean
        if self.done:
            return
        self.losses.append(loss)
        if lr_curve.diverged(lr_curve.smooth(self.losses)):
            self.done = True
            if self.can_stop:
                self.model.stop_training = True


def range_test(
    model: tf_keras.Model,
    stage: StageSection,
    train: tf.data.Dataset,
    steps: int,
    endless: bool,
    strategy: tf.distribute.Strategy | None = None,
    labels: LabelFormat = SPARSE,
    jit_compile: bool = False,
    class_weight: dict[int, float] | None = None,
    callbacks: Sequence[Any] = (),
) -> lr_curve.RangeTest:
    """Train ``steps`` steps of ``train`` at ``lr_curve.rates(steps)`` with the stage's
    optimizer, loss and trainable layers, then restore every weight (trainable or not,
    BatchNorm statistics included) bit for bit, and return the curve with the rule's pick.

    ``endless``: ``train`` never ends (pass ``steps_per_epoch``); otherwise it is one epoch
    and is read to its end (a Ray Data stream must be), training only its first ``steps``
    batches. The model is left compiled for the test with an optimizer of its own: compile
    it for the stage afterwards (tljob compiles every stage afresh); the optimizer it had
    before is not stepped. ``callbacks``: more for the test's ``fit`` (a worker's input
    clock, which opens a streamed epoch)."""
    began = time.monotonic()
    saved = keras_io.get_weights(model)  # collective under the strategy
    test_stage = stage.model_copy(
        update={"learning_rate": lr_curve.START, "schedule": ScheduleSection(kind="plateau")}
    )
    with strategy.scope() if strategy is not None else contextlib.nullcontext():
        schedule = keras_model.compile_stage(model, test_stage, steps, jit_compile, labels)
    rising = _RisingRate(schedule.level, lr_curve.rates(steps), can_stop=endless)
    data = train
    if not endless:  # the first `steps` batches trained, the rest read and dropped
        data = train.enumerate().filter(lambda i, _: i < steps).map(lambda _, batch: batch)
    model.fit(
        data,
        steps_per_epoch=steps if endless else None,
        epochs=1,
        class_weight=class_weight,
        callbacks=[*callbacks, rising],
        verbose=0,
    )
    keras_io.set_weights(model, saved)
    _, record = lr_curve.pick_rate(lr_curve.rates(steps), rising.losses)
    record.seconds = round(time.monotonic() - began, 3)
    return record
