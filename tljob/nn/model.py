"""Building, freezing and compiling the network. The network is three swappable pieces:

    uint8 RGB image, any size
      -> ResizeImages(image_size)         same bilinear kernel as the data pipeline
      -> BackbonePreprocess(mode)         the backbone's own ImageNet input convention
      -> backbone(training=False)         BatchNorm in inference mode (pretrained weights)
      -> GlobalAveragePooling -> Dropout -> [Dense relu]* -> Dense softmax (float32)

The loss and the label format (integer class indices, ``sparse_categorical_crossentropy``)
are compiled here from ``tljob.config.LOSS`` / ``METRICS``.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from typing import Any

from tljob.config import LOSS, METRICS, ModelSection, Optimizer, Trainable
from tljob.nn.builders import BUILDERS
from tljob.nn.keras import tf_keras
from tljob.nn.layers import BackbonePreprocess, ResizeImages
from tljob.nn.torchvision_mobilenet import convert_for
from tljob.zoo import BackboneSpec, WeightsSource, get_backbone, resolve_weights_file

BACKBONE_LAYER = "backbone"
SCRATCH_BATCHNORM_MOMENTUM = 0.9


def resolve_here(
    spec: BackboneSpec, weights: WeightsSource, image_size: int, offline: bool
) -> str | None:
    """``model.weights`` as a local file in this process (converting weights needs Keras,
    so the converter is passed from here); what a model built outside a run starts from."""
    return resolve_weights_file(spec, weights, image_size, offline, convert_for)


def build_backbone(
    spec: BackboneSpec,
    image_size: int,
    weights: WeightsSource,
    weights_file: str | None = None,
    offline: bool = False,
) -> tf_keras.Model:
    """The registered Keras application without its classifier, named ``backbone``.

    ``weights_file``: the resolved local file of pretrained ``weights`` (what the driver
    shipped, on a worker); when None, ``weights`` is resolved in this process."""
    if weights.pretrained and weights_file is None:
        weights_file = resolve_here(spec, weights, image_size, offline)
    if spec.builder:
        constructor = BUILDERS[spec.builder]
    else:
        module = importlib.import_module(f"tf_keras.applications.{spec.keras_module}")
        constructor = getattr(module, spec.keras_class)
    backbone = constructor(
        include_top=False,
        weights=weights_file if weights.pretrained else None,
        input_shape=(image_size, image_size, 3),
    )
    backbone._name = BACKBONE_LAYER  # a stable name lets freezing find it after reloads
    if not weights.pretrained:
        # Keras' ImageNet BatchNorm momentum (0.999 in MobileNetV2) needs thousands of
        # steps before the moving statistics used at validation mean anything; from random
        # weights, runs are short enough that 0.9 is the usable choice.
        for layer in backbone.layers:
            if isinstance(layer, tf_keras.layers.BatchNormalization):
                layer.momentum = SCRATCH_BATCHNORM_MOMENTUM
    return backbone


def batchnorm_frozen(model_cfg: ModelSection) -> bool:
    """Whether BatchNorm runs in inference mode throughout (true for pretrained weights)."""
    return model_cfg.weights.pretrained


def build_model(
    model_cfg: ModelSection, num_classes: int, image_size: int, weights_file: str | None = None
) -> tf_keras.Model:
    """Backbone + head for ``num_classes`` classes; takes uint8 RGB batches of any size.

    ``weights_file``: the resolved backbone weights (see ``build_backbone``)."""
    if num_classes < 2:
        raise ValueError(f"num_classes ({num_classes}) must be >= 2")
    spec = get_backbone(model_cfg.backbone)
    backbone = build_backbone(
        spec, image_size, model_cfg.weights, weights_file, offline=model_cfg.offline
    )
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


def set_trainable(model: tf_keras.Model, trainable: Trainable) -> int:
    """Apply a stage's ``trainable`` spec ('head', 'top:N', 'all'); return trainable tensors.

    The head is always trainable. 'top:N' unfreezes the last N layers of the backbone.
    Recompile after calling this: Keras reads trainability at compile time.
    """
    backbone = backbone_of(model)
    if trainable.kind == "head":
        backbone.trainable = False
    elif trainable.kind == "all":
        backbone.trainable = True
        for layer in backbone.layers:
            layer.trainable = True
    else:  # "top"
        backbone.trainable = True
        layers = backbone.layers
        for i, layer in enumerate(layers):
            layer.trainable = i >= len(layers) - trainable.layers
    return len(model.trainable_weights)


_OPTIMIZERS: dict[Optimizer, Callable[[float], Any]] = {
    "adam": lambda lr: tf_keras.optimizers.Adam(learning_rate=lr),
    "sgd": lambda lr: tf_keras.optimizers.SGD(learning_rate=lr, momentum=0.9),
    "rmsprop": lambda lr: tf_keras.optimizers.RMSprop(learning_rate=lr),
}


def compile_for_stage(model: tf_keras.Model, optimizer: Optimizer, learning_rate: float) -> None:
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
