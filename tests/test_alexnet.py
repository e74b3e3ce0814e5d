"""AlexNet (tljob's own builder, torchvision's layout): its layer table, smallest input and
padding. (Its tljob model is tested with every other backbone in ``test_zoo.py``.)"""

from __future__ import annotations

import numpy as np
import pytest
import tf_keras

from tljob.nn.alexnet import AlexNet
from tljob.zoo import BACKBONES


def test_alexnet_layer_table_at_224():
    net = AlexNet(input_shape=(224, 224, 3))
    try:
        table = [
            (layer.name, layer.output_shape[1:], layer.count_params())
            for layer in net.layers
            if isinstance(layer, tf_keras.layers.Conv2D | tf_keras.layers.MaxPooling2D)
        ]
        assert table == [
            ("conv1_conv", (55, 55, 64), 11 * 11 * 3 * 64 + 64),
            ("conv1_pool", (27, 27, 64), 0),
            ("conv2_conv", (27, 27, 192), 5 * 5 * 64 * 192 + 192),
            ("conv2_pool", (13, 13, 192), 0),
            ("conv3_conv", (13, 13, 384), 3 * 3 * 192 * 384 + 384),
            ("conv4_conv", (13, 13, 256), 3 * 3 * 384 * 256 + 256),
            ("conv5_conv", (13, 13, 256), 3 * 3 * 256 * 256 + 256),
            ("conv5_pool", (6, 6, 256), 0),
        ]
        # torchvision's alexnet.features: 2,469,696 parameters (6 x 6 x 256 = 9216 features)
        assert net.count_params() == 2_469_696 == BACKBONES["alexnet"].parameters
    finally:
        tf_keras.backend.clear_session()


def test_alexnet_minimum_size_is_the_smallest_with_an_output():
    assert AlexNet(input_shape=(63, 63, 3)).output_shape == (None, 1, 1, 256)
    with pytest.raises(ValueError, match="at least 63x63"):
        AlexNet(input_shape=(62, 62, 3))
    tf_keras.backend.clear_session()


def test_alexnet_pads_like_torchvision():
    # torchvision pads its stride-4 convolution by 2 pixels on every side: a feature of
    # the top-left output pixel sees the image from -2, so with a kernel that only reads
    # its top-left tap, output (0, 0) is the padding (0) and output (0, 1) is pixel (2, 2)
    net = AlexNet(input_shape=(63, 63, 3))
    conv = net.get_layer("conv1_conv")
    kernel = np.zeros(conv.kernel.shape, np.float32)
    kernel[0, 0, 0, 0] = 1.0
    conv.set_weights([kernel, np.zeros(64, np.float32)])
    image = np.arange(63 * 63 * 3, dtype=np.float32).reshape(1, 63, 63, 3)
    out = tf_keras.Model(net.input, conv.output)(image).numpy()
    assert out[0, 0, 0, 0] == 0.0 and out[0, 1, 1, 0] == image[0, 2, 2, 0]
    tf_keras.backend.clear_session()
