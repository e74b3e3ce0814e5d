"""Pinned views: the exact pixels (and MixUp / CutMix labels, and preview captions) that
tljob's augmentation gives a fixed batch, for the presets ``seed``, ``light``,
``randaugment`` and a section with every option on.

The digests were computed on the code before the augmentation ops became a registry
(``tljob.augment.ops``), so a refactor that changes any op's draw stream, column, order
or formula fails here. They depend on OpenCV's kernels too: an OpenCV upgrade that moves
a pixel fails here as well (recompute them then, on purpose, and say why).
"""

from __future__ import annotations

import hashlib

import numpy as np
import pytest

from tljob.augment import geometry
from tljob.augment.keys import image_keys
from tljob.augment.ops.mixing import draw_mix, mix_batch
from tljob.augment.pipeline import Augmenter
from tljob.config.augment import AugmentSection

STORED, OUT, SEED = 40, 32, 1234
EPOCHS = (0, 1, 3)
EVERYTHING = {
    "rotation_range": 25.0,
    "width_shift_range": 0.1,
    "height_shift_range": 3.0,  # pixels
    "shear_range": 12.0,
    "zoom_range": (0.85, 1.2),
    "horizontal_flip": True,
    "vertical_flip": True,
    "fill_mode": "constant",
    "cval": 20.0,
    "brightness_range": (0.7, 1.3),
    "channel_shift_range": 25.0,
    "random_resized_crop": {"enabled": True, "scale": (0.4, 1.0)},
    "color_jitter": {"contrast": 0.4, "saturation": 0.4, "hue": 0.1},
    "random_erasing": {"probability": 0.5},
    "randaugment": {"num_ops": 2, "magnitude": 9},
    "mixup_alpha": 0.4,
    "cutmix_alpha": 1.0,
}
CONFIGS = {
    "seed": {"preset": "seed"},
    "light": {"preset": "light"},
    "randaugment": {"preset": "randaugment", "fill_mode": "reflect"},
    "everything": EVERYTHING,
}


