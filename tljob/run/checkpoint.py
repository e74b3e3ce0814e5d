"""The files of a checkpoint, and finding the newest complete one on storage (pure).

A checkpoint directory ``checkpoint_epoch_NNNN`` (NNNN = global epoch) holds the current and
best weights, the optimizer's variables, ``state.json`` and ``manifest.json``, which lists
every other file with its size. Ray uploads a checkpoint file by file, so a run killed during
an upload leaves a directory that looks like a checkpoint but is not: only a directory whose
files all match its manifest counts. The resume point is the newest such directory on
storage, whether or not Ray registered it before the process died.
"""

from __future__ import annotations

import json
import os
import re

from tljob import storage

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


def download(ckpt: storage.Location, local_dir: str) -> None:
    """Copy the checkpoint files to a local directory (to load them with Keras/numpy)."""
    for name in (*CHECKPOINT_FILES, MANIFEST_FILE):
        with open(os.path.join(local_dir, name), "wb") as f:
            f.write(storage.read_bytes(ckpt.join(name)))
