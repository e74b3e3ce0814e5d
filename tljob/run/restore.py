"""What a worker restores from the checkpoint the driver chose: the state, the current and
best weights, and the optimizer's variables (read through the plain model copy)."""

from __future__ import annotations

import os
import tempfile
from typing import Any, NamedTuple

import numpy as np

from tljob import storage
from tljob.nn import io as keras_io
from tljob.run import checkpoint as ckpt_files
from tljob.run.ledger import TrainState


class Restored(NamedTuple):
    """What the checkpoint the driver chose holds (all None but a fresh state without one)."""

    state: TrainState
    weights: list[np.ndarray] | None = None
    best_weights: list[np.ndarray] | None = None
    optimizer: list[np.ndarray] | None = None


def restore_checkpoint(plain: Any, checkpoint_uri: str | None) -> Restored:
    """Read the chosen checkpoint through the plain model copy."""
    if checkpoint_uri is None:
        return Restored(TrainState())
    with tempfile.TemporaryDirectory() as local:
        ckpt_files.download(storage.resolve(checkpoint_uri), local)
        with open(os.path.join(local, ckpt_files.STATE_FILE)) as f:
            state = TrainState.from_json(f.read())
        current = keras_io.load_weights(plain, os.path.join(local, ckpt_files.WEIGHTS_FILE))
        best = keras_io.load_weights(plain, os.path.join(local, ckpt_files.BEST_WEIGHTS_FILE))
        with np.load(os.path.join(local, ckpt_files.OPTIMIZER_FILE)) as npz:
            optimizer = [npz[f"v{i}"] for i in range(len(npz.files))]
    return Restored(state, current, best, optimizer)
