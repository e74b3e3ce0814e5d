"""Augmented training views inside the Ray Data stream: which epoch a task is in, and the
rows it emits (``tljob.data.stream`` calls ``training_views`` once per row group).

The view of image i in epoch e is ``Augmenter(section, image_size, seed)(stored_i, key_i,
e)`` with ``key_i = augment.keys.image_keys(sha256_i)`` (the prepared row's content hash,
unique per prepared image): it depends on nothing else, so the same views come out
whatever the number of workers, blocks or task retries.

**The epoch.** One epoch is one execution of the training dataset. Ray Data counts a
dataset's executions in a private field of its ``DataContext``, read and written only through
``tljob.ray_private.execution_index`` / ``set_execution_index`` (the executor's
``ExecutionIdxUpdateCallback`` adds 1 when an execution ends, and Ray Data's own seeded ops,
``RandomSeedConfig(reseed_after_execution=True)`` and ``random()``, read it inside tasks
the same way). A task's epoch is therefore::

    epoch = epoch_offset + execution_index(DataContext.get_current()) - first_execution

``first_execution``: the dataset's counter when the stream was built (0 in practice; the
count survives shallow copies such as Ray Train's ``DataConfig``, which share the context).
``epoch_offset``: the global epochs a resumed run has already done, so its epochs get
the views a straight run would have. Verified on Ray 2.60.0 (``tests/
test_augment_stream.py``): tasks of the k-th execution see k when iterated directly and
under ``streaming_split(n, equal=True)`` as ``ray.train.DataConfig`` makes it (its
``SplitCoordinator`` copies the context once and runs one execution per epoch); and in a
real 2-worker ``tljob train`` streaming the split (2 stages, 4 epochs) the tasks saw epochs
0, 1, 2, 3, and its resume after 4 epochs saw 4. The assumption: each epoch iterates the
training shard exactly once, and nothing else executes the training dataset:
``schema()``, ``count()`` or ``take()`` on it would be executions too and shift every
later epoch by one (tljob never calls them on it; the workers feed with explicit type
specs).

**A restarted worker group** (``scaling.max_failures``) gets a new ``streaming_split``
of the dataset as the trainer was given it, whose counter never advanced: left alone,
its first execution would be epoch ``epoch_offset`` again, whatever epoch the restart
resumes at. ``EpochMark.start_at`` sets the counter (the private field, written) so that
the next execution is that epoch: its views, and Ray Data's own reseeded row-group order,
are then those of a run without the restart (``tljob.run.restart`` calls it at every
worker-group start; ``tests/test_fault_tolerance.py`` checks the views a restarted
group's tasks produce).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from ray.data import DataContext, Dataset

from tljob import ray_private
from tljob.augment.keys import image_keys
from tljob.augment.ops import BATCH_OPS
from tljob.augment.pipeline import Augmenter
from tljob.config.augment import AugmentSection


@dataclass(frozen=True)
class TrainingViews:
    """What the training stream needs to augment: the ``augment`` section, the run's
    augmentation seed (``augment.seed``, else ``data.seed``), the class count (soft labels)
    and the global epochs a resumed run has already done."""

    section: AugmentSection
    seed: int
    num_classes: int
    epoch_offset: int = 0

    @property
    def soft_labels(self) -> bool:
        """MixUp / CutMix on: both splits emit float32 (N, num_classes) labels."""
        return self.section.soft_labels


def execution_epoch(first_execution: int, epoch_offset: int) -> int:
    """The epoch of the running task: see the module docstring."""
    return epoch_offset + ray_private.execution_index(DataContext.get_current()) - first_execution


@dataclass(frozen=True)
class EpochMark:
    """A training dataset's execution counter (``execution``) at a time when its next
    execution was epoch ``epoch``."""

    execution: int
    epoch: int

    @classmethod
    def of(cls, dataset: Dataset, next_epoch: int) -> EpochMark:
        return cls(ray_private.execution_index(dataset.context), next_epoch)

    def start_at(self, dataset: Dataset, epoch: int) -> None:
        """Make the next execution of ``dataset`` (the marked one, or a pickled copy of it)
        epoch ``epoch``, by setting its context's execution counter."""
        ray_private.set_execution_index(dataset.context, self.execution + epoch - self.epoch)


def row_group_key(keys: np.ndarray) -> int:
    """A row group's identity for MixUp / CutMix: the XOR of its image keys (distinct
    images have distinct keys, and a row group's rows never change)."""
    return int(np.bitwise_xor.reduce(np.asarray(keys, dtype=np.uint64)))


def training_views(
    stored: np.ndarray,
    labels: np.ndarray,
    sha256: np.ndarray,
    views: TrainingViews,
    image_size: int,
    epoch: int,
    out: np.ndarray | None = None,
) -> dict[str, np.ndarray]:
    """One row group's stored images (N, S, S, 3) uint8 -> its training rows in ``epoch``:
    ``image`` (N, image_size, image_size, 3) uint8, ``label`` int64 (N,), or float32
    (N, num_classes) class probabilities when MixUp / CutMix are on. With ``out`` (uint8,
    that shape, C-contiguous) the images are written there and ``image`` is ``out``."""
    keys = image_keys(sha256)
    images = Augmenter(views.section, image_size, views.seed)(stored, keys, epoch, out=out)
    labels = np.asarray(labels, dtype=np.int64)
    for op in BATCH_OPS:  # MixUp / CutMix: at most one is registered (ops.check_registry)
        if op.batch_options_on(views.section):
            mixed, soft = op.apply_batch(
                views.section,
                images,
                labels,
                views.num_classes,
                views.seed,
                epoch,
                row_group_key(keys),
            )
            if out is not None:
                out[...] = mixed
                mixed = out
            return {"image": mixed, "label": np.asarray(soft, dtype=np.float32)}
    return {"image": images, "label": labels}


def one_hot(labels: np.ndarray, num_classes: int) -> np.ndarray:
    """Exact float32 one-hot rows (validation's labels when training's are soft)."""
    out = np.zeros((len(labels), num_classes), dtype=np.float32)
    out[np.arange(len(labels)), np.asarray(labels, dtype=np.int64)] = 1.0
    return out
