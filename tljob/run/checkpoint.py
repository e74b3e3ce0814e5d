"""Checkpoints of a run, all of their handling in one place (pure: no Ray, no TensorFlow;
the model's weight files are written and read through functions the caller passes).

Layout: a checkpoint directory ``<run_dir>/checkpoint_epoch_NNNN`` (NNNN = global epoch)
holds the current and best weights, the optimizer's variables, ``state.json`` and
``manifest.json``, which lists every other file with its size and is written last
(``write_checkpoint``). Ray uploads a checkpoint file by file, so a run killed during an
upload leaves a directory that looks like a checkpoint but is not: only a directory whose
files all match its manifest counts (``is_complete``).

The resume point (``resume_point``) is the newest complete checkpoint on storage, whether
or not Ray registered it before the process died; the incomplete directories newer than it
(an interrupted upload) are removed (``ResumePoint.remove_incomplete``). Both that resume
use this one rule: a rerun of the command (``tljob.run.driver.plan_run``) and a restarted
worker group (``tljob.run.attempts.start_attempt``).
"""

from __future__ import annotations

import json
import os
import re
import tempfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import NamedTuple

import numpy as np

from tljob import storage
from tljob.run.ledger import TrainState

WEIGHTS_FILE = "model.weights.h5"
BEST_WEIGHTS_FILE = "best.weights.h5"
OPTIMIZER_FILE = "optimizer.npz"
STATE_FILE = "state.json"
MANIFEST_FILE = "manifest.json"
CHECKPOINT_FILES = (WEIGHTS_FILE, BEST_WEIGHTS_FILE, OPTIMIZER_FILE, STATE_FILE)
_NAME = re.compile(r"^checkpoint_epoch_(\d{4,})$")


def checkpoint_name(global_epoch: int) -> str:
    return f"checkpoint_epoch_{global_epoch:04d}"


def write_manifest(directory: str) -> None:
    """Record the size of every checkpoint file in ``directory`` (call after writing them)."""
    sizes = {name: os.path.getsize(os.path.join(directory, name)) for name in CHECKPOINT_FILES}
    with open(os.path.join(directory, MANIFEST_FILE), "w") as f:
        json.dump({"files": sizes}, f, indent=1)


def write_checkpoint(
    directory: str,
    save_weights: Callable[[str], None],
    save_best_weights: Callable[[str, str], None],
    optimizer: Sequence[np.ndarray],
    state: TrainState,
) -> None:
    """Write one checkpoint's files into the local ``directory``, the manifest last.

    ``save_weights(path)`` writes the current weights; ``save_best_weights(path,
    current_path)`` the best ones, given the current weights' file already written (the
    best are often this epoch's)."""
    current = os.path.join(directory, WEIGHTS_FILE)
    save_weights(current)
    save_best_weights(os.path.join(directory, BEST_WEIGHTS_FILE), current)
    np.savez(
        os.path.join(directory, OPTIMIZER_FILE), **{f"v{i}": a for i, a in enumerate(optimizer)}
    )
    with open(os.path.join(directory, STATE_FILE), "w") as f:
        f.write(state.to_json())
    write_manifest(directory)


def is_complete(ckpt: storage.Location) -> bool:
    """Whether every file the manifest lists is on storage with the listed size."""
    manifest = ckpt.join(MANIFEST_FILE)
    try:
        sizes = json.loads(storage.read_text(manifest))["files"]
    except (OSError, ValueError, KeyError, TypeError):
        return False
    if set(sizes) != set(CHECKPOINT_FILES):
        return False
    infos = ckpt.fs.get_file_info([ckpt.join(name).path for name in CHECKPOINT_FILES])
    return all(
        info.type == storage.pafs.FileType.File and info.size == sizes[name]
        for name, info in zip(CHECKPOINT_FILES, infos, strict=True)
    )


