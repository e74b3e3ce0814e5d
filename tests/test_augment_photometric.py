"""Photometric operations (brightness, channel shift, colour jitter, RandAugment, random
erasing) on images whose answers are known, against PIL and tf_keras where they define the
operation, and the keyed determinism of the whole photometric stage."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image, ImageEnhance, ImageOps

from tljob.augment import colour
from tljob.augment.ops import randaugment
from tljob.augment.ops import random_erasing as erasing
from tljob.augment.photometric import Photometric
from tljob.config.augment import AugmentSection

RNG = np.random.default_rng(1234)
IMAGES = RNG.integers(0, 256, size=(3, 24, 32, 3), dtype=np.uint8)
RED, GREEN = (255, 0, 0), (0, 255, 0)


def _flat(colours: list[tuple[int, int, int]], h: int = 4, w: int = 4) -> np.ndarray:
    """(len(colours), h, w, 3) images, each filled with one colour."""
    return np.stack([np.full((h, w, 3), c, dtype=np.uint8) for c in colours])


def _everything_on(**extra) -> AugmentSection:
    options = {
        "brightness_range": (0.6, 1.4),
        "channel_shift_range": 30.0,
        "color_jitter": {"contrast": 0.4, "saturation": 0.4, "hue": 0.1},
        "randaugment": {"num_ops": 2, "magnitude": 9},
        "random_erasing": {"probability": 0.5},
    }
    return AugmentSection(**{**options, **extra})


# -- brightness and channel shift: ImageDataGenerator's -----------------------------------


def test_neutral_parameters_are_identity():
    ones, zeros = np.ones(3), np.zeros(3)
    assert np.array_equal(colour.apply_brightness(IMAGES, ones), IMAGES)
    assert np.array_equal(colour.apply_channel_shift(IMAGES, zeros), IMAGES)
    assert np.array_equal(colour.apply_contrast(IMAGES, ones), IMAGES)
    assert np.array_equal(colour.apply_saturation(IMAGES, ones), IMAGES)
    assert np.array_equal(colour.apply_hue(IMAGES, zeros), IMAGES)
    assert np.array_equal(randaugment.sharpness_blend(IMAGES, ones), IMAGES)


@pytest.mark.parametrize("factor", [0.0, 0.25, 1 / 3, 0.5, 0.8, 1.3, 1.7, 2.5])
def test_brightness_equals_pil_image_enhance(factor):
    ours = colour.apply_brightness(IMAGES, np.full(3, factor))
    for image, out in zip(IMAGES, ours, strict=True):
        pil = ImageEnhance.Brightness(Image.fromarray(image)).enhance(factor)
        assert np.array_equal(out, np.asarray(pil))


def test_brightness_and_channel_shift_equal_tf_keras():
    from tf_keras.preprocessing.image import apply_brightness_shift, apply_channel_shift

    image = IMAGES[0]
    for factor in (0.3, 0.77, 1.25):
        # ImageDataGenerator.apply_transform calls it with scale=False on a float32 image.
        keras = apply_brightness_shift(image.astype(np.float32), factor, False)
        assert np.array_equal(colour.apply_brightness(image[None], [factor])[0], keras)
    # A narrow image: the clip to its own min and max matters.
    narrow = (40 + IMAGES[1] // 2).astype(np.uint8)
    for intensity in (-60.0, -7.0, 0.0, 25.0, 200.0):
        keras = apply_channel_shift(narrow.astype(np.float32), intensity, channel_axis=2)
        ours = colour.apply_channel_shift(narrow[None], np.array([intensity]))[0]
        assert np.array_equal(ours, keras)
        assert ours.min() >= narrow.min() and ours.max() <= narrow.max()
    keras = apply_channel_shift(narrow.astype(np.float32), 12.4, channel_axis=2)
    ours = colour.apply_channel_shift(narrow[None], np.array([12.4]))[0]
    assert np.array_equal(ours, np.rint(keras))  # fractional: Keras' float, rounded


# -- colour jitter: torchvision's uint8 formulas -------------------------------------------


def test_saturation_zero_gives_torchvisions_grey():
    out = colour.apply_saturation(_flat([RED, GREEN, (0, 0, 255)]), np.zeros(3))
    # trunc(0.2989 * 255), trunc(0.587 * 255), trunc(0.114 * 255), in every channel.
    assert out[:, 0, 0].tolist() == [[76] * 3, [149] * 3, [29] * 3]
    grey = colour.apply_saturation(IMAGES, np.zeros(3))
    assert np.array_equal(grey[..., 0], grey[..., 1])
    assert np.array_equal(grey[..., 0], grey[..., 2])
    # Saturation 2 moves away from grey: pure red stays red; grey moves by torchvision's
    # truncated weights (0.9999 in all): 2 * 200 - trunc(199.98) = 201.
    more = colour.apply_saturation(_flat([RED, (200, 200, 200)]), np.full(2, 2.0))
    assert more[0, 0, 0].tolist() == [255, 0, 0]
    assert more[1, 0, 0].tolist() == [201, 201, 201]


def test_contrast_blends_with_the_mean_grey():
    half = np.concatenate([_flat([RED], 4, 2), _flat([GREEN], 4, 2)], axis=2)  # (1, 4, 4, 3)
    # Mean grey of the image: (76 + 149) / 2 = 112.5.
    flat = colour.apply_contrast(half, np.array([0.0]))
    assert np.all(flat == 112)
    softer = colour.apply_contrast(half, np.array([0.5]))
    assert softer[0, 0, 0].tolist() == [183, 56, 56]  # 0.5 * 255 + 0.5 * 112.5 = 183.75
    assert softer[0, 0, 3].tolist() == [56, 183, 56]
    harder = colour.apply_contrast(half, np.array([2.0]))
    assert np.array_equal(harder, half)  # 2 * 255 - 112.5 clips to 255, 0 - 112.5 to 0


def _torchvision_hue(image: np.ndarray, shift: float) -> np.ndarray:
    """torchvision's _rgb2hsv / _hsv2rgb on one image, in float64."""
    img = image.astype(np.float64) / 255.0
    r, g, b = img[..., 0], img[..., 1], img[..., 2]
    maxc, minc = img.max(-1), img.min(-1)
    eqc = maxc == minc
    cr = maxc - minc
    s = cr / np.where(eqc, 1.0, maxc)
    div = np.where(eqc, 1.0, cr)
    rc, gc, bc = (maxc - r) / div, (maxc - g) / div, (maxc - b) / div
    h = (
        (maxc == r) * (bc - gc)
        + ((maxc == g) & (maxc != r)) * (2.0 + rc - bc)
        + ((maxc != g) & (maxc != r)) * (4.0 + gc - rc)
    )
    h = (np.fmod(h / 6.0 + 1.0, 1.0) + shift) % 1.0
    i = np.floor(h * 6.0)
    f = h * 6.0 - i
    i = i.astype(int) % 6
    v = maxc
    p, q, t = v * (1 - s), v * (1 - s * f), v * (1 - s * (1 - f))
    table = np.stack(
        [
            np.stack(c, axis=-1)
            for c in ((v, t, p), (q, v, p), (p, v, t), (p, q, v), (t, p, v), (v, p, q))
        ]
    )
    rgb = np.take_along_axis(table, i[None, ..., None].repeat(3, -1), 0)[0]
    return np.clip(rgb * 255.999, 0, 255).astype(np.uint8)


