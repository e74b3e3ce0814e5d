"""``random_resized_crop``: torchvision's ``RandomResizedCrop`` (the source-side geometry
op: it picks the box of the stored image that fills the view).

The box's resize joins the one map as its first factor, with half-pixel centres as
``cv2.resize``: out pixel x reads box_x0 + (x + 0.5) * box_w / out - 0.5. A box's
outermost output pixels read up to half a pixel outside it, where torchvision's
crop-then-resize repeats the box's edge; ``Augmenter`` crops then resizes when a draw is
only a crop and flips, so those views are torchvision's exactly.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np
from pydantic import Field, field_validator

from tljob.augment.ops.base import Draw, GeometryOp, Range, StreamUse, aspect_ratios, ordered
from tljob.config._base import _Section

if TYPE_CHECKING:
    from tljob.augment.geometry import GeometryParams
    from tljob.config.augment import AugmentSection

STREAM_CROP = 0x6E02
# torchvision's 10 attempts, each (area fraction, log ratio, top, left).
CROP_ATTEMPTS = 10
CROP_COLUMNS_PER_ATTEMPT = 4


class ResizedCropSection(_Section):
    enabled: bool = Field(
        False,
        description="Crop a random area of the stored image and resize it to the training "
        "size, as torchvision's RandomResizedCrop (before the affine options above).",
    )
    scale: Range = Field(
        (0.08, 1.0), description="Range of the crop's area, as a fraction of the image's."
    )
    ratio: Range = Field(
        (3 / 4, 4 / 3), description="Range of the crop's width / height (drawn log-uniformly)."
    )

    @field_validator("scale")
    @classmethod
    def _scale(cls, value: Range) -> Range:
        ordered(value, 0.0, 1.0)
        if value[0] <= 0.0:
            raise ValueError("the area fraction must be > 0")
        return value

    @field_validator("ratio")
    @classmethod
    def _ratio(cls, value: Range) -> Range:
        return aspect_ratios(value)


def crop_boxes(scale: Range, ratio: Range, u: np.ndarray, size: np.ndarray) -> np.ndarray:
    """torchvision's ``RandomResizedCrop.get_params`` for square images of side ``size``,
    vectorised: up to 10 attempts of (area, log-uniform ratio), the first whose integer box
    fits wins, its corner uniform among the integer positions; else the centre crop.
    (N, 4) boxes (x0, y0, width, height) from (N, 40) uniforms."""
    a = u.reshape(len(u), CROP_ATTEMPTS, CROP_COLUMNS_PER_ATTEMPT)
    side = size.astype(np.float64)[:, None]
    area = side * side * (scale[0] + (scale[1] - scale[0]) * a[:, :, 0])
    log_lo, log_hi = np.log(ratio[0]), np.log(ratio[1])
    aspect = np.exp(log_lo + (log_hi - log_lo) * a[:, :, 1])
    w = np.rint(np.sqrt(area * aspect))
    h = np.rint(np.sqrt(area / aspect))
    fits = (w > 0) & (w <= side) & (h > 0) & (h <= side)
    # torch.randint(0, side - h + 1): an integer in [0, side - h].
    top = np.floor(a[:, :, 2] * (side - h + 1))
    left = np.floor(a[:, :, 3] * (side - w + 1))
    first = np.argmax(fits, axis=1)
    rows = np.arange(len(u))
    boxes = np.stack([left[rows, first], top[rows, first], w[rows, first], h[rows, first]], axis=1)
    # The fallback: the whole side, trimmed to the nearest allowed ratio (square input).
    s = size.astype(np.float64)
    fb_w, fb_h = s.copy(), s.copy()
    if ratio[0] > 1.0:
        fb_h = np.rint(s / ratio[0])
    elif ratio[1] < 1.0:
        fb_w = np.rint(s * ratio[1])
    fallback = np.stack([(s - fb_w) // 2, (s - fb_h) // 2, fb_w, fb_h], axis=1)
    return np.where(fits.any(axis=1)[:, None], boxes, fallback)


def whole_boxes(in_size: int | np.ndarray, n: int) -> np.ndarray:
    """(N, 4) boxes covering the whole stored image of side ``in_size``."""
    side = np.broadcast_to(np.asarray(in_size, dtype=np.float64), (n,))
    zeros = np.zeros(n)
    return np.stack([zeros, zeros, side, side], axis=1)


def resize_matrices(boxes: np.ndarray, out_size: int) -> np.ndarray:
    """(N, 3, 3): output pixel -> stored pixel of a (crop box) resize, half-pixel centres."""
    n = len(boxes)
    m = np.zeros((n, 3, 3))
    sx, sy = boxes[:, 2] / out_size, boxes[:, 3] / out_size
    m[:, 0, 0], m[:, 1, 1], m[:, 2, 2] = sx, sy, 1.0
    m[:, 0, 2] = boxes[:, 0] + 0.5 * sx - 0.5
    m[:, 1, 2] = boxes[:, 1] + 0.5 * sy - 0.5
    return m


class RandomResizedCrop(GeometryOp):
    """box: (N, 4) (x0, y0, width, height) in stored pixels, or None for the whole image."""

    name = "random_resized_crop"
    place = "source"
    params = {"box": None}
    fields = {
        "random_resized_crop": (
            ResizedCropSection,
            Field(default_factory=ResizedCropSection, description="Random resized crop."),
        )
    }
    streams = (StreamUse(STREAM_CROP, count=CROP_ATTEMPTS * CROP_COLUMNS_PER_ATTEMPT),)

    def options_on(self, section: AugmentSection) -> dict[str, Any]:
        return {"random_resized_crop.enabled": True} if section.random_resized_crop.enabled else {}

    def draw(self, section, seed, epoch, keys, in_size, out_size) -> Draw:
        crop = section.random_resized_crop
        u = self.streams[0].uniforms(seed, epoch, keys)
        sizes = np.broadcast_to(np.asarray(in_size), (len(keys),))
        return {"box": crop_boxes(crop.scale, crop.ratio, u, sizes)}

    def factor(self, params: GeometryParams, in_size, out_size) -> np.ndarray:
        boxes = params.box if params.box is not None else whole_boxes(in_size, len(params))
        return resize_matrices(boxes, out_size)

    def without_warp(self, params: GeometryParams) -> np.ndarray:
        if params.box is None:
            return np.ones(len(params), dtype=bool)
        return (params.box == np.round(params.box)).all(axis=1)

    def describe(self, params: GeometryParams, i: int) -> str | None:
        if params.box is None:
            return None
        x0, y0, w, h = (int(v) for v in params.box[i])
        return f"crop {w}x{h} at ({x0}, {y0})"
