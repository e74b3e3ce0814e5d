"""``augment.where: model``: the cheap geometric and colour options as Keras preprocessing
layers inside the network, on the accelerator, for clusters short of CPU.

The stack sits after ``ResizeImages`` (training images already arrive at the training size,
which it leaves exactly as they are) and before the backbone's preprocessing, on float
pixels in [0, 255]. Each layer is active only in training (``fit``); at inference every one
returns its input, and the exported model leaves the stack out (``tljob.nn.model.
serving_model``). Each op of ``tljob.augment.ops`` that can run here says how
(``model_layer``: rotation, shift, zoom, flips, brightness, contrast), keeping
ImageDataGenerator's meanings; ``fill_mode`` / ``cval`` pass through (Keras knows the same
four modes).

Unlike ImageDataGenerator (and ``tljob.augment``), which compose rotation, shift and zoom
into one affine warp, the layers warp one after another (rotation, shift, zoom: the same
order of the composed matrix), so the view is interpolated up to three times and a corner
filled by one warp may be moved by the next. Every layer gets its own seed, ``seed + i``.
"""

from __future__ import annotations

import re

from tljob.augment.ops import PER_IMAGE_OPS
from tljob.augment.ops.base import LayerSpec
from tljob.augment.ops.base import ModelAugmentError as ModelAugmentError
from tljob.config.augment import AugmentSection
from tljob.nn.keras import tf_keras
from tljob.nn.layers import RandomBrightnessScale

AUGMENT_LAYER = "augment"


def runs_in_model(section: AugmentSection | None) -> bool:
    """Whether the model carries the augmentation stack: ``where: model`` with an option on."""
    return section is not None and section.where == "model" and section.active


def layer_specs(section: AugmentSection, image_size: int) -> list[LayerSpec]:
    """The layers' classes and arguments (seeds aside), in the order they apply: each op's
    ``model_layer`` that is on, in registry order. Raises ``ModelAugmentError`` for a value
    a layer cannot reproduce."""
    specs = (op.model_layer(section, image_size) for op in PER_IMAGE_OPS)
    return [spec for spec in specs if spec is not None]


def _short(class_name: str) -> str:
    """'RandomZoom' -> 'zoom', 'RandomBrightnessScale' -> 'brightness_scale'."""
    words = re.findall("[A-Z][a-z]*", class_name.removeprefix("Random"))
    return "_".join(word.lower() for word in words)


def build_layers(specs: list[LayerSpec], seed: int) -> list[tf_keras.layers.Layer]:
    """The layers of ``specs``, float32 whatever the precision policy (pixel values), the
    i-th seeded with ``seed + i``."""
    layers = []
    for i, (name, kwargs) in enumerate(specs):
        cls = RandomBrightnessScale if name == "RandomBrightnessScale" else None
        cls = cls or getattr(tf_keras.layers, name)
        layers.append(
            cls(**kwargs, seed=seed + i, dtype="float32", name=f"{AUGMENT_LAYER}_{_short(name)}")
        )
    return layers


def training_augmentation(
    section: AugmentSection | None, image_size: int, default_seed: int
) -> tf_keras.Sequential | None:
    """The stack for ``section`` as one layer named ``augment``, or None when the model
    carries none (``runs_in_model``). Seeded from ``augment.seed``, else ``default_seed``
    (``data.seed``)."""
    if not runs_in_model(section):
        return None
    assert section is not None
    seed = section.seed if section.seed is not None else default_seed
    layers = build_layers(layer_specs(section, image_size), seed)
    return tf_keras.Sequential(layers, name=AUGMENT_LAYER)
