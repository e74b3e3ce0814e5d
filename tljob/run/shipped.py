"""The backbone's initial weights, from the driver to every worker through the run directory.

The driver resolves ``model.weights`` once to a local file (``tljob.run.job.resolve_weights``:
Keras cache, download, conversion or ``s3://`` fetch), and ``ship`` copies it to
``<run_dir>/weights/<name>`` with its sha256 beside it. Each worker ``fetch``es that copy
into its own temporary folder, checks the sha256 and builds its backbone from it, so no
worker downloads anything and no node needs a Keras cache. Pure: storage only.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Callable
from dataclasses import dataclass

from tljob import storage
from tljob.errors import JobFailedError
from tljob.zoo import file_sha256
from tljob.zoo.weights_record import tensors_sha256

FOLDER = "weights"


@dataclass(frozen=True)
class ShippedWeights:
    """The weights file in the run directory, and its sha256."""

    uri: str
    sha256: str
    # over the arrays only (tljob.zoo.weights_record.tensors_sha256): the same weights
    # converted twice give two files, one digest (what cached features are keyed by)
    content_sha256: str = ""


def ship(
    run_dir: storage.Location, local_file: str | None, say: Callable[[str], None]
) -> ShippedWeights | None:
    """Copy the driver's resolved weights file into the run directory (atomically; kept
    when an earlier attempt of the run already put the same bytes there)."""
    if local_file is None:
        return None
    digest = file_sha256(local_file)
    name = os.path.basename(local_file)
    dest = run_dir.join(FOLDER, name)
    digest_file = run_dir.join(FOLDER, name + ".sha256")
    if not (
        storage.exists(dest)
        and storage.exists(digest_file)
        and storage.read_text(digest_file).strip() == digest
    ):
        storage.put_file(local_file, dest)
        storage.write_text(digest_file, digest + "\n")
    say(f"weights: {local_file} shipped to the workers as {dest.uri} (sha256 {digest[:12]})")
    return ShippedWeights(dest.uri, digest, tensors_sha256(local_file))


def fetch(uri: str, sha256: str, folder: str) -> str:
    """The shipped file, copied into the local ``folder`` and checked; returns its path."""
    data = storage.read_bytes(storage.resolve(uri))
    actual = hashlib.sha256(data).hexdigest()
    if actual != sha256:
        raise JobFailedError(
            f"the weights file {uri} has sha256 {actual}, not the {sha256} the driver shipped; "
            "it was changed during the run: rerun the job"
        )
    local = os.path.join(folder, uri.rstrip("/").rsplit("/", 1)[-1])
    with open(local, "wb") as f:
        f.write(data)
    return local
