"""``augment.where: model``: the cheap geometric and colour options as Keras preprocessing
layers inside the network, on the accelerator, for clusters short of CPU.

The stack sits after ``ResizeImages`` (training images already arrive at the training size,
which it leaves exactly as they are) and before the backbone's preprocessing, on float
pixels in [0, 255]. Each layer is active only in training (``fit``); at inference every one
returns its input, and the exported model leaves the stack out (``tljob.nn.model.
serving_model``). The options keep ImageDataGenerator's meanings:

- ``rotation_range`` r degrees -> ``RandomRotation(r / 360)`` (a factor is a fraction of a
  full turn, drawn from [-f, f]);
- ``width_shift_range`` / ``height_shift_range``: fractions of the size, or pixels of the
  training size when >= 1 (divided by the image size) -> ``RandomTranslation``;
- ``zoom_range`` [lo, hi]: ImageDataGenerator draws zx and zy independently from [lo, hi]
  and samples the source at ``z * (output point - centre)``, so z > 1 shows more of the
  image. ``RandomZoom`` draws ``1 + factor`` from ``[1 + lower, 1 + upper]`` for height and
  width independently, with the same centre and the same direction (a positive factor
  zooms out), so its factors are ``(lo - 1, hi - 1)``: the same distribution. It allows
  only ``hi <= 2``;
- flips -> ``RandomFlip``; ``brightness_range`` [lo, hi] -> ``RandomBrightnessScale``
  (``tljob.nn.layers``): pixels times a factor from [lo, hi], clipped to [0, 255], as
  ImageDataGenerator (PIL's brightness enhancer) does. Keras' ``RandomBrightness`` adds an
  offset instead, which is not the same view;
- ``color_jitter.contrast`` c -> ``RandomContrast((min(c, 1), c))``: factors from
  [max(0, 1 - c), 1 + c] as torchvision, applied around each channel's mean (torchvision
  uses the grey mean), clipped to [0, 255];
- ``fill_mode`` / ``cval`` pass through (Keras knows the same four modes).

Unlike ImageDataGenerator (and ``tljob.augment``), which compose rotation, shift and zoom
into one affine warp, the layers warp one after another (rotation, shift, zoom: the same
order of the composed matrix), so the view is interpolated up to three times and a corner
filled by one warp may be moved by the next. Every layer gets its own seed, ``seed + i``.
"""

from __future__ import annotations

import re
from typing import Any

from tljob.config.augment import AugmentSection
from tljob.errors import UserError
from tljob.nn.keras import tf_keras
from tljob.nn.layers import RandomBrightnessScale

AUGMENT_LAYER = "augment"
MAX_MODEL_ZOOM = 2.0  # RandomZoom's height_factor must lie in [-1, 1]

LayerSpec = tuple[str, dict[str, Any]]  # (tf_keras.layers class name or ours, kwargs)


class ModelAugmentError(UserError, ValueError):
    """An option the in-model layers cannot reproduce."""


def runs_in_model(section: AugmentSection | None) -> bool:
    """Whether the model carries the augmentation stack: ``where: model`` with an option on."""
    return section is not None and section.where == "model" and section.active


def _shift_fraction(field: str, value: float, image_size: int) -> float:
    fraction = value if value < 1.0 else value / image_size
    if fraction > 1.0:
        raise ModelAugmentError(
            f"`augment.{field}` ({value}): a shift of more than the image size "
            f"({image_size} px) cannot run inside the model; lower it"
        )
    return fraction


def layer_specs(section: AugmentSection, image_size: int) -> list[LayerSpec]:
    """The layers' classes and arguments (seeds aside), in the order they apply."""
    specs: list[LayerSpec] = []
    fill = {"fill_mode": section.fill_mode, "fill_value": float(section.cval)}
    if section.rotation_range > 0.0:
        specs.append(("RandomRotation", {"factor": section.rotation_range / 360.0, **fill}))
    if section.width_shift_range > 0.0 or section.height_shift_range > 0.0:
        height = _shift_fraction("height_shift_range", section.height_shift_range, image_size)
        width = _shift_fraction("width_shift_range", section.width_shift_range, image_size)
        specs.append(
            ("RandomTranslation", {"height_factor": height, "width_factor": width, **fill})
        )
    low, high = section.zoom_bounds
    if (low, high) != (1.0, 1.0):
        if high > MAX_MODEL_ZOOM:
            raise ModelAugmentError(
                f"`augment.zoom_range` ([{low}, {high}]): inside the model the upper "
                f"zoom must be <= {MAX_MODEL_ZOOM} (Keras' RandomZoom); lower it, or set "
                "`augment.where` to 'data'"
            )
        factor = (low - 1.0, high - 1.0)
        specs.append(("RandomZoom", {"height_factor": factor, "width_factor": factor, **fill}))
    flips = [name for name in ("horizontal", "vertical") if getattr(section, f"{name}_flip")]
    if flips:
        specs.append(("RandomFlip", {"mode": "_and_".join(flips)}))
    if section.brightness_range is not None:
        low, high = section.brightness_range
        specs.append(("RandomBrightnessScale", {"lower": low, "upper": high}))
    contrast = section.color_jitter.contrast
    if contrast > 0.0:
        specs.append(("RandomContrast", {"factor": (min(contrast, 1.0), contrast)}))
    return specs


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
