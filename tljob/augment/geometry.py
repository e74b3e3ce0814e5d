"""The geometry stage: the geometry ops' draws (``tljob.augment.ops``), composed into one
affine map per image and warped once with OpenCV.

Coordinates are (x, y) = (column, row) with pixel centres at integers, as in both
``scipy.ndimage`` (which tf_keras' ``apply_affine_transform`` calls, order 1) and
``cv2.warpAffine``. A view is computed by pulling every output pixel from the stored image
through one 2x3 inverse map, the composition (output -> stored) of

1. the output-side factors (the flips: tf_keras flips after its affine transform, so they
   act first on the output),
2. tf_keras' affine transform about the centre of the out_size image, the centred
   factors in registry order: ``T(c) . R(theta) . shift(tx, ty) . shear . zoom(zx, zy) .
   T(-c)``, c = out_size / 2 - 0.5,
3. the source factor: the resize (or random resized crop) of the stored image to
   out_size.

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
up to that half-pixel border).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

import cv2
import numpy as np

from tljob.augment.ops import GEOMETRY_OPS

if TYPE_CHECKING:
    from tljob.config.augment import AugmentSection

_BORDERS = {
    "nearest": cv2.BORDER_REPLICATE,
    "constant": cv2.BORDER_CONSTANT,
    "reflect": cv2.BORDER_REFLECT,
}
# Every geometry op's parameters and their values when it is off.
_NEUTRAL: dict[str, Any] = {k: v for op in GEOMETRY_OPS for k, v in op.params.items()}


class GeometryParams:
    """One batch's geometric draw: every geometry op's parameters by name, one entry per
    image, with the op's neutral value where it is off: theta (degrees, counter-clockwise
    on screen), tx, ty (tf_keras' shifts in pixels of the training size), shear (degrees),
    zx, zy (zoom, > 1 shows more of the image), flip_h, flip_v (bool) and box ((N, 4) crop
    box (x0, y0, width, height) in stored pixels, or None for the whole stored image).
    Read them as attributes (``params.theta``); the arrays are not to be written."""

    __slots__ = ("_n", "_values")

    def __init__(self, n: int, values: Mapping[str, np.ndarray | None]) -> None:
        unknown = sorted(set(values) - set(_NEUTRAL))
        if unknown:
            raise TypeError(f"no geometry op draws {unknown}: the parameters are {list(_NEUTRAL)}")
        self._n = int(n)
        self._values = {
            name: values[name] if name in values else _full(n, neutral, neutral)
            for name, neutral in _NEUTRAL.items()
        }

    def __getattr__(self, name: str) -> Any:
        try:
            return self._values[name]
        except KeyError:
            raise AttributeError(f"GeometryParams has no parameter {name!r}") from None

    def __len__(self) -> int:
        return self._n

    @classmethod
    def fixed(cls, n: int, **values: Any) -> GeometryParams:
        """The same parameters for ``n`` images (tests, and tf_keras-style calls), e.g.
        ``fixed(1, theta=12.0, flip_h=True, box=(10, 20, 100, 120))``."""
        unknown = sorted(set(values) - set(_NEUTRAL))
        if unknown:
            raise TypeError(f"no geometry op draws {unknown}: the parameters are {list(_NEUTRAL)}")
        return cls(n, {name: _full(n, value, _NEUTRAL[name]) for name, value in values.items()})


def _full(n: int, value: Any, neutral: Any) -> np.ndarray | None:
    """``value`` for ``n`` images, typed as the parameter (bool, float, or a per-image row)."""
    if value is None:
        return None
    if isinstance(neutral, bool):
        return np.full(n, value, dtype=bool)
    row = np.asarray(value, dtype=np.float64)
    return np.full(n, row) if row.ndim == 0 else np.tile(row, (n, 1))


def draw(
    section: AugmentSection,
    seed: int,
    epoch: int,
    image_keys: np.ndarray,
    in_size: int | np.ndarray,
    out_size: int,
) -> GeometryParams:
    """The geometric parameters of images ``image_keys`` in ``epoch`` for ``section`` (the
    stored images' side ``in_size``: one value, or one per image): each geometry op that is
    on draws its own (keyed by seed, epoch and image key); the others keep their neutral
    values."""
    keys = np.asarray(image_keys)
    sizes = np.broadcast_to(np.asarray(in_size), (len(keys),))
    values: dict[str, Any] = {}
    for op in GEOMETRY_OPS:
        if op.options_on(section):
            values.update(op.draw(section, seed, epoch, keys, sizes, out_size))
    return GeometryParams(len(keys), values)


def options_on(section: AugmentSection) -> bool:
    """Any geometry op is on (else views are plain resizes)."""
    return any(op.options_on(section) for op in GEOMETRY_OPS)


def _product(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """(N, 3, 3) a . b, entry by entry in plain float64 (no fused multiply-add), so a
    product with zeros and ones leaves the other terms' bits exactly as they were."""
    out = np.empty_like(a)
    for i in range(3):
        for j in range(3):
            out[:, i, j] = (
                a[:, i, 0] * b[:, 0, j] + a[:, i, 1] * b[:, 1, j] + a[:, i, 2] * b[:, 2, j]
            )
    return out


def _chain(factors: list[np.ndarray]) -> np.ndarray:
    result = factors[0]
    for factor in factors[1:]:
        result = _product(result, factor)
    return result


def affine_matrices(params: GeometryParams, in_size: int | np.ndarray, out_size: int) -> np.ndarray:
    """(N, 2, 3) float64 inverse maps (output pixel -> stored pixel, ``WARP_INVERSE_MAP``):
    the source factor, then the centred factors about the view's centre, then the
    output-side factors (see the module docstring)."""
    n = len(params)
    sizes = np.broadcast_to(np.asarray(in_size), (n,))

    def factors(place: str) -> list[np.ndarray]:
        found = [op.factor(params, sizes, out_size) for op in GEOMETRY_OPS if op.place == place]
        return found or [np.tile(np.eye(3), (n, 1, 1))]

    m = _chain(factors("centred"))
    c = out_size / 2.0 - 0.5
    # T(c) . m . T(-c): the translation gains c - m_lin . (c, c).
    m[:, 0, 2] += c - (m[:, 0, 0] + m[:, 0, 1]) * c
    m[:, 1, 2] += c - (m[:, 1, 0] + m[:, 1, 1]) * c
    return (_chain(factors("source")) @ (m @ _chain(factors("output"))))[:, :2, :]


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
    out: np.ndarray | None = None,
) -> np.ndarray:
    """(N, out_size, out_size, 3) uint8: each uint8 (H, W, 3) image pulled through its
    inverse map (bilinear), one OpenCV call per image; points outside the image are filled
    by ``fill_mode`` as scipy's (see the module docstring for the edges). Written into
    ``out`` (C-contiguous, that shape, returned) when given."""
    if out is None:
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
