"""``rotation_range``: ImageDataGenerator's random rotation (a centred geometry factor)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np
from pydantic import Field

from tljob.augment.ops.base import (
    STREAM_GEOMETRY,
    Draw,
    GeometryOp,
    LayerSpec,
    StreamUse,
    fill_arguments,
    linear,
)

if TYPE_CHECKING:
    from tljob.augment.geometry import GeometryParams
    from tljob.config.augment import AugmentSection


class Rotation(GeometryOp):
    """theta degrees (counter-clockwise on screen) from [-r, r]; in the model,
    ``RandomRotation(r / 360)`` (a factor is a fraction of a full turn)."""

    name = "rotation"
    place = "centred"
    params = {"theta": 0.0}
    fields = {
        "rotation_range": (
            float,
            Field(0.0, ge=0.0, le=180.0, description="Degrees; rotation drawn from [-r, r]."),
        )
    }
    streams = (StreamUse(STREAM_GEOMETRY, first=0, count=1),)
    model_side = ("rotation_range",)

    def options_on(self, section: AugmentSection) -> dict[str, Any]:
        r = section.rotation_range
        return {"rotation_range": r} if r != 0.0 else {}

    def draw(self, section, seed, epoch, keys, in_size, out_size) -> Draw:
        u = self.streams[0].uniforms(seed, epoch, keys)
        return {"theta": (2.0 * u[:, 0] - 1.0) * section.rotation_range}

    def factor(self, params: GeometryParams, in_size, out_size) -> np.ndarray:
        theta = np.deg2rad(params.theta)
        cos, sin = np.cos(theta), np.sin(theta)
        m = linear(len(params))
        m[:, 0, 0], m[:, 0, 1] = cos, -sin
        m[:, 1, 0], m[:, 1, 1] = sin, cos
        return m

    def without_warp(self, params: GeometryParams) -> np.ndarray:
        return params.theta == 0

    def describe(self, params: GeometryParams, i: int) -> str | None:
        return f"rot {params.theta[i]:+.0f}°" if params.theta[i] != 0 else None

    def model_layer(self, section: AugmentSection, image_size: int) -> LayerSpec | None:
        if section.rotation_range <= 0.0:
            return None
        return (
            "RandomRotation",
            {"factor": section.rotation_range / 360.0, **fill_arguments(section)},
        )
