"""Batch-level MixUp and CutMix: soft labels that sum to 1 and match the mixed pixels, drawn
from (seed, epoch, batch key) only."""

from __future__ import annotations

import numpy as np
import pytest

from tljob.augment.ops.mixing import draw_mix, mix_batch, one_hot

N, H, W, CLASSES = 6, 20, 30, 8
LABELS = np.array([0, 3, 5, 1, 7, 2])
RANDOM = np.random.default_rng(3).integers(0, 256, size=(N, H, W, 3), dtype=np.uint8)
# Image n is flat at 10 n + 5: every pixel says which image it came from.
FLAT = np.stack([np.full((H, W, 3), 10 * n + 5, dtype=np.uint8) for n in range(N)])


def test_one_hot():
    out = one_hot(np.array([2, 0, 2]), 4)
    assert out.dtype == np.float32
    assert out.tolist() == [[0, 0, 1, 0], [1, 0, 0, 0], [0, 0, 1, 0]]
    with pytest.raises(ValueError, match=r"\[0, 4\)"):
        one_hot(np.array([4]), 4)


def test_neither_on_returns_the_images_and_one_hot_labels():
    images, labels = mix_batch(RANDOM, LABELS, CLASSES, 0.0, 0.0, 1, 0, 5)
    assert images is RANDOM
    assert np.array_equal(labels, one_hot(LABELS, CLASSES))


def _partner_label(soft_row: np.ndarray, own: int) -> int | None:
    others = [c for c in np.flatnonzero(soft_row) if c != own]
    return others[0] if others else None


@pytest.mark.parametrize("batch_key", range(12))
def test_cutmix_partner_fraction_equals_its_label_weight(batch_key):
    images, soft = mix_batch(FLAT, LABELS, CLASSES, 0.0, 1.0, 7, 2, batch_key)
    d = draw_mix(N, H, W, 0.0, 1.0, 7, 2, batch_key)
    assert d.kind == "cutmix"
    assert images.dtype == np.uint8 and images.shape == FLAT.shape
    assert soft.dtype == np.float32 and soft.shape == (N, CLASSES)
    assert np.allclose(soft.sum(axis=1), 1.0, atol=1e-6)
    fractions = []
    for n in range(N):
        values, counts = np.unique(images[n, ..., 0], return_counts=True)
        assert set(values) <= {10 * n + 5, 10 * ((n - d.shift) % N) + 5}
        taken = counts[values != 10 * n + 5].sum() / (H * W)
        fractions.append(taken)
        partner = _partner_label(soft[n], LABELS[n])
        if taken == 0:
            assert partner is None and soft[n, LABELS[n]] == 1.0
            continue
        partner_image = (int(values[values != 10 * n + 5][0]) - 5) // 10
        assert partner == LABELS[partner_image] != LABELS[n]
        assert soft[n, partner] == pytest.approx(taken, abs=1e-6)
        assert soft[n, LABELS[n]] == pytest.approx(1.0 - taken, abs=1e-6)
    # One box for the batch: every image gives up the same area, exactly 1 - lambda.
    assert fractions == pytest.approx([1.0 - d.lam] * N, abs=1e-12)
    top, left, bottom, right = d.box
    assert (bottom - top) * (right - left) == round((1.0 - d.lam) * H * W)


@pytest.mark.parametrize("batch_key", range(6))
def test_mixup_pixels_are_the_rounded_blend(batch_key):
    images, soft = mix_batch(RANDOM, LABELS, CLASSES, 0.4, 0.0, 7, 2, batch_key)
    d = draw_mix(N, H, W, 0.4, 0.0, 7, 2, batch_key)
    assert d.kind == "mixup" and 1 <= d.shift < N
    partners = np.roll(RANDOM, d.shift, axis=0)
    lam = np.float32(d.lam)
    expected = np.rint(lam * RANDOM.astype(np.float32) + (np.float32(1) - lam) * partners)
    assert np.array_equal(images, expected.astype(np.uint8))
    blend64 = d.lam * RANDOM.astype(np.float64) + (1 - d.lam) * partners
    assert np.abs(images - blend64).max() <= 0.5 + 1e-4
    assert np.allclose(soft.sum(axis=1), 1.0, atol=1e-6)
    for n in range(N):
        partner = LABELS[(n - d.shift) % N]
        assert soft[n, LABELS[n]] == pytest.approx(d.lam, abs=1e-6)
        assert soft[n, partner] == pytest.approx(1.0 - d.lam, abs=1e-6)


def test_mixing_is_deterministic_per_seed_epoch_and_batch_key():
    first = mix_batch(RANDOM, LABELS, CLASSES, 0.4, 1.0, 7, 2, 99)
    again = mix_batch(RANDOM, LABELS, CLASSES, 0.4, 1.0, 7, 2, 99)
    assert np.array_equal(first[0], again[0]) and np.array_equal(first[1], again[1])
    others = [
        mix_batch(RANDOM, LABELS, CLASSES, 0.4, 1.0, *args)
        for args in ((7, 2, 100), (7, 3, 99), (8, 2, 99))
    ]
    for _, labels in others:
        assert not np.array_equal(labels, first[1])


def test_both_on_picks_each_with_chance_one_half():
    kinds = [draw_mix(N, H, W, 0.4, 1.0, 7, 2, key).kind for key in range(400)]
    assert 160 <= kinds.count("mixup") <= 240
    assert kinds.count("mixup") + kinds.count("cutmix") == 400
    # What mix_batch does follows the draw: a blend, or the partner's box pasted.
    for key in range(8):
        images, _ = mix_batch(RANDOM, LABELS, CLASSES, 0.4, 1.0, 7, 2, key)
        d = draw_mix(N, H, W, 0.4, 1.0, 7, 2, key)
        partners = np.roll(RANDOM, d.shift, axis=0)
        if d.kind == "mixup":
            lam = np.float32(d.lam)
            blend = lam * RANDOM.astype(np.float32) + (np.float32(1) - lam) * partners
            expected = np.rint(blend).astype(np.uint8)
        else:
            top, left, bottom, right = d.box
            expected = RANDOM.copy()
            expected[:, top:bottom, left:right] = partners[:, top:bottom, left:right]
        assert np.array_equal(images, expected), d
    assert {"mixup", "cutmix"} <= set(kinds[:8])  # both branches were checked


def test_a_single_image_keeps_its_label():
    images, soft = mix_batch(RANDOM[:1], LABELS[:1], CLASSES, 0.4, 0.0, 7, 2, 1)
    assert np.array_equal(images, RANDOM[:1])
    assert np.array_equal(soft, one_hot(LABELS[:1], CLASSES))
