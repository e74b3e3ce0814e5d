"""A model cut at its pooling layer: the features half and the head half, sharing the
model's layers (no variable created or copied), for stages that train on cached features
(``tljob.config.features``).

    features_model:  uint8 images -> resize -> preprocess -> backbone(inference) -> pool
    head_model:      pooled features (float32) -> [dropout] -> [hidden]* -> classifier

Training ``head_model`` trains the full model's head: the same layer objects. The features
are what the full model computes at its pooling layer with the backbone frozen (its
BatchNorm in inference mode), so a head trained on them is the head the image path would
train, without the backbone's forward pass every epoch.
"""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np
import tensorflow as tf

from tljob.nn.augment_layers import AUGMENT_LAYER
from tljob.nn.keras import tf_keras
from tljob.nn.model import BACKBONE_LAYER

POOL_LAYER = "pool"


def _chain(model: tf_keras.Model) -> list[tf_keras.layers.Layer]:
    layers = list(model.layers[1:])  # build_model's chain, in order
    names = [layer.name for layer in layers]
    if POOL_LAYER not in names:
        raise ValueError(f"model {model.name!r} has no {POOL_LAYER!r} layer")
    return layers


def features_model(model: tf_keras.Model) -> tf_keras.Model:
    """uint8 images (any size) -> the pooled features ``model`` computes, backbone in
    inference mode; training-only augmentation left out."""
    images = tf_keras.Input(shape=(None, None, 3), dtype="uint8", name="image")
    x = images
    for layer in _chain(model):
        if layer.name == BACKBONE_LAYER:
            x = layer(x, training=False)
        elif layer.name != AUGMENT_LAYER:
            x = layer(x)
        if layer.name == POOL_LAYER:
            break
    return tf_keras.Model(images, x, name=f"{model.name}_features")


def feature_dim(model: tf_keras.Model) -> int:
    return int(model.get_layer(POOL_LAYER).output_shape[-1])


def head_layers(model: tf_keras.Model) -> list[tf_keras.layers.Layer]:
    """``model``'s layers after its pooling layer, in order: the head."""
    layers = _chain(model)
    return layers[[layer.name for layer in layers].index(POOL_LAYER) + 1 :]


def head_model(model: tf_keras.Model) -> tf_keras.Model:
    """Pooled features (float32, ``feature_dim``) -> ``model``'s class probabilities,
    through ``model``'s own head layers."""
    features = tf_keras.Input(shape=(feature_dim(model),), dtype="float32", name="feature")
    x = features
    for layer in head_layers(model):
        x = layer(x)
    return tf_keras.Model(features, x, name=f"{model.name}_head")


def compute_features(
    extractor: tf_keras.Model, batches: Iterable[np.ndarray], batch_size: int = 256
) -> np.ndarray:
    """``extractor``'s float32 features of every image in ``batches`` (uint8 arrays), in
    order; each array is cut into model calls of at most ``batch_size`` images."""
    call = tf.function(lambda x: extractor(x, training=False), reduce_retracing=True)
    out: list[np.ndarray] = []
    for images in batches:
        for start in range(0, len(images), batch_size):
            chunk = tf.convert_to_tensor(images[start : start + batch_size])
            out.append(np.asarray(call(chunk), dtype=np.float32))
    if not out:
        return np.zeros((0, int(extractor.output_shape[-1])), np.float32)
    return np.concatenate(out)
