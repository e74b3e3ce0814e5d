"""Per-image colour and pixel operations after the warp, in this order: brightness, channel
shift, colour jitter (contrast, saturation, hue), RandAugment, random erasing.

Each option draws from its own ``stream`` of ``keys.uniforms``, so turning one on or off never
changes what another draws, and a view depends only on (seed, epoch, image key).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from tljob.augment import colour, erasing, randaugment
from tljob.augment import keys as keyed
from tljob.config.augment import AugmentSection

# The draw streams of the photometric options (geometry and mixing use others).
STREAM_BRIGHTNESS = 101
STREAM_CHANNEL_SHIFT = 102
STREAM_COLOR_JITTER = 103
STREAM_RANDAUGMENT = 104
STREAM_ERASING = 105
STREAM_ERASING_FILL = 106

_NO_MAGNITUDE = ("Identity", "AutoContrast", "Equalize")


@dataclass(frozen=True)
class PhotometricDraw:
    """Every parameter of a batch's photometric operations, one row per image (``None`` for
    an option that is off)."""

    brightness: np.ndarray | None  # (N,) factors
    channel_shift: np.ndarray | None  # (N,) intensities
    jitter: tuple[np.ndarray, np.ndarray, np.ndarray] | None  # contrast, saturation, hue
    ops: np.ndarray | None  # (N, num_ops) indices into randaugment.OPS
    signs: np.ndarray | None  # (N, num_ops) +-1
    boxes: np.ndarray | None  # (N, 4) top, left, height, width; height 0: not erased


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

    def draw(
        self, keys: np.ndarray, epoch: int, seed: int, height: int, width: int
    ) -> PhotometricDraw:
        """The parameters of every option for images ``keys`` of size (height, width)."""
        s = self.section
        keys = np.asarray(keys, dtype=np.uint64)
        brightness = channel_shift = jitter = ops = signs = boxes = None
        if s.brightness_range is not None:
            u = keyed.uniforms(seed, epoch, keys, 1, STREAM_BRIGHTNESS)
            brightness = colour.draw_range(u[:, 0], *s.brightness_range)
        if s.channel_shift_range > 0:
            c = s.channel_shift_range
            u = keyed.uniforms(seed, epoch, keys, 1, STREAM_CHANNEL_SHIFT)
            channel_shift = colour.draw_range(u[:, 0], -c, c)
        j = s.color_jitter
        if j.contrast > 0 or j.saturation > 0 or j.hue > 0:
            u = keyed.uniforms(seed, epoch, keys, 3, STREAM_COLOR_JITTER)
            jitter = colour.draw_jitter(u, j.contrast, j.saturation, j.hue)
        if s.randaugment.num_ops > 0:
            n_ops = s.randaugment.num_ops
            u = keyed.uniforms(
                seed, epoch, keys, n_ops * randaugment.COLUMNS_PER_OP, STREAM_RANDAUGMENT
            )
            ops, signs = randaugment.draw_ops(u, n_ops)
        e = s.random_erasing
        if e.probability > 0:
            u = keyed.uniforms(seed, epoch, keys, erasing.COLUMNS, STREAM_ERASING)
            boxes = erasing.draw_boxes(u, height, width, e.probability, e.scale, e.ratio)
        return PhotometricDraw(brightness, channel_shift, jitter, ops, signs, boxes)

    def __call__(self, images: np.ndarray, keys: np.ndarray, epoch: int, seed: int) -> np.ndarray:
        """(N, H, W, 3) uint8 views -> the same shape and dtype, with this section's colour
        and pixel operations drawn for (seed, epoch, key) of each image."""
        if not self.active or len(images) == 0:
            return images
        s = self.section
        d = self.draw(keys, epoch, seed, images.shape[1], images.shape[2])
        if d.brightness is not None:
            images = colour.apply_brightness(images, d.brightness)
        if d.channel_shift is not None:
            images = colour.apply_channel_shift(images, d.channel_shift)
        if d.jitter is not None:
            images = colour.apply_jitter(images, *d.jitter)
        if d.ops is not None and d.signs is not None:
            images = randaugment.apply_randaugment(
                images, d.ops, d.signs, s.randaugment.magnitude, s.fill_mode, s.cval
            )
        if d.boxes is not None:
            images = erasing.apply_erasing(
                images,
                d.boxes,
                s.random_erasing.value,
                seed,
                epoch,
                np.asarray(keys, dtype=np.uint64),
                STREAM_ERASING_FILL,
            )
        return images

    def describe(
        self, keys: np.ndarray, epoch: int, seed: int, i: int, size: tuple[int, int] = (224, 224)
    ) -> str:
        """A short label of image i's photometric draw for the preview grid, e.g.
        ``"bright 1.12, shift -7, RA Rotate -9.0 / Posterize 7, erase 40x31"``."""
        if not self.active:
            return ""
        s = self.section
        d = self.draw(np.asarray(keys)[i : i + 1], epoch, seed, *size)
        parts = []
        if d.brightness is not None:
            parts.append(f"bright {d.brightness[0]:.2f}")
        if d.channel_shift is not None:
            parts.append(f"shift {d.channel_shift[0]:+.0f}")
        if d.jitter is not None:
            c, sat, hue = (float(x[0]) for x in d.jitter)
            j = s.color_jitter
            named = (
                (j.contrast, f"c{c:.2f}"),
                (j.saturation, f"s{sat:.2f}"),
                (j.hue, f"h{hue:+.2f}"),
            )
            parts.append("jitter " + " ".join(text for option, text in named if option > 0))
        if d.ops is not None and d.signs is not None:
            ops = []
            for index, sign in zip(d.ops[0], d.signs[0], strict=True):
                op = randaugment.OPS[index]
                value = randaugment.magnitude(op, s.randaugment.magnitude, *size) * sign
                ops.append(op if op in _NO_MAGNITUDE else f"{op} {value:.3g}")
            parts.append("RA " + " / ".join(ops))
        if d.boxes is not None and d.boxes[0, 2] > 0:
            parts.append(f"erase {d.boxes[0, 3]}x{d.boxes[0, 2]}")
        return ", ".join(parts)
