"""What the driver hands every Ray Train worker: one typed, picklable object. Pure."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from tljob.config import JobConfig
from tljob.progress import EventSink
from tljob.storage import S3Settings

_KEY = "tljob"  # Ray Train passes a dict to the worker function; it carries one entry


@dataclass(frozen=True)
class LoopConfig:
    """The train loop's input: the job, the classes, where the run lives, how many training
    images there are (for the steps per epoch), where rank 0 sends its progress events
    (``tljob.progress``), the driver's S3 settings (non-secret; each worker
    ``storage.configure``s them), and the backbone weights file the driver shipped into
    the run directory. Where training starts is not here: a worker group
    reads it from its attempt record (``tljob.run.attempts``), which a restart renews."""

    job: JobConfig
    classes: tuple[str, ...]
    run_dir: str  # URI of the run directory
    train_images: int
    # Rank 0 sends its progress here instead of logging it, when the driver shows a live
    # display (stdout is a terminal); None: plain ``[tljob]`` lines.
    progress: EventSink | None = None
    storage: S3Settings | None = None  # None: the worker's environment decides
    # per class index, the loss weight of its training images; None: all 1 (no weighting)
    class_weights: tuple[float, ...] | None = None
    # The backbone's initial weights as the driver shipped them (URI in the run directory)
    # and their sha256; None: random initialisation (``model.weights: none``).
    weights_file: str | None = None
    weights_sha256: str = ""
    weights_content_sha256: str = ""  # over the arrays: what cached features are keyed by
    # Rank 0 notes each checkpoint it saved under this key in Ray's key-value store, for
    # the driver when the storage fails (``tljob.run.failed_run``); "": no note.
    checkpoint_note: str = ""
    # The prepared data (its URI) rank 0 re-scores the exported model on, and whether on
    # the test split too (``tljob.run.rescore``; a sweep's trials do not: only its best).
    prepared_uri: str = ""
    test: bool = False

    def to_ray(self) -> dict[str, Any]:
        """The ``train_loop_config`` for the trainer (``tljob.run.driver``)."""
        return {_KEY: self}

    @classmethod
    def from_ray(cls, config: dict[str, Any]) -> LoopConfig:
        loop = config[_KEY]
        if not isinstance(loop, cls):
            raise TypeError(f"train_loop_config[{_KEY!r}] is a {type(loop).__name__}")
        return loop
