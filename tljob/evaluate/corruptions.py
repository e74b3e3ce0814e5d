"""The fixed corruptions of ``tljob evaluate --corruptions`` and ``robustness.csv`` (pure).

Each corruption maps a uint8 (H, W, 3) RGB image, a severity 1..3 and a seed to a uint8
image of the same shape. The levels follow Hendrycks & Dietterich's ImageNet-C severities
1, 3 and 5 (ICLR 2019), with tljob's own kernels where one exists:

=============== ==================================================== ==================
corruption      what                                                 severity 1, 2, 3
=============== ==================================================== ==================
gaussian_noise  add N(0, (s * 255)^2) per pixel and channel, round    s = 0.08, 0.18, 0.38
gaussian_blur   OpenCV Gaussian blur, sigma = s * min(H, W) / 224     s = 1, 3, 6
jpeg            re-encode as JPEG (OpenCV / libjpeg) at quality q     q = 25, 15, 7
brightness      PIL's brightness factor f (augment.colour)            f = 1.3, 1.6, 2.0
contrast        torchvision's contrast factor c (augment.colour)      c = 0.4, 0.2, 0.05
pixelate        shrink to s of each side (area), back up (nearest)    s = 0.6, 0.4, 0.25
=============== ==================================================== ==================

Corrupt images at the model's input size (``tljob.images.resize_bilinear_uint8`` to
``image_size`` first), as ImageNet-C corrupts 224-pixel images: noise, JPEG blocks and
pixelation act per pixel, and the model's own resize of a larger image would average them
away. Blur's sigma is given at a 224-pixel shorter side and scales with the image, so a
severity blurs the same share of the image whatever the input size (at 28 pixels, sigma
0.125 at severity 1 barely changes a pixel: that is the same blur, seen small). Only Gaussian noise
draws random numbers; its seed comes from ``corruption_seed(key, name)``: a stable key of
the image (its uri or content sha256) and the corruption's name, never the batch, the worker
or the run, so an image gets the same noise wherever it is scored. The three severities of
an image share one noise draw, scaled.
"""

from __future__ import annotations

import csv
import hashlib
import io
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

import cv2
import numpy as np

from tljob.augment import colour

SEVERITIES = (1, 2, 3)
REFERENCE_SIDE = 224  # the shorter side at which gaussian_blur's sigmas are given
CLEAN, MEAN, ALL_SEVERITIES = "clean", "mean", "all"
ROBUSTNESS_COLUMNS = ("corruption", "severity", "accuracy", "images")


def _gaussian_noise(image: np.ndarray, level: float, seed: int) -> np.ndarray:
    noise = np.random.default_rng(seed).standard_normal(image.shape, dtype=np.float32)
    return np.clip(np.rint(image + noise * np.float32(level * 255.0)), 0, 255).astype(np.uint8)


def _gaussian_blur(image: np.ndarray, level: float, seed: int) -> np.ndarray:
    sigma = level * min(image.shape[:2]) / REFERENCE_SIDE
    return cv2.GaussianBlur(image, (0, 0), sigmaX=sigma, borderType=cv2.BORDER_REFLECT_101)


def _jpeg(image: np.ndarray, level: float, seed: int) -> np.ndarray:
    bgr = np.ascontiguousarray(image[:, :, ::-1])
    ok, encoded = cv2.imencode(".jpg", bgr, [cv2.IMWRITE_JPEG_QUALITY, int(level)])
    if not ok:
        raise ValueError(f"OpenCV could not encode a {image.shape} image as JPEG")
    return np.ascontiguousarray(cv2.imdecode(encoded, cv2.IMREAD_COLOR)[:, :, ::-1])


def _brightness(image: np.ndarray, level: float, seed: int) -> np.ndarray:
    return colour.apply_brightness(image[None], np.array([level]))[0]


def _contrast(image: np.ndarray, level: float, seed: int) -> np.ndarray:
    return colour.apply_contrast(image[None], np.array([level]))[0]


def _pixelate(image: np.ndarray, level: float, seed: int) -> np.ndarray:
    height, width = image.shape[:2]
    small = (max(1, round(width * level)), max(1, round(height * level)))  # OpenCV: (w, h)
    shrunk = cv2.resize(image, small, interpolation=cv2.INTER_AREA)
    return cv2.resize(shrunk, (width, height), interpolation=cv2.INTER_NEAREST)


@dataclass(frozen=True)
class Corruption:
    """One registered corruption: ``levels[severity - 1]`` is the parameter ``kernel``
    receives (``parameter`` names it, as in the module's table)."""

    name: str
    parameter: str
    levels: tuple[float, float, float]
    kernel: Callable[[np.ndarray, float, int], np.ndarray]

    def __call__(self, image: np.ndarray, severity: int, seed: int) -> np.ndarray:
        """``image`` (uint8, (H, W, 3)) at ``severity`` (1..3): a new uint8 array of the
        same shape; the same (image, severity, seed) always gives the same bytes."""
        image = np.asarray(image)
        if image.dtype != np.uint8 or image.ndim != 3 or image.shape[2] != 3:
            raise ValueError(f"{self.name}: needs a uint8 (H, W, 3) image, got "
                             f"{image.dtype} {image.shape}")  # fmt: skip
        if severity not in SEVERITIES:
            raise ValueError(f"{self.name}: severity must be one of {SEVERITIES}, got {severity!r}")
        out = self.kernel(image, self.levels[severity - 1], int(seed))
        assert out.shape == image.shape and out.dtype == np.uint8, (self.name, out.shape)
        return out


