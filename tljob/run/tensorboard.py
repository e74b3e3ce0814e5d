"""TensorBoard logs of a run (``train.tensorboard``), written by rank 0 after each epoch.

The figures are the epoch's row of ``history.csv`` (global figures, after the all-reduce),
stepped by the global epoch, so a resumed run continues the same curves. TensorFlow's own
file systems no longer reach S3, so the event file is written to a local folder and copied
whole to ``<run>/tensorboard/`` after every epoch (one event file per worker-group
attempt: TensorBoard reads every file of the folder as one run).
"""

from __future__ import annotations

import os
import tempfile

from tljob import storage
from tljob.config import JobConfig
from tljob.run.ledger import EpochRow

TENSORBOARD_DIR = "tensorboard"
# The per-epoch figures written (val_class_recall is per class: one curve per class).
SCALARS = (
    "loss",
    "accuracy",
    "macro_f1",
    "val_loss",
    "val_accuracy",
    "val_macro_f1",
    "learning_rate",
)


class NoSummaries:
    """What a worker holds when it writes no TensorBoard logs."""

    def write(self, row: EpochRow) -> None:
        pass


def epoch_summaries(
    job: JobConfig, rank: int, run_dir: storage.Location, classes: tuple[str, ...]
) -> EpochSummaries | NoSummaries:
    """Rank 0's writer with ``train.tensorboard`` on; a writer of nothing otherwise."""
    if job.train.tensorboard and rank == 0:
        return EpochSummaries(run_dir, classes)
    return NoSummaries()


class EpochSummaries:
    """Writes each finished epoch's figures as TensorBoard scalars under ``run_dir``."""

    def __init__(self, run_dir: storage.Location, classes: tuple[str, ...]) -> None:
        import tensorflow as tf  # a worker's module: TF is there already

        self._tf = tf
        self._local = tempfile.TemporaryDirectory(prefix="tljob-tensorboard-")
        self._writer = tf.summary.create_file_writer(self._local.name)
        self._target = run_dir.join(TENSORBOARD_DIR)
        self._classes = classes

    def write(self, row: EpochRow) -> None:
        """Add ``row``'s figures at step ``row.global_epoch`` and copy the event file out."""
        with self._writer.as_default(step=row.global_epoch):
            for name in SCALARS:
                self._tf.summary.scalar(name, float(getattr(row, name)))
            for name, recall in zip(self._classes, row.val_class_recall, strict=False):
                self._tf.summary.scalar(f"val_class_recall/{name}", float(recall))
        self._writer.flush()
        for name in os.listdir(self._local.name):
            with open(os.path.join(self._local.name, name), "rb") as f:
                storage.write_bytes(self._target.join(name), f.read())

    def close(self) -> None:
        self._writer.close()
        self._local.cleanup()
