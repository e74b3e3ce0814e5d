"""The geometric augmentation: each operation alone with fixed parameters on images whose
answer is known, the fill modes at the borders, the random resized crop, the identity when
everything is off, and the keyed, vectorised draw."""

from __future__ import annotations

import math

import cv2
import numpy as np
import pytest

from tljob.augment import geometry, keys
from tljob.augment.geometry import GeometryParams
from tljob.augment.ops.random_resized_crop import STREAM_CROP
from tljob.augment.pipeline import Augmenter
from tljob.config.augment import AugmentSection
from tljob.images import resize_fast_uint8


def pattern(size: int = 16, channels: int = 3) -> np.ndarray:
    """A uint8 image whose every pixel is distinct within a channel: 16 * row + column, with
    the channels offset so that mixing them up shows."""
    rows, cols = np.mgrid[0:size, 0:size]
    base = (rows * size + cols) % 256
    return np.stack([(base + 7 * c) % 256 for c in range(channels)], axis=2).astype(np.uint8)


def warp_one(image: np.ndarray, fill_mode: str = "nearest", cval: float = 0.0, **params):
    size = image.shape[0]
    matrices = geometry.affine_matrices(GeometryParams.fixed(1, **params), size, size)
    return geometry.warp([image], matrices, size, fill_mode, cval)[0]


def test_horizontal_and_vertical_flips_reverse_the_array():
    image = pattern()
    np.testing.assert_array_equal(warp_one(image, flip_h=True), image[:, ::-1])
    np.testing.assert_array_equal(warp_one(image, flip_v=True), image[::-1])
    np.testing.assert_array_equal(warp_one(image, flip_h=True, flip_v=True), image[::-1, ::-1])


def test_zero_rotation_unit_zoom_and_no_shift_are_the_identity():
    image = pattern()
    np.testing.assert_array_equal(warp_one(image), image)
    np.testing.assert_array_equal(warp_one(image, theta=0.0, zx=1.0, zy=1.0, shear=0.0), image)


@pytest.mark.parametrize(("theta", "turns"), [(90.0, 1), (180.0, 2), (-90.0, 3), (270.0, 3)])
def test_right_angle_rotations_equal_rot90(theta, turns):
    # tf_keras' positive angle turns the picture counter-clockwise, as np.rot90.
    image = pattern()
    np.testing.assert_array_equal(warp_one(image, theta=theta), np.rot90(image, turns))


@pytest.mark.parametrize("k", [1, 3, 5])
def test_a_shift_of_k_pixels_moves_content_by_k(k):
    image = pattern()
    # tf_keras' tx pulls from k columns to the right: content moves left by k.
    left = warp_one(image, tx=float(k))
    np.testing.assert_array_equal(left[:, :-k], image[:, k:])
    np.testing.assert_array_equal(left[:, -k:], np.repeat(image[:, -1:], k, axis=1))
    # ty moves rows: a negative ty moves content down by k.
    down = warp_one(image, ty=float(-k))
    np.testing.assert_array_equal(down[k:], image[:-k])
    np.testing.assert_array_equal(down[:k], np.repeat(image[:1], k, axis=0))


def test_zoom_by_two_about_the_centre_samples_every_other_pixel():
    image = pattern(17)  # odd: the centre (8, 8) is a pixel, so zoom 2 lands on pixels
    out = warp_one(image, zx=2.0, zy=2.0)
    # Output pixel p reads 8 + 2 (p - 8): pixels 4..12 read 0, 2, ..., 16.
    np.testing.assert_array_equal(out[4:13, 4:13], image[0:17:2, 0:17:2])
    # zx scales columns only.
    wide = warp_one(image, zx=2.0)
    np.testing.assert_array_equal(wide[:, 4:13], image[:, 0:17:2])


# Column 5..7 of an 8-wide image after a shift of 3 (content moves left) read x = 8, 9, 10;
# columns 0..2 after a shift of -3 read x = -3, -2, -1. Where scipy (tf_keras) takes them:
OUTSIDE_RIGHT = {"nearest": [7, 7, 7], "reflect": [7, 6, 5], "wrap": [1, 2, 3]}
OUTSIDE_LEFT = {"nearest": [0, 0, 0], "reflect": [2, 1, 0], "wrap": [4, 5, 6]}


