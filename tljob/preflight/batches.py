"""Whether the image counts give every worker a training step and validation images (pure)."""

from __future__ import annotations

from tljob import output
from tljob.preflight._common import TooFewImagesError

log = output.logger("preflight")


def check_batches(train_images: int, val_images: int, batch_size: int, num_workers: int) -> None:
    """Refuse (``TooFewImagesError``) image counts that give a training epoch no step, or
    leave a worker nothing to validate on.

    Ray Train splits each dataset evenly: every worker gets ``images // num_workers`` rows.
    A worker's training rows are cut into batches of ``batch_size`` (one per replica and
    step, ``tljob.run.feed``), and the last partial batch is dropped; so an epoch has no
    step when a worker's share is smaller than one batch.
    """
    # Made once per run and batch size (tljob.data.plan): this line lets a test count them.
    log.debug(
        f"check_batches: {train_images} training, {val_images} validation images; "
        f"batch_size {batch_size} x {num_workers} worker(s)"
    )
    per_worker = train_images // num_workers
    workers = f"{num_workers} worker{'s' if num_workers != 1 else ''}"
    if per_worker < batch_size:
        most_workers = next(
            (k for k in range(num_workers - 1, 0, -1) if train_images // k >= batch_size), None
        )
        options = []
        if per_worker:
            options.append(f"`train.batch_size` <= {per_worker}")
        if most_workers:
            options.append(f"`scaling.num_workers` <= {most_workers}")
        options.append("more training images")
        none_works = "" if per_worker else f" No `train.batch_size` works with {workers}."
        raise TooFewImagesError(
            f"too few training images for one step: {train_images} training images over "
            f"{workers} (`scaling.num_workers`) give each worker {per_worker}, fewer than "
            f"one batch of `train.batch_size` ({batch_size}) images (the last partial batch "
            f"is dropped), so an epoch would have no steps.{none_works} Use "
            + ", or ".join(options)
            + "."
        )
    if val_images < num_workers:
        options = [f"`scaling.num_workers` <= {val_images}"] if val_images else []
        options += ["a larger `data.val_fraction`", "more images"]
        raise TooFewImagesError(
            f"too few validation images: {val_images} for {workers} "
            f"(`scaling.num_workers`); the validation set is split evenly, so each worker "
            f"gets {val_images // num_workers} and would validate on nothing. Use "
            + ", or ".join(options)
            + "."
        )


def steps_per_epoch(train_images: int, batch_size: int, num_workers: int) -> int:
    """Training steps of one epoch, as ``tljob.run.feed.training_steps`` counts them (one
    replica per worker): each worker's share (``train_images // num_workers``) cut into
    batches of ``batch_size`` (the last partial one dropped), one batch a step."""
    return train_images // num_workers // batch_size
