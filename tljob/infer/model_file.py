"""What ``--model`` names: a run directory or a ``.keras`` file, local or ``s3://``, with the
class names beside it and the input size written in it. Pure (no Ray, no TensorFlow).

A run directory holds ``model/model.keras`` and ``labels.json`` (``{"0": name, ...}``). A
``.keras`` file's class names are the ``labels.json`` in its own folder, else in the folder
above (a run directory's ``model/``). The input size is read from the file's
``config.json`` (a ``.keras`` file is a zip; only its directory and that member are read):
the size of tljob's ``ResizeImages`` layer, else a fixed square input shape. Images are
resized to it in the decoding tasks with ``tljob.images.resize_bilinear_uint8``, the
kernel the model's own resize uses, so they reach the model exactly as it would resize them.
"""

from __future__ import annotations

import json
import zipfile
from dataclasses import dataclass
from typing import Any

from tljob import storage
from tljob.errors import UserError

MODEL_IN_RUN = ("model", "model.keras")
LABELS_FILE = "labels.json"
RESIZE_LAYER = "ResizeImages"


class ModelError(UserError):
    """``--model`` does not name a usable exported model; the message says what to do."""


@dataclass(frozen=True)
class ModelFile:
    """An exported model, resolved: where it is, its classes and input size, and what
    identifies this version of the file (a rerun into the same output checks it)."""

    uri: str  # the .keras file
    labels_uri: str
    classes: tuple[str, ...]  # by class index
    image_size: int
    size: int  # bytes
    mtime_ns: int  # -1 when the store gives none

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    def identity(self) -> dict[str, Any]:
        return {"uri": self.uri, "size": self.size, "mtime_ns": self.mtime_ns}


def resolve_model(model: str) -> ModelFile:
    """``--model`` (a run directory or a ``.keras`` file) -> ``ModelFile``; ``ModelError``
    (exit 2) naming what is missing or wrong."""
    try:
        given = storage.resolve(model)
    except storage.StorageError as e:
        raise ModelError(f"--model {model!r}: {e}") from None
    if given.path.endswith(".keras"):
        model_loc = given
        label_places = [given.parent.join(LABELS_FILE), given.parent.parent.join(LABELS_FILE)]
    else:
        model_loc = given.join(*MODEL_IN_RUN)
        label_places = [given.join(LABELS_FILE)]
    info = model_loc.fs.get_file_info(model_loc.path)
    if info.type != storage.pafs.FileType.File:
        raise ModelError(
            f"--model {model!r}: no exported model at {model_loc.uri}; give a run directory "
            "(a finished `tljob train` writes <run>/model/model.keras) or a .keras file"
        )
    labels_loc = next((loc for loc in label_places if storage.exists(loc)), None)
    if labels_loc is None:
        raise ModelError(
            f"--model {model!r}: no {LABELS_FILE} (the class names) at "
            f"{' or '.join(loc.uri for loc in label_places)}; copy the run's {LABELS_FILE} "
            "next to the model"
        )
    classes = read_labels(labels_loc)
    config = read_keras_config(model_loc)
    image_size = input_size(config)
    if image_size is None:
        raise ModelError(
            f"--model {model!r}: cannot tell the input size of {model_loc.uri}: it has no "
            f"{RESIZE_LAYER} layer and no fixed square input shape (tljob's exported models "
            "have one)"
        )
    units = output_units(config)
    if units is not None and units != len(classes):
        raise ModelError(
            f"--model {model!r}: the model gives {units} class probabilities but "
            f"{labels_loc.uri} names {len(classes)} classes; use the {LABELS_FILE} of the "
            "run that exported this model"
        )
    mtime = info.mtime_ns if info.mtime_ns is not None else -1
    return ModelFile(
        uri=model_loc.uri,
        labels_uri=labels_loc.uri,
        classes=tuple(classes),
        image_size=image_size,
        size=int(info.size or 0),
        mtime_ns=int(mtime),
    )


def read_labels(loc: storage.Location) -> list[str]:
    """``labels.json`` -> class names by index; ``ModelError`` unless it maps every index
    0..n-1 to a distinct name."""
    try:
        mapping = json.loads(storage.read_text(loc))
        names = [str(mapping[str(i)]) for i in range(len(mapping))]
    except (ValueError, KeyError, TypeError, AttributeError):
        names = []
    if len(names) < 2 or len(set(names)) != len(names):
        raise ModelError(
            f'{loc.uri}: expected {{"0": "<class name>", "1": ...}}, every index from 0 '
            "with its own class name (at least 2), as `tljob train` writes it"
        )
    return names


def read_keras_config(loc: storage.Location) -> dict[str, Any]:
    """The ``config.json`` member of a ``.keras`` zip (ranged reads: not the weights)."""
    try:
        with loc.fs.open_input_file(loc.path) as handle, zipfile.ZipFile(handle) as archive:
            return json.loads(archive.read("config.json"))
    except (zipfile.BadZipFile, KeyError, ValueError) as e:
        raise ModelError(
            f"{loc.uri} is not a Keras v3 model file (a zip with config.json): {e}"
        ) from None


def _layers(config: dict[str, Any]) -> list[dict[str, Any]]:
    found: list[dict[str, Any]] = []
    for layer in config.get("config", {}).get("layers", []):
        found.append(layer)
        if isinstance(layer.get("config"), dict) and "layers" in layer["config"]:
            found.extend(_layers(layer))
    return found


def input_size(config: dict[str, Any]) -> int | None:
    """The side the model resizes its inputs to, or its fixed square input side."""
    layers = _layers(config)
    for layer in layers:
        if layer.get("class_name") == RESIZE_LAYER:
            return int(layer["config"]["size"])
    for layer in layers:
        if layer.get("class_name") == "InputLayer":
            shape = layer["config"].get("batch_input_shape") or layer["config"].get("batch_shape")
            if shape and len(shape) == 4 and shape[1] and shape[1] == shape[2]:
                return int(shape[1])
    return None


def output_units(config: dict[str, Any]) -> int | None:
    """The number of outputs of the model's output layer when it is a Dense layer."""
    outputs = config.get("config", {}).get("output_layers") or []
    if not outputs:
        return None
    name = outputs[0][0]
    for layer in _layers(config):
        if layer.get("name", layer.get("config", {}).get("name")) == name:
            units = layer.get("config", {}).get("units")
            return int(units) if units is not None else None
    return None
