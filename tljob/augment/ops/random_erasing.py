"""Random erasing (Zhong et al.), as torchvision's ``RandomErasing``: with some probability,
one rectangle of random area and aspect ratio is filled with noise or zeros.

The rectangle is drawn from ``ATTEMPTS`` tries (area fraction uniform in ``scale``, width /
height log-uniform in ``ratio``); the first that fits inside the image wins, and an image
where none fits is left alone, as torchvision. All tries are drawn at once for the batch.
The op (``RandomErasing``, last below) is the last pixel op.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Literal

import numpy as np
from pydantic import Field, field_validator

from tljob.augment import keys as keyed
from tljob.augment.ops.base import Draw, PixelOp, Range, StreamUse, aspect_ratios, ordered
from tljob.config._base import _Section

if TYPE_CHECKING:
    from tljob.config.augment import AugmentSection

STREAM_ERASING = 105
STREAM_ERASING_FILL = 106  # the random fill's generator
ErasingValue = Literal["random", "zero"]

ATTEMPTS = 10
# Uniform columns an image uses: the coin, then (area, log ratio, top, left) per attempt.
COLUMNS = 1 + 4 * ATTEMPTS


def draw_boxes(
    u: np.ndarray,
    height: int,
    width: int,
    probability: float,
    scale: tuple[float, float],
    ratio: tuple[float, float],
) -> np.ndarray:
    """(N, 4) int boxes ``(top, left, box_height, box_width)`` from (N, ``COLUMNS``)
    uniforms; ``box_height == 0`` means the image is not erased."""
    n = len(u)
    tries = u[:, 1:].reshape(n, ATTEMPTS, 4)
    area = height * width * (scale[0] + (scale[1] - scale[0]) * tries[..., 0])
    log_lo, log_hi = np.log(ratio[0]), np.log(ratio[1])
    aspect = np.exp(log_lo + (log_hi - log_lo) * tries[..., 1])  # width / height
    # Python's round (half to even), as torchvision's int(round(...)).
    box_w = np.rint(np.sqrt(area * aspect)).astype(np.int64)
    box_h = np.rint(np.sqrt(area / aspect)).astype(np.int64)
    fits = (box_h < height) & (box_w < width)
    first = np.argmax(fits, axis=1)
    rows = np.arange(n)
    chosen_h, chosen_w = box_h[rows, first], box_w[rows, first]
    top = np.floor(tries[rows, first, 2] * (height - chosen_h + 1)).astype(np.int64)
    left = np.floor(tries[rows, first, 3] * (width - chosen_w + 1)).astype(np.int64)
    # A box rounded to zero size erases nothing (torchvision accepts it too).
    erased = (u[:, 0] < probability) & fits[rows, first] & (chosen_h > 0) & (chosen_w > 0)
    boxes = np.stack([top, left, chosen_h, chosen_w], axis=1)
    boxes[~erased] = 0
    return boxes


def apply_erasing(
    images: np.ndarray,
    boxes: np.ndarray,
    value: str,
    seed: int,
    epoch: int,
    image_keys: np.ndarray,
    stream: int,
) -> np.ndarray:
    """Fill each image's box: ``value`` 'random' draws uniform 0..255 per pixel and channel
    from ``keys.generator(seed, epoch, key, stream)``, 'zero' writes zeros. Images without a
    box are returned as they are."""
    if not np.any(boxes[:, 2] > 0):
        return images
    out = images.copy()
    for n in np.flatnonzero(boxes[:, 2] > 0):
        top, left, h, w = (int(v) for v in boxes[n])
        if value == "random":
            rng = keyed.generator(seed, epoch, int(image_keys[n]), stream)
            fill = rng.integers(0, 256, size=(h, w, images.shape[3]), dtype=np.uint8)
        else:
            fill = 0
        out[n, top : top + h, left : left + w] = fill
    return out


# -- the op -------------------------------------------------------------------------------


class RandomErasingSection(_Section):
    probability: float = Field(
        0.0,
        ge=0.0,
        le=1.0,
        description="Chance that one random rectangle of an image is erased (Zhong et al.); "
        "0 is off.",
    )
    scale: Range = Field(
        (0.02, 0.33), description="Range of the rectangle's area, as a fraction of the image's."
    )
    ratio: Range = Field(
        (0.3, 3.3), description="Range of the rectangle's width / height (log-uniform)."
    )
    value: ErasingValue = Field(
        "random", description="What fills the rectangle: random pixels, or zeros."
    )

    @field_validator("scale")
    @classmethod
    def _scale(cls, value: Range) -> Range:
        return ordered(value, 0.0, 1.0)

    @field_validator("ratio")
    @classmethod
    def _ratio(cls, value: Range) -> Range:
        return aspect_ratios(value)


class RandomErasing(PixelOp):
    name = "random_erasing"
    fields = {
        "random_erasing": (
            RandomErasingSection,
            Field(default_factory=RandomErasingSection, description="Random erasing."),
        )
    }
    draws = ("boxes",)
    streams = (StreamUse(STREAM_ERASING, count=COLUMNS), StreamUse(STREAM_ERASING_FILL))

    def options_on(self, section: AugmentSection) -> dict[str, Any]:
        p = section.random_erasing.probability
        return {"random_erasing.probability": p} if p > 0.0 else {}

    def draw(self, section, seed, epoch, keys, height, width) -> Draw:
        e = section.random_erasing
        u = self.streams[0].uniforms(seed, epoch, keys)
        return {"boxes": draw_boxes(u, height, width, e.probability, e.scale, e.ratio)}

    def apply(self, section, images, draw, seed, epoch, keys):
        value = section.random_erasing.value
        return apply_erasing(
            images,
            draw["boxes"],
            value,
            seed,
            epoch,
            np.asarray(keys, np.uint64),
            STREAM_ERASING_FILL,
        )

    def describe(self, section, draw, i, height, width) -> str | None:
        boxes = draw["boxes"]
        return f"erase {boxes[i, 3]}x{boxes[i, 2]}" if boxes[i, 2] > 0 else None
