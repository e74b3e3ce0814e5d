"""The backbone zoo: which pretrained CNNs tljob fine-tunes, and where their weights come from.

``registry`` holds every backbone by name, as plain data (``spec``: Keras constructor or
builder, sizes, preprocessing convention, ImageNet weight files, block boundaries, the
figures the memory preflight uses), gathered from ``families``; ``weights`` parses
``model.weights`` and turns it into one local file on the driver (Keras cache, verified
download, conversion, ``s3://``); ``weights_record`` reads and writes which backbone a
weights file is for; ``convert`` reads torchvision checkpoints without torch; ``listing``
formats ``tljob backbones``. Pure: imports ``tljob.errors`` (and ``tljob.storage`` for
``s3://`` weights, h5py to read weights files), never Ray or TensorFlow (the Keras side of a
backbone, and of a conversion, is in ``tljob.nn``).
"""

from tljob.zoo.registry import (
    BACKBONES,
    BackboneSpec,
    NoImageNetWeightsError,
    PreprocessingMode,
    UnknownBackboneError,
    WeightFile,
    get_backbone,
    same_layers,
)
from tljob.zoo.weights import (
    WeightsIntegrityError,
    WeightsSource,
    WeightsUnavailableError,
    check_weights_available,
    file_sha256,
    offline_mode,
    resolve_weights_file,
)
from tljob.zoo.weights_record import WeightsMismatchError, WeightsRecord

__all__ = [
    "BACKBONES",
    "BackboneSpec",
    "NoImageNetWeightsError",
    "PreprocessingMode",
    "UnknownBackboneError",
    "WeightsSource",
    "WeightFile",
    "WeightsIntegrityError",
    "WeightsMismatchError",
    "WeightsRecord",
    "WeightsUnavailableError",
    "check_weights_available",
    "file_sha256",
    "get_backbone",
    "offline_mode",
    "resolve_weights_file",
    "same_layers",
]
