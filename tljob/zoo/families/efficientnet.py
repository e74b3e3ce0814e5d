"""EfficientNet B0-B7 (Tan & Le 2019): MBConv blocks in seven stages, depth scaled per model."""

from __future__ import annotations

import math

from tljob.zoo.spec import BackboneSpec, WeightFile

# EfficientNet's files are outside the bucket's keras-applications/ folder of the others
_URL = "https://storage.googleapis.com/keras-applications/"
_BASE_REPEATS = (1, 2, 2, 3, 3, 4, 1)  # blocks per stage of B0


def mbconv_blocks(depth_coefficient: float) -> tuple[str, ...]:
    """Block markers 'block1a_', 'block2a_', 'block2b_', ... of the scaled network."""
    return tuple(
        f"block{stage}{chr(ord('a') + j)}_"
        for stage, repeats in enumerate(_BASE_REPEATS, start=1)
        for j in range(math.ceil(depth_coefficient * repeats))
    )


# (variant, default size, depth coefficient, parameters, feature channels,
#  activations per pixel, md5 of the no-top file from tf_keras' WEIGHTS_HASHES)
_TABLE = (
    ("b0", 224, 1.0, 4_049_571, 1280, 500.5, "50bc09e76180e00e4465e1a485ddc09d"),
    ("b1", 240, 1.1, 6_575_239, 1280, 697.0, "74c4e6b3e1f6a1eea24c589628592432"),
    ("b2", 260, 1.2, 7_768_569, 1408, 753.0, "111f8e2ac8aa800a7a99e3239f7bfb39"),
    ("b3", 300, 1.4, 10_783_535, 1536, 972.3, "af6d107764bb5b1abb91932881670226"),
    ("b4", 380, 1.8, 17_673_823, 1792, 1247.1, "ebc24e6d6c33eaebbd558eafbeedf1ba"),
    ("b5", 456, 2.2, 28_513_527, 2048, 1723.1, "38879255a25d3c92d5e44e04ae6cec6f"),
    ("b6", 528, 2.6, 40_960_143, 2304, 2172.5, "9ecce42647a20130c1f39a5d4cb75743"),
    ("b7", 600, 3.1, 64_097_687, 2560, 2905.9, "cbcfe4450ddf6f3ad90b1b398090fe4a"),
)

SPECS = tuple(
    BackboneSpec(
        name=f"efficientnet_{variant}",
        family="efficientnet",
        keras_module="efficientnet",
        keras_class=f"EfficientNet{variant.upper()}",
        default_image_size=size,
        min_image_size=32,
        # EfficientNet carries its own Rescaling/Normalization layers: feed raw [0, 255].
        preprocessing="none",
        description=f"EfficientNet-{variant.upper()} (Tan & Le 2019), "
        f"{parameters / 1e6:.1f}M backbone parameters.",
        parameters=parameters,
        feature_channels=channels,
        activations_per_pixel=app,
        blocks=mbconv_blocks(depth),
        imagenet=(
            WeightFile(
                f"efficientnet{variant}_notop.h5",
                f"{_URL}efficientnet{variant}_notop.h5",
                md5=md5,
            ),
        ),
    )
    for variant, size, depth, parameters, channels, app, md5 in _TABLE
)