def test_hue_rotates_in_hsv():
    cyan = colour.apply_hue(_flat([RED]), np.array([0.5]))
    assert np.all(cyan == np.array([0, 255, 255], dtype=np.uint8))
    green = colour.apply_hue(_flat([RED]), np.array([1 / 3]))
    assert np.all(green == np.array([0, 255, 0], dtype=np.uint8))
    grey = _flat([(90, 90, 90)])
    assert np.array_equal(colour.apply_hue(grey, np.array([0.3])), grey)  # no hue to turn
    for shift in (0.1, -0.27, -0.05, 0.5, 0.9):
        ours = colour.apply_hue(IMAGES, np.full(3, shift))
        reference = np.stack([_torchvision_hue(im, shift) for im in IMAGES])
        diff = np.abs(ours.astype(int) - reference)
        assert diff.max() <= 1 and diff.mean() < 0.01


def test_jitter_draws_follow_color_jitter_ranges():
    u = np.array([[0.0, 0.0, 0.0], [0.5, 0.5, 0.5], [0.999, 0.999, 0.999]])
    contrast, saturation, hue = colour.draw_jitter(u, 0.4, 1.5, 0.1)
    assert contrast.tolist() == pytest.approx([0.6, 1.0, 0.6 + 0.8 * 0.999])
    assert saturation.tolist() == pytest.approx([0.0, 1.25, 2.5 * 0.999])  # max(0, 1 - 1.5)
    assert hue.tolist() == pytest.approx([-0.1, 0.0, -0.1 + 0.2 * 0.999])


