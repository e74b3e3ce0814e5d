"""A weights file checked against the backbone it goes into, then loaded: the Keras side of
``tljob.zoo.weights_record``.

Keras loads a ``.weights.h5`` by layer class and rank, and a legacy ``.h5`` by order, so a
file of another network loads without a word wherever the shapes agree. ``check_fits``
refuses a file whose tljob record names another backbone, and compares the layers of any
file with those of the built backbone (``backbone_layers``), naming the first that differs;
``load_checked`` loads a file that fits.
"""

from __future__ import annotations

import re
from pathlib import Path

from tljob.nn.keras import tf_keras
from tljob.zoo import WeightsMismatchError, WeightsRecord, WeightsSource
from tljob.zoo.weights_record import (
    LayerWeights,
    check_record,
    file_layout,
    layout_mismatch,
)


def _snake_case(class_name: str) -> str:
    # the rule by which Keras' save_weights names a layer's entry in a .weights.h5
    # (tf_keras.src.utils.generic_utils.to_snake_case); the tests check it on real files
    words = re.sub("(.)([A-Z][a-z]+)", r"\1_\2", class_name)
    name = re.sub("([a-z])([A-Z])", r"\1_\2", words).lower()
    return name if not name.startswith("_") else "private" + name


def backbone_layers(model: tf_keras.Model, file_format: str) -> list[LayerWeights]:
    """Every layer of ``model`` that has weights, in model order, with its name and weight
    shapes, keyed as ``save_weights`` stores it in a file of ``file_format``: in a
    ``keras_v3`` ``.weights.h5``, 'layers/<class in snake case>[_<rank among the layers of
    that class>]', a nested model's layers below it ('layers/sequential/layers/conv2d'); in
    a ``legacy_h5`` file, by its name, a nested model as one layer of all its weights."""
    if file_format == "legacy_h5":
        return [
            LayerWeights(layer.name, _shapes(layer.weights), layer.name)
            for layer in model.layers
            if layer.weights
        ]
    return _keyed(model, "layers/")


def _shapes(weights: list) -> tuple[tuple[int, ...], ...]:
    return tuple(tuple(int(d) for d in w.shape) for w in weights)


def _keyed(model: tf_keras.Model, prefix: str) -> list[LayerWeights]:
    ranks: dict[str, int] = {}
    found = []
    for layer in model.layers:
        kind = _snake_case(type(layer).__name__)
        rank = ranks[kind] = ranks.get(kind, -1) + 1
        key = f"{prefix}{kind}_{rank}" if rank else f"{prefix}{kind}"
        if isinstance(layer, tf_keras.Model):
            found.extend(_keyed(layer, key + "/layers/"))
        elif layer.weights:
            found.append(LayerWeights(key, _shapes(layer.weights), layer.name))
    return found


def check_fits(
    model: tf_keras.Model, backbone: str, path: str | Path, label: str
) -> WeightsRecord | None:
    """Raise ``WeightsMismatchError`` unless the weights file ``path`` fits ``model``, the
    built backbone registered as ``backbone``: its record (if any) names that backbone,
    without the classifier, and it holds the same layers with the same weight shapes.
    ``label`` names the file in errors. Returns the file's record (None: it has none)."""
    record = check_record(path, backbone, label)
    found = file_layout(path, label)
    problem = layout_mismatch(found, backbone_layers(model, found.format))
    if problem:
        why = (
            "Its tljob record names this backbone, so the file was changed after tljob wrote it"
            if record
            else "The file carries no tljob record of the backbone it was made for, and its "
            "layers are not this backbone's"
        )
        raise WeightsMismatchError(
            f"{label}: does not fit backbone {backbone!r}: {problem}. {why}: give a no-top "
            f"weights file of {backbone!r} (Keras' save_weights of that backbone, or one "
            "written by `tljob weights import`)"
        )
    return record


def load_checked(
    model: tf_keras.Model, backbone: str, weights: WeightsSource, path: str | Path
) -> None:
    """Load the weights file ``path`` (the local copy of ``model.weights``) into ``model``,
    the built backbone ``backbone``, after checking it fits. An ImageNet file is checked
    only against its record (tljob records the ones it converts; Keras' own have none)."""
    label = f"`model.weights` ({(weights.path if weights.kind == 'file' else 'imagenet')!r})"
    if weights.kind == "file":
        check_fits(model, backbone, path, label)
    else:
        check_record(path, backbone, label)
    model.load_weights(str(path))