@pytest.mark.parametrize("mode", ["nearest", "reflect", "wrap"])
def test_fill_modes_at_the_borders(mode):
    image = pattern(8)
    right = warp_one(image, fill_mode=mode, tx=3.0)
    np.testing.assert_array_equal(right[:, :5], image[:, 3:])
    np.testing.assert_array_equal(right[:, 5:], image[:, OUTSIDE_RIGHT[mode]])
    left = warp_one(image, fill_mode=mode, tx=-3.0)
    np.testing.assert_array_equal(left[:, 3:], image[:, :5])
    np.testing.assert_array_equal(left[:, :3], image[:, OUTSIDE_LEFT[mode]])
    below = warp_one(image, fill_mode=mode, ty=3.0)
    np.testing.assert_array_equal(below[5:], image[OUTSIDE_RIGHT[mode]])


def test_constant_fill_uses_cval_and_never_blends_it_in():
    image = pattern(8)
    out = warp_one(image, fill_mode="constant", cval=201.0, tx=3.0)
    np.testing.assert_array_equal(out[:, :5], image[:, 3:])
    assert (out[:, 5:] == 201).all()
    # A quarter pixel: column 7 reads x = 7.25, outside [0, 7] -> cval (scipy's 'constant';
    # OpenCV alone would blend the edge pixel with cval there); column 6 reads 6.25, which
    # rounds to column 6 (column 7 is one more).
    quarter = warp_one(image, fill_mode="constant", cval=201.0, tx=0.25)
    assert (quarter[:, 7] == 201).all()
    np.testing.assert_array_equal(quarter[:, :7], image[:, :7])


def test_wrap_inside_the_image_keeps_the_last_pixel():
    # scipy's 'wrap' interpolates as usual inside [0, size - 1]: the identity stays exact.
    image = pattern(8)
    np.testing.assert_array_equal(warp_one(image, fill_mode="wrap", theta=360.0), image)


def resized_crop_reference(image: np.ndarray, box, out_size: int) -> np.ndarray:
    """Float bilinear resize of ``box`` (x0, y0, w, h) with half-pixel centres (what
    cv2.resize and torchvision's resize compute), reading the image itself around the box."""
    x0, y0, w, h = box
    xs = x0 + (np.arange(out_size) + 0.5) * w / out_size - 0.5
    ys = y0 + (np.arange(out_size) + 0.5) * h / out_size - 0.5
    size = image.shape[0]
    x_lo = np.clip(np.floor(xs).astype(int), 0, size - 1)
    y_lo = np.clip(np.floor(ys).astype(int), 0, size - 1)
    x_hi, y_hi = np.minimum(x_lo + 1, size - 1), np.minimum(y_lo + 1, size - 1)
    fx, fy = (xs - np.floor(xs))[None, :, None], (ys - np.floor(ys))[:, None, None]
    img = image.astype(np.float64)
    top = img[y_lo][:, x_lo] * (1 - fx) + img[y_lo][:, x_hi] * fx
    bottom = img[y_hi][:, x_lo] * (1 - fx) + img[y_hi][:, x_hi] * fx
    return top * (1 - fy) + bottom * fy


@pytest.mark.parametrize(
    ("box", "out_size", "tolerance"),
    [
        ((8, 4, 32, 32), 64, 0.5),  # upscaled by 2: weights 1/4, 3/4, exact in fixed point
        ((16, 0, 48, 48), 24, 0.5),  # downscaled by 2
        ((5, 11, 37, 29), 48, 1.0),  # positions off OpenCV's 1/32-pixel grid
    ],
)
def test_a_crop_box_equals_resizing_the_cropped_region(box, out_size, tolerance):
    image = np.random.default_rng(3).integers(0, 256, (64, 64, 3), dtype=np.uint8)
    params = GeometryParams.fixed(1, box=[float(v) for v in box])
    out = geometry.warp([image], geometry.affine_matrices(params, 64, out_size), out_size)[0]
    # The rounded true value (0.5), or within OpenCV's coordinate quantisation (1.0).
    reference = resized_crop_reference(image, box, out_size)
    assert np.abs(out - reference).max() <= tolerance
    # The outermost pixels of an upscaled box read just outside it: one map over the whole
    # stored image takes the pixels there, where cropping first would repeat the box's edge;
    # inside that border the crop-then-resize is the same within OpenCV's rounding.
    x0, y0, w, h = box
    cropped = cv2.resize(image[y0 : y0 + h, x0 : x0 + w], (out_size, out_size))
    inner = np.abs(out[1:-1, 1:-1].astype(int) - cropped[1:-1, 1:-1])
    assert inner.max() <= 1