# -- RandAugment ---------------------------------------------------------------------------


def test_randaugment_magnitudes_are_torchvisions():
    assert randaugment.magnitude("Posterize", 9, 224, 224) == 7
    assert randaugment.magnitude("Posterize", 0, 224, 224) == 8
    assert randaugment.magnitude("Posterize", 30, 224, 224) == 4
    assert randaugment.magnitude("Solarize", 9, 224, 224) == pytest.approx(178.5)
    assert randaugment.magnitude("Rotate", 30, 224, 224) == pytest.approx(30.0)
    assert randaugment.magnitude("ShearX", 9, 224, 224) == pytest.approx(0.09)
    assert randaugment.magnitude("TranslateX", 30, 100, 331) == pytest.approx(150.0)
    assert randaugment.magnitude("TranslateY", 15, 331, 100) == pytest.approx(75.0)
    assert randaugment.magnitude("Brightness", 30, 224, 224) == pytest.approx(0.9)


def test_randaugment_draws_cover_every_op_with_random_signs():
    u = np.random.default_rng(0).random((2000, 4))
    ops, signs = randaugment.draw_ops(u, 2)
    assert ops.shape == signs.shape == (2000, 2)
    counts = np.bincount(ops.ravel(), minlength=len(randaugment.OPS))
    assert counts.min() > 4000 / 14 * 0.7
    signed = np.array([op in randaugment.SIGNED for op in randaugment.OPS])[ops]
    assert np.all(signs[~signed] == 1.0)
    assert 0.4 < np.mean(signs[signed] < 0) < 0.6


def test_posterize_solarize_equalize_equal_pil_image_ops():
    for image in IMAGES:
        pil = Image.fromarray(image)
        assert np.array_equal(
            randaugment.posterize(image, 3), np.asarray(ImageOps.posterize(pil, 3))
        )
        assert np.array_equal(randaugment.posterize(image, 8), image)
        assert np.array_equal(
            randaugment.solarize(image, 128), np.asarray(ImageOps.solarize(pil, 128))
        )
        assert np.array_equal(randaugment.solarize(image, 255.5), image)
    # Equalize on skewed histograms (a uniform one would be nearly a fixed point).
    skewed = (RNG.random((3, 40, 30, 3)) ** 3 * 200).astype(np.uint8)
    ours = randaugment.apply_op("Equalize", skewed, np.zeros(3), "nearest", 0.0)
    for image, out in zip(skewed, ours, strict=True):
        assert np.array_equal(out, np.asarray(ImageOps.equalize(Image.fromarray(image))))
        assert not np.array_equal(out, image)
    one_value = _flat([(7, 7, 7)])
    assert np.array_equal(
        randaugment.apply_op("Equalize", one_value, [0.0], "nearest", 0), one_value
    )


