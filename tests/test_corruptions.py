"""tljob.evaluate.corruptions: the registry, deterministic per image, severities that
grow, and robustness.csv."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest
from PIL import Image, ImageEnhance
from skimage import data

from tljob.evaluate.corruptions import (
    CORRUPTIONS,
    SEVERITIES,
    corrupt,
    corruption_seed,
    robustness_csv,
    robustness_rows,
    select,
)

DOCS = Path(__file__).resolve().parents[1] / "docs" / "pages" / "evaluation.md"


@pytest.fixture(scope="module")
def photo() -> np.ndarray:
    """A real photo, small: the astronaut at 64 x 64 (blur's sigma 0.29, 0.86, 1.7)."""
    return cv2.resize(data.astronaut(), (64, 64), interpolation=cv2.INTER_AREA)


def test_the_registry_is_the_documented_one():
    assert list(CORRUPTIONS) == [
        "gaussian_noise", "gaussian_blur", "jpeg", "brightness", "contrast", "pixelate",
    ]  # fmt: skip
    assert SEVERITIES == (1, 2, 3)
    page = DOCS.read_text()
    for c in CORRUPTIONS.values():  # the docs table row holds the name and the three levels
        row = next(line for line in page.splitlines() if line.startswith(f"| `{c.name}`"))
        assert " / ".join(f"{v:g}" for v in c.levels) in row, (c.name, row)


def test_the_seed_is_fixed_by_key_and_name():
    # sha256("gaussian_noise\ns3://bucket/test/cat/1.jpg")[:8], big-endian: a changed
    # derivation would change every noise figure measured so far.
    assert corruption_seed("s3://bucket/test/cat/1.jpg", "gaussian_noise") == 2593619128641836536
    assert corruption_seed("a", "jpeg") != corruption_seed("a", "gaussian_noise")


@pytest.mark.parametrize("name", list(CORRUPTIONS))
def test_deterministic_per_image_shape_and_dtype_kept(name, photo):
    odd = np.ascontiguousarray(photo[:37, :53])
    for image in (photo, odd):
        for severity in SEVERITIES:
            out = corrupt(name, image, severity, "cat/1.jpg")
            assert out.dtype == np.uint8 and out.shape == image.shape
            again = corrupt(name, image.copy(), severity, "cat/1.jpg")
            assert out.tobytes() == again.tobytes()
            other = corrupt(name, image, severity, "cat/2.jpg")
            # Only the noise is drawn: another key, other noise; the rest ignore the key.
            assert (out.tobytes() != other.tobytes()) == (name == "gaussian_noise")
    assert corrupt(name, photo, 1, "k").base is not photo  # a new image, never the input


@pytest.mark.parametrize("name", list(CORRUPTIONS))
def test_each_severity_changes_a_real_photo_more(name, photo):
    change = [
        np.abs(corrupt(name, photo, s, "astronaut").astype(np.int16) - photo).mean()
        for s in SEVERITIES
    ]
    assert 0 < change[0] < change[1] < change[2], change


def test_the_levels_are_what_the_docs_say(photo):
    grey = np.full((64, 64, 3), 128, dtype=np.uint8)
    for severity, sd in ((1, 0.08 * 255), (2, 0.18 * 255)):  # (3 clips too much to measure)
        noise = corrupt("gaussian_noise", grey, severity, "g").astype(np.float64) - 128
        assert abs(noise.mean()) < 0.05 * sd and noise.std() == pytest.approx(sd, rel=0.03)
    # brightness is PIL's ImageEnhance.Brightness, bit for bit
    expected = np.asarray(ImageEnhance.Brightness(Image.fromarray(photo)).enhance(1.6))
    assert np.array_equal(corrupt("brightness", photo, 2, "k"), expected)
    # pixelate at 0.25 of 64 x 64: 16 x 16 blocks of 4 x 4 pixels
    blocks = corrupt("pixelate", photo, 3, "k")
    assert np.array_equal(blocks, np.repeat(np.repeat(blocks[::4, ::4], 4, 0), 4, 1))
    # contrast at 0.05: almost the mean grey everywhere
    flat = corrupt("contrast", photo, 3, "k")
    assert flat.std() < 0.1 * photo.std()
    # JPEG at quality 7 re-encodes in blocks: the result is what decoding its JPEG gives
    low = corrupt("jpeg", photo, 3, "k")
    ok, encoded = cv2.imencode(".jpg", photo[:, :, ::-1], [cv2.IMWRITE_JPEG_QUALITY, 7])
    assert ok and np.array_equal(low, cv2.imdecode(encoded, cv2.IMREAD_COLOR)[:, :, ::-1])


def test_blur_scales_with_the_image():
    # The same scene at two sizes, blurred at severity 2 (sigma 3 at 224 px): shrunk back,
    # the large one is close to the small one, as the same share of the image is blurred.
    scene = data.astronaut()
    small = cv2.resize(scene, (64, 64), interpolation=cv2.INTER_AREA)
    large = cv2.resize(scene, (256, 256), interpolation=cv2.INTER_AREA)
    blurred_small = corrupt("gaussian_blur", small, 2, "k").astype(np.int16)
    blurred_large = corrupt("gaussian_blur", large, 2, "k")
    back = cv2.resize(blurred_large, (64, 64), interpolation=cv2.INTER_AREA).astype(np.int16)
    unscaled = cv2.resize(
        cv2.GaussianBlur(large, (0, 0), 3 * 64 / 224), (64, 64), interpolation=cv2.INTER_AREA
    ).astype(np.int16)
    assert np.abs(back - blurred_small).mean() < 0.5 * np.abs(unscaled - blurred_small).mean()


def test_bad_calls_are_refused():
    image = np.zeros((8, 8, 3), dtype=np.uint8)
    with pytest.raises(ValueError, match="severity must be one of"):
        corrupt("jpeg", image, 4, "k")
    with pytest.raises(ValueError, match=r"uint8 \(H, W, 3\) image, got float32"):
        corrupt("jpeg", image.astype(np.float32), 1, "k")
    with pytest.raises(ValueError, match=r"unknown corruption\(s\) \['fog'\]: choose from"):
        select(["jpeg", "fog"])
    assert [c.name for c in select(["pixelate", "jpeg"])] == ["jpeg", "pixelate"]


def test_robustness_rows_and_csv_exact():
    rows = robustness_rows(
        (9, 10),
        {
            ("jpeg", 2): (6, 10),
            ("gaussian_noise", 1): (8, 10),
            ("jpeg", 1): (7, 10),
            ("gaussian_noise", 2): (4, 10),
        },
    )
    assert robustness_csv(rows) == (
        "corruption,severity,accuracy,images\n"
        "clean,0,0.900000,10\n"
        "gaussian_noise,1,0.800000,10\n"
        "gaussian_noise,2,0.400000,10\n"
        "jpeg,1,0.700000,10\n"
        "jpeg,2,0.600000,10\n"
        "mean,1,0.750000,20\n"  # (0.8 + 0.7) / 2
        "mean,2,0.500000,20\n"  # (0.4 + 0.6) / 2
        "mean,all,0.625000,40\n"
    )
    with pytest.raises(ValueError, match=r"unknown robustness cell \('fog', 1\)"):
        robustness_rows((9, 10), {("fog", 1): (1, 10)})
    with pytest.raises(ValueError, match=r"\('jpeg', 1\): 11 correct of 10 images"):
        robustness_rows((9, 10), {("jpeg", 1): (11, 10)})
