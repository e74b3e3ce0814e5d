"""The photometric stage: the pixel ops of ``tljob.augment.ops`` on the warped views, in
registry order (brightness, channel shift, colour jitter, RandAugment, random erasing).

Each op draws from its own ``stream`` of ``keys.uniforms``, so turning one on or off never
changes what another draws, and a view depends only on (seed, epoch, image key).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np

from tljob.augment.ops import PIXEL_OPS

if TYPE_CHECKING:
    from tljob.config.augment import AugmentSection

# Which op draws each parameter name.
_DRAWN_BY = {name: op.name for op in PIXEL_OPS for name in op.draws}


class PhotometricDraw:
    """Every parameter of a batch's pixel ops, one row per image: ``by_op[name]`` is op
    ``name``'s draw, absent when the op is off; ``draw.<parameter>`` reads one parameter
    (None when its op is off), e.g. ``draw.brightness`` (N,) factors, ``draw.boxes`` the
    erasing boxes (N, 4) (top, left, height, width; height 0: not erased), ``draw.ops`` /
    ``draw.signs`` RandAugment's (N, num_ops) operations and signs."""

    __slots__ = ("by_op",)

    def __init__(self, by_op: dict[str, dict[str, Any]]) -> None:
        self.by_op = by_op

    def __getattr__(self, name: str) -> Any:
        if name not in _DRAWN_BY:
            raise AttributeError(f"no pixel op draws {name!r}: they draw {list(_DRAWN_BY)}")
        drawn = self.by_op.get(_DRAWN_BY[name])
        return None if drawn is None else drawn[name]


class Photometric:
    """The pixel ops of ``section`` that are on, applied to warped uint8 views."""

    def __init__(self, section: AugmentSection) -> None:
        self.section = section
        self.ops = [op for op in PIXEL_OPS if op.options_on(section)]

    @property
    def active(self) -> bool:
        """Any pixel op is on."""
        return bool(self.ops)

    def draw(
        self, keys: np.ndarray, epoch: int, seed: int, height: int, width: int
    ) -> PhotometricDraw:
        """The parameters of every op that is on for images ``keys`` of (height, width)."""
        keys = np.asarray(keys, dtype=np.uint64)
        return PhotometricDraw(
            {op.name: op.draw(self.section, seed, epoch, keys, height, width) for op in self.ops}
        )

    def __call__(self, images: np.ndarray, keys: np.ndarray, epoch: int, seed: int) -> np.ndarray:
        """(N, H, W, 3) uint8 views -> the same shape and dtype, with this section's colour
        and pixel operations drawn for (seed, epoch, key) of each image."""
        if not self.active or len(images) == 0:
            return images
        keys = np.asarray(keys, dtype=np.uint64)
        d = self.draw(keys, epoch, seed, images.shape[1], images.shape[2])
        for op in self.ops:
            images = op.apply(self.section, images, d.by_op[op.name], seed, epoch, keys)
        return images

    def describe(
        self, keys: np.ndarray, epoch: int, seed: int, i: int, size: tuple[int, int] = (224, 224)
    ) -> str:
        """A short label of image i's photometric draw for the preview grid, e.g.
        ``"bright 1.12, shift -7, RA Rotate -9.0 / Posterize 7, erase 40x31"``."""
        if not self.active:
            return ""
        d = self.draw(np.asarray(keys)[i : i + 1], epoch, seed, *size)
        parts = [op.describe(self.section, d.by_op[op.name], 0, *size) for op in self.ops]
        return ", ".join(part for part in parts if part)
