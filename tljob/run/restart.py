"""The training dataset as a per-attempt factory: where a (re)started worker group resumes.

Ray Train V2 accepts a callable in ``datasets`` and calls it in its controller at every
worker-group start, before any worker of the group runs (Ray 2.60:
``DatasetsCallback.before_init_train_context``); the group's ``streaming_split`` is made
from what it returns. That is the one moment of each attempt where nothing of the run
trains or uploads, so the factory decides the attempt's resume point there, once for every
worker (``tljob.run.attempts.start_attempt``: the newest complete checkpoint, recorded
before the workers read it), and starts the dataset at that epoch
(``tljob.data.views.EpochMark``), so a restarted group's augmented views and row-group
orders are those of a run without the failure.
"""

from __future__ import annotations

from ray.data import Dataset

from tljob import storage
from tljob.data.views import EpochMark
from tljob.run.attempts import start_attempt


class TrainDatasetPerAttempt:
    """``datasets["train"]`` for the trainer: each call records a new attempt and returns
    ``dataset`` with its next execution at the attempt's first epoch.

    ``dataset``: the training stream, not executed yet, whose next execution is global
    epoch ``next_epoch`` (the epochs the driver's resume plan found done). Picklable: Ray
    sends it to the controller once, which calls it at every worker-group start."""

    def __init__(self, dataset: Dataset, run_dir: storage.Location, next_epoch: int) -> None:
        self.dataset = dataset
        self.run_dir = run_dir
        self.mark = EpochMark.of(dataset, next_epoch)

    def __call__(self) -> Dataset:
        attempt = start_attempt(self.run_dir)
        self.mark.start_at(self.dataset, attempt.epochs_done)
        return self.dataset
