"""ImageDataGenerator's geometry, drawn per batch and warped once per image with OpenCV.

Coordinates are (x, y) = (column, row) with pixel centres at integers, as in both
``scipy.ndimage`` (which tf_keras' ``apply_affine_transform`` calls, order 1) and
``cv2.warpAffine``. A view is computed by pulling every output pixel from the stored image
through one 2x3 inverse map, the composition (output -> stored) of

1. the flips (tf_keras flips after its affine transform, so they act first on the output),
2. tf_keras' affine transform about the centre of the out_size image:
   ``T(c) . R(theta) . shift(tx, ty) . shear . zoom(zx, zy) . T(-c)``, c = out_size / 2 - 0.5,
3. the resize (or random resized crop) of the stored image to out_size, with half-pixel
   centres as ``cv2.resize``: out pixel x reads box_x0 + (x + 0.5) * box_w / out - 0.5.

``tx`` and ``ty`` have tf_keras' ``apply_transform`` meaning: ``tx`` moves along x (columns:
a positive tx pulls from the right, so content moves left), ``ty`` along y (rows). tf_keras'
own ``get_random_transform`` draws tx from ``height_shift_range`` (scaled by the height), so
its height option actually moves images sideways; tljob draws tx from ``width_shift_range``,
the documented meaning (for the ``seed`` preset, both 0.2 on square images, the two are the
same distribution).

Fill modes at the borders, against scipy's (what tf_keras uses):

- nearest: ``BORDER_REPLICATE``, the same.
- reflect: ``BORDER_REFLECT`` (half-sample symmetric, ``dcba|abcd|dcba``), the same.
- constant: cval (rounded to uint8). scipy's 'constant' gives cval to any point outside
  [0, size - 1] and never blends it in; OpenCV's ``BORDER_CONSTANT`` blends the edge pixel
  with cval for points less than one pixel outside (scipy's 'grid-constant'). So a second,
  one-channel warp of an all-255 mask finds the pixels that read anything outside (mask <
  255) and they are set to cval: the same as scipy, up to the 1/32-pixel quantisation below.
- wrap: scipy's 'wrap' is not a plain tiling: points inside [0, size - 1] interpolate as usual,
  points outside wrap with period size - 1 (the first and last samples overlap). OpenCV's
  ``BORDER_WRAP`` has period size, which drifts by one pixel per period, so wrap is computed
  with explicit coordinate maps and ``cv2.remap`` (the same kernel), matching scipy.

Both OpenCV kernels quantise source coordinates to 1/32 pixel and round to uint8; tf_keras
keeps floats. Resizing from a stored size S to a different out_size is composed into the
same map, so the fill extends the stored image rather than a resized copy (the same pixels
up to that half-pixel border). Likewise a crop box's outermost output pixels, which read up
to half a pixel outside the box, take the stored pixels there where torchvision's
crop-then-resize repeats the box's edge (``Augmenter`` crops then resizes when a draw is
only a crop and flips, so those views are torchvision's exactly).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import cv2
import numpy as np

from tljob.augment import keys as keyed
from tljob.config.augment import AugmentSection

# `keys.uniforms` streams of this module (other modules use their own).
STREAM_GEOMETRY = 0x6E01
STREAM_CROP = 0x6E02

# Columns of the geometry stream: every column is drawn whatever is on, so turning one
# option on or off never changes another option's draw.
COL_THETA, COL_SHIFT_X, COL_SHIFT_Y, COL_SHEAR, COL_ZOOM_X, COL_ZOOM_Y = range(6)
COL_FLIP_H, COL_FLIP_V = 6, 7
GEOMETRY_COLUMNS = 8
# The crop stream: torchvision's 10 attempts, each (area fraction, log ratio, top, left).
CROP_ATTEMPTS = 10
CROP_COLUMNS_PER_ATTEMPT = 4

_BORDERS = {
    "nearest": cv2.BORDER_REPLICATE,
    "constant": cv2.BORDER_CONSTANT,
    "reflect": cv2.BORDER_REFLECT,
}


@dataclass(frozen=True)
class GeometryParams:
    """One batch's geometric draw, one entry per image.

    theta: rotation in degrees (counter-clockwise on screen); tx, ty: tf_keras' shifts in
    pixels of the training size (see the module docstring for the axes); shear: degrees;
    zx, zy: zoom (> 1 shows more of the image); flip_h, flip_v: bool; box: (N, 4) crop box
    (x0, y0, width, height) in stored pixels, or None for the whole stored image.
    """

    theta: np.ndarray
    tx: np.ndarray
    ty: np.ndarray
    shear: np.ndarray
    zx: np.ndarray
    zy: np.ndarray
    flip_h: np.ndarray
    flip_v: np.ndarray
    box: np.ndarray | None = None

    def __len__(self) -> int:
        return len(self.theta)

    @classmethod
    def fixed(
        cls,
        n: int,
        *,
        theta: float = 0.0,
        tx: float = 0.0,
        ty: float = 0.0,
        shear: float = 0.0,
        zx: float = 1.0,
        zy: float = 1.0,
        flip_h: bool = False,
        flip_v: bool = False,
        box: Sequence[float] | None = None,
    ) -> GeometryParams:
        """The same parameters for ``n`` images (tests, and tf_keras-style calls)."""

        def full(value: float, dtype: type = np.float64) -> np.ndarray:
            return np.full(n, value, dtype=dtype)

        return cls(
            theta=full(theta),
            tx=full(tx),
            ty=full(ty),
            shear=full(shear),
            zx=full(zx),
            zy=full(zy),
            flip_h=full(flip_h, bool),
            flip_v=full(flip_v, bool),
            box=None if box is None else np.tile(np.asarray(box, np.float64), (n, 1)),
        )


def geometric_options_on(section: AugmentSection) -> bool:
    """Any option of this module is on (else views are plain resizes)."""
    return bool(
        section.rotation_range
        or section.width_shift_range
        or section.height_shift_range
        or section.shear_range
        or section.zoom_bounds != (1.0, 1.0)
        or section.horizontal_flip
        or section.vertical_flip
        or section.random_resized_crop.enabled
    )


def _shift_pixels(u: np.ndarray, shift_range: float, out_size: int) -> np.ndarray:
    """tf_keras: uniform in [-r, r]; a fraction of the size when r < 1, pixels otherwise."""
    shift = (2.0 * u - 1.0) * shift_range
    return shift * out_size if shift_range < 1 else shift


def draw_geometry(
    section: AugmentSection,
    u: np.ndarray,
    in_size: int | np.ndarray,
    out_size: int,
    crop_u: np.ndarray | None = None,
) -> GeometryParams:
    """Turn uniform draws into parameters, as tf_keras' ``get_random_transform``.

    ``u`` is (N, GEOMETRY_COLUMNS) from ``keys.uniforms(..., stream=STREAM_GEOMETRY)``,
    columns COL_THETA.. COL_FLIP_V; ``crop_u`` is (N, CROP_ATTEMPTS * 4) from
    ``stream=STREAM_CROP`` (needed only when the random resized crop is on). ``in_size`` is
    the stored images' side (one value, or one per image).
    """
    n = len(u)
    lo, hi = section.zoom_bounds
    zoom_on = (lo, hi) != (1.0, 1.0)
    box = None
    if section.random_resized_crop.enabled:
        if crop_u is None:
            raise ValueError("the random resized crop is on: crop_u draws are needed")
        box = _crop_boxes(section, crop_u, np.broadcast_to(np.asarray(in_size), (n,)))
    return GeometryParams(
        theta=(2.0 * u[:, COL_THETA] - 1.0) * section.rotation_range,
        tx=_shift_pixels(u[:, COL_SHIFT_X], section.width_shift_range, out_size),
        ty=_shift_pixels(u[:, COL_SHIFT_Y], section.height_shift_range, out_size),
        shear=(2.0 * u[:, COL_SHEAR] - 1.0) * section.shear_range,
        zx=lo + (hi - lo) * u[:, COL_ZOOM_X] if zoom_on else np.ones(n),
        zy=lo + (hi - lo) * u[:, COL_ZOOM_Y] if zoom_on else np.ones(n),
        flip_h=(u[:, COL_FLIP_H] < 0.5) & section.horizontal_flip,
        flip_v=(u[:, COL_FLIP_V] < 0.5) & section.vertical_flip,
        box=box,
    )


def draw_batch(
    section: AugmentSection,
    seed: int,
    epoch: int,
    image_keys: np.ndarray,
    in_size: int | np.ndarray,
    out_size: int,
) -> GeometryParams:
    """``draw_geometry`` with the keyed draws of (seed, epoch, key) for each image."""
    u = keyed.uniforms(seed, epoch, image_keys, GEOMETRY_COLUMNS, STREAM_GEOMETRY)
    crop_u = None
    if section.random_resized_crop.enabled:
        count = CROP_ATTEMPTS * CROP_COLUMNS_PER_ATTEMPT
        crop_u = keyed.uniforms(seed, epoch, image_keys, count, STREAM_CROP)
    return draw_geometry(section, u, in_size, out_size, crop_u)


def _crop_boxes(section: AugmentSection, u: np.ndarray, size: np.ndarray) -> np.ndarray:
    """torchvision's ``RandomResizedCrop.get_params`` for square images of side ``size``,
    vectorised: up to 10 attempts of (area, log-uniform ratio), the first whose integer box
    fits wins, its corner uniform among the integer positions; else the centre crop."""
    scale, ratio = section.random_resized_crop.scale, section.random_resized_crop.ratio
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


def _keras_affine(params: GeometryParams, out_size: int) -> np.ndarray:
    """(N, 3, 3): tf_keras' inverse map on the out_size image, flips first."""
    n = len(params)
    theta, shear = np.deg2rad(params.theta), np.deg2rad(params.shear)
    cos, sin = np.cos(theta), np.sin(theta)
    # R . shift . shear . zoom, multiplied out (rotation [[c, -s], [s, c]], shear
    # [[1, -sin], [0, cos]], zoom diag(zx, zy), shift (tx, ty) applied before the rotation).
    sh_s, sh_c = -np.sin(shear), np.cos(shear)
    m = np.zeros((n, 3, 3))
    m[:, 0, 0] = cos * params.zx
    m[:, 0, 1] = (cos * sh_s - sin * sh_c) * params.zy
    m[:, 1, 0] = sin * params.zx
    m[:, 1, 1] = (sin * sh_s + cos * sh_c) * params.zy
    m[:, 0, 2] = cos * params.tx - sin * params.ty
    m[:, 1, 2] = sin * params.tx + cos * params.ty
    m[:, 2, 2] = 1.0
    c = out_size / 2.0 - 0.5
    # T(c) . m . T(-c): the translation gains c - m_lin . (c, c).
    m[:, 0, 2] += c - (m[:, 0, 0] + m[:, 0, 1]) * c
    m[:, 1, 2] += c - (m[:, 1, 0] + m[:, 1, 1]) * c
    flips = np.tile(np.eye(3), (n, 1, 1))
    last = out_size - 1.0
    flips[params.flip_h, 0, 0] = -1.0
    flips[params.flip_h, 0, 2] = last
    flips[params.flip_v, 1, 1] = -1.0
    flips[params.flip_v, 1, 2] = last
    return m @ flips


