"""``shear_range``: ImageDataGenerator's random shear (a centred geometry factor; no
in-model layer does it)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np
from pydantic import Field

from tljob.augment.ops.base import STREAM_GEOMETRY, Draw, GeometryOp, StreamUse, linear

if TYPE_CHECKING:
    from tljob.augment.geometry import GeometryParams
    from tljob.config.augment import AugmentSection


class Shear(GeometryOp):
    """A shear of s degrees from [-s, s]: tf_keras' matrix [[1, -sin s], [0, cos s]]."""

    name = "shear"
    place = "centred"
    params = {"shear": 0.0}
    fields = {
        "shear_range": (
            float,
            Field(
                0.0,
                ge=0.0,
                le=90.0,
                description="Shear angle in degrees (counter-clockwise), drawn from [-s, s], "
                "as ImageDataGenerator (whose 0.2 is 0.2 degrees).",
            ),
        )
    }
    streams = (StreamUse(STREAM_GEOMETRY, first=3, count=1),)

    def options_on(self, section: AugmentSection) -> dict[str, Any]:
        s = section.shear_range
        return {"shear_range": s} if s != 0.0 else {}

    def draw(self, section, seed, epoch, keys, in_size, out_size) -> Draw:
        u = self.streams[0].uniforms(seed, epoch, keys)
        return {"shear": (2.0 * u[:, 0] - 1.0) * section.shear_range}

    def factor(self, params: GeometryParams, in_size, out_size) -> np.ndarray:
        shear = np.deg2rad(params.shear)
        m = linear(len(params))
        m[:, 0, 1], m[:, 1, 1] = -np.sin(shear), np.cos(shear)
        return m

    def without_warp(self, params: GeometryParams) -> np.ndarray:
        return params.shear == 0

    def describe(self, params: GeometryParams, i: int) -> str | None:
        # rounded first: no "shear -0.0°"
        return f"shear {params.shear[i]:+.1f}°" if round(float(params.shear[i]), 1) else None
