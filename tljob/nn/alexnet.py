"""AlexNet, built from its published layer table, as a no-top Keras backbone.

The variant is torchvision's ``alexnet`` (Krizhevsky, "One weird trick for parallelizing
convolutional neural networks", 2014): the single-tower form of Krizhevsky, Sutskever &
Hinton (2012) with 64/192/384/256/256 filters and no local response normalisation, the one
whose ImageNet weights are published (by torchvision, not Keras). Its five convolutions,
with torchvision's symmetric padding made explicit (stride-4 11x11: 2 pixels each side;
the stride-1 convolutions: "same"), so converted torchvision weights compute exactly what
they compute there:

    block  layer   kernel / stride / pad   filters  output at 224 px   parameters
    conv1  conv    11x11 / 4 / 2           64       55 x 55 x 64           23,296
           pool    3x3 max / 2                      27 x 27 x 64
    conv2  conv    5x5 / 1 / 2             192      27 x 27 x 192         307,392
           pool    3x3 max / 2                      13 x 13 x 192
    conv3  conv    3x3 / 1 / 1             384      13 x 13 x 384         663,936
    conv4  conv    3x3 / 1 / 1             256      13 x 13 x 256         884,992
    conv5  conv    3x3 / 1 / 1             256      13 x 13 x 256         590,080
           pool    3x3 max / 2                       6 x  6 x 256
                                                                total  2,469,696

Every convolution is followed by a ReLU. The classifier (dropout, 9216-4096-4096-1000) is
the head tljob replaces, so it is not built. The smallest input with a 1x1 output is 63 px.
Input: float pixels normalised with torchvision's ImageNet mean and std ("torch").
"""

from __future__ import annotations

from typing import Any

from tljob.nn.builders import register
from tljob.nn.keras import tf_keras

# (block, filters, kernel, stride, symmetric padding, followed by a 3x3/2 max pool)
LAYER_TABLE: tuple[tuple[str, int, int, int, int, bool], ...] = (
    ("conv1", 64, 11, 4, 2, True),
    ("conv2", 192, 5, 1, 2, True),
    ("conv3", 384, 3, 1, 1, False),
    ("conv4", 256, 3, 1, 1, False),
    ("conv5", 256, 3, 1, 1, True),
)
MIN_IMAGE_SIZE = 63


@register("alexnet")
def AlexNet(  # noqa: N802 (named like the Keras applications it stands beside)
    include_top: bool = False,
    weights: str | None = None,
    input_shape: tuple[int, int, int] = (224, 224, 3),
    **kwargs: Any,
) -> tf_keras.Model:
    """The AlexNet feature extractor (no classifier): a 6x6x256 map at 224 px."""
    if include_top:
        raise ValueError("tljob's AlexNet is a backbone: include_top must be False")
    if kwargs:
        raise TypeError(f"unexpected arguments: {', '.join(sorted(kwargs))}")
    if min(input_shape[:2]) < MIN_IMAGE_SIZE:
        raise ValueError(f"AlexNet needs inputs of at least {MIN_IMAGE_SIZE}x{MIN_IMAGE_SIZE}")
    layers = tf_keras.layers
    inputs = tf_keras.Input(shape=input_shape, name="input")
    x = inputs
    for block, filters, kernel, stride, pad, pool in LAYER_TABLE:
        if stride > 1:
            x = layers.ZeroPadding2D(pad, name=f"{block}_pad")(x)
        x = layers.Conv2D(
            filters,
            kernel,
            strides=stride,
            padding="valid" if stride > 1 else "same",
            name=f"{block}_conv",
        )(x)
        x = layers.ReLU(name=f"{block}_relu")(x)
        if pool:
            x = layers.MaxPooling2D(3, strides=2, name=f"{block}_pool")(x)
    model = tf_keras.Model(inputs, x, name="alexnet")
    if weights is not None:
        model.load_weights(weights)
    return model
