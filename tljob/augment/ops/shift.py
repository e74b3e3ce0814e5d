"""``width_shift_range`` / ``height_shift_range``: ImageDataGenerator's random shift (a
centred geometry factor).

``tx`` and ``ty`` have tf_keras' ``apply_transform`` meaning: ``tx`` moves along x
(columns: a positive tx pulls from the right, so content moves left), ``ty`` along y
(rows). tf_keras' own ``get_random_transform`` draws tx from ``height_shift_range``
(scaled by the height), so its height option actually moves images sideways; tljob draws
tx from ``width_shift_range``, the documented meaning (for the ``seed`` preset, both 0.2
on square images, the two are the same distribution).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np
from pydantic import Field

from tljob.augment.ops.base import (
    STREAM_GEOMETRY,
    Draw,
    GeometryOp,
    LayerSpec,
    ModelAugmentError,
    StreamUse,
    fill_arguments,
    linear,
)

if TYPE_CHECKING:
    from tljob.augment.geometry import GeometryParams
    from tljob.config.augment import AugmentSection


def shift_pixels(u: np.ndarray, shift_range: float, out_size: int) -> np.ndarray:
    """tf_keras: uniform in [-r, r]; a fraction of the size when r < 1, pixels otherwise."""
    shift = (2.0 * u - 1.0) * shift_range
    return shift * out_size if shift_range < 1 else shift


def _model_fraction(field: str, value: float, image_size: int) -> float:
    fraction = value if value < 1.0 else value / image_size
    if fraction > 1.0:
        raise ModelAugmentError(
            f"`augment.{field}` ({value}): a shift of more than the image size "
            f"({image_size} px) cannot run inside the model; lower it"
        )
    return fraction


class Shift(GeometryOp):
    """(tx, ty) in pixels of the training size; in the model, ``RandomTranslation`` with
    the ranges as fractions of the image size."""

    name = "shift"
    place = "centred"
    params = {"tx": 0.0, "ty": 0.0}
    fields = {
        "width_shift_range": (
            float,
            Field(
                0.0,
                ge=0.0,
                description="Horizontal shift drawn from [-w, w]: a fraction of the width "
                "when < 1, pixels (of the training size) when >= 1.",
            ),
        ),
        "height_shift_range": (
            float,
            Field(
                0.0,
                ge=0.0,
                description="Vertical shift drawn from [-h, h]: a fraction of the height "
                "when < 1, pixels when >= 1.",
            ),
        ),
    }
    streams = (StreamUse(STREAM_GEOMETRY, first=1, count=2),)
    model_side = ("width_shift_range", "height_shift_range")

    def options_on(self, section: AugmentSection) -> dict[str, Any]:
        on = {}
        for name in ("width_shift_range", "height_shift_range"):
            if getattr(section, name) != 0.0:
                on[name] = getattr(section, name)
        return on

    def draw(self, section, seed, epoch, keys, in_size, out_size) -> Draw:
        u = self.streams[0].uniforms(seed, epoch, keys)
        return {
            "tx": shift_pixels(u[:, 0], section.width_shift_range, out_size),
            "ty": shift_pixels(u[:, 1], section.height_shift_range, out_size),
        }

    def factor(self, params: GeometryParams, in_size, out_size) -> np.ndarray:
        m = linear(len(params))
        m[:, 0, 2], m[:, 1, 2] = params.tx, params.ty
        return m

    def without_warp(self, params: GeometryParams) -> np.ndarray:
        return (params.tx == 0) & (params.ty == 0)

    def describe(self, params: GeometryParams, i: int) -> str | None:
        if params.tx[i] == 0 and params.ty[i] == 0:
            return None
        # tf_keras' tx pulls from the right: content moves by -tx.
        dx, dy = round(-float(params.tx[i])), round(-float(params.ty[i]))
        return f"shift ({dx}, {dy}) px"

    def model_layer(self, section: AugmentSection, image_size: int) -> LayerSpec | None:
        if section.width_shift_range <= 0.0 and section.height_shift_range <= 0.0:
            return None
        height = _model_fraction("height_shift_range", section.height_shift_range, image_size)
        width = _model_fraction("width_shift_range", section.width_shift_range, image_size)
        arguments = {"height_factor": height, "width_factor": width}
        return ("RandomTranslation", {**arguments, **fill_arguments(section)})
