"""The Keras side of tljob: building, freezing, compiling, saving and loading models.

This is the only module that imports ``tf_keras`` (Keras 2 API, which ``model.fit`` under
``MultiWorkerMirroredStrategy`` needs). The network is three swappable pieces:

    uint8 RGB image, any size
      -> ResizeImages(image_size)         same bilinear kernel as the data pipeline
      -> BackbonePreprocess(mode)         the backbone's own ImageNet input convention
      -> backbone(training=False)         BatchNorm always in inference mode
      -> GlobalAveragePooling -> Dropout -> [Dense relu]* -> Dense softmax (float32)

Importing this module registers the custom layers, so ``load_exported`` (or plain
``tf_keras.models.load_model`` after ``import tljob.model``) can read a saved model.
"""

from __future__ import annotations

import importlib
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import tensorflow as tf
import tf_keras

from tljob.backbones import BackboneSpec, get_backbone, resolve_weights_file
from tljob.config import LOSS, METRICS, EarlyStoppingSection, ModelSection, ReduceLRSection

BACKBONE_LAYER = "backbone"
SCRATCH_BATCHNORM_MOMENTUM = 0.9


@tf_keras.saving.register_keras_serializable(package="tljob")
class ResizeImages(tf_keras.layers.Layer):
    """Bilinear resize (half-pixel centres) to ``size`` x ``size``, rounded to whole pixels.

    Rounding reproduces the uint8 images the data pipeline feeds during training, so a
    client sending images of any size gets exactly the pixels training used.
    """

    def __init__(self, size: int, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.size = int(size)

    def call(self, images: tf.Tensor) -> tf.Tensor:
        x = tf.image.resize(tf.cast(images, tf.float32), (self.size, self.size), "bilinear")
        return tf.clip_by_value(tf.round(x), 0.0, 255.0)

    def compute_output_shape(self, input_shape: Any) -> tuple:
        return (input_shape[0], self.size, self.size, input_shape[-1])

    def get_config(self) -> dict[str, Any]:
        return {**super().get_config(), "size": self.size}


_CAFFE_BGR_MEAN = (103.939, 116.779, 123.68)
_TORCH_MEAN = (0.485, 0.456, 0.406)
_TORCH_STD = (0.229, 0.224, 0.225)


@tf_keras.saving.register_keras_serializable(package="tljob")
class BackbonePreprocess(tf_keras.layers.Layer):
    """ImageNet input conventions on float pixels in [0, 255].

    caffe: RGB->BGR, minus the ImageNet BGR mean; tf: scaled to [-1, 1];
    torch: [0, 1] then per-channel ImageNet mean/std; none: unchanged.
    """

    def __init__(self, mode: str, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        if mode not in ("caffe", "tf", "torch", "none"):
            raise ValueError(f"unknown preprocessing mode {mode!r}")
        self.mode = mode

    def call(self, x: tf.Tensor) -> tf.Tensor:
        if self.mode == "caffe":
            return x[..., ::-1] - tf.constant(_CAFFE_BGR_MEAN, dtype=x.dtype)
        if self.mode == "tf":
            return x / 127.5 - 1.0
        if self.mode == "torch":
            mean = tf.constant(_TORCH_MEAN, dtype=x.dtype)
            std = tf.constant(_TORCH_STD, dtype=x.dtype)
            return (x / 255.0 - mean) / std
        return x

    def get_config(self) -> dict[str, Any]:
        return {**super().get_config(), "mode": self.mode}


def build_backbone(spec: BackboneSpec, image_size: int, weights: str) -> tf_keras.Model:
    """The registered Keras application without its classifier, named ``backbone``."""
    module = importlib.import_module(f"tf_keras.applications.{spec.keras_module}")
    constructor = getattr(module, spec.keras_class)
    backbone = constructor(
        include_top=False,
        weights=resolve_weights_file(spec, weights, image_size),
        input_shape=(image_size, image_size, 3),
    )
    backbone._name = BACKBONE_LAYER  # a stable name lets freezing find it after reloads
    if weights == "none":
        # Keras' ImageNet BatchNorm momentum (0.999 in MobileNetV2) needs thousands of
        # steps before the moving statistics used at validation mean anything; from random
        # weights, runs are short enough that 0.9 is the usable choice.
        for layer in backbone.layers:
            if isinstance(layer, tf_keras.layers.BatchNormalization):
                layer.momentum = SCRATCH_BATCHNORM_MOMENTUM
    return backbone


def batchnorm_frozen(model_cfg: ModelSection) -> bool:
    """Whether BatchNorm runs in inference mode throughout (true for pretrained weights)."""
    return model_cfg.weights != "none"


def build_model(model_cfg: ModelSection, num_classes: int, image_size: int) -> tf_keras.Model:
    """Backbone + head for ``num_classes`` classes; takes uint8 RGB batches of any size."""
    if num_classes < 2:
        raise ValueError(f"num_classes ({num_classes}) must be >= 2")
    spec = get_backbone(model_cfg.backbone)
    backbone = build_backbone(spec, image_size, model_cfg.weights)
    images = tf_keras.Input(shape=(None, None, 3), dtype="uint8", name="image")
    x = ResizeImages(image_size, name="resize")(images)
    x = BackbonePreprocess(spec.preprocessing, name="preprocess")(x)
    # With pretrained weights, training=False keeps BatchNorm in inference mode even after
    # the backbone is unfrozen, so fine-tuning cannot wreck the pretrained statistics.
    # Random weights have no statistics to protect (and in inference mode their activations
    # vanish), so there BatchNorm trains whenever the backbone does.
    x = backbone(x, training=False if batchnorm_frozen(model_cfg) else None)
    x = tf_keras.layers.GlobalAveragePooling2D(name="pool")(x)
    if model_cfg.head.dropout > 0:
        x = tf_keras.layers.Dropout(model_cfg.head.dropout, name="dropout")(x)
    for i, units in enumerate(model_cfg.head.dense_units):
        x = tf_keras.layers.Dense(units, activation="relu", name=f"hidden_{i}")(x)
    probs = tf_keras.layers.Dense(
        num_classes, activation="softmax", dtype="float32", name="classifier"
    )(x)
    return tf_keras.Model(images, probs, name=f"tljob_{spec.name}")


def backbone_of(model: tf_keras.Model) -> tf_keras.Model:
    return model.get_layer(BACKBONE_LAYER)


def set_trainable(model: tf_keras.Model, trainable: str) -> int:
    """Apply a stage's ``trainable`` spec ('head', 'top:N', 'all'); return trainable tensors.

    The head is always trainable. 'top:N' unfreezes the last N layers of the backbone.
    Recompile after calling this: Keras reads trainability at compile time.
    """
    backbone = backbone_of(model)
    if trainable == "head":
        backbone.trainable = False
    elif trainable == "all":
        backbone.trainable = True
        for layer in backbone.layers:
            layer.trainable = True
    elif trainable.startswith("top:"):
        n = int(trainable.split(":", 1)[1])
        backbone.trainable = True
        layers = backbone.layers
        for i, layer in enumerate(layers):
            layer.trainable = i >= len(layers) - n
    else:
        raise ValueError(f"unknown trainable spec {trainable!r}")
    return len(model.trainable_weights)


_OPTIMIZERS: dict[str, Callable[[float], Any]] = {
    "adam": lambda lr: tf_keras.optimizers.Adam(learning_rate=lr),
    "sgd": lambda lr: tf_keras.optimizers.SGD(learning_rate=lr, momentum=0.9),
    "rmsprop": lambda lr: tf_keras.optimizers.RMSprop(learning_rate=lr),
}


def compile_for_stage(model: tf_keras.Model, optimizer: str, learning_rate: float) -> None:
    """Compile with a fresh optimizer; call inside the distribution strategy's scope.

    Loss and metrics come from ``tljob.config`` (``LOSS``, ``METRICS``), which also derives
    ``REPORTED_METRICS``, the names callbacks may monitor.
    """
    model.compile(optimizer=_OPTIMIZERS[optimizer](learning_rate), loss=LOSS, metrics=list(METRICS))
    # Under MultiWorkerMirroredStrategy the metrics are already global; Keras' default
    # ("auto" = sum over replicas) would show per-batch figures num_workers times too big.
    model.distribute_reduction_method = "first"


def current_learning_rate(model: tf_keras.Model) -> float:
    return float(tf_keras.backend.get_value(model.optimizer.learning_rate))


def set_learning_rate(model: tf_keras.Model, value: float) -> None:
    tf_keras.backend.set_value(model.optimizer.learning_rate, value)


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
    STATE_KEYS = ("wait", "best", "cooldown_counter")


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
    reduce_lr: ReduceLRSection,
    early_stopping: EarlyStoppingSection,
    state: dict[str, dict[str, Any]],
) -> list[Any]:
    """BatchNorm sync, ReduceLROnPlateau and EarlyStopping for one stage, the latter two
    resumed from ``state`` when given."""
    callbacks: list[Any] = [SyncBatchNormStatistics()]
    if reduce_lr.enabled:
        callbacks.append(
            ResumableReduceLROnPlateau(
                monitor=reduce_lr.monitor,
                factor=reduce_lr.factor,
                patience=reduce_lr.patience,
                min_lr=reduce_lr.min_lr,
                initial_state=state.get("reduce_lr"),
            )
        )
    if early_stopping.enabled:
        callbacks.append(
            ResumableEarlyStopping(
                monitor=early_stopping.monitor,
                patience=early_stopping.patience,
                initial_state=state.get("early_stopping"),
            )
        )
    return callbacks


def callback_state(callbacks: list[Any]) -> dict[str, dict[str, float]]:
    """Snapshot of the resumable callbacks' counters, keyed as ``stage_callbacks`` expects."""
    names = {ResumableReduceLROnPlateau: "reduce_lr", ResumableEarlyStopping: "early_stopping"}
    return {names[type(cb)]: cb.state() for cb in callbacks if type(cb) in names}


def plain_copy(model: tf_keras.Model) -> tf_keras.Model:
    """A non-distributed model of the same architecture (call outside any strategy scope).

    Weight files are read and written through this copy: ``.weights.h5`` loading cannot
    assign to the sync-on-read variables ``MultiWorkerMirroredStrategy`` creates, while
    ``set_weights`` with plain arrays can.
    """
    return tf_keras.models.clone_model(model)


def get_weights(model: tf_keras.Model) -> list[np.ndarray]:
    """All weights as arrays. Under MultiWorkerMirroredStrategy every worker must call this
    together: reading sync-on-read variables (BatchNorm statistics) is a collective."""
    return model.get_weights()


def set_weights(model: tf_keras.Model, weights: list[np.ndarray]) -> None:
    model.set_weights(weights)


def save_weights(plain: tf_keras.Model, weights: list[np.ndarray], path: str | Path) -> None:
    """Write ``weights`` to a ``.weights.h5`` file through the plain copy ``plain``."""
    plain.set_weights(weights)
    plain.save_weights(str(path))


def load_weights(plain: tf_keras.Model, path: str | Path) -> list[np.ndarray]:
    """Read a ``.weights.h5`` file through the plain copy ``plain``; return the arrays."""
    plain.load_weights(str(path))
    return plain.get_weights()


def optimizer_state(model: tf_keras.Model) -> list[np.ndarray]:
    """The optimizer's variables (step count, moments) as arrays, in creation order."""
    return [np.asarray(v.numpy()) for v in model.optimizer.variables]


def restore_optimizer_state(model: tf_keras.Model, arrays: list[np.ndarray]) -> bool:
    """Build the optimizer for the current trainable variables and load ``arrays`` into it.

    Call inside the strategy scope after ``compile_for_stage``. Returns False (leaving a
    fresh optimizer) when the saved state does not fit, e.g. after changing the stages.
    """
    model.optimizer.build(model.trainable_variables)
    variables = model.optimizer.variables
    if len(variables) != len(arrays) or any(
        tuple(v.shape) != a.shape for v, a in zip(variables, arrays, strict=True)
    ):
        return False
    for v, a in zip(variables, arrays, strict=True):
        v.assign(a)
    return True


def export_model(model: tf_keras.Model, path: str | Path) -> None:
    """Save the whole model (architecture + weights, no optimizer) in Keras v3 format."""
    model.save(str(path))


def load_exported(path: str | Path) -> tf_keras.Model:
    """Load a model saved by ``export_model``; it maps uint8 RGB images to probabilities."""
    return tf_keras.models.load_model(str(path), compile=False)


def predict_probabilities(model: tf_keras.Model, images: np.ndarray) -> np.ndarray:
    """Class probabilities for a uint8 (N, H, W, 3) batch of same-size RGB images."""
    return model.predict_on_batch(tf.constant(images, dtype=tf.uint8))
