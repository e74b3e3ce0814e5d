"""The Augmenter: stored uint8 images -> the training views of one batch.

Geometry (the geometry ops of ``tljob.augment.ops``: random resized crop, rotation, shift,
shear, zoom, flips) is one affine map per image, warped once (``tljob.augment.geometry``);
the pixel ops follow (``tljob.augment.photometric``). Every draw is keyed by (seed, epoch,
image key), so a view does not depend on which batch, block, worker or retry computes it.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from tljob.augment import geometry
from tljob.augment.geometry import GeometryParams
from tljob.augment.ops import GEOMETRY_OPS
from tljob.augment.ops.random_resized_crop import whole_boxes
from tljob.augment.photometric import Photometric
from tljob.config.augment import AugmentSection
from tljob.images import resize_fast_uint8


class Augmenter:
    """The data-side augmentation of ``section`` at the training size ``out_size``.

    ``seed`` is the run's seed for the views (``section.seed`` wins when it is set). With
    ``section.where == "model"`` the model's preprocessing layers augment, so here images are
    only resized (``active`` is False).
    """

    def __init__(self, section: AugmentSection, out_size: int, seed: int) -> None:
        self.section = section
        self.out_size = int(out_size)
        self.seed = int(section.seed if section.seed is not None else seed)
        on_data = section.where == "data"
        self.geometric = on_data and geometry.options_on(section)
        self.photometric = Photometric(section) if on_data else None

    @property
    def active(self) -> bool:
        """Views differ from plain resizes (some data-side per-image option is on)."""
        return self.section.where == "data" and self.section.active

    def draw(self, keys: np.ndarray, epoch: int, in_size: int | np.ndarray) -> GeometryParams:
        """The geometric parameters of images ``keys`` in ``epoch`` (stored side ``in_size``)."""
        return geometry.draw(self.section, self.seed, epoch, keys, in_size, self.out_size)

    def __call__(
        self,
        images: Sequence[np.ndarray] | np.ndarray,
        keys: np.ndarray,
        epoch: int,
        out: np.ndarray | None = None,
    ) -> np.ndarray:
        """(N, out_size, out_size, 3) uint8 views of uint8 (S, S, 3) ``images`` (any S, one
        key each) in ``epoch``. With ``out`` (a C-contiguous uint8 array of that shape, say
        a slice of a task's whole output) the views are written there and ``out`` is
        returned: the same pixels, without a copy of them afterwards."""
        keys = np.asarray(keys)
        if len(images) != len(keys):
            raise ValueError(f"{len(images)} images but {len(keys)} keys")
        shape = (len(images), self.out_size, self.out_size, 3)
        if out is not None and (out.shape != shape or out.dtype != np.uint8):
            raise ValueError(f"out is {out.dtype} {out.shape}, not uint8 {shape}")
        views = out if out is not None else np.empty(shape, dtype=np.uint8)
        if self.geometric:
            sizes = np.array([image.shape[0] for image in images], dtype=np.int64)
            self._render(images, self.draw(keys, epoch, sizes), sizes, views)
        else:
            for i, image in enumerate(images):
                resize_fast_uint8(image, self.out_size, dst=views[i])
        if self.photometric is not None and self.photometric.active:
            coloured = self.photometric(views, keys, epoch, self.seed)
            if out is None:
                return coloured
            if coloured is not out:
                out[...] = coloured
        return views

    def _render(
        self,
        images: Sequence[np.ndarray] | np.ndarray,
        params: GeometryParams,
        sizes: np.ndarray,
        views: np.ndarray,
    ) -> None:
        """Warp each image through its map; an image whose draw is only a crop (or the whole
        image) and flips (every geometry op's ``without_warp``) is resized and flipped
        instead: the same pixels as torchvision's crop-then-resize, at about a third of a
        warp's cost (the light presets' case)."""
        out = self.out_size
        matrices = geometry.affine_matrices(params, sizes, out)
        boxes = params.box if params.box is not None else whole_boxes(sizes, len(sizes))
        aligned = np.logical_and.reduce([op.without_warp(params) for op in GEOMETRY_OPS])
        warped = np.flatnonzero(~aligned)
        section = self.section
        if len(warped) == len(images):  # every image warped (the heavy presets): in place
            geometry.warp(images, matrices, out, section.fill_mode, section.cval, out=views)
        elif len(warped):
            subset = [images[i] for i in warped]
            views[warped] = geometry.warp(
                subset, matrices[warped], out, section.fill_mode, section.cval
            )
        for i in np.flatnonzero(aligned):
            x0, y0, w, h = (int(v) for v in boxes[i])
            view = resize_fast_uint8(images[i][y0 : y0 + h, x0 : x0 + w], out)
            if params.flip_h[i]:
                view = view[:, ::-1]
            if params.flip_v[i]:
                view = view[::-1]
            views[i] = view

    def describe(self, params: GeometryParams, i: int) -> str:
        """A short label of image ``i``'s draw, each geometry op's in registry order, e.g.
        "rot +12°, shift (3, -5) px, zoom 0.91x1.08, flip h" (shift: how far content moves
        right and down, in training pixels); "resize" when the draw changes nothing."""
        parts = [op.describe(params, i) for op in GEOMETRY_OPS]
        return ", ".join(part for part in parts if part) or "resize"

    def captions(self, keys: np.ndarray, epoch: int, in_size: int | np.ndarray) -> list[str]:
        """One label per image of its whole draw in ``epoch``: the geometry (``describe``)
        and then the colour and pixel operations."""
        keys = np.asarray(keys)
        params = self.draw(keys, epoch, in_size)
        labels = []
        for i in range(len(keys)):
            parts = [self.describe(params, i)]
            if self.photometric is not None and self.photometric.active:
                size = (self.out_size, self.out_size)
                parts.append(self.photometric.describe(keys, epoch, self.seed, i, size))
            if parts[0] == "resize" and len(parts) > 1:
                parts = parts[1:]
            labels.append(", ".join(p for p in parts if p))
        return labels
