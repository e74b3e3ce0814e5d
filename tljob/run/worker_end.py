"""The worker loop's writes at an epoch's end and at the run's end (``tljob.run.worker``):
the epoch's checkpoint files, each replica's weight digest, rank 0's export of the best
epoch and its re-check of the exported model."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
from typing import Any

import numpy as np

from tljob import storage
from tljob.nn import io as keras_io
from tljob.run import checkpoint as ckpt_files
from tljob.run import failures
from tljob.run.rescore import rescore_per_worker


def weights_digest(weights: list[np.ndarray]) -> str:
    """sha256 over every weight tensor's bytes, in model order."""
    h = hashlib.sha256()
    for w in weights:
        h.update(np.ascontiguousarray(w).tobytes())
    return h.hexdigest()


def write_epoch_checkpoint(
    worker: Any, weights: list[np.ndarray], optimizer: list[np.ndarray], directory: str
) -> None:
    """The checkpoint of ``worker``'s epoch (``tljob.run.worker._WorkerRun``, rank 0) in
    ``directory``: the weights, the best weights, the optimizer state and the run state."""

    def save_best(best: str, current: str) -> None:
        # The best weights change only when an epoch improves on them: then they are
        # this epoch's file; otherwise the file kept from that epoch. Serialising them
        # again every epoch cost as much as the current weights.
        if worker.best_weights is weights:
            shutil.copyfile(current, worker.best_file)
        elif not os.path.exists(worker.best_file):  # the best came from a resumed checkpoint
            keras_io.save_weights(worker.plain, worker.best_weights, worker.best_file)
        shutil.copyfile(worker.best_file, best)

    ckpt_files.write_checkpoint(
        directory,
        save_weights=lambda path: keras_io.save_weights(worker.plain, weights, path),
        save_best_weights=save_best,
        optimizer=optimizer,
        state=worker.state,
    )


def finish_per_worker(worker: Any) -> None:
    """Record this replica's weight digest; rank 0 exports the best epoch and re-checks it
    (or, after a non-finite loss, records where it happened and exports nothing)."""
    run_dir = worker.run_dir
    if worker.diverged is not None:
        if worker.rank == 0:
            storage.write_text(
                run_dir.join(failures.DIVERGED_FILE), json.dumps(worker.diverged, indent=1)
            )
        return
    # Gradients are all-reduced, so every replica must end with the same weights; each
    # worker records a digest and the driver checks that they agree.
    final_weights = keras_io.get_weights(worker.net)
    storage.write_text(
        run_dir.join("replicas", f"rank_{worker.rank}.sha256"), weights_digest(final_weights)
    )
    if worker.rank != 0:
        return
    with tempfile.TemporaryDirectory() as export_dir:
        best = worker.best_weights if worker.best_weights is not None else final_weights
        worker.plain.set_weights(best)
        keras_io.export_model(worker.plain, os.path.join(export_dir, "model.keras"))
        storage.upload_dir(export_dir, run_dir.join("model"))
    best_epoch = worker.state.best.global_epoch if worker.state.best else "-"
    exported = run_dir.join("model", "model.keras").uri
    worker.say(f"exported the best epoch ({best_epoch}) to {exported}")
    rescore_per_worker(run_dir, worker.loop)  # before the workers' resources go back
