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

from collections.abc import Callable
from typing import Any

from tljob.config import LOSS, METRICS, ModelSection, Optimizer, Trainable
from tljob.errors import UserError
from tljob.nn.builders import BUILDERS
from tljob.nn.keras import tf_keras
from tljob.nn.layers import BackbonePreprocess, ResizeImages
from tljob.zoo import BackboneSpec, WeightsSource, get_backbone, resolve_weights_file

BACKBONE_LAYER = "backbone"
MODEL_NAME_PREFIX = "tljob_"  # + the backbone's registry name
SCRATCH_BATCHNORM_MOMENTUM = 0.9


def backbone_constructor(spec: BackboneSpec) -> Callable[..., tf_keras.Model]:
    """The function that builds ``spec``'s network: its builder, or its Keras application."""
    if spec.builder:
        return BUILDERS[spec.builder]
    # every application class is exported here (tf_keras.applications.mobilenet_v3, e.g.,
    # exports only its preprocess_input)
    return getattr(tf_keras.applications, spec.keras_class)


def build_backbone(spec: BackboneSpec, image_size: int, weights: WeightsSource) -> tf_keras.Model:
    """The registered Keras application without its classifier, named ``backbone``."""
    constructor = backbone_constructor(spec)
    backbone = constructor(
        include_top=False,
        weights=resolve_weights_file(spec, weights, image_size),
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
    return tf_keras.Model(images, probs, name=f"{MODEL_NAME_PREFIX}{spec.name}")


def backbone_of(model: tf_keras.Model) -> tf_keras.Model:
    return model.get_layer(BACKBONE_LAYER)


def backbone_spec_of(model: tf_keras.Model) -> BackboneSpec:
    """The registry entry ``model`` was built from (``build_model`` names it after it)."""
    return get_backbone(model.name.removeprefix(MODEL_NAME_PREFIX))


class TooManyBlocksError(UserError, ValueError):
    """``top_blocks:K`` asks for more blocks than the backbone has."""


def block_layers(backbone: tf_keras.Model, spec: BackboneSpec, count: int) -> list:
    """The layers of the last ``count`` blocks of ``backbone``, per ``spec.blocks``: from the
    start of block ``len(blocks) - count`` to the end of the network."""
    if not 1 <= count <= len(spec.blocks):
        raise TooManyBlocksError(
            f"`trainable` ('top_blocks:{count}'): backbone {spec.name!r} has "
            f"{len(spec.blocks)} blocks, so K must be between 1 and {len(spec.blocks)}"
        )
    marker = spec.blocks[len(spec.blocks) - count]
    names = [layer.name for layer in backbone.layers]
    if marker.startswith(">"):
        starts = [i + 1 for i, name in enumerate(names) if name == marker[1:]]
    else:
        starts = [i for i, name in enumerate(names) if name.startswith(marker)]
    if not starts:  # a registry entry that does not describe its network
        raise ValueError(f"backbone {spec.name!r} has no layer marked by block {marker!r}")
    return backbone.layers[starts[0] :]


def set_trainable(
    model: tf_keras.Model, trainable: Trainable, spec: BackboneSpec | None = None
) -> int:
    """Apply a stage's ``trainable`` spec; return the number of trainable tensors.

    'head': the backbone frozen; 'top_layers:N' (alias 'top:N'): the last N layers of the
    backbone; 'top_blocks:K': the layers of its last K blocks (``spec.blocks``; ``spec``
    defaults to the entry ``model`` was built from); 'all'. The head is always trainable.
    Recompile after calling this: Keras reads trainability at compile time.
    """
    backbone = backbone_of(model)
    if trainable.kind == "head":
        backbone.trainable = False
        return len(model.trainable_weights)
    backbone.trainable = True
    if trainable.kind == "all":
        unfrozen = backbone.layers
    elif trainable.kind == "top_blocks":
        unfrozen = block_layers(backbone, spec or backbone_spec_of(model), trainable.blocks)
    else:  # "top": the last N layers
        unfrozen = backbone.layers[max(0, len(backbone.layers) - trainable.layers) :]
    ids = {id(layer) for layer in unfrozen}
    for layer in backbone.layers:
        layer.trainable = id(layer) in ids
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
