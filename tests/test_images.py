"""Decoding: high bit depth is scaled (never clipped) and reasons are plain text."""

from __future__ import annotations

import io
import struct
import zlib

import numpy as np
import pytest
from conftest import scan_file
from PIL import Image

from tljob.images import ImageDecodeError, UnsupportedImageError, decode_rgb
from tljob.report import clean_reason

GREY_16 = np.array([[1000, 3000], [0, 65535]], dtype=np.uint16)
# round(v * 255 / 65535) for 1000, 3000, 0, 65535
GREY_8 = [[4, 12], [0, 255]]


def _saved(image: Image.Image, fmt: str, **params) -> bytes:
    buf = io.BytesIO()
    image.save(buf, format=fmt, **params)
    return buf.getvalue()


def _png_16bit(samples: np.ndarray) -> bytes:
    """A 16-bit PNG written by hand (Pillow cannot write 16-bit colour): (H, W, C) with C
    = 1 (grey), 2 (grey + alpha), 3 (RGB) or 4 (RGBA)."""
    height, width, channels = samples.shape
    colour_type = {1: 0, 2: 4, 3: 2, 4: 6}[channels]
    rows = b"".join(b"\0" + samples[y].astype(">u2").tobytes() for y in range(height))

    def chunk(kind: bytes, body: bytes) -> bytes:
        crc = struct.pack(">I", zlib.crc32(kind + body))
        return struct.pack(">I", len(body)) + kind + body + crc

    header = struct.pack(">IIBBBBB", width, height, 16, colour_type, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", header)
        + chunk(b"IDAT", zlib.compress(rows))
        + chunk(b"IEND", b"")
    )


def test_16bit_greyscale_png_is_scaled_not_clipped():
    data = _saved(Image.fromarray(GREY_16), "PNG")
    assert data[24] == 16  # IHDR bit depth: the file really holds 16-bit samples
    assert Image.open(io.BytesIO(data)).convert("RGB").getpixel((0, 0)) == (255, 255, 255)
    image = decode_rgb(data)  # Pillow's convert("RGB") above clips 1000 to 255
    assert image.dtype == np.uint8 and image.shape == (2, 2, 3)
    for channel in range(3):
        assert image[:, :, channel].tolist() == GREY_8


def test_16bit_greyscale_png_written_by_hand_matches():
    image = decode_rgb(_png_16bit(GREY_16[:, :, None]))
    assert image[:, :, 0].tolist() == image[:, :, 2].tolist() == GREY_8


@pytest.mark.parametrize("byte_order", ["<u2", ">u2"])
def test_16bit_greyscale_tiff_is_scaled(byte_order):
    source = Image.fromarray(GREY_16.astype(byte_order))
    data = _saved(source, "TIFF")
    assert Image.open(io.BytesIO(data)).mode in ("I;16", "I;16B")
    image = decode_rgb(data)
    for channel in range(3):
        assert image[:, :, channel].tolist() == GREY_8


def test_16bit_greyscale_keeps_exif_rotation():
    exif = Image.Exif()
    exif[0x0112] = 6  # orientation: rotate 90 degrees clockwise to display
    image = decode_rgb(_saved(Image.fromarray(GREY_16), "PNG", exif=exif))
    assert image[:, :, 1].tolist() == [[0, 4], [255, 12]]


@pytest.mark.parametrize("channels", [3, 4])
def test_16bit_colour_png_takes_pillows_high_byte(channels):
    # Pillow decodes 16-bit colour PNG/TIFF itself to 8 bits by keeping the high byte
    # (v // 256): 1000 -> 3, 3000 -> 11, 60000 -> 234, where rounding gives 4, 12, 233. A
    # scaling, off by at most 1, never a clip: what tljob documents and relies on.
    values = np.array([1000, 3000, 60000, 65535], dtype=np.uint16)
    samples = np.zeros((1, 4, channels), dtype=np.uint16)
    samples[0, :, 0], samples[0, :, 1], samples[0, :, 2] = values, values[::-1], 500
    if channels == 4:
        samples[0, :, 3] = 30000
    image = decode_rgb(_png_16bit(samples))
    assert image[0].tolist() == [[3, 255, 1], [11, 234, 1], [234, 11, 1], [255, 3, 1]]


def test_16bit_grey_alpha_png_takes_pillows_high_byte():
    samples = np.stack([GREY_16, np.full((2, 2), 65535, np.uint16)], axis=-1)
    image = decode_rgb(_png_16bit(samples))
    assert image[:, :, 0].tolist() == [[3, 11], [0, 255]]


@pytest.mark.parametrize(
    ("array", "message"),
    [
        (np.array([[1000, 3000], [0, 10**6]], dtype=np.int32), "32-bit signed integer pixels"),
        (np.array([[0.25, 0.5], [0.0, 1.0]], dtype=np.float32), "32-bit floating-point pixels"),
    ],
)
def test_high_bit_depth_without_a_known_range_is_unsupported(tmp_path, array, message):
    data = _saved(Image.fromarray(array), "TIFF")
    with pytest.raises(UnsupportedImageError) as err:
        decode_rgb(data)
    assert str(err.value) == (
        f"{message} have no known value range; save the image with 8 or 16 bits per channel"
    )
    path = tmp_path / "wide.tif"
    path.write_bytes(data)
    assert scan_file(str(path)).problem == f"unsupported_image: {err.value}"


def test_unidentifiable_file_reason_has_no_object_repr(tmp_path):
    with pytest.raises(ImageDecodeError) as err:
        decode_rgb(b"not an image at all")
    assert str(err.value) == "not a recognised image format"
    path = tmp_path / "fake.jpg"
    path.write_bytes(b"\x00" * 100)
    scan = scan_file(str(path))
    assert scan.problem == "corrupt_image: not a recognised image format"
    assert scan.sha256 == "cd00e292c5970d3c5e2f0ffa5171e555bc46bfc4faddfb4a418b6840b86e79a3"


def test_every_decode_failure_reason_is_plain_text():
    png = _saved(Image.new("RGB", (64, 64), (9, 9, 9)), "PNG")
    jpeg = _saved(Image.new("RGB", (64, 64), (9, 9, 9)), "JPEG")
    for bad in (png[: len(png) // 2], png[:40], jpeg[:300], b"GIF89a" + b"\xff" * 20, b""):
        with pytest.raises(ImageDecodeError) as err:
            decode_rgb(bad)
        reason = str(err.value)
        assert reason and "0x" not in reason and " object at " not in reason, reason
        assert "<" not in reason, reason


def test_clean_reason_drops_reprs_and_addresses_only():
    assert (
        clean_reason("cannot identify image file <_io.BytesIO object at 0x7fab12345678>")
        == "cannot identify image file"
    )
    assert clean_reason("bad <PIL.PngImagePlugin.PngImageFile image mode=RGB> data") == ("bad data")
    assert clean_reason("freed at 0x7f2d0453a070 twice") == "freed at twice"
    assert clean_reason("Unsupported marker 0xd9 in <source>") == (
        "Unsupported marker 0xd9 in <source>"
    )