def test_plain_resize_matrix_matches_resize_fast():
    image = np.random.default_rng(4).integers(0, 256, (96, 96, 3), dtype=np.uint8)
    matrices = geometry.affine_matrices(GeometryParams.fixed(1), 96, 64)
    out = geometry.warp([image], matrices, 64)[0]
    assert np.abs(out.astype(int) - resize_fast_uint8(image, 64)).max() <= 1


@pytest.mark.parametrize(("stored", "out"), [(80, 64), (64, 64), (48, 64)])
@pytest.mark.parametrize("preset", ["seed", "light"])
def test_views_are_uint8_of_the_training_size(preset, stored, out):
    images = np.random.default_rng(5).integers(0, 256, (6, stored, stored, 3), dtype=np.uint8)
    augmenter = Augmenter(AugmentSection(preset=preset), out, seed=1)
    views = augmenter(images, np.arange(6, dtype=np.uint64), epoch=0)
    assert views.shape == (6, out, out, 3)
    assert views.dtype == np.uint8
    assert augmenter.active
    # A list of arrays works the same as one array.
    np.testing.assert_array_equal(augmenter(list(images), np.arange(6), epoch=0), views)


@pytest.mark.parametrize("stored", [256, 224, 100])
def test_everything_off_is_resize_fast(stored):
    images = np.random.default_rng(6).integers(0, 256, (4, stored, stored, 3), dtype=np.uint8)
    ids = np.array([3, 1, 4, 1], dtype=np.uint64)
    expected = np.stack([resize_fast_uint8(image, 224) for image in images])
    off = Augmenter(AugmentSection(), 224, seed=0)
    assert not off.active
    np.testing.assert_array_equal(off(images, ids, epoch=2), expected)
    # Options on but run by the model (`where: model`): the data side only resizes.
    model_side = Augmenter(AugmentSection(rotation_range=30, where="model"), 224, seed=0)
    assert not model_side.active
    np.testing.assert_array_equal(model_side(images, ids, epoch=2), expected)


SEED = AugmentSection(preset="seed", vertical_flip=True)


def test_drawn_values_lie_in_their_ranges():
    ids = np.arange(2000, dtype=np.uint64)
    p = Augmenter(SEED, 224, seed=9).draw(ids, epoch=0, in_size=256)
    assert np.abs(p.theta).max() <= 40 and np.abs(p.theta).max() > 39
    # Fractions of the training size (0.2 * 224 = 44.8 pixels).
    assert np.abs(p.tx).max() <= 44.8 and np.abs(p.tx).max() > 44
    assert np.abs(p.ty).max() <= 44.8 and np.abs(p.ty).max() > 44
    assert np.abs(p.shear).max() <= 0.2 and np.abs(p.shear).max() > 0.19
    for zoom in (p.zx, p.zy):
        assert zoom.min() >= 0.8 and zoom.max() <= 1.2
        assert zoom.min() < 0.81 and zoom.max() > 1.19
    assert not np.array_equal(p.zx, p.zy)  # drawn independently, as tf_keras
    assert 0.45 < p.flip_h.mean() < 0.55 and 0.45 < p.flip_v.mean() < 0.55
    assert p.box is None
    # Shifts >= 1 are pixels; a flip that is off is never drawn.
    pixels = AugmentSection(width_shift_range=6, height_shift_range=2.5)
    q = Augmenter(pixels, 224, seed=9).draw(ids, epoch=0, in_size=256)
    assert np.abs(q.tx).max() <= 6 and np.abs(q.tx).max() > 5.9
    assert np.abs(q.ty).max() <= 2.5 and np.abs(q.ty).max() > 2.4
    assert not q.flip_h.any() and not q.flip_v.any()
    assert (q.theta == 0).all() and (q.zx == 1).all() and (q.zy == 1).all()


