"""Batch-level MixUp (Zhang et al.) and CutMix (Yun et al.) with soft labels.

One draw per batch from ``keys.generator(seed, epoch, batch_key, STREAM_MIXING)``: which of
the two (when both are on, each with chance 1/2), lambda ~ Beta(alpha, alpha), the partner
of every image (the batch rolled by a random shift in 1..N-1, so no image is its own partner
in a batch of two or more) and, for CutMix, the box. The same (seed, epoch, batch_key) gives
the same mix whatever worker or retry computes it. The op (``MixUpCutMix``, last below) is a
batch op: ``tljob.data.views`` mixes each row group of the training stream as one batch.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
from pydantic import Field

from tljob.augment import keys as keyed
from tljob.augment.ops.base import BatchOp, StreamUse

if TYPE_CHECKING:
    from tljob.config.augment import AugmentSection

STREAM_MIXING = 201


@dataclass(frozen=True)
class MixDraw:
    """One batch's mix. ``kind`` is 'none', 'mixup' or 'cutmix'; ``lam`` is each image's own
    label weight (for CutMix, recomputed from the clipped box); the partner of image n is
    image ``(n - shift) % N`` (``np.roll(batch, shift, axis=0)``); ``box`` is CutMix's
    ``(top, left, bottom, right)``, bottom and right exclusive."""

    kind: str
    lam: float
    shift: int
    box: tuple[int, int, int, int]


def one_hot(labels: np.ndarray, num_classes: int) -> np.ndarray:
    """(N,) class indices -> (N, num_classes) float32 rows with a single 1."""
    labels = np.asarray(labels)
    if labels.size and (labels.min() < 0 or labels.max() >= num_classes):
        raise ValueError(
            f"labels must be class indices in [0, {num_classes}): got {labels.min()}.."
            f"{labels.max()}"
        )
    out = np.zeros((len(labels), num_classes), dtype=np.float32)
    out[np.arange(len(labels)), labels.astype(np.int64)] = 1.0
    return out


def draw_mix(
    n: int,
    height: int,
    width: int,
    mixup_alpha: float,
    cutmix_alpha: float,
    seed: int,
    epoch: int,
    batch_key: int,
) -> MixDraw:
    """The mix of a batch of ``n`` images of (height, width) keyed by ``batch_key``."""
    if mixup_alpha <= 0 and cutmix_alpha <= 0:
        return MixDraw("none", 1.0, 0, (0, 0, 0, 0))
    rng = keyed.generator(seed, epoch, batch_key, STREAM_MIXING)
    if mixup_alpha > 0 and cutmix_alpha > 0:
        kind = "mixup" if rng.random() < 0.5 else "cutmix"
    else:
        kind = "mixup" if mixup_alpha > 0 else "cutmix"
    alpha = mixup_alpha if kind == "mixup" else cutmix_alpha
    lam = float(rng.beta(alpha, alpha))
    shift = int(rng.integers(1, n)) if n > 1 else 0
    if kind == "mixup":
        return MixDraw(kind, lam, shift, (0, 0, 0, 0))
    # A box of area (1 - lam) of the image, centred at a random pixel, clipped to the image;
    # lam then becomes the fraction of the image left outside the clipped box.
    cut = np.sqrt(1.0 - lam)
    cut_h, cut_w = int(height * cut), int(width * cut)
    centre_y, centre_x = int(rng.integers(0, height)), int(rng.integers(0, width))
    top_free, left_free = centre_y - cut_h // 2, centre_x - cut_w // 2
    top, bottom = max(top_free, 0), min(top_free + cut_h, height)
    left, right = max(left_free, 0), min(left_free + cut_w, width)
    area = max(bottom - top, 0) * max(right - left, 0)
    return MixDraw(kind, 1.0 - area / (height * width), shift, (top, left, bottom, right))


def mix_batch(
    images: np.ndarray,
    labels: np.ndarray,
    num_classes: int,
    mixup_alpha: float,
    cutmix_alpha: float,
    seed: int,
    epoch: int,
    batch_key: int,
) -> tuple[np.ndarray, np.ndarray]:
    """(N, H, W, C) uint8 images and (N,) class indices -> (uint8 images, (N, num_classes)
    float32 soft labels ``lam * onehot(own) + (1 - lam) * onehot(partner)``, rows summing
    to 1). MixUp's pixels are ``rint(lam * own + (1 - lam) * partner)`` in float32; CutMix
    pastes the partner's box. With both alphas 0: the images unchanged and one-hot labels."""
    targets = one_hot(labels, num_classes)
    if len(images) == 0:
        return images, targets
    d = draw_mix(len(images), *images.shape[1:3], mixup_alpha, cutmix_alpha, seed, epoch, batch_key)
    if d.kind == "none":
        return images, targets
    partners = np.roll(images, d.shift, axis=0)
    if d.kind == "mixup":
        lam = np.float32(d.lam)
        mixed = np.empty_like(images)
        for n in range(len(images)):  # one image at a time: the float copies stay in cache
            own = images[n].astype(np.float32)
            own *= lam
            other = partners[n].astype(np.float32)
            other *= np.float32(1.0) - lam
            own += other
            mixed[n] = np.rint(own, out=own)
    else:
        top, left, bottom, right = d.box
        mixed = images.copy()
        mixed[:, top:bottom, left:right] = partners[:, top:bottom, left:right]
    soft = np.float32(d.lam) * targets + np.float32(1.0 - d.lam) * np.roll(targets, d.shift, 0)
    return mixed, soft.astype(np.float32)


# -- the op -------------------------------------------------------------------------------


class MixUpCutMix(BatchOp):
    """MixUp and CutMix on each batch of the stream; labels become class probabilities."""

    name = "mixup_cutmix"
    fields = {
        "mixup_alpha": (
            float,
            Field(
                0.0,
                ge=0.0,
                description="MixUp's Beta(alpha, alpha) within each batch of the stream; 0 is "
                "off. Labels become soft (class probabilities) and the loss follows.",
            ),
        ),
        "cutmix_alpha": (
            float,
            Field(
                0.0,
                ge=0.0,
                description="CutMix's Beta(alpha, alpha) within each batch of the stream; 0 is "
                "off. With MixUp also on, each batch uses one of the two, chosen at random.",
            ),
        ),
    }
    streams = (StreamUse(STREAM_MIXING),)

    def batch_options_on(self, section: AugmentSection) -> dict[str, Any]:
        return {
            n: getattr(section, n)
            for n in ("mixup_alpha", "cutmix_alpha")
            if getattr(section, n) > 0.0
        }

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
        """``mix_batch`` with the section's alphas."""
        return mix_batch(
            images,
            labels,
            num_classes,
            section.mixup_alpha,
            section.cutmix_alpha,
            seed,
            epoch,
            batch_key,
        )