def checkpoint_dirs(run_dir: storage.Location) -> list[str]:
    """Names of the checkpoint directories under ``run_dir``, newest first."""
    if not storage.is_dir(run_dir):
        return []
    infos = run_dir.fs.get_file_info(storage.pafs.FileSelector(run_dir.path))
    names = [
        i.base_name
        for i in infos
        if i.type == storage.pafs.FileType.Directory and _NAME.match(i.base_name)
    ]
    return sorted(names, key=lambda n: int(_NAME.match(n).group(1)), reverse=True)


def newest_complete(run_dir: storage.Location) -> tuple[str | None, list[str]]:
    """(name of the newest complete checkpoint or None, names of incomplete ones newer than
    it). Incomplete directories are what an interrupted upload leaves."""
    incomplete: list[str] = []
    for name in checkpoint_dirs(run_dir):
        if is_complete(run_dir.join(name)):
            return name, incomplete
        incomplete.append(name)
    return None, incomplete


def read_state(ckpt: storage.Location) -> TrainState:
    """The ``state.json`` of the checkpoint at ``ckpt``."""
    return TrainState.from_json(storage.read_text(ckpt.join(STATE_FILE)))


@dataclass(frozen=True)
class ResumePoint:
    """Where a run in ``run_dir`` resumes: its newest complete checkpoint (``name`` None:
    none, a fresh start) with its ``state``, and the incomplete directories newer than it."""

    run_dir: storage.Location
    name: str | None
    state: TrainState | None
    incomplete: tuple[str, ...]

    @property
    def epochs_done(self) -> int:
        """Global epochs the checkpoint holds (0 without one)."""
        return len(self.state.history) if self.state is not None else 0

    def remove_incomplete(self, say: Callable[[str], None] | None = None) -> None:
        """Delete the incomplete checkpoint directories newer than the resume point,
        telling ``say`` of each."""
        for stale in self.incomplete:
            if say is not None:
                say(f"removing {stale}: incomplete (its upload was interrupted)")
            storage.delete_dir(self.run_dir.join(stale))


def resume_point(run_dir: storage.Location) -> ResumePoint:
    """The newest complete checkpoint under ``run_dir`` and the incomplete ones newer than
    it (not removed yet: see ``ResumePoint.remove_incomplete``)."""
    name, incomplete = newest_complete(run_dir)
    state = read_state(run_dir.join(name)) if name is not None else None
    return ResumePoint(run_dir, name, state, tuple(incomplete))


def download(ckpt: storage.Location, local_dir: str) -> None:
    """Copy the checkpoint files to a local directory (to load them with Keras/numpy)."""
    for name in (*CHECKPOINT_FILES, MANIFEST_FILE):
        with open(os.path.join(local_dir, name), "wb") as f:
            f.write(storage.read_bytes(ckpt.join(name)))


class CheckpointContents(NamedTuple):
    """What a checkpoint holds: the state, the current and best weights, the optimizer's
    variables (in the model's and the optimizer's order)."""

    state: TrainState
    weights: list[np.ndarray]
    best_weights: list[np.ndarray]
    optimizer: list[np.ndarray]


def read_checkpoint(
    ckpt: storage.Location, load_weights: Callable[[str], list[np.ndarray]]
) -> CheckpointContents:
    """Read the checkpoint at ``ckpt``; ``load_weights(path)`` reads a weights file."""
    with tempfile.TemporaryDirectory() as local:
        download(ckpt, local)
        with open(os.path.join(local, STATE_FILE)) as f:
            state = TrainState.from_json(f.read())
        current = load_weights(os.path.join(local, WEIGHTS_FILE))
        best = load_weights(os.path.join(local, BEST_WEIGHTS_FILE))
        with np.load(os.path.join(local, OPTIMIZER_FILE)) as npz:
            optimizer = [npz[f"v{i}"] for i in range(len(npz.files))]
    return CheckpointContents(state, current, best, optimizer)
