"""A JPEG's EXIF orientation, read and applied with TensorFlow ops only (TensorFlow, never
Ray), so the served model turns images upright as tljob's decoding does
(``tljob.images.decode_rgb``: Pillow's ``ImageOps.exif_transpose``).

The orientation is tag 0x0112 of IFD0 in the ``Exif`` APP1 segment, which follows the start
of image, after at most a few other APPn segments. Every read is bounded: positions are
clamped into the data (padded with zeros), the segment scan stops after ``MAX_SEGMENTS``
and the IFD scan after ``MAX_ENTRIES``, so a damaged or hostile header gives orientation
1 (as it is), never an error and never a long loop.
"""

from __future__ import annotations

import tensorflow as tf

MAX_SEGMENTS = 16
MAX_ENTRIES = 256
ORIENTATION_TAG = 0x0112
_PAD = 8  # bytes of zeros after the data: every read is at most 6 bytes from a valid position


class _Reader:
    def __init__(self, data: tf.Tensor) -> None:
        self.size = tf.strings.length(data)
        self.data = tf.strings.join([data, tf.constant(b"\0" * _PAD)])

    def bytes(self, pos: tf.Tensor, n: int) -> tf.Tensor:
        return tf.strings.substr(self.data, tf.clip_by_value(pos, 0, self.size), n)

    def uint(self, pos: tf.Tensor, n: int, little: tf.Tensor) -> tf.Tensor:
        """An unsigned ``n``-byte integer at ``pos`` (int64), little- or big-endian."""
        raw = tf.cast(tf.io.decode_raw(self.bytes(pos, n), tf.uint8), tf.int64)
        weights = tf.bitwise.left_shift(tf.constant(1, tf.int64), 8 * tf.range(n, dtype=tf.int64))
        return tf.reduce_sum(raw * tf.where(little, weights, weights[::-1]))


def orientation(data: tf.Tensor) -> tf.Tensor:
    """The EXIF orientation (int32, 1 to 8) of a JPEG's bytes; 1 without a readable one."""
    read = _Reader(data)
    big = tf.constant(False)

    def next_segment(i: tf.Tensor, pos: tf.Tensor, tiff: tf.Tensor) -> tuple:
        marker = read.uint(pos, 2, big)
        exif = tf.logical_and(
            tf.equal(marker, 0xFFE1), tf.equal(read.bytes(pos + 4, 6), b"Exif\0\0")
        )
        application = tf.logical_or(
            tf.logical_and(marker >= 0xFFE0, marker <= 0xFFEF), tf.equal(marker, 0xFFFE)
        )
        step = 2 + tf.cast(read.uint(pos + 2, 2, big), tf.int32)
        # found: stop there; another APPn or comment: skip it; anything else: stop, none
        tiff = tf.where(exif, pos + 10, tiff)
        pos = tf.where(tf.logical_and(application, tf.logical_not(exif)), pos + step, -1)
        return i + 1, pos, tiff

    _, _, tiff = tf.while_loop(
        lambda i, pos, tiff: tf.logical_and(i < MAX_SEGMENTS, pos >= 0),
        next_segment,
        (tf.constant(0), tf.constant(2), tf.constant(-1)),  # after the start of image
    )
    order = read.bytes(tiff, 2)
    little = tf.equal(order, b"II")
    tiff_ok = tf.logical_and(tiff >= 0, tf.logical_or(little, tf.equal(order, b"MM")))
    ifd = tiff + tf.cast(tf.minimum(read.uint(tiff + 4, 4, little), 1 << 30), tf.int32)
    entries = tf.cast(tf.minimum(read.uint(ifd, 2, little), MAX_ENTRIES), tf.int32)

    def next_entry(i: tf.Tensor, found: tf.Tensor) -> tuple:
        entry = ifd + 2 + 12 * i
        tag = read.uint(entry, 2, little)
        value = tf.cast(read.uint(entry + 8, 2, little), tf.int32)
        return i + 1, tf.where(tf.equal(tag, ORIENTATION_TAG), value, found)

    _, found = tf.while_loop(
        lambda i, found: tf.logical_and(i < entries, found == 0),
        next_entry,
        (tf.constant(0), tf.constant(0)),
    )
    valid = tf.logical_and(tiff_ok, tf.logical_and(found >= 1, found <= 8))
    return tf.where(valid, found, 1)


def upright(image: tf.Tensor, orientation: tf.Tensor) -> tf.Tensor:
    """``image`` (H, W, C) turned as EXIF ``orientation`` says, as Pillow's
    ``exif_transpose`` turns it (2: mirror, 3: 180 degrees, 4: flip, 5: transpose, 6: 90
    degrees clockwise, 7: transverse, 8: 90 degrees counter-clockwise)."""

    def transposed() -> tf.Tensor:
        return tf.transpose(image, [1, 0, 2])

    turned = tf.switch_case(
        orientation - 1,
        [
            lambda: image,
            lambda: tf.reverse(image, [1]),
            lambda: tf.image.rot90(image, 2),
            lambda: tf.reverse(image, [0]),
            transposed,
            lambda: tf.image.rot90(image, 3),
            lambda: tf.image.rot90(transposed(), 2),
            lambda: tf.image.rot90(image, 1),
        ],
    )
    turned.set_shape([None, None, image.shape[-1]])
    return turned
