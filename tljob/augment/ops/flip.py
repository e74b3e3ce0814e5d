"""``horizontal_flip`` / ``vertical_flip``: mirror with chance 1/2 each (an output-side
geometry factor: tf_keras flips after its affine transform, so the flips act first on the
output pixel)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np
from pydantic import Field

from tljob.augment.ops.base import STREAM_GEOMETRY, Draw, GeometryOp, LayerSpec, StreamUse, linear

if TYPE_CHECKING:
    from tljob.augment.geometry import GeometryParams
    from tljob.config.augment import AugmentSection

_AXES = ("horizontal", "vertical")


class Flip(GeometryOp):
    """flip_h, flip_v: bool per image; in the model, ``RandomFlip``."""

    name = "flip"
    place = "output"
    params = {"flip_h": False, "flip_v": False}
    fields = {
        "horizontal_flip": (
            bool,
            Field(False, description="Mirror left-right with chance 1/2."),
        ),
        "vertical_flip": (bool, Field(False, description="Mirror top-bottom with chance 1/2.")),
    }
    streams = (StreamUse(STREAM_GEOMETRY, first=6, count=2),)
    model_side = ("horizontal_flip", "vertical_flip")

    def options_on(self, section: AugmentSection) -> dict[str, Any]:
        return {f"{axis}_flip": True for axis in _AXES if getattr(section, f"{axis}_flip")}

    def draw(self, section, seed, epoch, keys, in_size, out_size) -> Draw:
        u = self.streams[0].uniforms(seed, epoch, keys)
        return {
            "flip_h": (u[:, 0] < 0.5) & section.horizontal_flip,
            "flip_v": (u[:, 1] < 0.5) & section.vertical_flip,
        }

    def factor(self, params: GeometryParams, in_size, out_size) -> np.ndarray:
        m = linear(len(params))
        last = out_size - 1.0
        m[params.flip_h, 0, 0] = -1.0
        m[params.flip_h, 0, 2] = last
        m[params.flip_v, 1, 1] = -1.0
        m[params.flip_v, 1, 2] = last
        return m

    def without_warp(self, params: GeometryParams) -> np.ndarray:
        return np.ones(len(params), dtype=bool)  # the fast path flips by slicing

    def describe(self, params: GeometryParams, i: int) -> str | None:
        flips = [name for name, on in (("h", params.flip_h[i]), ("v", params.flip_v[i])) if on]
        return "flip " + "+".join(flips) if flips else None

    def model_layer(self, section: AugmentSection, image_size: int) -> LayerSpec | None:
        flips = [axis for axis in _AXES if getattr(section, f"{axis}_flip")]
        return ("RandomFlip", {"mode": "_and_".join(flips)}) if flips else None
