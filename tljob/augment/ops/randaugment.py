"""RandAugment (Cubuk et al.) as torchvision's ``RandAugment`` with ``num_magnitude_bins=31``:
each image gets N operations drawn uniformly from ``OPS`` (repeats allowed), all at
magnitude M (0..30), signed operations with a random sign.

The operations follow torchvision's uint8 formulas (``_apply_op``); the geometric ones are
one ``cv2.warpAffine`` each, nearest-neighbour as torchvision's default, with the section's
fill mode (torchvision fills with zeros). Each operation runs on all the images that drew it
at once: lookup tables and float32 blends per batch, warps per image.

The op (``RandAugment``, last below) runs after colour jitter and before random erasing.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import cv2
import numpy as np
from pydantic import Field

from tljob.augment import colour
from tljob.augment.ops.base import Draw, PixelOp, StreamUse
from tljob.config._base import _Section

if TYPE_CHECKING:
    from tljob.config.augment import AugmentSection

STREAM_RANDAUGMENT = 104

OPS = (
    "Identity",
    "ShearX",
    "ShearY",
    "TranslateX",
    "TranslateY",
    "Rotate",
    "Brightness",
    "Color",
    "Contrast",
    "Sharpness",
    "Posterize",
    "Solarize",
    "AutoContrast",
    "Equalize",
)
SIGNED = frozenset(
    ("ShearX", "ShearY", "TranslateX", "TranslateY", "Rotate", "Brightness", "Color")
    + ("Contrast", "Sharpness")
)
BINS = 31
# Uniform columns per operation slot: which operation, and its sign.
COLUMNS_PER_OP = 2

_SMOOTH = np.array([[1, 1, 1], [1, 5, 1], [1, 1, 1]], dtype=np.float32) / np.float32(13.0)

BORDERS = {
    "nearest": cv2.BORDER_REPLICATE,
    "constant": cv2.BORDER_CONSTANT,
    "reflect": cv2.BORDER_REFLECT,  # scipy's 'reflect' (d c b a | a b c d), as Keras
    "wrap": cv2.BORDER_WRAP,
}

# The largest magnitude of each linear operation (torchvision's linspace(0, top, 31)).
_TOPS = {
    "ShearX": 0.3,
    "ShearY": 0.3,
    "Rotate": 30.0,
    "Brightness": 0.9,
    "Color": 0.9,
    "Contrast": 0.9,
    "Sharpness": 0.9,
}


def magnitude(op: str, m: int, height: int, width: int) -> float:
    """torchvision's unsigned magnitude of ``op`` at bin ``m`` of 31 for an image of the
    given size (translations in pixels, rotations in degrees, posterize in bits, solarize
    as the threshold)."""
    if op in _TOPS:
        return _TOPS[op] * m / (BINS - 1)
    if op == "TranslateX":
        return 150.0 / 331.0 * width * m / (BINS - 1)
    if op == "TranslateY":
        return 150.0 / 331.0 * height * m / (BINS - 1)
    if op == "Posterize":
        return float(8 - int(np.rint(m / ((BINS - 1) / 4))))
    if op == "Solarize":
        return 255.0 - 255.0 * m / (BINS - 1)
    return 0.0


def draw_ops(u: np.ndarray, num_ops: int) -> tuple[np.ndarray, np.ndarray]:
    """(op indices into ``OPS``, signs of +-1), each (N, num_ops), from (N, 2 * num_ops)
    uniforms; unsigned operations get +1."""
    u = u.reshape(len(u), num_ops, COLUMNS_PER_OP)
    ops = np.minimum((u[..., 0] * len(OPS)).astype(np.int64), len(OPS) - 1)
    signed = np.array([op in SIGNED for op in OPS])[ops]
    signs = np.where(signed & (u[..., 1] < 0.5), -1.0, 1.0)
    return ops, signs


def affine_matrix(op: str, value: float, height: int, width: int) -> np.ndarray:
    """The 2x3 forward matrix (source pixel -> output pixel, pixel centres at integers) of a
    geometric operation at signed ``value``, as torchvision places it: shears about the
    image's top-left corner (tan of the angle = value), translations by ``int(value)``
    pixels, rotations by ``value`` degrees counter-clockwise about the centre."""
    if op == "ShearX":  # x' = x - value * (y + 1/2)
        return np.array([[1.0, -value, -0.5 * value], [0.0, 1.0, 0.0]])
    if op == "ShearY":
        return np.array([[1.0, 0.0, 0.0], [-value, 1.0, -0.5 * value]])
    if op == "TranslateX":
        return np.array([[1.0, 0.0, float(int(value))], [0.0, 1.0, 0.0]])
    if op == "TranslateY":
        return np.array([[1.0, 0.0, 0.0], [0.0, 1.0, float(int(value))]])
    if op == "Rotate":
        return cv2.getRotationMatrix2D(((width - 1) / 2.0, (height - 1) / 2.0), value, 1.0)
    raise ValueError(f"{op} is not a geometric operation")


def warp(image: np.ndarray, matrix: np.ndarray, fill_mode: str, cval: float) -> np.ndarray:
    """One image through ``matrix``, nearest-neighbour, borders by ``fill_mode``."""
    h, w = image.shape[:2]
    return cv2.warpAffine(
        image,
        matrix,
        (w, h),
        flags=cv2.INTER_NEAREST,
        borderMode=BORDERS[fill_mode],
        borderValue=(cval, cval, cval),
    )


def posterize(images: np.ndarray, bits: int) -> np.ndarray:
    """Keep the top ``bits`` bits of every value."""
    return images & np.uint8((0xFF << (8 - bits)) & 0xFF)


def solarize(images: np.ndarray, threshold: float) -> np.ndarray:
    """Invert every value >= ``threshold``."""
    levels = np.arange(256)
    lut = np.where(levels >= threshold, 255 - levels, levels).astype(np.uint8)
    return colour.apply_luts(images, np.broadcast_to(lut, (len(images), 256)))


def _channel_bounds(image: np.ndarray) -> np.ndarray:
    """(2, 3) float32: each channel's min, then max."""
    bounds = [cv2.minMaxLoc(channel)[:2] for channel in cv2.split(image)]
    return np.array(bounds, dtype=np.float32).T