def resize_matrices(boxes: np.ndarray, out_size: int) -> np.ndarray:
    """(N, 3, 3): output pixel -> stored pixel of a (crop box) resize, half-pixel centres."""
    n = len(boxes)
    m = np.zeros((n, 3, 3))
    sx, sy = boxes[:, 2] / out_size, boxes[:, 3] / out_size
    m[:, 0, 0], m[:, 1, 1], m[:, 2, 2] = sx, sy, 1.0
    m[:, 0, 2] = boxes[:, 0] + 0.5 * sx - 0.5
    m[:, 1, 2] = boxes[:, 1] + 0.5 * sy - 0.5
    return m


def whole_boxes(in_size: int | np.ndarray, n: int) -> np.ndarray:
    """(N, 4) boxes covering the whole stored image of side ``in_size``."""
    side = np.broadcast_to(np.asarray(in_size, dtype=np.float64), (n,))
    zeros = np.zeros(n)
    return np.stack([zeros, zeros, side, side], axis=1)


def affine_matrices(params: GeometryParams, in_size: int | np.ndarray, out_size: int) -> np.ndarray:
    """(N, 2, 3) float64 inverse maps (output pixel -> stored pixel, ``WARP_INVERSE_MAP``):
    crop/resize of the stored image, then tf_keras' affine transform, then the flips."""
    boxes = params.box if params.box is not None else whole_boxes(in_size, len(params))
    return (resize_matrices(boxes, out_size) @ _keras_affine(params, out_size))[:, :2, :]


