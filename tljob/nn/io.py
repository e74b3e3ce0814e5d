"""Moving a model's numbers in and out: the plain (non-distributed) copy, weights and
optimizer state as arrays and files, the exported whole model, and predictions from it."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import tensorflow as tf

from tljob.nn import layers as _layers  # noqa: F401  (registers the layers for loading)
from tljob.nn.keras import tf_keras


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
    """Save the whole model (architecture + weights, no optimizer) in Keras v3 format,
    without training-only augmentation layers (``tljob.nn.model.serving_model``)."""
    from tljob.nn.model import serving_model  # lazy: reading a model needs no builders

    serving_model(model).save(str(path))


def load_exported(path: str | Path) -> tf_keras.Model:
    """Load a model saved by ``export_model``; it maps uint8 RGB images to probabilities."""
    return tf_keras.models.load_model(str(path), compile=False)


def predict_probabilities(model: tf_keras.Model, images: np.ndarray) -> np.ndarray:
    """Class probabilities for a uint8 (N, H, W, 3) batch of same-size RGB images."""
    return model.predict_on_batch(tf.constant(images, dtype=tf.uint8))