def autocontrast_luts(images: np.ndarray) -> np.ndarray:
    """(N, 256, 3) tables of torchvision's ``autocontrast``: each channel stretched from its
    own min..max to 0..255, ``trunc((v - min) * (255 / (max - min)))`` in float32; a flat
    channel is kept."""
    bounds = np.stack([_channel_bounds(image) for image in images])  # (N, 2, 3)
    low, high = bounds[:, 0], bounds[:, 1]
    flat_channel = high == low
    scale = np.float32(255.0) / np.where(flat_channel, np.float32(1.0), high - low)
    scale[flat_channel] = 1.0
    low[flat_channel] = 0.0
    levels = np.arange(256, dtype=np.float32)[None, :, None]
    return colour._truncate((levels - low[:, None, :]) * scale[:, None, :])


def equalize_luts(images: np.ndarray) -> np.ndarray:
    """(N, 256, 3) tables of ``PIL.ImageOps.equalize`` (and torchvision's ``equalize``) per
    channel: the cumulative histogram spread over 0..255, identity when one value dominates."""
    luts = np.empty((len(images), 256, 3), dtype=np.uint8)
    identity = np.arange(256)
    for i, image in enumerate(images):
        for c in range(3):
            hist = cv2.calcHist([image], [c], None, [256], [0, 256]).ravel().astype(np.int64)
            nonzero = hist[hist != 0]
            step = int(nonzero[:-1].sum()) // 255
            if step == 0:
                luts[i, :, c] = identity
                continue
            lut = (np.cumsum(hist) + step // 2) // step
            luts[i, :, c] = np.clip(np.concatenate(([0], lut[:-1])), 0, 255)
    return luts


def sharpness_blend(images: np.ndarray, factors: np.ndarray) -> np.ndarray:
    """torchvision's ``adjust_sharpness``: blend with a 3x3 smoothing (centre 5, others 1,
    over 13, rounded) of the image whose one-pixel border is the image itself."""
    h, w = images.shape[1:3]
    if h <= 2 or w <= 2:
        return images
    out = np.empty_like(images)
    for n, factor in enumerate(np.asarray(factors, dtype=np.float32)):
        own = images[n].astype(np.float32)
        degenerate = np.rint(cv2.filter2D(own, -1, _SMOOTH))
        degenerate[0], degenerate[-1] = own[0], own[-1]
        degenerate[:, 0], degenerate[:, -1] = own[:, 0], own[:, -1]
        degenerate *= np.float32(1.0) - factor
        own *= factor
        own += degenerate
        out[n] = np.clip(own, 0.0, 255.0, out=own)
    return out


def apply_op(
    op: str, images: np.ndarray, values: np.ndarray, fill_mode: str, cval: float
) -> np.ndarray:
    """``op`` at signed magnitude ``values[n]`` on image n of ``images``."""
    n, h, w, _ = images.shape
    if op == "Identity":
        return images
    if op in ("ShearX", "ShearY", "TranslateX", "TranslateY", "Rotate"):
        return np.stack(
            [
                warp(img, affine_matrix(op, v, h, w), fill_mode, cval)
                for img, v in zip(images, values, strict=True)
            ]
        )
    if op == "Brightness":
        return colour.apply_brightness(images, 1.0 + values)
    if op == "Color":
        return colour.apply_saturation(images, 1.0 + values)
    if op == "Contrast":
        return colour.apply_contrast(images, 1.0 + values)
    if op == "Sharpness":
        return sharpness_blend(images, 1.0 + values)
    if op == "Posterize":  # the magnitude is the same for every image
        return posterize(images, int(values[0]))
    if op == "Solarize":
        return solarize(images, float(values[0]))
    if op == "AutoContrast":
        return colour.apply_luts(images, autocontrast_luts(images))
    if op == "Equalize":
        return colour.apply_luts(images, equalize_luts(images))
    raise ValueError(f"unknown RandAugment operation {op!r}")


def apply_randaugment(
    images: np.ndarray,
    ops: np.ndarray,
    signs: np.ndarray,
    m: int,
    fill_mode: str,
    cval: float,
) -> np.ndarray:
    """Image n through ``OPS[ops[n, k]]`` for k = 0, 1, ... at magnitude ``m`` times
    ``signs[n, k]``; each slot runs every operation once on the images that drew it."""
    _, h, w, _ = images.shape
    out = images.copy()
    for k in range(ops.shape[1]):
        for index in np.unique(ops[:, k]):
            op = OPS[index]
            chosen = np.flatnonzero(ops[:, k] == index)
            values = magnitude(op, m, h, w) * signs[chosen, k]
            out[chosen] = apply_op(op, out[chosen], values, fill_mode, cval)
    return out


# -- the op -------------------------------------------------------------------------------

_NO_MAGNITUDE = ("Identity", "AutoContrast", "Equalize")


class RandAugmentSection(_Section):
    num_ops: int = Field(
        0, ge=0, le=14, description="RandAugment's N: operations applied per image; 0 is off."
    )
    magnitude: int = Field(
        9, ge=0, le=30, description="RandAugment's M: strength of every operation, 0..30."
    )


class RandAugment(PixelOp):
    """N operations per image from ``OPS`` at magnitude M, with the section's fill mode."""

    name = "randaugment"
    fields = {
        "randaugment": (
            RandAugmentSection,
            Field(default_factory=RandAugmentSection, description="RandAugment (Cubuk et al.)."),
        )
    }
    draws = ("ops", "signs")
    streams = (StreamUse(STREAM_RANDAUGMENT),)  # COLUMNS_PER_OP per operation slot

    def options_on(self, section: AugmentSection) -> dict[str, Any]:
        n = section.randaugment.num_ops
        return {"randaugment.num_ops": n} if n > 0 else {}

    def draw(self, section, seed, epoch, keys, height, width) -> Draw:
        n_ops = section.randaugment.num_ops
        u = self.streams[0].uniforms(seed, epoch, keys, n_ops * COLUMNS_PER_OP)
        ops, signs = draw_ops(u, n_ops)
        return {"ops": ops, "signs": signs}

    def apply(self, section, images, draw, seed, epoch, keys):
        m = section.randaugment.magnitude
        return apply_randaugment(
            images, draw["ops"], draw["signs"], m, section.fill_mode, section.cval
        )

    def describe(self, section, draw, i, height, width) -> str | None:
        names = []
        for index, sign in zip(draw["ops"][i], draw["signs"][i], strict=True):
            op = OPS[index]
            value = magnitude(op, section.randaugment.magnitude, height, width) * sign
            names.append(op if op in _NO_MAGNITUDE else f"{op} {value:.3g}")
        return "RA " + " / ".join(names)
