"""What an augmentation op is: the contract every module of ``tljob.augment.ops`` fills.

An op owns, in its one module:

- ``name``: its registry name;
- ``fields``: the options it adds to the ``augment`` config section, ``{field: (type,
  Field(...))}`` (``tljob.config.augment`` composes the section from every op's);
- ``options_on(section)``: which of its options are on, by dotted name and value. This
  is the one place that says when the op runs: it runs when the dict is not empty;
- ``streams``: the ``keys.uniforms`` / ``keys.generator`` streams (and columns) its draws
  use; no two ops of the registry share one, so turning an op on or off never changes
  another op's draws (and a view depends only on (seed, epoch, image key));
- its draw, apply and preview caption, by kind: ``GeometryOp`` (a factor of the one
  affine map per image), ``PixelOp`` (colour and pixel work on the warped views, in
  registry order) or ``BatchOp`` (a whole batch at once: MixUp / CutMix);
- ``model_side`` and ``model_layer``: which of its options the in-model Keras
  preprocessing layers (``augment.where: model``) can run, and the layer that runs them,
  as a class name and arguments (``tljob.nn.augment_layers`` builds it; no TensorFlow
  here).

Pure: numpy and pydantic; never Ray or TensorFlow.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar

import numpy as np

from tljob.augment import keys as keyed
from tljob.errors import UserError

if TYPE_CHECKING:
    from tljob.augment.geometry import GeometryParams
    from tljob.config.augment import AugmentSection

Range = tuple[float, float]
# One op's config fields: {field name: (type, pydantic FieldInfo)}.
Fields = dict[str, tuple[Any, Any]]
# One op's draw for a batch: named parameters, one row per image.
Draw = dict[str, Any]
# An in-model layer: (tf_keras.layers class name, or one of tljob.nn.layers, and kwargs).
LayerSpec = tuple[str, dict[str, Any]]

# ImageDataGenerator's stream: rotation, shift, shear, zoom and flip take two columns or
# one of it each (their columns were always drawn together, so their views keep them).
STREAM_GEOMETRY = 0x6E01


class ModelAugmentError(UserError, ValueError):
    """An option the in-model layers cannot reproduce."""


@dataclass(frozen=True)
class StreamUse:
    """Columns ``first`` .. ``first + count - 1`` of draw stream ``stream``; ``count``
    None: every column (the op draws as many as its options ask for, or a generator)."""

    stream: int
    first: int = 0
    count: int | None = None

    def overlaps(self, other: StreamUse) -> bool:
        if self.stream != other.stream:
            return False
        end = float("inf") if self.count is None else self.first + self.count
        other_end = float("inf") if other.count is None else other.first + other.count
        return self.first < other_end and other.first < end

    def uniforms(self, seed: int, epoch: int, keys: np.ndarray, count: int | None = None):
        """(len(keys), count) draws of these columns (``count`` when the use is open)."""
        columns = self.count if count is None else count
        if columns is None:
            raise ValueError(f"stream {self.stream:#x} is open: say how many columns")
        return keyed.uniforms(seed, epoch, keys, columns, self.stream, self.first)


class AugmentOp:
    """One augmentation operation (see the module docstring). Subclass one of the kinds."""

    kind: ClassVar[str]
    name: ClassVar[str]
    fields: ClassVar[Fields]
    streams: ClassVar[tuple[StreamUse, ...]]
    # Dotted options of this op the in-model layers can run (empty: none).
    model_side: ClassVar[tuple[str, ...]] = ()

    def options_on(self, section: AugmentSection) -> dict[str, Any]:
        """This op's options that are on, by dotted name, e.g. ``{"rotation_range": 40.0}``."""
        raise NotImplementedError

    def model_layer(self, section: AugmentSection, image_size: int) -> LayerSpec | None:
        """The in-model layer that runs this op for ``section`` (None when the op is off).
        Only called when every option on is in ``model_side``; raises
        ``ModelAugmentError`` for a value the layer cannot reproduce."""
        return None

    def __repr__(self) -> str:
        return f"<augment op {self.name}>"


