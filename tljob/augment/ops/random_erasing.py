"""Random erasing (Zhong et al.), as torchvision's ``RandomErasing``: with some probability,
one rectangle of random area and aspect ratio is filled with noise or zeros.

The rectangle is drawn from ``ATTEMPTS`` tries (area fraction uniform in ``scale``, width /
height log-uniform in ``ratio``); the first that fits inside the image wins, and an image
where none fits is left alone, as torchvision. All tries are drawn at once for the batch.
"""

from __future__ import annotations

import numpy as np

from tljob.augment import keys as keyed

ATTEMPTS = 10
# Uniform columns an image uses: the coin, then (area, log ratio, top, left) per attempt.
COLUMNS = 1 + 4 * ATTEMPTS


def draw_boxes(
    u: np.ndarray,
    height: int,
    width: int,
    probability: float,
    scale: tuple[float, float],
    ratio: tuple[float, float],
) -> np.ndarray:
    """(N, 4) int boxes ``(top, left, box_height, box_width)`` from (N, ``COLUMNS``)
    uniforms; ``box_height == 0`` means the image is not erased."""
    n = len(u)
    tries = u[:, 1:].reshape(n, ATTEMPTS, 4)
    area = height * width * (scale[0] + (scale[1] - scale[0]) * tries[..., 0])
    log_lo, log_hi = np.log(ratio[0]), np.log(ratio[1])
    aspect = np.exp(log_lo + (log_hi - log_lo) * tries[..., 1])  # width / height
    # Python's round (half to even), as torchvision's int(round(...)).
    box_w = np.rint(np.sqrt(area * aspect)).astype(np.int64)
    box_h = np.rint(np.sqrt(area / aspect)).astype(np.int64)
    fits = (box_h < height) & (box_w < width)
    first = np.argmax(fits, axis=1)
    rows = np.arange(n)
    chosen_h, chosen_w = box_h[rows, first], box_w[rows, first]
    top = np.floor(tries[rows, first, 2] * (height - chosen_h + 1)).astype(np.int64)
    left = np.floor(tries[rows, first, 3] * (width - chosen_w + 1)).astype(np.int64)
    # A box rounded to zero size erases nothing (torchvision accepts it too).
    erased = (u[:, 0] < probability) & fits[rows, first] & (chosen_h > 0) & (chosen_w > 0)
    boxes = np.stack([top, left, chosen_h, chosen_w], axis=1)
    boxes[~erased] = 0
    return boxes


def apply_erasing(
    images: np.ndarray,
    boxes: np.ndarray,
    value: str,
    seed: int,
    epoch: int,
    image_keys: np.ndarray,
    stream: int,
) -> np.ndarray:
    """Fill each image's box: ``value`` 'random' draws uniform 0..255 per pixel and channel
    from ``keys.generator(seed, epoch, key, stream)``, 'zero' writes zeros. Images without a
    box are returned as they are."""
    if not np.any(boxes[:, 2] > 0):
        return images
    out = images.copy()
    for n in np.flatnonzero(boxes[:, 2] > 0):
        top, left, h, w = (int(v) for v in boxes[n])
        if value == "random":
            rng = keyed.generator(seed, epoch, int(image_keys[n]), stream)
            fill = rng.integers(0, 256, size=(h, w, images.shape[3]), dtype=np.uint8)
        else:
            fill = 0
        out[n, top : top + h, left : left + w] = fill
    return out
