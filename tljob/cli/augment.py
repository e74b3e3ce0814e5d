"""``tljob augment preview``: see what training will see, without Ray or a run.

    tljob augment preview --config job.yaml --out grid.png [--images 6 --views 6]

lists ``data.source`` (folder tree or manifest, local or s3://), takes ``--images``
images round-robin over the classes (the first readable ones of each, in listing order),
decodes each at the stored size as preparation does, and writes the grid of
``tljob.augment.preview``: the plain resized image, then the views of epochs 0 ..
``--views`` - 1 with their drawn parameters. Each image's key is its content hash, as in
the prepared shards, so a view is the one training gives that image in that epoch.
"""

from __future__ import annotations

import argparse
import hashlib
import posixpath
from pathlib import Path

import numpy as np

from tljob import output, storage
from tljob.augment.keys import image_keys
from tljob.cli_args import add_overrides
from tljob.config import JobConfig, load_config
from tljob.config.augment import AugmentSection
from tljob.errors import UserError

log = output.logger("augment")

DEFAULT_IMAGES = 6
DEFAULT_VIEWS = 6
# A preview is a picture for people: past these it is no longer readable, and an unbounded
# grid (1000 views x 100,000 images was a 434-megapixel PNG, 1.9 GB to draw, that Pillow
# then refused to open as a decompression bomb) costs memory for nothing.
MAX_IMAGES = 64
MAX_VIEWS = 32
MAX_GRID_PIXELS = 40_000_000  # well under Pillow's 89-megapixel decompression-bomb warning


def add_parser(sub: argparse._SubParsersAction) -> None:
    augment = sub.add_parser("augment", help="Augmentation tools: preview the random views.")
    commands = augment.add_subparsers(dest="augment_command", required=True)
    preview = commands.add_parser(
        "preview",
        help="Write a PNG grid of source images and their augmented views (epochs 0, 1, "
        "...), labelled with the drawn parameters; reads the images straight from "
        "`data.source`, no Ray.",
    )
    preview.add_argument("--config", required=True, help="YAML config file.")
    preview.add_argument("--out", required=True, help="PNG file to write.")
    preview.add_argument(
        "--images",
        type=int,
        default=DEFAULT_IMAGES,
        help=f"Source images (rows), round-robin over the classes (default {DEFAULT_IMAGES}).",
    )
    preview.add_argument(
        "--views",
        type=int,
        default=DEFAULT_VIEWS,
        help=f"Augmented views per image: epochs 0 .. VIEWS-1 (default {DEFAULT_VIEWS}).",
    )
    add_overrides(preview, "Override one setting, e.g. --set augment.preset=seed (repeatable).")


def run(args: argparse.Namespace) -> int:
    for flag, value, most in (
        ("--images", args.images, MAX_IMAGES),
        ("--views", args.views, MAX_VIEWS),
    ):
        if not 1 <= value <= most:
            raise UserError(
                f"tljob augment preview: {flag} ({value}) must be 1 to {most} (a grid "
                "beyond that cannot be looked at; write several previews with other --set "
                "values instead)"
            )
    out = Path(args.out)
    if out.suffix.lower() != ".png":
        raise UserError(f"tljob augment preview: --out {str(out)!r} must end in .png")
    if not out.parent.is_dir():
        raise UserError(f"tljob augment preview: --out {str(out)!r}: no folder {out.parent}")
    job = load_config(args.config, args.overrides)
    check_grid_size(args.images, args.views, job.image_size)
    storage.configure(storage.S3Settings.from_config(job.s3))
    section = job.augment
    if section.where == "model":
        log.info(
            "augment.where is 'model': the views below use tljob's own kernels; the model's "
            "Keras layers draw theirs on the accelerator"
        )
    write_preview(job, section, out, args.images, args.views)
    print(f"augmentation preview: {out.resolve()}")
    return 0


def check_grid_size(images: int, views: int, image_size: int) -> None:
    """``UserError`` when the grid of ``images`` rows and ``views`` columns at
    ``image_size`` would exceed ``MAX_GRID_PIXELS`` (checked before any image is read)."""
    from tljob.augment.preview import grid_size

    width, height = grid_size(images, views, image_size)
    if width * height > MAX_GRID_PIXELS:
        raise UserError(
            f"tljob augment preview: --images {images} x --views {views} at "
            f"`data.image_size` {image_size} makes a {width}x{height} grid "
            f"({width * height / 1e6:.0f} megapixels), more than the "
            f"{MAX_GRID_PIXELS // 1_000_000} a preview may have: ask for fewer images or views"
        )


def augment_seed(job: JobConfig) -> int:
    """The seed of the random views: ``augment.seed``, else ``data.seed``."""
    return job.augment.seed if job.augment.seed is not None else job.data.seed


def write_preview(
    job: JobConfig, section: AugmentSection, out: Path, images: int, views: int
) -> Path:
    """Read ``images`` source images of ``job`` and write the preview of ``section``'s
    views (seeded as ``job`` trains) to the local PNG ``out``."""
    # OpenCV and Pillow only when previewing: the CLI stays light
    from tljob.augment.pipeline import Augmenter
    from tljob.augment.preview import preview_rows, render_grid

    stored, keys, titles = read_sources(job, images)
    data_side = section.model_copy(update={"where": "data"})
    augmenter = Augmenter(data_side, job.image_size, augment_seed(job))
    plain = Augmenter(AugmentSection(), job.image_size, augment_seed(job))
    rows = preview_rows(augmenter, plain, stored, keys, titles, views)
    render_grid(rows, job.image_size).save(out, format="PNG")
    return out


def read_sources(job: JobConfig, count: int) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """Up to ``count`` images of ``data.source``, round-robin over the classes: stored
    pixels (N, S, S, 3) uint8 at ``job.stored_size``, their keys and their titles. Images
    that cannot be read or decoded are passed over (preparation would quarantine them)."""
    from tljob.data.sources import list_source
    from tljob.images import ImageDecodeError, decode_rgb, resize_bilinear_uint8

    try:
        listing = list_source(job.data)
    except OSError as e:  # an object store that cannot be reached or read
        raise UserError(
            f"`data.source` ({job.data.source!r}) cannot be listed: {storage.redact(str(e))}"
        ) from e
    queues = {name: list(listing.files.get(name, [])) for name in listing.classes}
    stored, digests, titles, problems = [], [], [], []
    while len(stored) < count and any(queues.values()):
        for name in listing.classes:
            if len(stored) == count or not queues[name]:
                continue
            uri = queues[name].pop(0)
            try:
                data = storage.read_bytes(storage.resolve(uri))
                rgb = decode_rgb(data)
            except (OSError, ImageDecodeError) as e:
                problems.append(f"{uri}: {storage.redact(str(e))}")
                continue
            stored.append(resize_bilinear_uint8(rgb, job.stored_size))
            digests.append(hashlib.sha256(data).hexdigest())
            titles.append(f"{name}: {posixpath.basename(uri)}")
    if not stored:
        seen = "; ".join(problems[:3]) or "no image files"
        raise UserError(f"`data.source` ({job.data.source!r}): no readable image ({seen})")
    for problem in problems:
        log.info(f"preview: passed over {problem}")
    return np.stack(stored), image_keys(digests), titles
