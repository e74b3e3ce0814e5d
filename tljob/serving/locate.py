"""What ``tljob export --model`` names: a run directory or a model file, local or ``s3://``
(pure).

A run lays its files out as::

    <run>/model/model.keras     the exported model (uint8 images of any size -> probabilities)
    <run>/labels.json           {"0": "cat", "1": "dog", ...}: class index -> name
    <run>/summary.json          counts, metrics, weights provenance (optional here)
    <run>/config.yaml           the resolved config (optional here)

A run directory (or a sweep's ``best/``) names all of them. A bare ``.keras`` file finds
``labels.json`` in its own folder or, as a run lays it out, in its folder's parent; that
folder is then the "run" whose ``summary.json`` and ``config.yaml`` are read if present.
Anything missing that an export needs is a ``UserError`` (exit 2) naming it.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from tljob import storage
from tljob.config.yaml_in import YamlInputError, load_yaml
from tljob.errors import UserError

MODEL_FILE = ("model", "model.keras")
LABELS_FILE = "labels.json"
SUMMARY_FILE = "summary.json"
CONFIG_FILE = "config.yaml"
MODEL_SUFFIX = ".keras"


class ModelSourceError(UserError):
    """``--model`` does not name a usable tljob model with its labels."""


@dataclass(frozen=True)
class ModelSource:
    """A located model and the run files beside it. ``run_dir``: the folder holding
    ``labels.json`` (a run directory, as a run lays it out); ``summary`` and ``config``:
    its ``summary.json`` and ``config.yaml``, parsed, or None where the run has none."""

    model: storage.Location
    run_dir: storage.Location
    class_names: tuple[str, ...]
    summary: dict[str, Any] | None
    config: dict[str, Any] | None

    @property
    def labels(self) -> storage.Location:
        return self.run_dir.join(LABELS_FILE)

    def default_out(self, fmt: str) -> storage.Location:
        """``<run>/export/<format>``."""
        return self.run_dir.join("export", fmt)


def locate(uri: str) -> ModelSource:
    """The model and run files ``uri`` (``--model``) names; raises ``ModelSourceError``
    naming the missing or unusable file and what to give instead."""
    where = storage.resolve(uri)
    info = where.fs.get_file_info(where.path)
    if info.type == storage.pafs.FileType.Directory:
        model = where.join(*MODEL_FILE)
        if not storage.exists(model):
            raise ModelSourceError(
                f"--model {uri!r}: this folder has no {'/'.join(MODEL_FILE)}, so it is not a "
                "tljob run directory (a run writes its model there when training ends); "
                "give a run directory, a sweep's best/ folder or a model.keras file"
            )
        run_dir = where
    elif info.type == storage.pafs.FileType.NotFound:
        raise ModelSourceError(
            f"--model {uri!r}: no such file or folder; give a run directory (holding "
            f"{'/'.join(MODEL_FILE)} and {LABELS_FILE}) or a model.keras file"
        )
    elif not where.name.endswith(MODEL_SUFFIX):
        raise ModelSourceError(
            f"--model {uri!r} is not a tljob model: tljob's models are {MODEL_SUFFIX} files "
            f"(a run's {'/'.join(MODEL_FILE)}); give that file or the run directory"
        )
    else:
        model = where
        run_dir = _labels_folder(model, uri)
    class_names = read_labels(run_dir.join(LABELS_FILE))
    return ModelSource(
        model=model,
        run_dir=run_dir,
        class_names=class_names,
        summary=_read_json(run_dir.join(SUMMARY_FILE)),
        config=_read_config(run_dir.join(CONFIG_FILE)),
    )


def _labels_folder(model: storage.Location, uri: str) -> storage.Location:
    """The folder beside the model file that holds ``labels.json``: the model's own, or
    its parent (``<run>/model/model.keras`` -> ``<run>``)."""
    candidates = [model.parent, model.parent.parent]
    for folder in candidates:
        if storage.exists(folder.join(LABELS_FILE)):
            return folder
    tried = " or ".join(repr(c.join(LABELS_FILE).uri) for c in candidates)
    raise ModelSourceError(
        f"--model {uri!r}: no {LABELS_FILE} beside it (looked for {tried}); the exported "
        "model answers class names, so it needs the run's labels.json, which maps class "
        'index to name ({"0": "cat", "1": "dog"}); copy it there or give the run directory'
    )


def read_labels(labels: storage.Location) -> tuple[str, ...]:
    """``labels.json``'s class names by index; a ``ModelSourceError`` naming the file and
    the rule when it is missing, not JSON, or not {"0": name, ..., "<n-1>": name} with
    distinct, non-empty names."""
    if not storage.exists(labels):
        raise ModelSourceError(
            f"{labels.uri}: no such file; a run writes {LABELS_FILE} (class index -> name) "
            "beside model/; copy the run's file there or give the run directory"
        )
    rule = 'a JSON object {"0": "<class name>", "1": ..., "<n-1>": ...} of 2 or more distinct names'
    try:
        mapping = json.loads(storage.read_text(labels))
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise ModelSourceError(f"{labels.uri}: not JSON ({e}); it must be {rule}") from None
    ok = isinstance(mapping, dict) and len(mapping) >= 2
    if ok:
        ok = set(mapping) == {str(i) for i in range(len(mapping))}
    names = tuple(mapping[str(i)] for i in range(len(mapping))) if ok else ()
    if not ok or not all(isinstance(n, str) and n for n in names) or len(set(names)) < len(names):
        raise ModelSourceError(f"{labels.uri}: it must be {rule}")
    return names


def _read_json(loc: storage.Location) -> dict[str, Any] | None:
    if not storage.exists(loc):
        return None
    try:
        value = json.loads(storage.read_text(loc))
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise ModelSourceError(
            f"{loc.uri}: not JSON ({e}); the model card is made from the run's "
            f"{loc.name}: restore it, or export a copy of the model without it"
        ) from None
    if not isinstance(value, dict):
        raise ModelSourceError(f"{loc.uri}: not a JSON object, as a run writes it")
    return value


def _read_config(loc: storage.Location) -> dict[str, Any] | None:
    if not storage.exists(loc):
        return None
    try:
        value = load_yaml(storage.read_text(loc), loc.uri)
    except (UnicodeDecodeError, YamlInputError) as e:
        raise ModelSourceError(
            f"{loc.uri}: not readable YAML ({e}); the model card records the run's resolved "
            f"{CONFIG_FILE}: restore it, or export a copy of the model without it"
        ) from None
    if not isinstance(value, dict):
        raise ModelSourceError(f"{loc.uri}: not a YAML mapping, as a run writes it")
    return value