def test_autocontrast_stretches_each_channel():
    image = np.zeros((1, 2, 3, 3), dtype=np.uint8)
    image[0, :, :, 0] = [[50, 100, 150], [50, 60, 150]]  # stretched by 255 / 100
    image[0, :, :, 1] = 9  # flat: kept
    image[0, :, :, 2] = [[0, 128, 255], [3, 4, 5]]  # full range: kept
    out = randaugment.apply_op("AutoContrast", image, [0.0], "nearest", 0.0)[0]
    assert out[..., 0].tolist() == [[0, 127, 255], [0, 25, 255]]
    assert np.all(out[..., 1] == 9)
    assert np.array_equal(out[..., 2], image[0, ..., 2])
    pil = np.asarray(ImageOps.autocontrast(Image.fromarray(IMAGES[0] // 2 + 30)))
    ours = randaugment.apply_op("AutoContrast", IMAGES[:1] // 2 + 30, [0.0], "nearest", 0.0)[0]
    assert np.abs(ours.astype(int) - pil).max() <= 1  # PIL folds -lo * scale into its offset


def test_sharpness_zero_is_the_torchvision_smoothing():
    dot = np.zeros((1, 5, 5, 3), dtype=np.uint8)
    dot[0, 2, 2] = 255
    out = randaugment.apply_op("Sharpness", dot, np.array([-1.0]), "nearest", 0.0)[0, ..., 0]
    # Factor 0: the 3x3 kernel (1 1 1 / 1 5 1 / 1 1 1) / 13, rounded; the border kept.
    expected = np.zeros((5, 5), dtype=np.uint8)
    expected[1:4, 1:4] = 20  # 255 / 13 = 19.6
    expected[2, 2] = 98  # 255 * 5 / 13 = 98.1
    assert np.array_equal(out, expected)


def test_translate_moves_content_by_whole_pixels_with_each_fill_mode():
    image = IMAGES[:1]
    for mode, fill in (
        ("constant", lambda: np.full((24, 5, 3), 17, dtype=np.uint8)),
        ("nearest", lambda: np.repeat(image[0, :, :1], 5, axis=1)),
        ("wrap", lambda: image[0, :, -5:]),
        ("reflect", lambda: image[0, :, :5][:, ::-1]),
    ):
        out = randaugment.apply_op("TranslateX", image, np.array([5.9]), mode, 17.0)[0]
        assert np.array_equal(out[:, 5:], image[0, :, :-5]), mode
        assert np.array_equal(out[:, :5], fill()), mode
    down = randaugment.apply_op("TranslateY", image, np.array([-3.2]), "constant", 0.0)[0]
    assert np.array_equal(down[:-3], image[0, 3:])
    assert np.all(down[-3:] == 0)


def test_rotate_and_shear_geometry():
    square = RNG.integers(0, 256, size=(1, 9, 9, 3), dtype=np.uint8)
    assert np.array_equal(randaugment.apply_op("Rotate", square, [0.0], "nearest", 0), square)
    turned = randaugment.apply_op("Rotate", square, [90.0], "nearest", 0)[0]
    assert np.array_equal(turned, np.rot90(square[0]))  # counter-clockwise
    # ShearX at tan = 2 about the top-left corner: output (y, x) reads source x + 2y + 1.
    sheared = randaugment.apply_op("ShearX", square, [2.0], "constant", 0)[0]
    for y in range(9):
        inside = 9 - (2 * y + 1)
        if inside > 0:
            assert np.array_equal(sheared[y, :inside], square[0, y, 2 * y + 1 :])
        assert np.all(sheared[y, max(inside, 0) :] == 0)


# -- random erasing ------------------------------------------------------------------------


def test_erasing_boxes_follow_scale_and_ratio():
    u = np.random.default_rng(5).random((3000, erasing.COLUMNS))
    boxes = erasing.draw_boxes(u, 224, 200, 1.0, (0.02, 0.33), (0.3, 3.3))
    top, left, h, w = boxes.T.astype(float)
    assert np.all(h > 0)  # probability 1, and some attempt always fits at these bounds
    area = 224 * 200
    # h and w are rounded from the exact box: the bounds hold up to half a pixel each.
    assert np.all((h + 0.5) * (w + 0.5) >= 0.02 * area)
    assert np.all((h - 0.5) * (w - 0.5) <= 0.33 * area)
    assert np.all((w + 0.5) / (h - 0.5) >= 0.3) and np.all((w - 0.5) / (h + 0.5) <= 3.3)
    assert np.all(top >= 0) and np.all(top + h <= 224)
    assert np.all(left >= 0) and np.all(left + w <= 200)
    assert np.all(h < 224) and np.all(w < 200)
    sometimes = erasing.draw_boxes(u, 224, 200, 0.25, (0.02, 0.33), (0.3, 3.3))
    assert 0.22 < np.mean(sometimes[:, 2] > 0) < 0.28


def test_erasing_too_large_boxes_leave_the_image_alone():
    u = np.random.default_rng(6).random((50, erasing.COLUMNS))
    boxes = erasing.draw_boxes(u, 32, 32, 1.0, (1.0, 1.0), (1.0, 1.0))  # never fits
    assert np.all(boxes == 0)


def test_erasing_fills_only_the_box():
    boxes = np.array([[3, 4, 10, 6], [0, 0, 0, 0], [20, 30, 4, 2]])
    keys = np.array([11, 12, 13], dtype=np.uint64)
    zero = erasing.apply_erasing(IMAGES, boxes, "zero", 0, 0, keys, 106)
    noisy = erasing.apply_erasing(IMAGES, boxes, "random", 0, 0, keys, 106)
    again = erasing.apply_erasing(IMAGES, boxes, "random", 0, 0, keys, 106)
    other_epoch = erasing.apply_erasing(IMAGES, boxes, "random", 0, 1, keys, 106)
    for out in (zero, noisy):
        outside = np.ones(IMAGES.shape[:3], dtype=bool)
        outside[0, 3:13, 4:10] = outside[2, 20:24, 30:32] = False
        assert np.array_equal(out[outside], IMAGES[outside])
    assert np.all(zero[0, 3:13, 4:10] == 0) and np.all(zero[2, 20:24, 30:32] == 0)
    assert np.array_equal(noisy, again)
    assert not np.array_equal(noisy[0, 3:13, 4:10], other_epoch[0, 3:13, 4:10])
    assert len(np.unique(noisy[0, 3:13, 4:10])) > 50  # noise over 0..255, not one value


# -- the Photometric stage -----------------------------------------------------------------


def test_all_off_is_identity():
    photometric = Photometric(AugmentSection(rotation_range=30.0))
    assert not photometric.active
    assert photometric(IMAGES, np.arange(3, dtype=np.uint64), 0, 1) is IMAGES


@pytest.mark.parametrize("shape", [(5, 37, 53, 3), (4, 224, 224, 3)])
def test_dtype_and_shape_are_preserved(shape):
    images = RNG.integers(0, 256, size=shape, dtype=np.uint8)
    before = images.copy()
    out = Photometric(_everything_on())(images, np.arange(shape[0], dtype=np.uint64), 2, 7)
    assert out.dtype == np.uint8 and out.shape == shape
    assert np.array_equal(images, before)  # the input is not written to
    assert not np.array_equal(out, images)


def test_views_depend_on_seed_epoch_and_key_only():
    photometric = Photometric(_everything_on(fill_mode="reflect"))
    images = RNG.integers(0, 256, size=(12, 40, 40, 3), dtype=np.uint8)
    keys = RNG.integers(0, 2**63, size=12, dtype=np.uint64)
    whole = photometric(images, keys, 3, 42)
    order = np.array([7, 2, 11, 0, 5])  # a subset, permuted
    part = photometric(images[order], keys[order], 3, 42)
    assert np.array_equal(part, whole[order])
    for i in range(12):
        assert np.array_equal(photometric(images[i : i + 1], keys[i : i + 1], 3, 42)[0], whole[i])
    next_epoch = photometric(images, keys, 4, 42)
    other_seed = photometric(images, keys, 3, 43)
    assert all(not np.array_equal(next_epoch[i], whole[i]) for i in range(12))
    assert all(not np.array_equal(other_seed[i], whole[i]) for i in range(12))


def test_options_draw_from_separate_streams():
    keys = np.arange(50, dtype=np.uint64)
    alone = Photometric(AugmentSection(brightness_range=(0.5, 1.5))).draw(keys, 1, 9, 64, 64)
    both = Photometric(_everything_on(brightness_range=(0.5, 1.5))).draw(keys, 1, 9, 64, 64)
    assert np.array_equal(alone.brightness, both.brightness)
    erase = Photometric(AugmentSection(random_erasing={"probability": 0.5}))
    assert np.array_equal(erase.draw(keys, 1, 9, 64, 64).boxes, both.boxes)
    assert alone.channel_shift is None and alone.boxes is None and both.ops is not None


def test_stage_order_brightness_then_channel_shift():
    section = AugmentSection(brightness_range=(0.5, 0.5 + 1e-12), channel_shift_range=40.0)
    photometric = Photometric(section)
    keys = np.arange(3, dtype=np.uint64)
    d = photometric.draw(keys, 0, 0, 24, 32)
    expected = colour.apply_channel_shift(
        colour.apply_brightness(IMAGES, d.brightness), d.channel_shift
    )
    assert np.array_equal(photometric(IMAGES, keys, 0, 0), expected)


def test_describe_names_the_draws():
    text = Photometric(_everything_on()).describe(np.arange(4, dtype=np.uint64), 0, 1, 2)
    assert text.startswith("bright ") and ", shift " in text and ", jitter c" in text
    assert ", RA " in text
    assert Photometric(AugmentSection()).describe(np.arange(1), 0, 1, 0) == ""