def reference_crop(side: int, scale, ratio, u: np.ndarray) -> tuple[float, ...]:
    """torchvision's RandomResizedCrop.get_params, one image, driven by ``u`` (the same
    columns as tljob's draw) instead of torch's generator."""
    area = side * side
    for attempt in range(10):
        s, r, top_u, left_u = u[4 * attempt : 4 * attempt + 4]
        target_area = area * (scale[0] + (scale[1] - scale[0]) * s)
        log_lo, log_hi = math.log(ratio[0]), math.log(ratio[1])
        aspect = math.exp(log_lo + (log_hi - log_lo) * r)
        w = int(round(math.sqrt(target_area * aspect)))
        h = int(round(math.sqrt(target_area / aspect)))
        if 0 < w <= side and 0 < h <= side:
            i = int(top_u * (side - h + 1))
            j = int(left_u * (side - w + 1))
            return (j, i, w, h)
    if min(ratio) > 1.0:
        w, h = side, int(round(side / min(ratio)))
    elif max(ratio) < 1.0:
        h, w = side, int(round(side * max(ratio)))
    else:
        w, h = side, side
    return ((side - w) // 2, (side - h) // 2, w, h)


@pytest.mark.parametrize(
    ("scale", "ratio"),
    [((0.08, 1.0), (3 / 4, 4 / 3)), ((0.5, 1.0), (3 / 4, 4 / 3)), ((0.9, 1.0), (0.2, 5.0))],
)
def test_random_resized_crop_boxes_follow_torchvision(scale, ratio):
    section = AugmentSection(random_resized_crop={"enabled": True, "scale": scale, "ratio": ratio})
    ids = np.arange(500, dtype=np.uint64)
    p = Augmenter(section, 224, seed=2).draw(ids, epoch=1, in_size=256)
    u = keys.uniforms(2, 1, ids, 40, STREAM_CROP)
    expected = np.array([reference_crop(256, scale, ratio, row) for row in u], dtype=float)
    np.testing.assert_array_equal(p.box, expected)
    x0, y0, w, h = p.box.T
    assert (x0 >= 0).all() and (y0 >= 0).all() and (x0 + w <= 256).all() and (y0 + h <= 256).all()


@pytest.mark.parametrize(
    ("ratio", "box"), [((2.0, 3.0), (0, 64, 256, 128)), ((0.25, 0.5), (64, 0, 128, 256))]
)
def test_random_resized_crop_falls_back_to_the_centre(ratio, box):
    # No box of area >= 90 % with width/height in `ratio` fits a square: the centre crop of
    # the nearest allowed ratio, for every image.
    section = AugmentSection(
        random_resized_crop={"enabled": True, "scale": (0.9, 1.0), "ratio": ratio}
    )
    p = Augmenter(section, 224, seed=2).draw(np.arange(50, dtype=np.uint64), 0, 256)
    np.testing.assert_array_equal(p.box, np.tile(np.array(box, dtype=float), (50, 1)))


def _fields(p: GeometryParams) -> list[np.ndarray]:
    return [p.theta, p.tx, p.ty, p.shear, p.zx, p.zy, p.flip_h, p.flip_v, p.box]


def test_an_image_draws_the_same_whatever_its_batch():
    section = AugmentSection(preset="seed", random_resized_crop={"enabled": True})
    augmenter = Augmenter(section, 224, seed=11)
    ids = keys.image_keys([f"{i:064x}" for i in range(1, 41)])
    whole = augmenter.draw(ids, epoch=3, in_size=256)
    order = np.random.default_rng(0).permutation(40)[:17]
    part = augmenter.draw(ids[order], epoch=3, in_size=256)
    for a, b in zip(_fields(whole), _fields(part), strict=True):
        np.testing.assert_array_equal(a[order], b)
    images = np.random.default_rng(1).integers(0, 256, (40, 64, 64, 3), dtype=np.uint8)
    views = augmenter(images, ids, epoch=3)
    np.testing.assert_array_equal(augmenter(images[order], ids[order], epoch=3), views[order])


def test_epochs_seeds_and_images_draw_differently():
    ids = np.arange(64, dtype=np.uint64)
    first = Augmenter(SEED, 224, seed=11).draw(ids, epoch=0, in_size=256)
    second = Augmenter(SEED, 224, seed=11).draw(ids, epoch=1, in_size=256)
    other_seed = Augmenter(SEED, 224, seed=12).draw(ids, epoch=0, in_size=256)
    for a, b, c in zip(
        _fields(first)[:6], _fields(second)[:6], _fields(other_seed)[:6], strict=True
    ):
        assert len(np.unique(a)) == 64  # every image its own draw
        assert (a != b).all() and (a != c).all()
    # `augment.seed`, when set, wins over the run's seed.
    pinned = AugmentSection(preset="seed", vertical_flip=True, seed=12)
    again = Augmenter(pinned, 224, seed=11).draw(ids, epoch=0, in_size=256)
    np.testing.assert_array_equal(again.theta, other_seed.theta)


def test_turning_an_option_on_keeps_the_other_draws():
    ids = np.arange(32, dtype=np.uint64)
    rotation = Augmenter(AugmentSection(rotation_range=30), 224, seed=4).draw(ids, 0, 256)
    both = AugmentSection(rotation_range=30, horizontal_flip=True, zoom_range=0.1)
    together = Augmenter(both, 224, seed=4).draw(ids, 0, 256)
    np.testing.assert_array_equal(rotation.theta, together.theta)


def test_describe_labels_a_draw():
    augmenter = Augmenter(SEED, 224, seed=0)
    params = GeometryParams.fixed(1, theta=12.3, tx=-3.2, ty=5.4, zx=0.914, zy=1.08, flip_h=True)
    assert augmenter.describe(params, 0) == "rot +12°, shift (3, -5) px, zoom 0.91x1.08, flip h"
    assert augmenter.describe(GeometryParams.fixed(1), 0) == "resize"
    boxed = GeometryParams.fixed(1, box=(10, 20, 100, 120), shear=-0.16, flip_v=True)
    assert augmenter.describe(boxed, 0) == "crop 100x120 at (10, 20), shear -0.2°, flip v"


def test_views_are_the_drawn_parameters_applied():
    images = np.random.default_rng(8).integers(0, 256, (12, 96, 96, 3), dtype=np.uint8)
    ids = np.arange(100, 112, dtype=np.uint64)
    # Rotations etc.: one warp through the drawn map.
    seed = Augmenter(AugmentSection(preset="seed", fill_mode="reflect"), 64, seed=5)
    params = seed.draw(ids, 4, 96)
    matrices = geometry.affine_matrices(params, 96, 64)
    expected = geometry.warp(images, matrices, 64, "reflect")
    np.testing.assert_array_equal(seed(images, ids, 4), expected)
    # Crop and flips only: torchvision's crop-then-resize, then the flips, exactly.
    light = Augmenter(AugmentSection(preset="light", vertical_flip=True), 64, seed=5)
    params = light.draw(ids, 4, 96)
    assert params.flip_h.any() and params.flip_v.any() and not params.flip_h.all()
    views = light(images, ids, 4)
    for i, (x0, y0, w, h) in enumerate(params.box.astype(int)):
        view = cv2.resize(images[i][y0 : y0 + h, x0 : x0 + w], (64, 64))
        view = view[:, ::-1] if params.flip_h[i] else view
        view = view[::-1] if params.flip_v[i] else view
        np.testing.assert_array_equal(views[i], view)
    # The same within OpenCV's rounding as the one map (inside the outer ring).
    warped = geometry.warp(images, geometry.affine_matrices(params, 96, 64), 64)
    assert np.abs(views[:, 1:-1, 1:-1].astype(int) - warped[:, 1:-1, 1:-1]).max() <= 1


def test_captions_name_the_geometry_then_the_colour_draw():
    section = AugmentSection(horizontal_flip=True, brightness_range=(1.5, 1.5))
    augmenter = Augmenter(section, out_size=32, seed=0)
    keys = np.arange(4, dtype=np.uint64)
    captions = augmenter.captions(keys, epoch=0, in_size=36)
    flips = augmenter.draw(keys, 0, 36).flip_h
    for caption, flipped in zip(captions, flips, strict=True):
        assert caption == ("flip h, bright 1.50" if flipped else "bright 1.50")
