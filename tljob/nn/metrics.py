"""The loss and metrics every stage compiles beyond Keras' own: macro-F1 and per-class
recall from one confusion matrix, and the label-smoothed sparse cross-entropy.

``ClassMetrics`` keeps a ``num_classes`` x ``num_classes`` confusion matrix in a metric
variable, which Keras creates sync-on-read with SUM aggregation: under
MultiWorkerMirroredStrategy, reading it for the result sums every replica's counts, so
macro-F1 and recall are figures over the whole validation set, not over one worker's rows.
Counts are unweighted (class weights reweight the loss, not what is counted).
"""

from __future__ import annotations

from typing import Any

import tensorflow as tf

from tljob.nn.keras import tf_keras


def class_indices(y_true: Any, num_classes: int) -> tf.Tensor:
    """The true class of each row, int32 (N,): the index itself for integer labels ((N,) or
    (N, 1)), the most probable class for class probabilities ((N, num_classes), e.g. the
    one-hot validation rows of a MixUp / CutMix run), so both formats count alike."""
    y_true = tf.convert_to_tensor(y_true)
    if y_true.shape.rank == 2 and y_true.shape[-1] == num_classes:
        return tf.argmax(y_true, axis=-1, output_type=tf.int32)
    return tf.reshape(tf.cast(y_true, tf.int32), [-1])


@tf_keras.saving.register_keras_serializable(package="tljob")
class ClassMetrics(tf_keras.metrics.Metric):
    """``{"macro_f1": mean F1 over classes, "class_recall": recall per class}``; a class
    with no true (or no predicted) rows has recall (precision) 0, as in scikit-learn with
    ``zero_division=0`` and ``labels=range(num_classes)``."""

    def __init__(self, num_classes: int, name: str = "class_metrics", **kwargs: Any) -> None:
        super().__init__(name=name, **kwargs)
        self.num_classes = int(num_classes)
        self.confusion = self.add_weight(
            name="confusion",
            shape=(self.num_classes, self.num_classes),
            initializer="zeros",
            dtype=tf.float32,
        )

    def update_state(self, y_true: Any, y_pred: Any, sample_weight: Any = None) -> None:
        labels = class_indices(y_true, self.num_classes)
        predicted = tf.reshape(tf.argmax(y_pred, axis=-1, output_type=tf.int32), [-1])
        self.confusion.assign_add(
            tf.math.confusion_matrix(
                labels, predicted, num_classes=self.num_classes, dtype=tf.float32
            )
        )

    def result(self) -> dict[str, tf.Tensor]:
        counts = tf.convert_to_tensor(self.confusion)  # rows: true class; columns: predicted
        hits = tf.linalg.diag_part(counts)
        recall = tf.math.divide_no_nan(hits, tf.reduce_sum(counts, axis=1))
        precision = tf.math.divide_no_nan(hits, tf.reduce_sum(counts, axis=0))
        f1 = tf.math.divide_no_nan(2.0 * precision * recall, precision + recall)
        return {"macro_f1": tf.reduce_mean(f1), "class_recall": recall}

    def reset_state(self) -> None:
        self.confusion.assign(tf.zeros_like(self.confusion))

    def get_config(self) -> dict[str, Any]:
        return {**super().get_config(), "num_classes": self.num_classes}


@tf_keras.saving.register_keras_serializable(package="tljob")
class SmoothedSparseCrossentropy(tf_keras.losses.Loss):
    """Categorical cross-entropy against label-smoothed one-hot targets made from integer
    labels: targets ``onehot * (1 - eps) + eps / num_classes``. (tf_keras'
    ``SparseCategoricalCrossentropy`` has no ``label_smoothing``; the data keeps its
    integer labels.)"""

    def __init__(
        self,
        num_classes: int,
        label_smoothing: float,
        name: str = "smoothed_sparse_categorical_crossentropy",
        **kwargs: Any,
    ) -> None:
        super().__init__(name=name, **kwargs)
        self.num_classes, self.label_smoothing = int(num_classes), float(label_smoothing)

    def call(self, y_true: Any, y_pred: Any) -> tf.Tensor:
        labels = tf.reshape(tf.cast(y_true, tf.int32), [-1])
        targets = tf.one_hot(labels, self.num_classes, dtype=y_pred.dtype)
        return tf_keras.losses.categorical_crossentropy(
            targets, y_pred, label_smoothing=self.label_smoothing
        )

    def get_config(self) -> dict[str, Any]:
        return {
            **super().get_config(),
            "num_classes": self.num_classes,
            "label_smoothing": self.label_smoothing,
        }
