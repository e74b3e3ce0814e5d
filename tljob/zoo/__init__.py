"""The backbone zoo: which pretrained CNNs tljob fine-tunes, and where their weights come from.

``registry`` holds every backbone by name, as plain data (``spec``: Keras constructor or
builder, sizes, preprocessing convention, ImageNet weight files, block boundaries, the
figures the memory preflight uses), gathered from ``families``; ``weights`` parses
``model.weights`` and finds the local file; ``listing`` formats ``tljob backbones``. Pure:
may import ``tljob.errors`` only, never Ray or TensorFlow (the Keras side of a backbone is
built in ``tljob.nn``).
"""

from tljob.zoo.registry import (
    BACKBONES,
    BackboneSpec,
    NoImageNetWeightsError,
    PreprocessingMode,
    UnknownBackboneError,
    WeightFile,
    get_backbone,
)
from tljob.zoo.weights import WeightsSource, WeightsUnavailableError, resolve_weights_file

__all__ = [
    "BACKBONES",
    "BackboneSpec",
    "NoImageNetWeightsError",
    "PreprocessingMode",
    "UnknownBackboneError",
    "WeightsSource",
    "WeightFile",
    "WeightsUnavailableError",
    "get_backbone",
    "resolve_weights_file",
]
