"""The Keras callbacks of a stage: resumable ReduceLROnPlateau / EarlyStopping, BatchNorm
statistics sync, the NaN stop, per-epoch hooks and timed progress."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import numpy as np

from tljob.config import EarlyStoppingSection, ReduceLRSection, higher_is_better
from tljob.nn.keras import tf_keras
from tljob.nn.schedules import StageSchedule


class _Resumable:
    """Lets a Keras callback continue from a saved state instead of resetting in
    ``on_train_begin`` (which Keras calls at the start of every ``fit``)."""

    STATE_KEYS: tuple[str, ...] = ()

    def __init__(self, *args: Any, initial_state: dict[str, Any] | None = None, **kw: Any):
        super().__init__(*args, **kw)
        self._initial_state = initial_state or {}

    def on_train_begin(self, logs: Any = None) -> None:
        super().on_train_begin(logs)
        for key, value in self._initial_state.items():
            setattr(self, key, value)

    def state(self) -> dict[str, Any]:
        return {k: float(getattr(self, k)) for k in self.STATE_KEYS}


class ResumableReduceLROnPlateau(_Resumable, tf_keras.callbacks.ReduceLROnPlateau):
    """Keras' ReduceLROnPlateau, moving the level of a 'plateau' ``StageSchedule`` (the
    optimizer's rate is a schedule, so it cannot be set directly; warmup scales the level).
    The mode follows the metric: higher is better for all but losses."""

    STATE_KEYS = ("wait", "best", "cooldown_counter")

    def __init__(
        self,
        schedule: StageSchedule,
        settings: ReduceLRSection,
        initial_state: dict[str, Any] | None = None,
    ) -> None:
        super().__init__(
            monitor=settings.monitor,
            factor=settings.factor,
            patience=settings.patience,
            min_lr=settings.min_lr,
            mode="max" if higher_is_better(settings.monitor) else "min",
            initial_state=initial_state,
        )
        if schedule.level is None:
            raise ValueError(f"a {schedule.kind!r} schedule has no plateau level")
        self.level = schedule.level

    def on_epoch_end(self, epoch: int, logs: dict[str, float] | None = None) -> None:
        current = (logs or {}).get(self.monitor)
        if current is None:
            return
        if self.in_cooldown():
            self.cooldown_counter -= 1
            self.wait = 0
        if self.monitor_op(current, self.best):
            self.best, self.wait = current, 0
        elif not self.in_cooldown():
            self.wait += 1
            if self.wait >= self.patience:
                old = float(self.level.numpy())
                if old > np.float32(self.min_lr):
                    self.level.assign(max(old * self.factor, self.min_lr))
                    self.cooldown_counter, self.wait = self.cooldown, 0


class ResumableEarlyStopping(_Resumable, tf_keras.callbacks.EarlyStopping):
    STATE_KEYS = ("wait", "best")


class EpochHooks(tf_keras.callbacks.Callback):
    """Calls ``begin(epoch, model)`` and ``end(epoch, logs, model)`` around every epoch.

    Put it last in the callback list so ``end`` sees the LR and stop decisions that
    ReduceLROnPlateau / EarlyStopping made for that epoch.
    """

    def __init__(
        self,
        begin: Callable[[int, tf_keras.Model], None],
        end: Callable[[int, dict[str, float], tf_keras.Model], None],
    ) -> None:
        super().__init__()
        self._begin, self._end = begin, end

    def on_epoch_begin(self, epoch: int, logs: dict[str, float] | None = None) -> None:
        self._begin(epoch, self.model)

    def on_epoch_end(self, epoch: int, logs: dict[str, float] | None = None) -> None:
        self._end(epoch, dict(logs or {}), self.model)


class BatchProgress(tf_keras.callbacks.Callback):
    """Calls ``report(steps_done, logs)`` during training, at most every ``interval_s``
    seconds, so long epochs show progress between the per-epoch lines."""

    def __init__(self, report: Callable[[int, dict[str, float]], None], interval_s: float):
        super().__init__()
        self._report, self._interval_s = report, interval_s
        self._last = time.monotonic()

    def on_epoch_begin(self, epoch: int, logs: dict[str, float] | None = None) -> None:
        self._last = time.monotonic()

    def on_train_batch_end(self, batch: int, logs: dict[str, float] | None = None) -> None:
        now = time.monotonic()
        if now - self._last >= self._interval_s:
            self._last = now
            self._report(batch + 1, dict(logs or {}))


class StopOnNonFiniteLoss(tf_keras.callbacks.Callback):
    """Stop training at the first batch whose loss is NaN or infinite (like Keras'
    ``TerminateOnNaN``), and remember where. The batch loss is the global figure, the same
    on every worker, so all workers stop at the same step."""

    def __init__(self) -> None:
        super().__init__()
        self.step: int | None = None
        self.loss: float | None = None

    def on_train_batch_end(self, batch: int, logs: dict[str, float] | None = None) -> None:
        loss = float((logs or {}).get("loss", 0.0))
        if self.step is None and not np.isfinite(loss):
            self.step, self.loss = batch + 1, loss
            self.model.stop_training = True


class SyncBatchNormStatistics(tf_keras.callbacks.Callback):
    """Before every evaluation, give all replicas the mean of their BatchNorm statistics.

    When BatchNorm trains (random-init backbones), each replica updates its own moving
    mean/variance from its own batches; without this, every worker would validate with
    different statistics and the saved model (which gets the mean) would not be the model
    that was validated. Reading the sync-on-read statistics here is a collective, which is
    safe because every worker runs the same callbacks at the same point.
    """

    def on_test_begin(self, logs: dict[str, float] | None = None) -> None:
        for layer in self.model.submodules:
            if isinstance(layer, tf_keras.layers.BatchNormalization):
                for variable in (layer.moving_mean, layer.moving_variance):
                    variable.assign(variable.read_value())


def stage_callbacks(
    schedule: StageSchedule,
    reduce_lr: ReduceLRSection,
    early_stopping: EarlyStoppingSection,
    state: dict[str, dict[str, Any]],
) -> list[Any]:
    """BatchNorm sync, ReduceLROnPlateau (for a 'plateau' schedule) and EarlyStopping for
    one stage, the latter two resumed from ``state`` when given."""
    callbacks: list[Any] = [SyncBatchNormStatistics()]
    if reduce_lr.enabled and schedule.kind == "plateau":
        callbacks.append(
            ResumableReduceLROnPlateau(schedule, reduce_lr, initial_state=state.get("reduce_lr"))
        )
    if early_stopping.enabled:
        callbacks.append(
            ResumableEarlyStopping(
                monitor=early_stopping.monitor,
                patience=early_stopping.patience,
                mode="max" if higher_is_better(early_stopping.monitor) else "min",
                initial_state=state.get("early_stopping"),
            )
        )
    return callbacks


def callback_state(callbacks: list[Any]) -> dict[str, dict[str, float]]:
    """Snapshot of the resumable callbacks' counters, keyed as ``stage_callbacks`` expects."""
    names = {ResumableReduceLROnPlateau: "reduce_lr", ResumableEarlyStopping: "early_stopping"}
    return {names[type(cb)]: cb.state() for cb in callbacks if type(cb) in names}


class PhaseClock(tf_keras.callbacks.Callback):
    """Monotonic times of an epoch's phases: ``times["epoch"]`` at its start, ``"val"`` when
    validation starts and ``"val_end"`` when it ends. Cheap (three clock reads per epoch),
    so it always runs; the worker turns them into the epoch's timings."""

    def __init__(self) -> None:
        super().__init__()
        self.times: dict[str, float] = {}

    def on_epoch_begin(self, epoch: int, logs: dict[str, float] | None = None) -> None:
        self.times = {"epoch": time.monotonic()}

    def on_test_begin(self, logs: dict[str, float] | None = None) -> None:
        self.times["val"] = time.monotonic()

    def on_test_end(self, logs: dict[str, float] | None = None) -> None:
        self.times["val_end"] = time.monotonic()
