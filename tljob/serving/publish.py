"""An export appears at ``--out`` whole or not at all (pure).

``staged(out, primary)`` gives the writer a local folder and, once the writer returns,
publishes it at ``out``:

* local ``out``: the folder is a hidden sibling (``.tljob-tmp-<random>-<name>``, on the
  same filesystem), renamed onto ``out`` when done; a previous export there is renamed
  away first and deleted after. A killed export leaves only the hidden folder.
* ``s3://`` ``out``: the folder is a local temporary one; a previous export under the
  prefix is deleted, then every file is uploaded (each atomically, ``storage.put_file``)
  with ``primary`` (``saved_model.pb``, ``model.tflite``, ``model.onnx``: the file a
  runtime opens) last, so a prefix an upload left half-done has no loadable model.

``out`` must be new, empty, or a previous export (its ``model_card.json`` says so): an
export never replaces files it did not write.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import tempfile
import uuid
from collections.abc import Iterator

from tljob import storage
from tljob.errors import UserError

CARD_JSON = "model_card.json"
EXPORT_MARKER = "tljob_export"  # the key of model_card.json that marks a tljob export


class OutputFolderError(UserError):
    """``--out`` holds something an export must not replace."""


def check_replaceable(out: storage.Location) -> None:
    """Refuse an ``out`` that is a file, a bucket's root, or a non-empty folder that is not
    a tljob export."""
    if not out.is_local() and not out.key:
        raise OutputFolderError(
            f"--out {out.uri!r} is a whole bucket; give a prefix inside it, e.g. "
            f"{out.join('export').uri}"
        )
    info = out.fs.get_file_info(out.path)
    if info.type == storage.pafs.FileType.NotFound:
        return
    if info.type != storage.pafs.FileType.Directory:
        raise OutputFolderError(f"--out {out.uri!r} is a file; give a folder to export into")
    listing = out.fs.get_file_info(storage.pafs.FileSelector(out.path, recursive=False))
    if not listing or _is_export(out.join(CARD_JSON)):
        return
    raise OutputFolderError(
        f"--out {out.uri!r} already holds files that are not a tljob export (no "
        f"{CARD_JSON} written by tljob export); an export replaces only its own earlier "
        "exports: give a new or empty folder"
    )


def _is_export(card: storage.Location) -> bool:
    try:
        return EXPORT_MARKER in json.loads(storage.read_text(card))
    except (OSError, ValueError):  # missing, unreadable or not JSON: not ours
        return False


@contextlib.contextmanager
def staged(out: storage.Location, primary: str) -> Iterator[str]:
    """A local folder to write the export into; on a normal exit its content becomes
    ``out`` (see the module docstring); on an exception it is deleted and ``out`` is left
    as it was."""
    check_replaceable(out)
    if out.is_local():
        parent = os.path.dirname(out.path)
        os.makedirs(parent, exist_ok=True)
        folder = os.path.join(parent, f"{storage.TMP_PREFIX}{uuid.uuid4().hex[:12]}-{out.name}")
        os.mkdir(folder)
    else:
        folder = tempfile.mkdtemp(prefix="tljob-export-")
    try:
        yield folder
        if not os.path.isfile(os.path.join(folder, primary)):
            raise RuntimeError(f"the export wrote no {primary}")  # a writer's bug
        if out.is_local():
            _swap_in(folder, out.path)
        else:
            _upload(folder, out, primary)
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def _swap_in(folder: str, target: str) -> None:
    """Rename ``folder`` onto ``target``, an earlier export there renamed away first."""
    old = None
    if os.path.exists(target):
        old = f"{folder}-old"
        os.rename(target, old)
    os.rename(folder, target)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


def _upload(folder: str, out: storage.Location, primary: str) -> None:
    storage.delete_dir(out)  # an earlier export (check_replaceable): no stale file stays
    files = []
    for root, _, names in os.walk(folder):
        for name in names:
            files.append(os.path.relpath(os.path.join(root, name), folder))
    files.sort(key=lambda rel: (rel == primary, rel))
    for rel in files:
        storage.put_file(os.path.join(folder, rel), out.join(*rel.split(os.sep)))