def _wrap_coordinates(coord: np.ndarray, size: int) -> np.ndarray:
    """scipy's 'wrap': unchanged inside [0, size - 1], period size - 1 outside. Points
    within 1/64 pixel of the edge count as inside: OpenCV rounds them onto it anyway, and
    float noise (a rotation by 360 degrees reads x = -1e-15) must not jump a whole period."""
    if size == 1:
        return np.zeros_like(coord, dtype=np.float32)
    outside = (coord < -_EDGE) | (coord > size - 1 + _EDGE)
    if outside.any():
        coord[outside] = np.mod(coord[outside], size - 1)
    return coord.astype(np.float32)


# OpenCV quantises source coordinates to 1/32 pixel: closer than half of it is on the edge.
_EDGE = 1.0 / 64

_FILLS: dict[tuple[int, int], np.ndarray] = {}


def _fill_image(size: int, value: int) -> np.ndarray:
    """A (size, size, 3) uint8 image of ``value`` (cached: it is never written)."""
    if (size, value) not in _FILLS:
        _FILLS[size, value] = np.full((size, size, 3), value, dtype=np.uint8)
    return _FILLS[size, value]


def _warp_wrap(image: np.ndarray, matrix: np.ndarray, out_size: int) -> np.ndarray:
    steps = np.arange(out_size, dtype=np.float64)
    # The map is affine: a row term plus a column term, one full-size addition each.
    map_x = (matrix[0, 0] * steps)[None, :] + (matrix[0, 1] * steps + matrix[0, 2])[:, None]
    map_y = (matrix[1, 0] * steps)[None, :] + (matrix[1, 1] * steps + matrix[1, 2])[:, None]
    map_x = _wrap_coordinates(map_x, image.shape[1])
    map_y = _wrap_coordinates(map_y, image.shape[0])
    return cv2.remap(image, map_x, map_y, cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)


