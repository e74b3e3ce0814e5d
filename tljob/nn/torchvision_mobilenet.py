"""MobileNetV2 as torchvision builds it, in Keras: the network that takes torchvision's
ImageNet weights exactly (registered builder ``mobilenet_v2_torchvision``).

It is ``tf_keras.applications.MobileNetV2`` (alpha 1.0: the same layers, layer names and
weight shapes) with torchvision's two differences:

* every stride-2 convolution pads one pixel on all four sides (PyTorch ``padding=1``),
  where Keras pads only bottom/right (``padding="same"`` or ``correct_pad``), which shifts
  every window by one pixel: here an explicit symmetric ``ZeroPadding2D`` precedes each
  stride-2 convolution, which then runs with ``padding="valid"``;
* BatchNorm epsilon is PyTorch's 1e-5 instead of Keras' 1e-3.

``convert_checkpoint`` writes torchvision's ``.pth`` (read without torch by
``tljob.zoo.convert``) as a Keras weights file of this network, recorded as made for
backbone ``mobilenet_v2_tv``.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from tljob.nn.builders import register
from tljob.nn.keras import tf_keras
from tljob.zoo import WeightsRecord, file_sha256, get_backbone
from tljob.zoo.convert import ConvertedWeights
from tljob.zoo.convert.mobilenet_v2 import (
    BATCHNORM_EPSILON,
    NUM_CLASSES,
    block_strides,
    keras_weights,
)
from tljob.zoo.convert.pth import CheckpointError, read_state_dict
from tljob.zoo.weights_record import write_record

if TYPE_CHECKING:
    import numpy as np

BUILDER_NAME = "mobilenet_v2_torchvision"
layers = tf_keras.layers


def _bn(name: str) -> Any:
    # momentum: Keras MobileNetV2's 0.999 (torchvision trains with 0.9 = PyTorch's 0.1)
    return layers.BatchNormalization(epsilon=BATCHNORM_EPSILON, momentum=0.999, name=name)


def _strided(x: Any, pad_name: str) -> Any:
    """torchvision's padding=1 for a 3x3 stride-2 convolution: one pixel on every side."""
    return layers.ZeroPadding2D(padding=((1, 1), (1, 1)), name=pad_name)(x)


def _inverted_residual(x: Any, expansion: int, filters: int, stride: int, block_id: int) -> Any:
    inputs = x
    in_channels = x.shape[-1]
    prefix = f"block_{block_id}_" if block_id else "expanded_conv_"
    if expansion != 1:
        x = layers.Conv2D(
            expansion * in_channels, 1, padding="same", use_bias=False, name=prefix + "expand"
        )(x)
        x = _bn(prefix + "expand_BN")(x)
        x = layers.ReLU(6.0, name=prefix + "expand_relu")(x)
    if stride == 2:
        x = _strided(x, prefix + "pad")
    x = layers.DepthwiseConv2D(
        3,
        strides=stride,
        use_bias=False,
        padding="same" if stride == 1 else "valid",  # "same" at stride 1: 1 on every side
        name=prefix + "depthwise",
    )(x)
    x = _bn(prefix + "depthwise_BN")(x)
    x = layers.ReLU(6.0, name=prefix + "depthwise_relu")(x)
    x = layers.Conv2D(filters, 1, padding="same", use_bias=False, name=prefix + "project")(x)
    x = _bn(prefix + "project_BN")(x)
    if in_channels == filters and stride == 1:
        return layers.Add(name=prefix + "add")([inputs, x])
    return x


@register(BUILDER_NAME)
def mobilenet_v2_torchvision(
    include_top: bool = False,
    weights: str | None = None,
    input_shape: tuple[int, int, int] = (224, 224, 3),
    classes: int = NUM_CLASSES,
) -> tf_keras.Model:
    """torchvision's MobileNetV2 1.0 in Keras; ``weights``: a Keras weights file of this
    network (``convert_checkpoint``), or None for random initialisation. Takes inputs
    already normalised the torchvision way (``BackbonePreprocess("torch")``)."""
    inputs = tf_keras.Input(shape=input_shape, name="input")
    x = _strided(inputs, "Conv1_pad")
    x = layers.Conv2D(32, 3, strides=2, padding="valid", use_bias=False, name="Conv1")(x)
    x = _bn("bn_Conv1")(x)
    x = layers.ReLU(6.0, name="Conv1_relu")(x)
    for block_id, (expansion, filters, stride) in enumerate(block_strides()):
        x = _inverted_residual(x, expansion, filters, stride, block_id)
    x = layers.Conv2D(1280, 1, use_bias=False, name="Conv_1")(x)
    x = _bn("Conv_1_bn")(x)
    x = layers.ReLU(6.0, name="out_relu")(x)
    if include_top:
        x = layers.GlobalAveragePooling2D(name="global_average_pooling2d")(x)
        x = layers.Dense(classes, activation="softmax", name="predictions")(x)
    model = tf_keras.Model(inputs, x, name="mobilenetv2_1.00_torchvision")
    if weights is not None:
        model.load_weights(weights)
    return model


def convert_checkpoint(
    pth: str | Path,
    out: str | Path,
    backbone: str,
    include_top: bool = False,
    state: dict[str, np.ndarray] | None = None,
) -> tf_keras.Model:
    """Read torchvision's MobileNetV2 ``.pth`` and write it as a Keras weights file of
    ``mobilenet_v2_torchvision`` (``.weights.h5``, or legacy ``.h5``), recording in it
    that it is for the registered ``backbone`` built by that network, whether it holds the
    classifier, and the checkpoint's name and sha256 (``tljob.zoo.weights_record``);
    returns the model. ``state``: the file's tensors when already read
    (``read_state_dict(pth)``).

    Raises ``CheckpointError`` (a ``UserError``) for an unreadable or unsafe file, or one
    of another network."""
    if get_backbone(backbone).builder != BUILDER_NAME:
        raise ValueError(f"backbone {backbone!r} is not built by {BUILDER_NAME}")
    arrays = keras_weights(read_state_dict(pth) if state is None else state, include_top)
    model = mobilenet_v2_torchvision(include_top=include_top, input_shape=(224, 224, 3))
    for name, values in arrays.items():
        layer = model.get_layer(name)
        expected = [tuple(w.shape) for w in layer.weights]
        if expected != [v.shape for v in values]:
            raise CheckpointError(
                f"{pth}: layer {name} needs shapes {expected}, the checkpoint has "
                f"{[v.shape for v in values]}: not torchvision's MobileNetV2 1.0"
            )
        layer.set_weights(values)
    model.save_weights(str(out))
    record = WeightsRecord(backbone, include_top, Path(pth).name, file_sha256(pth))
    write_record(out, record)
    return model


def convert_for(converted: ConvertedWeights, source: Path, out: Path) -> None:
    """The ``convert`` callable of ``tljob.zoo.resolve_weights_file``: the no-top weights."""
    if converted.builder != BUILDER_NAME:
        raise ValueError(f"no converter for builder {converted.builder!r}")
    convert_checkpoint(source, out, converted.backbone, include_top=False)