def stored_batch() -> tuple[np.ndarray, np.ndarray]:
    """Six (40, 40, 3) uint8 images with edges and texture (arithmetic, no generator), and
    their keys from made-up content hashes."""
    y, x = np.mgrid[0:STORED, 0:STORED]
    images = []
    for n in range(6):
        channels = [
            (x * (3 + n) + y * 7 + c * 60 + ((x // (4 + n)) + (y // 5)) % 2 * 90) % 256
            for c in range(3)
        ]
        images.append(np.stack(channels, axis=-1).astype(np.uint8))
    keys = image_keys([hashlib.sha256(f"image {n}".encode()).hexdigest() for n in range(6)])
    return np.stack(images), keys


def digest(*arrays: np.ndarray) -> str:
    h = hashlib.sha256()
    for a in arrays:
        h.update(np.ascontiguousarray(a).tobytes())
    return h.hexdigest()[:16]


def augmenter(name: str) -> Augmenter:
    return Augmenter(AugmentSection.model_validate(CONFIGS[name]), OUT, SEED)


def view_digest(name: str, epoch: int) -> str:
    images, keys = stored_batch()
    views = augmenter(name)(images, keys, epoch)
    assert views.shape == (6, OUT, OUT, 3) and views.dtype == np.uint8
    return digest(views)


def caption_set(name: str, epoch: int) -> list[str]:
    images, keys = stored_batch()
    return augmenter(name).captions(keys, epoch, np.full(len(keys), STORED))


def mix_digests() -> list[tuple[str, str]]:
    """(kind, digest of the mixed images and soft labels) per epoch 0..5 of the
    everything-on views, mixed as one batch keyed by the XOR of its image keys."""
    images, keys = stored_batch()
    section = AugmentSection.model_validate(EVERYTHING)
    labels = np.array([0, 1, 2, 0, 1, 2])
    batch_key = int(np.bitwise_xor.reduce(keys))
    out = []
    for epoch in range(6):
        views = Augmenter(section, OUT, SEED)(images, keys, epoch)
        mixed, soft = mix_batch(views, labels, 3, 0.4, 1.0, SEED, epoch, batch_key)
        kind = draw_mix(6, OUT, OUT, 0.4, 1.0, SEED, epoch, batch_key).kind
        out.append((kind, digest(mixed, soft.astype(np.float32))))
    return out


# Computed on commit 86f652c (before tljob.augment.ops).
PINNED = {
    "seed": {
        "views": ["f8d5a42a3291c5eb", "b6874d934e8046b7", "bd1e0b9e3472118f"],
        "captions": [
            "rot -5°, shift (5, 3) px, zoom 1.14x0.80",
            "rot -9°, shift (1, -5) px, zoom 0.90x1.19",
            "rot +14°, shift (2, 0) px, shear -0.1°, zoom 1.19x1.16",
            "rot -32°, shift (0, 3) px, shear +0.2°, zoom 1.08x0.98, flip h",
            "rot +26°, shift (4, -6) px, shear +0.2°, zoom 0.81x1.02, flip h",
            "rot +24°, shift (-3, -6) px, shear +0.2°, zoom 0.95x1.01",
        ],
    },
    "light": {
        "views": ["02698be763e8cb34", "61693b9f6a1fecba", "d30a0c4dc53aa6e7"],
        "captions": [
            "crop 35x32 at (1, 4)",
            "crop 33x37 at (7, 2)",
            "crop 39x31 at (0, 9)",
            "crop 40x34 at (0, 0), flip h",
            "crop 29x36 at (3, 3), flip h",
            "crop 33x28 at (0, 2)",
        ],
    },
    "randaugment": {
        "views": ["c8d270a4d078c5ba", "18dabed87c242080", "7ceef60490512f44"],
        "captions": [
            "crop 27x25 at (4, 7), RA ShearY 0.09 / TranslateY 4.35, erase 15x6",
            "crop 29x32 at (10, 4), RA Posterize 7 / TranslateY -4.35",
            "crop 34x27 at (3, 13), RA TranslateX 4.35 / Equalize",
            "crop 37x32 at (1, 1), flip h, RA Color -0.27 / ShearX -0.09",
            "crop 21x26 at (5, 11), flip h, RA Identity / TranslateX 4.35",
            "crop 19x16 at (2, 5), RA Rotate -9 / Rotate -9",
        ],
    },
    "everything": {
        "views": ["acb1207c4fdb1a43", "c744522193dc49bd", "80e597415b51ce55"],
        "captions": [
            "crop 33x30 at (2, 5), rot -3°, shift (3, 1) px, shear +1.4°, "
            "zoom 1.15x0.85, bright 1.11, shift +2, jitter c0.92 s0.76 "
            "h-0.06, RA ShearY 0.09 / TranslateY 4.35, erase 15x6",
            "crop 32x36 at (8, 2), rot -5°, shift (0, -2) px, shear +1.9°, "
            "zoom 0.94x1.19, flip v, bright 1.04, shift +8, jitter c1.06 "
            "s1.01 h+0.04, RA Posterize 7 / TranslateY -4.35",
            "crop 38x30 at (1, 10), rot +9°, shift (1, 0) px, shear -8.6°, "
            "zoom 1.19x1.17, flip v, bright 0.71, shift -13, jitter c1.10 "
            "s1.34 h+0.09, RA TranslateX 4.35 / Equalize",
            "crop 40x34 at (0, 0), rot -20°, shift (0, 2) px, shear +11.8°, "
            "zoom 1.10x1.01, flip h+v, bright 1.12, shift +3, jitter c0.67 "
            "s1.04 h+0.07, RA Color -0.27 / ShearX -0.09",
            "crop 27x34 at (3, 5), rot +16°, shift (2, -3) px, shear +9.0°, "
            "zoom 0.86x1.04, flip h+v, bright 0.96, shift -21, jitter c1.35 "
            "s1.16 h+0.08, RA Identity / TranslateX 4.35",
            "crop 30x25 at (1, 3), rot +15°, shift (-2, -3) px, shear +11.5°, "
            "zoom 0.98x1.03, bright 0.88, shift +19, jitter c0.62 s1.34 "
            "h+0.03, RA Rotate -9 / Rotate -9",
        ],
    },
    "mix": [
        ("cutmix", "7e7bbd4766c30d41"),
        ("mixup", "f499763c6d2b6cbe"),
        ("cutmix", "29859754c40751a7"),
        ("mixup", "33e8ea25df877814"),
        ("mixup", "f33b56c9a8e5b897"),
        ("mixup", "5746a6f91ef748c8"),
    ],
}


@pytest.mark.parametrize("name", list(CONFIGS))
def test_views_are_the_pinned_pixels(name):
    assert [view_digest(name, e) for e in EPOCHS] == PINNED[name]["views"]


@pytest.mark.parametrize("name", list(CONFIGS))
def test_preview_captions_are_the_pinned_labels(name):
    assert caption_set(name, 1) == PINNED[name]["captions"]


def test_mixup_and_cutmix_labels_are_the_pinned_ones():
    pinned = PINNED["mix"]
    assert {kind for kind, _ in pinned} == {"mixup", "cutmix"}  # both kinds are pinned
    assert mix_digests() == pinned


def multiplied_out(p, in_size: int, out_size: int) -> np.ndarray:
    """The maps as tljob computed them before the ops registry: tf_keras' transform
    multiplied out by hand, the flips, then the box's resize (numpy's matmul)."""
    n = len(p)
    theta, shear = np.deg2rad(p.theta), np.deg2rad(p.shear)
    cos, sin = np.cos(theta), np.sin(theta)
    sh_s, sh_c = -np.sin(shear), np.cos(shear)
    m = np.zeros((n, 3, 3))
    m[:, 0, 0] = cos * p.zx
    m[:, 0, 1] = (cos * sh_s - sin * sh_c) * p.zy
    m[:, 1, 0] = sin * p.zx
    m[:, 1, 1] = (sin * sh_s + cos * sh_c) * p.zy
    m[:, 0, 2] = cos * p.tx - sin * p.ty
    m[:, 1, 2] = sin * p.tx + cos * p.ty
    m[:, 2, 2] = 1.0
    c = out_size / 2.0 - 0.5
    m[:, 0, 2] += c - (m[:, 0, 0] + m[:, 0, 1]) * c
    m[:, 1, 2] += c - (m[:, 1, 0] + m[:, 1, 1]) * c
    flips = np.tile(np.eye(3), (n, 1, 1))
    flips[p.flip_h, 0, 0], flips[p.flip_h, 0, 2] = -1.0, out_size - 1.0
    flips[p.flip_v, 1, 1], flips[p.flip_v, 1, 2] = -1.0, out_size - 1.0
    box = p.box if p.box is not None else np.tile([0.0, 0.0, in_size, in_size], (n, 1))
    resize = np.zeros((n, 3, 3))
    sx, sy = box[:, 2] / out_size, box[:, 3] / out_size
    resize[:, 0, 0], resize[:, 1, 1], resize[:, 2, 2] = sx, sy, 1.0
    resize[:, 0, 2] = box[:, 0] + 0.5 * sx - 0.5
    resize[:, 1, 2] = box[:, 1] + 0.5 * sy - 0.5
    return (resize @ (m @ flips))[:, :2, :]


@pytest.mark.parametrize("name", ["seed", "everything"])
def test_the_composed_maps_are_the_multiplied_out_ones_bit_for_bit(name):
    # Bit for bit, not only the pinned pixels: a map a float rounding away can move a
    # pixel of some other image across OpenCV's 1/32-pixel grid.
    section = AugmentSection.model_validate(CONFIGS[name])
    params = geometry.draw(section, SEED, 2, np.arange(4000, dtype=np.uint64), 256, 224)
    expected = multiplied_out(params, 256, 224)
    np.testing.assert_array_equal(geometry.affine_matrices(params, 256, 224), expected)


@pytest.mark.parametrize("name", list(CONFIGS))
def test_views_written_into_a_given_array_are_the_pinned_pixels(name):
    # The training stream's tasks write each row group's views into a slice of one
    # output array (``out``): the same pixels, and nothing outside the slice touched.
    images, keys = stored_batch()
    task_output = np.full((8, OUT, OUT, 3), 7, np.uint8)
    digests = []
    for epoch in EPOCHS:
        target = task_output[1:7]
        assert augmenter(name)(images, keys, epoch, out=target) is target
        digests.append(digest(target))
    assert digests == PINNED[name]["views"]
    assert (task_output[[0, 7]] == 7).all()


def test_an_output_array_of_the_wrong_shape_is_refused():
    images, keys = stored_batch()
    with pytest.raises(ValueError, match=r"out is uint8 \(6, 32, 31, 3\), not uint8"):
        augmenter("seed")(images, keys, 0, out=np.empty((6, OUT, OUT - 1, 3), np.uint8))
