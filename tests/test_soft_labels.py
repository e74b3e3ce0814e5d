"""Soft labels (MixUp / CutMix): the loss, the metrics and the class weights on (N, C)
float32 class probabilities, against hand-computed values and against the same rows given
as class indices; and a model built for soft labels training from a tf.data stream.

The loss and metric checks use a one-Dense softmax model with fixed weights, so the
predictions are known exactly; ``compile_stage`` compiles it as it compiles a backbone.
"""

from __future__ import annotations

import numpy as np
import pytest
import tensorflow as tf
import tf_keras

from tljob.config import StageSection, Trainable, load_config
from tljob.nn import model as nn_model
from tljob.nn.labels import SPARSE, LabelFormat

CLASSES = 3
SOFT = LabelFormat(soft=True, num_classes=CLASSES)
# six rows; the predictions' argmax is [0, 1, 2, 0, 1, 1]
FEATURES = np.array(
    [[2, 0, 0], [0, 1, 0], [0, 0, 3], [1, 0.5, 0], [0.2, 0.9, 0.1], [0, 2, 1.5]],
    dtype=np.float32,
)
CLASS_INDICES = np.array([0, 1, 2, 1, 1, 0])  # rows 3 and 5 are wrong
SOFT_ROWS = np.array(  # mixed rows whose largest share is CLASS_INDICES
    [[1, 0, 0], [0.3, 0.7, 0], [0, 0.4, 0.6], [0, 1, 0], [0.2, 0.5, 0.3], [0.55, 0, 0.45]],
    dtype=np.float32,
)


def softmax(x: np.ndarray) -> np.ndarray:
    e = np.exp(x - x.max(axis=1, keepdims=True))
    return e / e.sum(axis=1, keepdims=True)


def probe(labels: LabelFormat, label_smoothing: float = 0.0) -> tf_keras.Model:
    """softmax(features): a Dense layer with identity kernel and zero bias, compiled."""
    inputs = tf_keras.Input((CLASSES,))
    outputs = tf_keras.layers.Dense(CLASSES, activation="softmax")(inputs)
    net = tf_keras.Model(inputs, outputs)
    net.set_weights([np.eye(CLASSES, dtype=np.float32), np.zeros(CLASSES, np.float32)])
    stage = StageSection(
        name="s", epochs=1, learning_rate=0.1, optimizer="sgd", label_smoothing=label_smoothing
    )
    nn_model.compile_stage(net, stage, steps_per_epoch=1, labels=labels)
    return net


def evaluate(net: tf_keras.Model, labels: np.ndarray) -> dict[str, np.ndarray]:
    return net.evaluate(FEATURES, labels, batch_size=len(FEATURES), verbose=0, return_dict=True)


@pytest.mark.parametrize("eps", [0.0, 0.1])
def test_soft_label_loss_is_the_categorical_cross_entropy_on_smoothed_targets(eps):
    probs = softmax(FEATURES.astype(np.float64))
    targets = SOFT_ROWS * (1 - eps) + eps / CLASSES
    expected = float(np.mean(-(targets * np.log(probs)).sum(axis=1)))
    assert evaluate(probe(SOFT, eps), SOFT_ROWS)["loss"] == pytest.approx(expected, abs=1e-6)


@pytest.mark.parametrize("eps", [0.0, 0.1])
def test_one_hot_labels_give_the_sparse_labels_loss_and_metrics(eps):
    one_hot = np.eye(CLASSES, dtype=np.float32)[CLASS_INDICES]
    soft = evaluate(probe(SOFT, eps), one_hot)
    sparse = evaluate(probe(SPARSE, eps), CLASS_INDICES)
    assert sorted(soft) == sorted(sparse) == ["accuracy", "class_recall", "loss", "macro_f1"]
    # 4 of 6 right (row 3, class 1, predicted 0; row 5, class 0, predicted 1): recall
    # class 0 1/2, class 1 2/3, class 2 1/1
    assert soft["accuracy"] == pytest.approx(4 / 6) and sparse["accuracy"] == pytest.approx(4 / 6)
    np.testing.assert_allclose(soft["class_recall"], [1 / 2, 2 / 3, 1.0], rtol=1e-6)
    np.testing.assert_allclose(sparse["class_recall"], soft["class_recall"], rtol=1e-6)
    # precision: class 0 1/2, class 1 2/3, class 2 1 -> F1 1/2, 2/3, 1
    assert soft["macro_f1"] == pytest.approx((1 / 2 + 2 / 3 + 1) / 3, abs=1e-6)
    assert sparse["macro_f1"] == pytest.approx(soft["macro_f1"], abs=1e-6)
    assert soft["loss"] == pytest.approx(sparse["loss"], abs=1e-6)


