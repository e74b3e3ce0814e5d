"""Decoding and resizing single images, with numpy, Pillow and OpenCV (no Ray, no TF).

The training pipeline (Ray Data) and any client preparing inputs use these functions. The
exported model resizes its inputs with TensorFlow's bilinear kernel (half-pixel centres,
no antialiasing, rounded back to uint8); ``resize_bilinear_uint8`` computes the same values
in float32 with the same order of operations, so training and serving see the same pixels.
``resize_fast_uint8`` is OpenCV's version of it (within 1 level), for the training stream.
"""

from __future__ import annotations

import io

import cv2
import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from tljob.report import clean_reason

# The file names listed as images (lower case); everything else is skipped at listing.
IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp", ".tif", ".tiff")

# Decompression bombs are treated as corrupt input rather than a warning.
Image.MAX_IMAGE_PIXELS = 16384 * 16384


class ImageDecodeError(ValueError):
    """The bytes are not a readable image; the message is the reason, without object reprs."""


class UnsupportedImageError(ImageDecodeError):
    """A readable image whose pixel values cannot be mapped to 8 bits: no known range."""


class TooManyPixelsError(ImageDecodeError):
    """The header announces more pixels than Pillow's own decompression-bomb limit."""


# Pillow's modes for one unsigned 16-bit channel (little, big and native endian).
_UINT16_MODES = ("I;16", "I;16L", "I;16B", "I;16N")
_TIFF_BITS_PER_SAMPLE, _TIFF_SAMPLE_FORMAT = 258, 339
_TIFF_UNSIGNED = 1


def decode_rgb(data: bytes) -> np.ndarray:
    """Decode image bytes to a uint8 (H, W, 3) RGB array.

    EXIF orientation is applied; greyscale, palette, CMYK and RGBA images are converted to
    RGB (alpha is dropped). High bit depth is scaled, never clipped: 16-bit greyscale
    (PNG, TIFF) maps v to round(v * 255 / 65535); for 16-bit colour PNG/TIFF Pillow itself
    keeps the high byte (v // 256, at most 1 away from the rounded value). Other integer
    and floating-point images (32-bit, signed, float), whose value range is not known,
    raise ``UnsupportedImageError``.
    Raises ``ImageDecodeError`` with a plain reason for anything that does not decode.
    """
    try:
        with Image.open(io.BytesIO(data)) as im:
            im.load()  # force a full decode: truncated files fail here, not later
            transposed = ImageOps.exif_transpose(im)
            if transposed.mode in (*_UINT16_MODES, "I", "F"):
                grey = _high_bit_depth_to_uint8(transposed, im)
                return np.repeat(grey[:, :, None], 3, axis=2)
            return np.asarray(transposed.convert("RGB"), dtype=np.uint8)
    except ImageDecodeError:
        raise
    except UnidentifiedImageError:
        raise ImageDecodeError("not a recognised image format") from None
    except Image.DecompressionBombError as e:
        raise ImageDecodeError(f"too many pixels: {clean_reason(str(e))}") from None
    except Exception as e:  # a malformed file can make any decoder step fail
        raise ImageDecodeError(clean_reason(f"{type(e).__name__}: {e}")) from None


def image_dimensions(data: bytes) -> tuple[int, int]:
    """(width, height) from the image header, without decoding the pixels.
    Raises ``ImageDecodeError`` when the bytes are not a recognised image."""
    try:
        with Image.open(io.BytesIO(data)) as im:
            return im.size
    except UnidentifiedImageError:
        raise ImageDecodeError("not a recognised image format") from None
    except Image.DecompressionBombError as e:
        raise TooManyPixelsError(clean_reason(str(e))) from None
    except Exception as e:
        raise ImageDecodeError(clean_reason(f"{type(e).__name__}: {e}")) from None


