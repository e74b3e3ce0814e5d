"""The source images of an augmentation preview, read straight from ``data.source`` (no
Ray, no run), and the preview written from them: what ``tljob augment preview`` and
``tljob demo`` draw.

Images are taken round-robin over the classes (the first readable ones of each, in listing
order) and decoded at the stored size as preparation does. Each image's key is its content
hash, as in the prepared shards, so a view is the one training gives that image in that
epoch. Light at import (numpy only): OpenCV and Pillow load when a preview is written.
"""

from __future__ import annotations

import hashlib
import posixpath
from pathlib import Path

import numpy as np

from tljob import output, storage
from tljob.augment.keys import image_keys
from tljob.config import JobConfig
from tljob.config.augment import AugmentSection
from tljob.errors import UserError

log = output.logger("augment")


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