def test_soft_label_accuracy_and_class_metrics_take_the_largest_share():
    soft = evaluate(probe(SOFT), SOFT_ROWS)
    sparse = evaluate(probe(SPARSE), CLASS_INDICES)
    for name in ("accuracy", "macro_f1"):
        assert soft[name] == pytest.approx(sparse[name], abs=1e-6)
    np.testing.assert_allclose(soft["class_recall"], sparse["class_recall"], rtol=1e-6)


def test_class_weights_weight_soft_rows_by_their_largest_share():
    weights = {0: 1.0, 1: 2.0, 2: 5.0}
    net = probe(SOFT)
    history = net.fit(
        FEATURES,
        SOFT_ROWS,
        batch_size=len(FEATURES),
        epochs=1,
        class_weight=weights,
        shuffle=False,
        verbose=0,
    )
    per_row = -(SOFT_ROWS * np.log(softmax(FEATURES.astype(np.float64)))).sum(axis=1)
    row_weights = np.array([weights[c] for c in CLASS_INDICES])  # by argmax: 1 2 5 2 2 1
    expected = float((row_weights * per_row).sum() / len(per_row))  # Keras: sum / batch size
    assert history.history["loss"][0] == pytest.approx(expected, abs=1e-5)
    unweighted = float(per_row.mean())
    assert abs(expected - unweighted) > 0.1  # the weights do change the figure


def test_label_format_checks_the_column_it_reads():
    assert SOFT.as_array(SOFT_ROWS.astype(np.float64)).dtype == np.float32
    assert SPARSE.as_array(CLASS_INDICES.astype(np.int32)).dtype == np.int64
    with pytest.raises(ValueError, match=r"labels of shape \(6,\) do not fit the run's soft"):
        SOFT.as_array(CLASS_INDICES)
    with pytest.raises(ValueError, match="integer"):
        SPARSE.as_array(SOFT_ROWS)
    assert SOFT.spec() == tf.TensorSpec((None, CLASSES), tf.float32, name="label")
    assert SPARSE.spec() == tf.TensorSpec((None,), tf.int64, name="label")
    job = load_config(None, ["data.source=x", "augment.mixup_alpha=0.2"])
    assert LabelFormat.for_job(job.augment, 4) == LabelFormat(soft=True, num_classes=4)
    plain = load_config(None, ["data.source=x"])
    assert LabelFormat.for_job(plain.augment, 4) == LabelFormat(soft=False, num_classes=4)


def test_a_model_built_for_soft_labels_fits_a_step_from_a_tf_data_stream():
    job = load_config(
        None,
        [
            "data.source=x",
            "model.backbone=mobilenet_v2",
            "model.weights=none",
            "data.image_size=32",
            "augment.cutmix_alpha=1.0",
        ],
    )
    labels = LabelFormat.for_job(job.augment, CLASSES)
    net = nn_model.build_job_model(job, CLASSES)
    nn_model.set_trainable(net, Trainable.parse("all"))
    stage = StageSection(name="s", epochs=1, learning_rate=1e-3, label_smoothing=0.1)
    nn_model.compile_stage(net, stage, steps_per_epoch=1, labels=labels)
    net.run_eagerly = True  # graph tracing is the slow part; the same step otherwise
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (4, 32, 32, 3), dtype=np.uint8)
    stream = tf.data.Dataset.from_tensor_slices((images, SOFT_ROWS[:4])).batch(4)
    assert stream.element_spec[1] == tf.TensorSpec((None, CLASSES), tf.float32)
    before = [w.copy() for w in net.get_weights()]
    history = net.fit(stream, epochs=1, verbose=0)
    assert np.isfinite(history.history["loss"][0])
    assert set(history.history) == {"loss", "accuracy", "macro_f1", "class_recall"}
    changed = [not np.array_equal(a, b) for a, b in zip(before, net.get_weights(), strict=True)]
    assert sum(changed) > len(changed) // 2


def test_the_exported_models_score_takes_one_hot_validation_rows():
    """What ``tljob.infer`` does with a validation split's labels: one-hot rows (MixUp /
    CutMix runs) are scored as their class, as class indices are."""
    from tljob.infer.results import Scored, class_indices

    probs = softmax(FEATURES.astype(np.float64)).astype(np.float32)
    one_hot = np.eye(CLASSES, dtype=np.float32)[CLASS_INDICES]
    uris, errors = np.array(list("abcdef"), object), np.array([""] * 6, object)
    soft = Scored(uris, class_indices(one_hot), probs, errors).summary()
    sparse = Scored(uris, class_indices(CLASS_INDICES), probs, errors).summary()
    assert soft == sparse == {"images": 6, "correct": 4, "accuracy": 4 / 6}
