"""``tljob augment preview``: see what training will see, without Ray or a run.

    tljob augment preview --config job.yaml --out grid.png [--images 6 --views 6]

lists ``data.source`` (folder tree or manifest, local or s3://), takes ``--images``
images round-robin over the classes and writes the grid of ``tljob.augment.preview``: the
plain resized image, then the views of epochs 0 .. ``--views`` - 1 with their drawn
parameters (``tljob.augment.preview_source`` reads the images and draws the views).
"""

from __future__ import annotations

import argparse
from pathlib import Path

from tljob import output, storage
from tljob.augment.preview_source import write_preview
from tljob.cli._args import add_overrides
from tljob.config import load_config
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


NAME = "augment"
HELP = "Augmentation tools: preview the random views."


def add_arguments(augment: argparse.ArgumentParser) -> None:
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
