"""Per-image colour and pixel operations after the warp: brightness, channel shift,
colour jitter, RandAugment and random erasing (placeholder: filled in by the photometric
work; until then only the all-off case is available)."""

from __future__ import annotations

import numpy as np

from tljob.config.augment import AugmentSection


class Photometric:
    """The photometric part of ``section``, applied to warped uint8 views."""

    def __init__(self, section: AugmentSection) -> None:
        self.section = section

    @property
    def active(self) -> bool:
        """Any photometric option is on."""
        s = self.section
        return bool(
            s.brightness_range is not None
            or s.channel_shift_range > 0
            or s.color_jitter.contrast > 0
            or s.color_jitter.saturation > 0
            or s.color_jitter.hue > 0
            or s.randaugment.num_ops > 0
            or s.random_erasing.probability > 0
        )

    def __call__(
        self, images: np.ndarray, keys: np.ndarray, epoch: int, seed: int
    ) -> np.ndarray:
        """(N, H, W, 3) uint8 views -> the same shape and dtype, with this section's colour
        and pixel operations drawn for (seed, epoch, key) of each image."""
        if not self.active:
            return images
        raise NotImplementedError("photometric operations are not built yet")
