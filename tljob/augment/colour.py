"""Colour operations on batches of uint8 RGB images (N, H, W, 3), with explicit per-image
parameters, and the draws that turn ``keys.uniforms`` columns into those parameters.

- brightness: ImageDataGenerator's ``apply_brightness_shift`` (PIL ``ImageEnhance.Brightness``:
  ``Image.blend`` with black, float32 product truncated, clipped to 255), bit for bit;
- channel shift: ImageDataGenerator's ``apply_channel_shift`` (one intensity added to every
  channel, clipped to the image's own min and max), rounded to uint8;
- contrast, saturation, hue: torchvision's ``ColorJitter`` on uint8 tensors (contrast blends
  with the mean of the grey image, saturation with the grey image, hue rotates in HSV).

Most operations are one 256-entry lookup table per image (``cv2.LUT``); saturation and hue
work on whole batches at once.
"""

from __future__ import annotations

import cv2
import numpy as np

_LEVELS = np.arange(256, dtype=np.float32)
# torchvision's rgb_to_grayscale weights (ITU-R 601-2, as TensorFlow).
_GREY_MATRIX = np.array([[0.2989, 0.587, 0.114]], dtype=np.float32)


def apply_luts(images: np.ndarray, luts: np.ndarray) -> np.ndarray:
    """Image n through lookup table n: ``luts`` is (N, 256) (same table for every channel) or
    (N, 256, 3) (one per channel), uint8."""
    out = np.empty_like(images)
    for n in range(len(images)):
        lut = luts[n] if luts[n].ndim == 1 else luts[n][None]  # (1, 256, 3) per channel
        out[n] = cv2.LUT(images[n], lut).reshape(images[n].shape)
    return out


def _truncate(values: np.ndarray) -> np.ndarray:
    """float -> uint8 as C's cast after clipping to [0, 255] (PIL and torch's ``.to(uint8)``)."""
    return np.clip(values, 0.0, 255.0).astype(np.uint8)


def brightness_luts(factors: np.ndarray) -> np.ndarray:
    """(N, 256) tables of PIL's ``ImageEnhance.Brightness(img).enhance(f)``: Image.blend with a
    black image computes ``(float)0 + alpha * v`` in float32 and truncates, clipped to 255
    (torchvision's uint8 ``adjust_brightness`` is the same formula)."""
    alpha = np.asarray(factors, dtype=np.float32)[:, None]
    return _truncate(alpha * _LEVELS)


def apply_brightness(images: np.ndarray, factors: np.ndarray) -> np.ndarray:
    """Brightness factor f per image (1 keeps it, 0 is black)."""
    return apply_luts(images, brightness_luts(factors))


def apply_channel_shift(images: np.ndarray, intensities: np.ndarray) -> np.ndarray:
    """tf_keras ``apply_channel_shift`` per image: ``clip(x + intensity, min(x), max(x))`` in
    float32 over the image's own min and max (all channels), rounded to the nearest uint8
    (exact when the intensity is a whole number)."""
    bounds = np.array([cv2.minMaxLoc(image.reshape(image.shape[0], -1))[:2] for image in images])
    lows, highs = bounds.T.astype(np.float32).reshape(2, len(images))
    shifted = _LEVELS[None, :] + np.asarray(intensities, dtype=np.float32)[:, None]
    clipped = np.clip(shifted, lows[:, None], highs[:, None])
    return apply_luts(images, np.rint(clipped).astype(np.uint8))


def _grey_float(rgb: np.ndarray) -> np.ndarray:
    """(..., H, W) float32 truncated grey of float32 RGB (H, W, 3) or (N, H, W, 3) images."""
    tall = rgb.reshape(-1, rgb.shape[-2], 3)
    weighted = cv2.transform(tall, _GREY_MATRIX).reshape(rgb.shape[:-1])
    return np.trunc(weighted, out=weighted)


def grey(images: np.ndarray) -> np.ndarray:
    """(N, H, W) uint8: torchvision's ``rgb_to_grayscale`` (float32 weighted sum, truncated)."""
    return _grey_float(images.astype(np.float32)).astype(np.uint8)