def warp(
    images: Sequence[np.ndarray] | np.ndarray,
    matrices: np.ndarray,
    out_size: int,
    fill_mode: str = "nearest",
    cval: float = 0.0,
) -> np.ndarray:
    """(N, out_size, out_size, 3) uint8: each uint8 (H, W, 3) image pulled through its
    inverse map (bilinear), one OpenCV call per image; points outside the image are filled
    by ``fill_mode`` as scipy's (see the module docstring for the edges)."""
    out = np.empty((len(images), out_size, out_size, 3), dtype=np.uint8)
    flags = cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP
    fill = int(np.clip(np.rint(cval), 0, 255))
    size = (out_size, out_size)
    for i, image in enumerate(images):
        image = np.ascontiguousarray(image)
        if fill_mode == "wrap":
            out[i] = _warp_wrap(image, matrices[i], out_size)
            continue
        # OpenCV's bilinear warp is vectorised for 4 channels, not for 3: through RGBA
        # (alpha 255) the pixels are the same at 0.16 instead of 0.27 ms per 224 px view,
        # conversions included (measured). The alpha channel is the inside mask: below 255
        # where a sample read outside the image (border alpha 0).
        warped = cv2.warpAffine(
            cv2.cvtColor(image, cv2.COLOR_RGB2RGBA),
            matrices[i],
            size,
            flags=flags,
            borderMode=_BORDERS[fill_mode],
            borderValue=(fill, fill, fill, 0),
        )
        cv2.cvtColor(warped, cv2.COLOR_RGBA2RGB, dst=out[i])
        if fill_mode == "constant":
            read_outside = cv2.compare(warped[:, :, 3], 255, cv2.CMP_LT)
            cv2.copyTo(_fill_image(out_size, fill), read_outside, out[i])
    return out
