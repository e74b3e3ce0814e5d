"""Decoding and resizing single images, with numpy and Pillow only.

The training pipeline (Ray Data) and any client preparing inputs use these functions. The
exported model resizes its inputs with TensorFlow's bilinear kernel (half-pixel centres,
no antialiasing, rounded back to uint8); ``resize_bilinear_uint8`` computes the same values
in float32 with the same order of operations, so training and serving see the same pixels.
"""

from __future__ import annotations

import io

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

# Decompression bombs are treated as corrupt input rather than a warning.
Image.MAX_IMAGE_PIXELS = 16384 * 16384


class ImageDecodeError(ValueError):
    """The bytes are not a readable image."""


def decode_rgb(data: bytes) -> np.ndarray:
    """Decode image bytes to a uint8 (H, W, 3) RGB array.

    EXIF orientation is applied; greyscale, palette, CMYK and RGBA images are converted to
    RGB (alpha is dropped). Raises ``ImageDecodeError`` with the decoder's reason.
    """
    try:
        with Image.open(io.BytesIO(data)) as im:
            im.load()  # force a full decode: truncated files fail here, not later
            im = ImageOps.exif_transpose(im)
            return np.asarray(im.convert("RGB"), dtype=np.uint8)
    except (UnidentifiedImageError, OSError, ValueError, Image.DecompressionBombError) as e:
        raise ImageDecodeError(f"{type(e).__name__}: {e}") from None


def _axis_weights(in_size: int, out_size: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Source indices and lerp weights of TF's half-pixel-centre bilinear kernel."""
    scale = np.float32(in_size) / np.float32(out_size)
    pos = (np.arange(out_size, dtype=np.float32) + np.float32(0.5)) * scale - np.float32(0.5)
    floor = np.floor(pos)
    lower = np.maximum(floor, 0).astype(np.int64)
    upper = np.minimum(np.ceil(pos), in_size - 1).astype(np.int64)
    return lower, upper, (pos - floor).astype(np.float32)


def resize_bilinear_uint8(image: np.ndarray, size: int) -> np.ndarray:
    """Resize a uint8 (H, W, 3) image to (size, size, 3) exactly as the exported model does.

    Equivalent to ``tf.image.resize(image, (size, size), "bilinear")`` followed by
    round-half-to-even and clipping to [0, 255].
    """
    if image.shape[0] == size and image.shape[1] == size:
        return image
    y0, y1, wy = _axis_weights(image.shape[0], size)
    x0, x1, wx = _axis_weights(image.shape[1], size)
    img = image.astype(np.float32)
    wx = wx[None, :, None]
    top = img[y0][:, x0] + (img[y0][:, x1] - img[y0][:, x0]) * wx
    bottom = img[y1][:, x0] + (img[y1][:, x1] - img[y1][:, x0]) * wx
    out = top + (bottom - top) * wy[:, None, None]
    return np.clip(np.rint(out), 0, 255).astype(np.uint8)


def load_image(path: str, size: int | None = None) -> np.ndarray:
    """Read a local image file as uint8 RGB, optionally resized to ``size`` x ``size``."""
    with open(path, "rb") as f:
        image = decode_rgb(f.read())
    return image if size is None else resize_bilinear_uint8(image, size)
