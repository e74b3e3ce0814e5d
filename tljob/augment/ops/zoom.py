"""``zoom_range``: ImageDataGenerator's random zoom (a centred geometry factor), zx and zy
drawn independently; above 1 shows more of the image.

In the model: ImageDataGenerator samples the source at ``z * (output point - centre)``.
``RandomZoom`` draws ``1 + factor`` from ``[1 + lower, 1 + upper]`` for height and width
independently, with the same centre and the same direction (a positive factor zooms out),
so its factors are ``(lo - 1, hi - 1)``: the same distribution. It allows only
``hi <= 2``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Annotated, Any

import numpy as np
from pydantic import AfterValidator, Field

from tljob.augment.ops.base import (
    STREAM_GEOMETRY,
    Draw,
    GeometryOp,
    LayerSpec,
    ModelAugmentError,
    Range,
    StreamUse,
    fill_arguments,
    linear,
    ordered,
)

if TYPE_CHECKING:
    from tljob.augment.geometry import GeometryParams
    from tljob.config.augment import AugmentSection

MAX_MODEL_ZOOM = 2.0  # RandomZoom's height_factor must lie in [-1, 1]


def _valid_zoom(value: float | Range) -> float | Range:
    if isinstance(value, tuple):
        ordered(value, 0.0)
        if value[0] <= 0.0:
            raise ValueError("zoom factors must be > 0")
    elif not 0.0 <= value < 1.0:
        raise ValueError("a single zoom range must be >= 0 and < 1")
    return value


def bounds(zoom_range: float | Range) -> Range:
    """``zoom_range`` as [lower, upper]."""
    if isinstance(zoom_range, tuple):
        return zoom_range
    return (1.0 - zoom_range, 1.0 + zoom_range)


class Zoom(GeometryOp):
    """zx, zy from [lower, upper]: tf_keras' matrix diag(zx, zy)."""

    name = "zoom"
    place = "centred"
    params = {"zx": 1.0, "zy": 1.0}
    fields = {
        "zoom_range": (
            Annotated[float | Range, AfterValidator(_valid_zoom)],
            Field(
                0.0,
                description="Zoom drawn for width and height independently from [1 - z, 1 + z] "
                "(or from [lower, upper]); above 1 shows more of the image (zooms out), as "
                "ImageDataGenerator.",
            ),
        )
    }
    streams = (StreamUse(STREAM_GEOMETRY, first=4, count=2),)
    model_side = ("zoom_range",)

    def options_on(self, section: AugmentSection) -> dict[str, Any]:
        return {"zoom_range": section.zoom_range} if section.zoom_bounds != (1.0, 1.0) else {}

    def draw(self, section, seed, epoch, keys, in_size, out_size) -> Draw:
        u = self.streams[0].uniforms(seed, epoch, keys)
        lo, hi = section.zoom_bounds
        return {"zx": lo + (hi - lo) * u[:, 0], "zy": lo + (hi - lo) * u[:, 1]}

    def factor(self, params: GeometryParams, in_size, out_size) -> np.ndarray:
        m = linear(len(params))
        m[:, 0, 0], m[:, 1, 1] = params.zx, params.zy
        return m

    def without_warp(self, params: GeometryParams) -> np.ndarray:
        return (params.zx == 1) & (params.zy == 1)

    def describe(self, params: GeometryParams, i: int) -> str | None:
        if params.zx[i] == 1 and params.zy[i] == 1:
            return None
        return f"zoom {params.zx[i]:.2f}x{params.zy[i]:.2f}"

    def model_layer(self, section: AugmentSection, image_size: int) -> LayerSpec | None:
        low, high = section.zoom_bounds
        if (low, high) == (1.0, 1.0):
            return None
        if high > MAX_MODEL_ZOOM:
            raise ModelAugmentError(
                f"`augment.zoom_range` ([{low}, {high}]): inside the model the upper "
                f"zoom must be <= {MAX_MODEL_ZOOM} (Keras' RandomZoom); lower it, or set "
                "`augment.where` to 'data'"
            )
        factor = (low - 1.0, high - 1.0)
        arguments = {"height_factor": factor, "width_factor": factor}
        return ("RandomZoom", {**arguments, **fill_arguments(section)})
