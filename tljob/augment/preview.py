"""The augmentation preview: a labelled PNG grid of what training sees (Pillow, no plotting
library; ``tljob augment preview`` and ``tljob demo`` write it).

One row per source image; the first column is the plain resized image, captioned with its
class and file name; then one column per view: epochs 0, 1, ... of the same image, each
captioned with ``Augmenter.describe`` (the drawn parameters). With the image's key from its
content hash (``keys.image_keys``), a view is exactly what training gives that image in
that epoch.

Layout (pixels): a header band of ``HEADER`` with the column titles, then per row a cell
of ``cell`` x ``cell`` and ``CAPTION_LINES`` caption lines of ``LINE`` below it, with
``PAD`` between and around everything. ``cell`` is the training size scaled up by the
smallest whole factor that reaches ``MIN_CELL`` (nearest neighbour: every training pixel is
a block of equal pixels, so small images stay readable and exact).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from tljob.augment.pipeline import Augmenter

MIN_CELL = 96
PAD = 4
HEADER = 14
LINE = 11
CAPTION_LINES = 4
BACKGROUND = (255, 255, 255)
INK = (20, 20, 20)


@dataclass(frozen=True)
class PreviewRow:
    """One source image: its plain resized picture and its views (uint8 (S, S, 3) each,
    all at the training size), with the captions to print."""

    title: str  # class name and file
    plain: np.ndarray
    views: Sequence[np.ndarray]
    captions: Sequence[str]


def cell_scale(image_size: int) -> int:
    """Whole-number upscale of a training-size image in the grid."""
    return max(1, -(-MIN_CELL // image_size))


def grid_size(images: int, views: int, image_size: int) -> tuple[int, int]:
    """(width, height) of the grid for ``images`` rows and ``views`` augmented columns."""
    cell = image_size * cell_scale(image_size)
    width = PAD + (views + 1) * (cell + PAD)
    height = HEADER + images * (cell + CAPTION_LINES * LINE + PAD) + PAD
    return width, height


def cell_origin(row: int, column: int, image_size: int) -> tuple[int, int]:
    """(x, y) of the top-left pixel of a cell; column 0 is the plain image, column
    1 + e the view of epoch e."""
    cell = image_size * cell_scale(image_size)
    return PAD + column * (cell + PAD), HEADER + row * (cell + CAPTION_LINES * LINE + PAD)


def _wrap(text: str, width: int, draw: ImageDraw.ImageDraw, font: ImageFont.ImageFont) -> list:
    """``text`` in at most ``CAPTION_LINES`` lines of at most ``width`` pixels, broken
    after commas or spaces; what does not fit ends in "..."."""
    # Pillow's default font has no multiplication sign.
    words = text.replace("\u00d7", "x").replace(" ", " \0").split("\0")
    lines, current = [], ""
    for word in words:
        if current and draw.textlength(current + word, font=font) > width:
            lines.append(current.rstrip())
            current = ""
        current += word
    if current:
        lines.append(current.rstrip())
    if len(lines) > CAPTION_LINES:
        lines = lines[:CAPTION_LINES]
        lines[-1] = lines[-1].rstrip(",") + "..."
    return [_fit(line, width, draw, font) for line in lines]


def _fit(line: str, width: int, draw: ImageDraw.ImageDraw, font: ImageFont.ImageFont) -> str:
    if draw.textlength(line, font=font) <= width:
        return line
    while line and draw.textlength(line + "...", font=font) > width:
        line = line[:-1]
    return line + "..."


def render_grid(rows: Sequence[PreviewRow], image_size: int) -> Image.Image:
    """The grid of ``rows`` (each with the same number of views) as an RGB image."""
    views = len(rows[0].views) if rows else 0
    scale = cell_scale(image_size)
    cell = image_size * scale
    canvas = Image.new("RGB", grid_size(len(rows), views, image_size), BACKGROUND)
    draw = ImageDraw.Draw(canvas)
    font = ImageFont.load_default()
    for column, title in enumerate(["resized", *(f"epoch {e}" for e in range(views))]):
        x, _ = cell_origin(0, column, image_size)
        draw.text((x, 1), _fit(title, cell, draw, font), fill=INK, font=font)
    for r, row in enumerate(rows):
        if len(row.views) != views or len(row.captions) != views:
            raise ValueError(f"row {r} has {len(row.views)} views, not {views}")
        cells = [(row.plain, row.title), *zip(row.views, row.captions, strict=True)]
        for column, (image, caption) in enumerate(cells):
            if image.shape != (image_size, image_size, 3) or image.dtype != np.uint8:
                raise ValueError(f"row {r} column {column}: {image.shape} {image.dtype} image")
            x, y = cell_origin(r, column, image_size)
            big = np.repeat(np.repeat(image, scale, axis=0), scale, axis=1)
            canvas.paste(Image.fromarray(big), (x, y))
            for i, line in enumerate(_wrap(caption, cell, draw, font)):
                draw.text((x, y + cell + i * LINE), line, fill=INK, font=font)
    return canvas


def preview_rows(
    augmenter: Augmenter,
    plain: Augmenter,
    stored: np.ndarray,
    keys: np.ndarray,
    titles: Sequence[str],
    views: int,
) -> list[PreviewRow]:
    """The rows of the grid for ``stored`` images (N, S, S, 3) uint8 with their ``keys``:
    ``plain``'s view (an Augmenter with nothing on) and ``augmenter``'s views of epochs
    0 .. ``views`` - 1, captioned with ``augmenter.captions``."""
    base = plain(stored, keys, 0)
    by_epoch = [augmenter(stored, keys, e) for e in range(views)]
    sizes = np.array([image.shape[0] for image in stored], dtype=np.int64)
    captions = []
    for e in range(views):
        captions.append(augmenter.captions(keys, e, sizes))
    return [
        PreviewRow(
            title=titles[i],
            plain=base[i],
            views=[by_epoch[e][i] for e in range(views)],
            captions=[captions[e][i] for e in range(views)],
        )
        for i in range(len(keys))
    ]
