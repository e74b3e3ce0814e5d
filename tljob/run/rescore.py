"""The end of a run, on its training workers: the exported model re-scored on every
validation image (``summary.json``'s ``exported_model``) and, when the run has a test split
and is not a sweep's trial, scored once on the test split (``test_metrics.json`` and
``summary.json``'s ``test``). Rank 0 does it after exporting, in its own process
(``tljob.infer.on_worker``), so it runs before Ray Train gives the workers' resources back
and the driver never loads TensorFlow. The figures reach the driver in ``rescored.json``."""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from tljob import storage

if TYPE_CHECKING:
    from tljob.run.loop import LoopConfig

RESCORED_FILE = "rescored.json"
TEST_METRICS_FILE = "test_metrics.json"
_TEST_HEADLINE = ("images", "accuracy", "top5_accuracy", "macro_f1", "nll", "brier", "ece")


def test_record(
    model_dir: storage.Location, truth: Any, probs: Any, classes: Sequence[str]
) -> dict[str, Any]:
    """Every figure of ``tljob.evaluate.metrics.score`` into
    ``<model_dir>/test_metrics.json``; returns the headline figures (``summary.json``'s
    ``test``)."""
    from tljob.evaluate.metrics import metrics_json, score

    result = score(truth, probs, list(classes))
    storage.write_text(model_dir.join(TEST_METRICS_FILE), metrics_json(result))
    return {k: result[k] for k in _TEST_HEADLINE if k in result} | {"metrics": TEST_METRICS_FILE}


def rescore_per_worker(run_dir: storage.Location, loop: LoopConfig) -> dict[str, Any] | None:
    """Rank 0, after the export: score ``<run>/model/model.keras`` as written (read back
    from storage) on the prepared validation split of ``loop.prepared_uri``, and on its
    test split if ``loop.test``, ``loop.job.train.batch_size`` images per model call; write
    and return ``rescored.json``'s record (None, nothing written, without prepared data)."""
    from tljob.infer.on_worker import score_prepared_here

    if not loop.prepared_uri:
        return None
    model_uri = run_dir.join("model", "model.keras").uri
    splits = ["val", "test"] if loop.test else ["val"]
    scored = score_prepared_here(model_uri, loop.prepared_uri, splits, loop.job.train.batch_size)
    record: dict[str, Any] = {"exported_model": scored["val"].summary()}
    if loop.test:
        test = scored["test"]
        record["test"] = test_record(run_dir, test.truth, test.probs, loop.classes)
    storage.write_text(run_dir.join(RESCORED_FILE), json.dumps(record, indent=1))
    return record


def clear_rescored(run_dir: storage.Location) -> None:
    """Before training: no record of an earlier run may pass for this one's."""
    storage.delete_file(run_dir.join(RESCORED_FILE))


def read_rescored(run_dir: storage.Location) -> dict[str, Any] | None:
    """``rescored.json`` as rank 0 wrote it at the end of this run; None if it wrote none."""
    loc = run_dir.join(RESCORED_FILE)
    if not storage.exists(loc):
        return None
    return json.loads(storage.read_text(loc))
