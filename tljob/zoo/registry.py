"""Backbone registry: which CNNs tljob can fine-tune, as plain data, by name.

Pure: the config schema validates backbone names and image sizes against it without loading
a framework. ``tljob.nn.model`` turns a ``BackboneSpec`` into a Keras model. Each family's
entries are in ``tljob.zoo.families``; ``spec`` defines what an entry is.
"""

from __future__ import annotations

import difflib

from tljob.errors import UserError
from tljob.zoo.families import (
    alexnet,
    convnext,
    densenet,
    efficientnet,
    efficientnet_v2,
    inception,
    mobilenet,
    nasnet,
    resnet,
    vgg,
)
from tljob.zoo.spec import (
    BackboneSpec,
    NoImageNetWeightsError,
    PreprocessingMode,
    WeightFile,
)

__all__ = [
    "BACKBONES",
    "BackboneSpec",
    "NoImageNetWeightsError",
    "PreprocessingMode",
    "UnknownBackboneError",
    "WeightFile",
    "get_backbone",
    "same_layers",
]

BACKBONES: dict[str, BackboneSpec] = {
    spec.name: spec
    for spec in (
        *resnet.SPECS,
        *vgg.SPECS,
        *mobilenet.SPECS,
        *efficientnet.SPECS,
        *efficientnet_v2.SPECS,
        *densenet.SPECS,
        *inception.SPECS,
        *convnext.SPECS,
        *nasnet.SPECS,
        *alexnet.SPECS,
    )
}


class UnknownBackboneError(UserError, ValueError):
    """Raised for a backbone name that is not registered."""


def get_backbone(name: str) -> BackboneSpec:
    """The spec registered under ``name``; an unknown name gets its close matches and the
    hint to ``tljob backbones``."""
    try:
        return BACKBONES[name]
    except KeyError:
        pass
    close = difflib.get_close_matches(str(name).lower(), list(BACKBONES), n=3, cutoff=0.6)
    hint = f"did you mean {' or '.join(repr(c) for c in close)}? " if close else ""
    raise UnknownBackboneError(
        f"unknown backbone {name!r}; {hint}`tljob backbones` lists the "
        f"{len(BACKBONES)} registered backbones"
    ) from None


def same_layers(name: str) -> list[str]:
    """The other registered backbones whose layers and weight shapes are those of ``name``
    (the same parameter count, feature channels and blocks): a weights file fits them all
    alike, so only its tljob record tells which one it was made for."""
    spec = get_backbone(name)
    return [
        other.name
        for other in BACKBONES.values()
        if other.name != name
        and (other.parameters, other.feature_channels, other.blocks)
        == (spec.parameters, spec.feature_channels, spec.blocks)
    ]