# The registry, in the order of robustness.csv and the plot. Changing a level changes every
# robustness figure measured with it: add a corruption rather than edit one.
CORRUPTIONS: dict[str, Corruption] = {
    c.name: c
    for c in (
        Corruption("gaussian_noise", "noise sd / 255", (0.08, 0.18, 0.38), _gaussian_noise),
        Corruption("gaussian_blur", "sigma at a 224 px side", (1.0, 3.0, 6.0), _gaussian_blur),
        Corruption("jpeg", "JPEG quality", (25, 15, 7), _jpeg),
        Corruption("brightness", "brightness factor", (1.3, 1.6, 2.0), _brightness),
        Corruption("contrast", "contrast factor", (0.4, 0.2, 0.05), _contrast),
        Corruption("pixelate", "side kept", (0.6, 0.4, 0.25), _pixelate),
    )
}


def corruption_seed(key: str, corruption: str) -> int:
    """A 64-bit seed from an image's stable ``key`` (uri or content sha256) and a corruption
    name: the first 8 bytes, big-endian, of sha256("<corruption>\\n<key>")."""
    digest = hashlib.sha256(f"{corruption}\n{key}".encode()).digest()
    return int.from_bytes(digest[:8], "big")


def corrupt(name: str, image: np.ndarray, severity: int, key: str) -> np.ndarray:
    """Corruption ``name`` of ``image`` at ``severity``, seeded by ``corruption_seed(key,
    name)``: the one call the evaluation makes per image, corruption and severity."""
    return select([name])[0](image, severity, corruption_seed(key, name))


def select(names: Sequence[str] | None = None) -> list[Corruption]:
    """The registered corruptions named (all of them for None), in registry order; a
    ValueError names any unknown name and lists the known ones."""
    if names is None:
        return list(CORRUPTIONS.values())
    unknown = [n for n in names if n not in CORRUPTIONS]
    if unknown:
        raise ValueError(f"unknown corruption(s) {unknown}: choose from {list(CORRUPTIONS)}")
    return [c for c in CORRUPTIONS.values() if c.name in names]


@dataclass(frozen=True)
class RobustnessRow:
    """A row of ``robustness.csv``: ``corruption`` is ``clean`` (severity 0), a registered
    name (severity 1..3), or ``mean`` (severity 1..3, or None: over every cell)."""

    corruption: str
    severity: int | None
    accuracy: float
    images: int


def robustness_rows(
    clean: tuple[int, int], corrupted: Mapping[tuple[str, int], tuple[int, int]]
) -> list[RobustnessRow]:
    """The rows of ``robustness.csv`` from (correct, images) counts: ``clean`` for the
    unchanged images, ``corrupted[(name, severity)]`` per cell measured (any subset of the
    registry x severities). Order: the clean row; the cells in registry and severity order;
    ``mean`` per severity (the unweighted mean accuracy of that severity's cells, images
    their sum); ``mean`` over all cells (severity None). ValueError on an unknown cell or
    counts that are not 0 <= correct <= images, images >= 1."""
    for cell, counts in [((CLEAN, 0), clean), *corrupted.items()]:
        if cell != (CLEAN, 0) and (cell[0] not in CORRUPTIONS or cell[1] not in SEVERITIES):
            raise ValueError(f"unknown robustness cell {cell}: names {list(CORRUPTIONS)}, "
                             f"severities {SEVERITIES}")  # fmt: skip
        correct, images = counts
        if not 0 <= correct <= images or images < 1:
            raise ValueError(f"robustness cell {cell}: {correct} correct of {images} images")
    rows = [RobustnessRow(CLEAN, 0, clean[0] / clean[1], clean[1])]
    for name in CORRUPTIONS:
        for severity in SEVERITIES:
            if (name, severity) in corrupted:
                correct, images = corrupted[(name, severity)]
                rows.append(RobustnessRow(name, severity, correct / images, images))
    cells = rows[1:]
    for severity in (*SEVERITIES, None):
        chosen = [r for r in cells if severity is None or r.severity == severity]
        if chosen:
            accuracy = sum(r.accuracy for r in chosen) / len(chosen)
            rows.append(RobustnessRow(MEAN, severity, accuracy, sum(r.images for r in chosen)))
    return rows


def robustness_csv(rows: Sequence[RobustnessRow]) -> str:
    """``robustness.csv``: header ``corruption,severity,accuracy,images``; severity None is
    written ``all``; accuracy with 6 decimals."""
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(ROBUSTNESS_COLUMNS)
    for r in rows:
        severity = ALL_SEVERITIES if r.severity is None else r.severity
        writer.writerow([r.corruption, severity, f"{r.accuracy:.6f}", r.images])
    return out.getvalue()
