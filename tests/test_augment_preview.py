"""``tljob augment preview`` and the demo's preview: the grid's exact size, its cells are
the Augmenter's views of the images as preparation stores them, and bad input exits 2.
No Ray: images are read straight from the source."""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import pytest
import yaml
from conftest import write_digits_tree
from PIL import Image

from tljob import cli, demo
from tljob.augment.keys import image_keys
from tljob.augment.pipeline import Augmenter
from tljob.augment.preview import cell_origin
from tljob.config import load_config
from tljob.data.prepared import StoreSettings
from tljob.data.shards import decode_stored, prepare_bytes
from tljob.images import resize_fast_uint8


@pytest.fixture
def config(tmp_path: Path) -> Path:
    root = write_digits_tree(tmp_path / "digits", classes=3, per_class=4, scale=2)  # 16 px
    tree = {
        "data": {"source": str(root), "image_size": 32, "seed": 5},
        "model": {"weights": "none"},
        "augment": {"preset": "seed", "vertical_flip": True},
        "run": {"storage_path": str(tmp_path / "runs")},
    }
    path = tmp_path / "job.yaml"
    path.write_text(yaml.safe_dump(tree))
    return path


def _stored(path: Path, stored_size: int) -> tuple[np.ndarray, np.ndarray]:
    """The image as its prepared shard row holds it, and its key."""
    data = path.read_bytes()
    store = StoreSettings(stored_size, 32, "raw", 0, 10**8, 10**6)
    stored = decode_stored(prepare_bytes(data, store).image, stored_size, "raw")
    return stored, image_keys([hashlib.sha256(data).hexdigest()])


def _cell(grid: np.ndarray, row: int, column: int) -> np.ndarray:
    x, y = cell_origin(row, column, 32)
    return grid[y : y + 96, x : x + 96]


def test_preview_grid_has_its_size_and_the_augmenters_views(config, tmp_path, capsys):
    out = tmp_path / "grid.png"
    rc = cli.main(
        ["augment", "preview", "--config", str(config), "--out", str(out), "--images", "3",
         "--views", "2"]
    )  # fmt: skip
    assert rc == 0
    assert capsys.readouterr().out.strip() == f"augmentation preview: {out}"
    with Image.open(out) as im:
        assert im.mode == "RGB"
        # 32 px cells scaled 3x; 4 px gaps, a 14 px header, 4 caption lines of 11 px
        assert im.size == (4 + 3 * (96 + 4), 14 + 3 * (96 + 44 + 4) + 4) == (304, 450)
        grid = np.asarray(im)
    assert cell_origin(1, 2, 32) == (204, 158)
    job = load_config(str(config))
    augmenter = Augmenter(job.augment, 32, 5)
    # rows: the first image of each class, round-robin; columns: resized, epoch 0, epoch 1
    for row, digit in enumerate((0, 1, 2)):
        first = sorted((Path(job.data.source) / f"digit_{digit}").iterdir())[0]
        stored, key = _stored(first, job.stored_size)
        plain = resize_fast_uint8(stored, 32)
        assert np.array_equal(_cell(grid, row, 0), np.kron(plain, np.ones((3, 3, 1), np.uint8)))
        for epoch in (0, 1):
            view = augmenter(stored[None], key, epoch)[0]
            assert not np.array_equal(view, plain)
            big = np.kron(view, np.ones((3, 3, 1), np.uint8))
            assert np.array_equal(_cell(grid, row, 1 + epoch), big), (row, epoch)
    # the caption band under a cell has text in it, the gap beside it none
    x, y = cell_origin(0, 1, 32)
    assert grid[y + 96 : y + 96 + 44, x : x + 96].min() < 128
    assert (grid[y : y + 96, x - 4 : x] == 255).all()


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (
            ["--set", "augment.zoom_range=[1.2, 0.8]"],
            "augment.zoom_range",
        ),
        (["--set", "augment.preset=heavy"], "augment.preset"),
        (["--views", "0"], "--views (0) must be 1 to 32"),
        (["--images", "-1"], "--images (-1) must be 1 to 64"),
        (["--views", "1000", "--images", "100000"], "--images (100000) must be 1 to 64"),
        (["--views", "33"], "--views (33) must be 1 to 32"),
        (
            ["--views", "32", "--images", "64", "--set", "data.image_size=512"],
            "--images 64 x --views 32 at `data.image_size` 512 makes a 17032x35858 grid "
            "(611 megapixels)",
        ),
        (["--set", "data.source=/nonexistent/images"], "/nonexistent/images"),
    ],
)
def test_preview_bad_input_exits_2_naming_it(config, tmp_path, capsys, args, message):
    out = tmp_path / "grid.png"
    rc = cli.main(["augment", "preview", "--config", str(config), "--out", str(out), *args])
    assert rc == 2
    err = capsys.readouterr().err
    assert err.startswith("tljob: error: ") and message in err
    assert not out.exists()


def test_preview_refuses_an_out_that_is_not_a_png_in_a_folder(config, tmp_path, capsys):
    for out, message in (
        (tmp_path / "grid.jpg", "must end in .png"),
        (tmp_path / "missing" / "grid.png", "no folder"),
    ):
        rc = cli.main(["augment", "preview", "--config", str(config), "--out", str(out)])
        assert rc == 2 and message in capsys.readouterr().err


def test_demo_preview_shows_the_seed_preset_when_the_job_does_not_augment(config, tmp_path):
    job = load_config(str(config), ["augment.preset=none", "augment.vertical_flip=false"])
    assert not job.augment.active
    out = demo.write_augment_preview(job, str(tmp_path))
    assert out == tmp_path / "augment_preview.png"
    with Image.open(out) as im:
        # 3 classes (round-robin over 10 slots: every image of 3 classes, 4 each: 10 rows)
        assert im.size == (4 + 7 * 100, 14 + 10 * 144 + 4)
        grid = np.asarray(im)
    first = sorted((Path(job.data.source) / "digit_0").iterdir())[0]
    stored, key = _stored(first, job.stored_size)
    seed_preset = load_config(str(config), ["augment.vertical_flip=false"]).augment
    view = Augmenter(seed_preset, 32, 5)(stored[None], key, 3)[0]
    assert np.array_equal(_cell(grid, 0, 4), np.kron(view, np.ones((3, 3, 1), np.uint8)))


def test_preview_reads_s3_sources_like_local_ones(config, tmp_path, s3):
    from tljob import storage

    local_root = Path(load_config(str(config)).data.source)
    storage.upload_dir(str(local_root), storage.resolve(s3.uri("digits")))
    endpoint = ["--set", f"s3.endpoint_url={s3.server.endpoint_url}", "--set", "s3.allow_http=true"]
    grids = {}
    for name, source in (("local", str(local_root)), ("s3", s3.uri("digits"))):
        out = tmp_path / f"{name}.png"
        argv = ["augment", "preview", "--config", str(config), "--out", str(out)]
        assert cli.main([*argv, "--set", f"data.source={source}", *endpoint]) == 0
        with Image.open(out) as im:
            grids[name] = np.asarray(im)
    assert grids["local"].shape == (14 + 6 * 144 + 4, 4 + 7 * 100, 3)
    # the same bytes: the same keys, hence the same views (the captions name the same files)
    assert np.array_equal(grids["local"], grids["s3"])