class GeometryOp(AugmentOp):
    """A geometric op: its draw fills some named parameters of ``GeometryParams`` and its
    factor joins the one inverse map (output pixel -> stored pixel) per image:

        map = source . T(c) . [centred factors, registry order] . T(-c) . [output factors]

    ``place`` says where: 'source' (the one op that picks the box of the stored image that
    fills the view; its factor is that box's resize), 'centred' (tf_keras' transform about
    the centre c of the view: its factor is a 3x3 matrix about the origin) or 'output'
    (after tf_keras' transform, as its flips)."""

    kind = "geometry"
    place: ClassVar[str]
    # The parameters this op draws, with their values when it is off (None: absent).
    params: ClassVar[dict[str, Any]]

    def draw(
        self,
        section: AugmentSection,
        seed: int,
        epoch: int,
        keys: np.ndarray,
        in_size: np.ndarray,
        out_size: int,
    ) -> Draw:
        """This op's ``params`` for images ``keys`` (stored sides ``in_size``, (N,)) of the
        view size ``out_size`` in ``epoch``."""
        raise NotImplementedError

    def factor(self, params: GeometryParams, in_size: np.ndarray, out_size: int) -> np.ndarray:
        """(N, 3, 3) float64: this op's factor of the inverse map for the drawn ``params``
        (the identity for its values when off)."""
        raise NotImplementedError

    def without_warp(self, params: GeometryParams) -> np.ndarray:
        """(N,) bool: images whose draw of this op the crop-resize-flip path (no warp)
        reproduces exactly. Only the crop and the flips, and identity draws, can."""
        return np.zeros(len(params), dtype=bool)

    def describe(self, params: GeometryParams, i: int) -> str | None:
        """Image ``i``'s draw of this op for the preview caption (None: nothing to say)."""
        return None


class PixelOp(AugmentOp):
    """A colour or pixel op on the warped uint8 views (N, H, W, 3); the registry's order
    is the order they apply in."""

    kind = "pixel"
    # The names of the parameters ``draw`` returns (``PhotometricDraw`` reads them).
    draws: ClassVar[tuple[str, ...]]

    def draw(
        self,
        section: AugmentSection,
        seed: int,
        epoch: int,
        keys: np.ndarray,
        height: int,
        width: int,
    ) -> Draw:
        """This op's parameters for images ``keys`` (uint64) of (height, width) in
        ``epoch``: named arrays, one row per image."""
        raise NotImplementedError

    def apply(
        self,
        section: AugmentSection,
        images: np.ndarray,
        draw: Draw,
        seed: int,
        epoch: int,
        keys: np.ndarray,
    ) -> np.ndarray:
        """``images`` with this op's ``draw`` applied (a new array, or ``images`` itself
        when nothing changes; the input is never written to)."""
        raise NotImplementedError

    def describe(
        self, section: AugmentSection, draw: Draw, i: int, height: int, width: int
    ) -> str | None:
        """Image ``i``'s draw for the preview caption (None: nothing to say)."""
        return None


class BatchOp(AugmentOp):
    """An op on whole batches (always in the data pipeline, also with ``where: model``):
    it is not one of the per-image options and has no preview caption."""

    kind = "batch"

    def options_on(self, section: AugmentSection) -> dict[str, Any]:
        """Per-image options only: a batch op has none (see ``batch_options_on``)."""
        return {}

    def batch_options_on(self, section: AugmentSection) -> dict[str, Any]:
        """This op's options that are on, by dotted name."""
        raise NotImplementedError

    def apply_batch(
        self,
        section: AugmentSection,
        images: np.ndarray,
        labels: np.ndarray,
        num_classes: int,
        seed: int,
        epoch: int,
        batch_key: int,
    ) -> tuple[np.ndarray, np.ndarray]:
        """(N, H, W, 3) uint8 images and (N,) class indices of one batch (keyed by
        ``batch_key``) -> (uint8 images, (N, num_classes) float32 class probabilities)."""
        raise NotImplementedError


# -- what several ops' fields share ---------------------------------------------------------


def ordered(value: Range, low: float, high: float | None = None) -> Range:
    """A [first, second] range rule: first <= second, both >= low (and <= high)."""
    lo, hi = value
    if lo > hi:
        raise ValueError("the first bound must be <= the second")
    if lo < low or (high is not None and hi > high):
        upper = f" and <= {high}" if high is not None else ""
        raise ValueError(f"bounds must be >= {low}{upper}")
    return value


def aspect_ratios(value: Range) -> Range:
    """A range of width / height ratios: ordered and > 0."""
    ordered(value, 0.0)
    if value[0] <= 0.0:
        raise ValueError("the aspect ratio must be > 0")
    return value


def fill_arguments(section: AugmentSection) -> dict[str, Any]:
    """The Keras layers' fill arguments for ``fill_mode`` / ``cval``."""
    return {"fill_mode": section.fill_mode, "fill_value": float(section.cval)}


def linear(n: int) -> np.ndarray:
    """(n, 3, 3) identity matrices, for a factor to fill in."""
    return np.tile(np.eye(3), (n, 1, 1))
