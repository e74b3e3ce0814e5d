"""The Augmenter: stored uint8 images -> the training views of one batch.

Geometry (random resized crop, rotation, shift, shear, zoom, flips) is one affine map per
image, warped once (``tljob.augment.geometry``); the colour and pixel operations follow
(``tljob.augment.photometric``). Every draw is keyed by (seed, epoch, image key), so a view
does not depend on which batch, block, worker or retry computes it.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from tljob.augment import geometry
from tljob.augment.geometry import GeometryParams
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
        self.geometric = on_data and geometry.geometric_options_on(section)
        self.photometric = Photometric(section) if on_data else None

    @property
    def active(self) -> bool:
        """Views differ from plain resizes (some data-side per-image option is on)."""
        return self.section.where == "data" and self.section.active

    def draw(self, keys: np.ndarray, epoch: int, in_size: int | np.ndarray) -> GeometryParams:
        """The geometric parameters of images ``keys`` in ``epoch`` (stored side ``in_size``)."""
        return geometry.draw_batch(
            self.section, self.seed, epoch, np.asarray(keys), in_size, self.out_size
        )

    def __call__(
        self, images: Sequence[np.ndarray] | np.ndarray, keys: np.ndarray, epoch: int
    ) -> np.ndarray:
        """(N, out_size, out_size, 3) uint8 views of uint8 (S, S, 3) ``images`` (any S, one
        key each) in ``epoch``."""
        keys = np.asarray(keys)
        if len(images) != len(keys):
            raise ValueError(f"{len(images)} images but {len(keys)} keys")
        if self.geometric:
            sizes = np.array([image.shape[0] for image in images], dtype=np.int64)
            views = self._render(images, self.draw(keys, epoch, sizes), sizes)
        else:
            views = np.empty((len(images), self.out_size, self.out_size, 3), dtype=np.uint8)
            for i, image in enumerate(images):
                views[i] = resize_fast_uint8(image, self.out_size)
        if self.photometric is not None and self.photometric.active:
            views = self.photometric(views, keys, epoch, self.seed)
        return views

    def _render(
        self, images: Sequence[np.ndarray] | np.ndarray, params: GeometryParams, sizes: np.ndarray
    ) -> np.ndarray:
        """Warp each image through its map; an image whose draw is only a crop (or the whole
        image) and flips is resized and flipped instead: the same pixels as torchvision's
        crop-then-resize, at about a third of a warp's cost (the light presets' case)."""
        out = self.out_size
        matrices = geometry.affine_matrices(params, sizes, out)
        boxes = params.box if params.box is not None else geometry.whole_boxes(sizes, len(sizes))
        aligned = (
            (params.theta == 0)
            & (params.tx == 0)
            & (params.ty == 0)
            & (params.shear == 0)
            & (params.zx == 1)
            & (params.zy == 1)
            & (boxes == np.round(boxes)).all(axis=1)
        )
        views = np.empty((len(images), out, out, 3), dtype=np.uint8)
        warped = np.flatnonzero(~aligned)
        if len(warped):
            section = self.section
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
        return views

    def describe(self, params: GeometryParams, i: int) -> str:
        """A short label of image ``i``'s draw, e.g. "rot +12°, shift (3, -5) px, zoom
        0.91x1.08, flip h" (shift: how far content moves right and down, in training
        pixels); "resize" when the draw changes nothing."""
        parts = []
        if params.box is not None:
            x0, y0, w, h = (int(v) for v in params.box[i])
            parts.append(f"crop {w}x{h} at ({x0}, {y0})")
        if params.theta[i] != 0:
            parts.append(f"rot {params.theta[i]:+.0f}°")
        if params.tx[i] != 0 or params.ty[i] != 0:
            # tf_keras' tx pulls from the right: content moves by -tx.
            dx, dy = round(-float(params.tx[i])), round(-float(params.ty[i]))
            parts.append(f"shift ({dx}, {dy}) px")
        if round(float(params.shear[i]), 1) != 0:
            parts.append(f"shear {params.shear[i]:+.1f}°")
        if params.zx[i] != 1 or params.zy[i] != 1:
            parts.append(f"zoom {params.zx[i]:.2f}x{params.zy[i]:.2f}")
        flips = [name for name, on in (("h", params.flip_h[i]), ("v", params.flip_v[i])) if on]
        if flips:
            parts.append("flip " + "+".join(flips))
        return ", ".join(parts) if parts else "resize"

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