def contrast_luts(images: np.ndarray, factors: np.ndarray) -> np.ndarray:
    """(N, 256) tables of torchvision's ``adjust_contrast``: blend with the mean of the grey
    image, ``trunc(clip(c * v + (1 - c) * mean))`` in float32."""
    means = np.array([_grey_float(image.astype(np.float32)).mean() for image in images])
    means = means.astype(np.float32)
    c = np.asarray(factors, dtype=np.float32)[:, None]
    return _truncate(c * _LEVELS + (np.float32(1.0) - c) * means[:, None])


def apply_contrast(images: np.ndarray, factors: np.ndarray) -> np.ndarray:
    """Contrast factor c per image (1 keeps it, 0 is the image's mean grey)."""
    return apply_luts(images, contrast_luts(images, factors))


def apply_saturation(images: np.ndarray, factors: np.ndarray) -> np.ndarray:
    """torchvision's ``adjust_saturation``: blend with the grey image (1 keeps it, 0 is grey),
    ``trunc(clip(s * rgb + (1 - s) * grey))`` in float32."""
    out = np.empty_like(images)
    for n, factor in enumerate(np.asarray(factors, dtype=np.float32)):
        rgb = images[n].astype(np.float32)  # one image at a time: stays in cache
        grey_part = _grey_float(rgb)
        grey_part *= np.float32(1.0) - factor
        rgb *= factor
        rgb += grey_part[..., None]
        out[n] = np.clip(rgb, 0.0, 255.0, out=rgb)
    return out


def apply_hue(images: np.ndarray, shifts: np.ndarray) -> np.ndarray:
    """torchvision's ``adjust_hue``: rotate the hue by ``shift`` turns (-0.5..0.5) in HSV and
    convert back as ``convert_image_dtype`` does (x 255.999, truncated). The HSV conversions
    are OpenCV's float32 ones: the same formulas, different float rounding (within one level
    of torch's)."""
    out = np.empty_like(images)
    for n, shift in enumerate(np.asarray(shifts, dtype=np.float64)):
        rgb = images[n].astype(np.float32)
        rgb *= np.float32(1.0 / 255.0)
        hsv = cv2.cvtColor(rgb, cv2.COLOR_RGB2HSV)
        # The hue channel only; OpenCV wraps hues of 360 and more, not negative ones.
        cv2.add(hsv, ((shift % 1.0) * 360.0, 0.0, 0.0, 0.0), dst=hsv)
        rgb = cv2.cvtColor(hsv, cv2.COLOR_HSV2RGB, dst=rgb)
        rgb *= np.float32(255.999)
        out[n] = rgb  # in [0, 255.999): the cast truncates, as torch's .to(uint8)
    return out


def draw_range(u: np.ndarray, low: float, high: float) -> np.ndarray:
    """Uniform draws in [low, high) from uniforms in [0, 1)."""
    return low + (high - low) * np.asarray(u, dtype=np.float64)


def draw_jitter(
    u: np.ndarray, contrast: float, saturation: float, hue: float
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(contrast, saturation, hue) per image from three uniform columns (N, 3), as
    ``ColorJitter.get_params``: factors from [max(0, 1 - x), 1 + x], hue from [-h, h]."""
    return (
        draw_range(u[:, 0], max(0.0, 1.0 - contrast), 1.0 + contrast),
        draw_range(u[:, 1], max(0.0, 1.0 - saturation), 1.0 + saturation),
        draw_range(u[:, 2], -hue, hue),
    )


def apply_jitter(
    images: np.ndarray, contrast: np.ndarray, saturation: np.ndarray, hue: np.ndarray
) -> np.ndarray:
    """Colour jitter in a fixed order, contrast then saturation then hue (torchvision draws a
    random order per call; a fixed one keeps a view a function of its few draws). Factors of
    exactly 1 (or a hue of 0) for the whole batch skip that operation."""
    if np.any(contrast != 1.0):
        images = apply_contrast(images, contrast)
    if np.any(saturation != 1.0):
        images = apply_saturation(images, saturation)
    if np.any(hue != 0.0):
        images = apply_hue(images, hue)
    return images
