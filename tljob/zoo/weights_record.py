"""Which backbone a weights file is for: the record tljob writes into the files it makes,
and the layers a file holds. Pure: h5py (the HDF5 library Keras writes with) and numpy.

Weights of one network loaded into another scramble its features without a word when the
shapes agree (torchvision's MobileNetV2 in Keras' MobileNetV2: same layers, other padding),
so every weights file tljob writes (``tljob weights import``, the ImageNet weights it
converts into the Keras cache) says what it is, as attributes of the HDF5 root group:

    tljob.backbone       the registered backbone the weights are for ('mobilenet_v2_tv')
    tljob.format         RECORD_FORMAT, the version of this record
    tljob.include_top    1 when the file also holds the ImageNet classifier, else 0
    tljob.source         the file the weights were converted from (its name)
    tljob.source_sha256  that file's sha256

``check_record`` refuses a file recorded for another backbone, or one with the classifier
(``model.weights`` takes no-top files), before anything is built. A file without a record
(a user's own Keras ``save_weights``) is compared with the backbone layer by layer:
``file_layout`` reads what the file holds, ``layout_mismatch`` names the first layer that
differs from what the backbone needs (which the Keras side, ``tljob.nn.backbone_weights``,
lists).
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from tljob.errors import UserError

RECORD_FORMAT = 1
_PREFIX = "tljob."
Shapes = tuple[tuple[int, ...], ...]


class WeightsMismatchError(UserError, ValueError):
    """A weights file that does not fit the configured backbone: made for another one,
    holding the classifier, with other layers, or no Keras weights file at all."""


@dataclass(frozen=True)
class WeightsRecord:
    """What tljob recorded in a weights file it wrote."""

    backbone: str
    include_top: bool
    source: str = ""
    source_sha256: str = ""
    format: int = RECORD_FORMAT


@dataclass(frozen=True)
class LayerWeights:
    """One layer's weights: ``key`` is how the file names it (a ``.weights.h5`` file names
    a layer by its class and rank, 'layers/conv2d_3'; a legacy ``.h5`` by its layer name),
    ``name`` the layer's own name where known, ``shapes`` its arrays' shapes in order."""

    key: str
    shapes: Shapes
    name: str = ""


@dataclass(frozen=True)
class FileLayout:
    """The layers a Keras weights file holds weights for. ``keras_v3``: a ``.weights.h5``
    of ``save_weights`` (layers keyed by class and rank); ``legacy_h5``: Keras' older
    ``.h5`` (layers by name, loaded in order)."""

    format: Literal["keras_v3", "legacy_h5"]
    layers: tuple[LayerWeights, ...]


def _open(path: str | Path, label: str, mode: str = "r"):
    import h5py  # lazy: the CLI stays light

    try:
        return h5py.File(path, mode)
    except OSError as e:
        raise WeightsMismatchError(
            f"{label}: not a Keras weights file: {path} is no readable HDF5 file ({e}); give "
            "a .h5 / .weights.h5 file written by Keras' save_weights or by tljob"
        ) from e


def _text(value: object) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def write_record(path: str | Path, record: WeightsRecord) -> None:
    """Add ``record`` to the weights file ``path`` (after Keras wrote it)."""
    with _open(path, str(path), "a") as f:
        f.attrs[_PREFIX + "backbone"] = record.backbone
        f.attrs[_PREFIX + "format"] = record.format
        f.attrs[_PREFIX + "include_top"] = int(record.include_top)
        f.attrs[_PREFIX + "source"] = record.source
        f.attrs[_PREFIX + "source_sha256"] = record.source_sha256


def read_record(path: str | Path, label: str) -> WeightsRecord | None:
    """The record in ``path``, or None for a file tljob did not write. ``label`` names the
    file in errors (what the user configured: a local copy of an s3:// file has another
    path)."""
    with _open(path, label) as f:
        attrs = {k[len(_PREFIX) :]: f.attrs[k] for k in f.attrs if k.startswith(_PREFIX)}
    if not attrs:
        return None
    try:
        return WeightsRecord(
            backbone=_text(attrs["backbone"]),
            include_top=bool(int(attrs.get("include_top", 0))),
            source=_text(attrs.get("source", "")),
            source_sha256=_text(attrs.get("source_sha256", "")),
            format=int(attrs.get("format", RECORD_FORMAT)),
        )
    except (KeyError, TypeError, ValueError) as e:
        raise WeightsMismatchError(
            f"{label}: its tljob record ({', '.join(sorted(attrs))}) is damaged ({e!r}): the "
            "file cannot say which backbone it is for; write it again"
        ) from e


def check_record(path: str | Path, backbone: str, label: str) -> WeightsRecord | None:
    """The file's record, when it says the file fits ``model.backbone: backbone`` without
    the classifier; None when it has none. Raises ``WeightsMismatchError`` otherwise."""
    record = read_record(path, label)
    if record is None:
        return None
    if record.format > RECORD_FORMAT:
        raise WeightsMismatchError(
            f"{label}: written by a newer tljob (record format {record.format}; this one "
            f"reads {RECORD_FORMAT}): upgrade tljob"
        )
    if record.backbone != backbone:
        raise WeightsMismatchError(
            f"{label}: this file holds weights for backbone {record.backbone!r} (its tljob "
            f"record says so), but `model.backbone` is {backbone!r}. Weights made for one "
            "network scramble another's features even where the shapes agree: set "
            f"`model.backbone: {record.backbone}`, or give a weights file made for "
            f"{backbone!r}"
        )
    if record.include_top:
        raise WeightsMismatchError(
            f"{label}: this file holds backbone {backbone!r} with its ImageNet classifier "
            "(`tljob weights import --with-top`), which `model.weights` does not take: it "
            "takes no-top files; import the checkpoint again without --with-top"
        )
    return record


def _legacy_layers(f) -> tuple[LayerWeights, ...]:
    layers = []
    for name in (_text(n) for n in f.attrs["layer_names"]):
        group = f[name]
        weight_names = [_text(w) for w in group.attrs.get("weight_names", [])]
        if weight_names:
            shapes = tuple(tuple(group[w].shape) for w in weight_names)
            layers.append(LayerWeights(name, shapes, name))
    return tuple(layers)


def _v3_layers(f) -> tuple[LayerWeights, ...]:
    found: list[LayerWeights] = []

    def visit(name: str, obj) -> None:
        if name.split("/")[-1] == "vars" and hasattr(obj, "keys") and len(obj):
            key = name[: -len("vars")].rstrip("/")
            shapes = tuple(tuple(obj[k].shape) for k in sorted(obj.keys(), key=_rank))
            found.append(LayerWeights(key, shapes))

    f.visititems(visit)
    return tuple(found)


def _rank(key: str) -> tuple[int, str]:
    return (int(key), "") if key.isdigit() else (1 << 30, key)


def file_layout(path: str | Path, label: str) -> FileLayout:
    """The layers ``path`` holds weights for, as Keras would load them."""
    with _open(path, label) as f:
        try:
            if "layer_names" not in f.attrs and "model_weights" in f:
                f = f["model_weights"]  # a whole model saved in the legacy format
            if "layer_names" in f.attrs:
                return FileLayout("legacy_h5", _legacy_layers(f))
            if "vars" in f or "layers" in f:
                return FileLayout("keras_v3", _v3_layers(f))
        except (AttributeError, KeyError, OSError, TypeError, ValueError) as e:
            raise WeightsMismatchError(
                f"{label}: a damaged Keras weights file ({e!r}): write it again"
            ) from e
    raise WeightsMismatchError(
        f"{label}: an HDF5 file, but not of Keras weights (neither the .weights.h5 layout, "
        "layers/<layer>/vars, nor the legacy .h5 one, layer_names): give a file written by "
        "Keras' save_weights or by tljob"
    )


def _auto_number(name: str) -> str:
    # Keras numbers unnamed layers per session ('conv2d_94'); the number is not the layer
    return re.sub(r"_\d+$", "", name)


def _fmt(shapes: Shapes) -> str:
    return "[" + ", ".join(str(s) for s in shapes) + "]"


def layout_mismatch(found: FileLayout, needed: Sequence[LayerWeights]) -> str:
    """The first difference between the layers a file holds and those the backbone needs
    (``needed``: every layer with weights, in model order, keyed as a file of
    ``found.format`` keys it, with its name), in words; "" when the file fits."""
    if found.format == "keras_v3":
        held = {layer.key: layer for layer in found.layers}
        for layer in needed:
            got = held.pop(layer.key, None)
            if got is None:
                return (
                    f"the backbone's layer {layer.name!r} (stored as {layer.key!r}, weights "
                    f"{_fmt(layer.shapes)}) is not in the file"
                )
            if got.shapes != layer.shapes:
                return (
                    f"the backbone's layer {layer.name!r} (stored as {layer.key!r}) has "
                    f"weights {_fmt(layer.shapes)}, the file's {layer.key!r} has "
                    f"{_fmt(got.shapes)}"
                )
        if held:
            extra = sorted(held)
            return (
                f"the file holds weights of {len(extra)} layer(s) the backbone does not have, "
                f"{extra[0]!r} ({_fmt(held[extra[0]].shapes)}) first: a file saved with a "
                "classifier, or from another network"
            )
        return ""
    for i, layer in enumerate(needed):
        if i >= len(found.layers):
            return (
                f"the backbone's layer {layer.name!r} ({_fmt(layer.shapes)}) has no weights "
                f"in the file, which holds {len(found.layers)} layers with weights where the "
                f"backbone has {len(needed)}"
            )
        got = found.layers[i]
        if _auto_number(got.name) != _auto_number(layer.name) or got.shapes != layer.shapes:
            return (
                f"layer {i + 1} with weights of the backbone is {layer.name!r} with "
                f"{_fmt(layer.shapes)}, the file's is {got.name!r} with {_fmt(got.shapes)}"
            )
    if len(found.layers) > len(needed):
        got = found.layers[len(needed)]
        return (
            f"the file holds {len(found.layers)} layers with weights where the backbone has "
            f"{len(needed)}: {got.name!r} ({_fmt(got.shapes)}) and after it are not in the "
            "backbone; a file saved with a classifier, or from another network"
        )
    return ""


def tensors_sha256(path: str | Path) -> str:
    """sha256 over a weights file's arrays (each dataset's path, dtype, shape and bytes, in
    sorted path order): what the weights *are*, where the file's own sha256 also covers
    HDF5's metadata (converting the same checkpoint twice gives files that differ)."""
    import hashlib

    import numpy as np

    digest = hashlib.sha256()
    with _open(path, f"weights file {path}") as f:
        names: list[str] = []
        f.visititems(lambda name, item: names.append(name) if hasattr(item, "dtype") else None)
        for name in sorted(names):
            array = np.ascontiguousarray(f[name][()])
            digest.update(f"{name}|{array.dtype.str}|{array.shape}|".encode())
            digest.update(array.tobytes())
    return digest.hexdigest()