def _value_range_top(im: Image.Image) -> int | None:
    """The largest value a single-channel high-bit-depth image can hold, when known."""
    if im.mode in _UINT16_MODES:
        return 65535
    if im.mode == "I" and im.format == "PNG":
        return 65535  # PNG greyscale has at most 16 bits (older Pillow opens it as "I")
    if im.mode == "I" and im.format == "TIFF":
        bits = _tiff_tag(im, _TIFF_BITS_PER_SAMPLE, 32)
        if bits == 16 and _tiff_tag(im, _TIFF_SAMPLE_FORMAT, _TIFF_UNSIGNED) == _TIFF_UNSIGNED:
            return 65535
    return None


def _tiff_tag(im: Image.Image, tag: int, default: int) -> int:
    """The first value of a TIFF tag (``default`` when absent or not a TIFF)."""
    value = getattr(im, "tag_v2", {}).get(tag, default)
    return value[0] if isinstance(value, tuple) and value else value


def _pixel_kind(im: Image.Image) -> str:
    """E.g. "32-bit signed integer", from the TIFF tags when there are some."""
    bits = _tiff_tag(im, _TIFF_BITS_PER_SAMPLE, 32)
    sample_format = _tiff_tag(im, _TIFF_SAMPLE_FORMAT, 3 if im.mode == "F" else 2)
    kind = {1: "unsigned integer", 2: "signed integer", 3: "floating-point"}
    return f"{bits}-bit {kind.get(sample_format, 'integer')}"


def _high_bit_depth_to_uint8(pixels: Image.Image, opened: Image.Image) -> np.ndarray:
    """Scale ``pixels`` from 0..top to 0..255, rounded, where ``opened`` (the image as read,
    with its format and tags) says what top is; ``UnsupportedImageError`` if it cannot."""
    top = _value_range_top(opened)
    if top is None:
        raise UnsupportedImageError(
            f"{_pixel_kind(opened)} pixels have no known value range; save the image with 8 "
            "or 16 bits per channel"
        )
    values = np.asarray(pixels).astype(np.float64)
    if values.size and (values.min() < 0 or values.max() > top):
        raise UnsupportedImageError(f"pixel values outside the range 0..{top}")
    return np.rint(values * 255.0 / top).astype(np.uint8)


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
    wx, wy = wx[None, :, None], wy[:, None, None]
    # Gather the four neighbours as uint8 first (a quarter of the memory traffic), then the
    # same float32 arithmetic as before, in place: top = a + (b - a) * wx, and so on.
    upper, lower = np.take(image, y0, axis=0), np.take(image, y1, axis=0)
    top = np.take(upper, x0, axis=1).astype(np.float32)
    top_right = np.take(upper, x1, axis=1).astype(np.float32)
    bottom = np.take(lower, x0, axis=1).astype(np.float32)
    bottom_right = np.take(lower, x1, axis=1).astype(np.float32)
    top_right -= top
    top_right *= wx
    top += top_right
    bottom_right -= bottom
    bottom_right *= wx
    bottom += bottom_right
    bottom -= top
    bottom *= wy
    top += bottom
    np.rint(top, out=top)
    np.clip(top, 0, 255, out=top)
    return top.astype(np.uint8)


def resize_fast_uint8(image: np.ndarray, size: int, dst: np.ndarray | None = None) -> np.ndarray:
    """Resize a uint8 (H, W, 3) image to (size, size, 3) with OpenCV's bilinear kernel;
    into ``dst`` (a C-contiguous uint8 (size, size, 3) array, returned) when given.

    The same sampling as ``resize_bilinear_uint8`` (half-pixel centres, no antialiasing),
    in fixed point: every value is within 1 of it, at about 1/20 of the time. For the
    training stream, where the images are augmented anyway; stored validation images use
    the exact kernel, so validation measures what the exported model sees.
    """
    if image.shape[0] == size and image.shape[1] == size:
        if dst is None:
            return image
        dst[...] = image
        return dst
    return cv2.resize(image, (size, size), dst=dst, interpolation=cv2.INTER_LINEAR)


def load_image(path: str, size: int | None = None) -> np.ndarray:
    """Read a local image file as uint8 RGB, optionally resized to ``size`` x ``size``."""
    with open(path, "rb") as f:
        image = decode_rgb(f.read())
    return image if size is None else resize_bilinear_uint8(image, size)
