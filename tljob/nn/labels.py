"""The label format a run trains on, decided once from the job: class indices, or class
probabilities when MixUp / CutMix mix the images (``augment.soft_labels``).

The data contract (``tljob.data``): with soft labels, BOTH splits' ``label`` column is
float32 of shape (N, num_classes), the validation rows exactly one-hot; otherwise int64 of
shape (N,). The format sets the tf.data type spec of the labels (``tljob.run.feed``), the
loss (categorical or sparse categorical cross-entropy, label-smoothed as the stage asks)
and the accuracy metric; ``ClassMetrics`` reads either format.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import tensorflow as tf

from tljob.config import LOSS
from tljob.config.augment import AugmentSection
from tljob.nn.keras import tf_keras
from tljob.nn.metrics import SmoothedSparseCrossentropy

SOFT_LOSS = "categorical_crossentropy"


@dataclass(frozen=True)
class LabelFormat:
    """``soft``: (N, num_classes) float32 class probabilities; otherwise (N,) int64 class
    indices (``num_classes`` then only checks the model, 0 meaning unchecked)."""

    soft: bool = False
    num_classes: int = 0

    def __post_init__(self) -> None:
        if self.soft and self.num_classes < 2:
            raise ValueError(f"soft labels need num_classes >= 2, not {self.num_classes}")

    @classmethod
    def for_job(cls, augment: AugmentSection, num_classes: int) -> LabelFormat:
        """The run's format: soft exactly when MixUp or CutMix is on."""
        return cls(soft=augment.soft_labels, num_classes=num_classes)

    def spec(self) -> tf.TensorSpec:
        """The tf.data type spec of a batch of labels."""
        if self.soft:
            return tf.TensorSpec(shape=(None, self.num_classes), dtype=tf.float32, name="label")
        return tf.TensorSpec(shape=(None,), dtype=tf.int64, name="label")

    def as_array(self, labels: Any) -> np.ndarray:
        """A batch of the ``label`` column in this format's dtype; refuses the other format
        (a shard prepared for another run's labels)."""
        array = np.asarray(labels)
        expected = (self.num_classes,) if self.soft else ()
        if array.shape[1:] != expected:
            raise ValueError(
                f"labels of shape {array.shape} do not fit the run's "
                f"{'soft (N, num_classes)' if self.soft else 'integer (N,)'} label format"
            )
        return array.astype(np.float32 if self.soft else np.int64, copy=False)

    def loss(self, num_classes: int, label_smoothing: float) -> Any:
        """Cross-entropy against these labels, on targets smoothed by ``label_smoothing``
        (``t * (1 - eps) + eps / num_classes``, for soft targets as for one-hot ones)."""
        self._check(num_classes)
        if self.soft:
            return tf_keras.losses.CategoricalCrossentropy(
                label_smoothing=label_smoothing, name=SOFT_LOSS
            )
        if label_smoothing:
            return SmoothedSparseCrossentropy(num_classes, label_smoothing)
        return LOSS

    def accuracy(self) -> tf_keras.metrics.Metric:
        """Top-1 accuracy, reported as ``accuracy``: the argmax of the prediction against the
        label's class (a soft label's largest probability; exact for one-hot rows)."""
        if self.soft:
            return tf_keras.metrics.CategoricalAccuracy(name="accuracy")
        return tf_keras.metrics.SparseCategoricalAccuracy(name="accuracy")

    def _check(self, num_classes: int) -> None:
        if self.num_classes and self.num_classes != num_classes:
            raise ValueError(f"the labels have {self.num_classes} classes, the model {num_classes}")


SPARSE = LabelFormat()
