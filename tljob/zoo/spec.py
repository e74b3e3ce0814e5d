"""What a registry entry is: ``BackboneSpec`` and the ``WeightFile`` s it names. Pure data;
the entries live by family in ``tljob.zoo.families``, gathered in ``tljob.zoo.registry``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from tljob.errors import UserError

PreprocessingMode = Literal["caffe", "tf", "torch", "none"]

KERAS_WEIGHTS_URL = "https://storage.googleapis.com/tensorflow/keras-applications/"


@dataclass(frozen=True)
class WeightFile:
    """One published weights file: the name Keras caches it under (in
    ``<KERAS_HOME>/models``), where it is published, and the hash its publisher gives, in
    the algorithm they give it: ``sha256``, or ``md5`` (most ``tf_keras.applications``
    files); both empty when none is published (MobileNetV2's)."""

    name: str
    url: str
    sha256: str = ""
    md5: str = ""

    @property
    def hash_algorithm(self) -> Literal["sha256", "md5", ""]:
        """The algorithm of the published hash ("" when none is published)."""
        return "sha256" if self.sha256 else "md5" if self.md5 else ""

    @property
    def published_hash(self) -> str:
        """The published hex digest, in ``hash_algorithm`` ("" when none is published)."""
        return self.sha256 or self.md5


def keras_file(folder: str, name: str, md5: str = "", sha256: str = "") -> WeightFile:
    """A file of Keras' applications bucket, ``<KERAS_WEIGHTS_URL><folder>/<name>``."""
    return WeightFile(name, f"{KERAS_WEIGHTS_URL}{folder}/{name}", sha256=sha256, md5=md5)


class NoImageNetWeightsError(UserError, ValueError):
    """The backbone has no published ImageNet weights (AlexNet): random init or a file."""


@dataclass(frozen=True)
class BackboneSpec:
    """One registered backbone.

    ``keras_module``/``keras_class`` name the constructor in ``tf_keras.applications``;
    ``builder``, when set, names instead a function of ``tljob.nn.builders.BUILDERS``
    (networks that are not Keras applications, e.g. AlexNet, or a Keras application built
    differently to take converted weights);
    ``preprocessing`` is the ImageNet input convention its weights were trained with, equal
    to the Keras application's own ``preprocess_input`` (applied inside the model, on float
    pixels in [0, 255]; "none" where the application has it built in);
    ``min_image_size`` is the smallest input side the architecture accepts.

    Sizes, for the preflight memory estimate (``tljob.preflight``), measured on the real
    no-top Keras model by ``benchmarks/measure_backbones.py`` and checked against it by the
    tests: ``parameters`` (all weights, trainable or not), ``feature_channels`` (channels of
    the last feature map, the input of the head), and ``activations_per_pixel``: the sum
    over the backbone's layers of their output elements for one image (the input image's 3
    channels included), divided by the pixels of that image (side x side), measured at
    ``default_image_size``. It is nearly constant in the side, so one image's activations
    at side ``s`` are about ``activations_per_pixel * s * s`` float32 values.

    ``family`` groups the listing. ``imagenet`` holds the published no-top ImageNet
    weights; when there are several, ``imagenet_sizes`` gives the input side each was
    trained at (same order), and other sides use the file of ``default_image_size``.

    ``blocks`` names where each block of the backbone starts, first to last, for
    ``trainable: top_blocks:K``. A marker is either a layer-name prefix (the block starts
    at the first layer whose name starts with it: 'conv5_block3_', 'block7a_') or
    ``'>name'`` (the block starts right after the layer ``name``: Inception's 'mixed9').
    A block runs up to the next block's start; the last one includes the layers after it
    (the final 1x1 convolution and normalisation of the feature map).
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
    family: str = ""
    blocks: tuple[str, ...] = ()
    imagenet: tuple[WeightFile, ...] = ()
    imagenet_sizes: tuple[int, ...] = ()

    def imagenet_weights(self, image_size: int) -> WeightFile:
        """The published no-top ImageNet weights file for ``image_size``."""
        if not self.imagenet:
            raise NoImageNetWeightsError(
                f"`model.weights` ('imagenet'): backbone {self.name!r} has no published "
                "ImageNet weights; set `model.weights` to 'none' (random initialisation) "
                "or to a .h5 / .weights.h5 weights file"
            )
        if not self.imagenet_sizes:
            return self.imagenet[0]
        sizes = list(self.imagenet_sizes)
        wanted = image_size if image_size in sizes else self.default_image_size
        return self.imagenet[sizes.index(wanted)]

    def imagenet_weights_file(self, image_size: int) -> str:
        """File name Keras caches the ImageNet no-top weights under, in ``<KERAS_HOME>/models``."""
        return self.imagenet_weights(image_size).name
