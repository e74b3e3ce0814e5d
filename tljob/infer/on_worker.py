"""The inference path inside a process that already holds TensorFlow and a device: a Ray
Train worker at the end of its run. The same reader (``inputs.read_prepared``) and the
same ``Predictor`` as the actor pool, called in this process, so that a run's re-check of
its exported model and its test score use the training workers' resources before Ray
Train gives them back (no second TensorFlow start, no CPU or GPU asked for again)."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from tljob import storage
from tljob.data.stream import shard_units
from tljob.infer.inputs import PreparedSplit, read_prepared
from tljob.infer.model_file import resolve_model
from tljob.infer.pipeline import Predictor, scored_of
from tljob.infer.results import Scored


def score_prepared_here(
    model_uri: str, prepared_uri: str, splits: Sequence[str], batch_size: int
) -> dict[str, Scored]:
    """Every row of each prepared split in ``splits`` scored in this process by the
    exported model at ``model_uri`` (loaded once), a row group at a time, sorted by uri:
    per split what ``pipeline.score_prepared`` gives on an actor pool."""
    model = resolve_model(model_uri)
    predictor = Predictor(model.uri, top=None, threads=0, batch_size=batch_size)

    def batches(rows: PreparedSplit):
        folder = storage.resolve(rows.folder_uri)
        for unit in shard_units(folder, rows.files):
            one = {"path": np.array([unit["path"]]), "row_group": np.array([unit["row_group"]])}
            yield predictor(
                read_prepared(one, folder.fs, rows.stored_size, rows.pixels, model.image_size)
            )

    return {
        split: scored_of(batches(PreparedSplit.from_prepared(prepared_uri, split))).sorted_by_uri()
        for split in splits
    }
