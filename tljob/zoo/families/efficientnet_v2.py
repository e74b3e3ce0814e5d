"""EfficientNetV2 (Tan & Le 2021): Fused-MBConv then MBConv blocks, six or seven stages."""

from __future__ import annotations

from tljob.zoo.spec import BackboneSpec, keras_file

# (variant, default size, blocks per stage, parameters, feature channels, activations per
#  pixel, md5 of the no-top file from tf_keras.applications.efficientnet_v2)
_TABLE = (
    ("b0", 224, (1, 2, 2, 3, 5, 8), 5_919_312, 1280, 322.2, "893217f2bb855e2983157299931e43ff"),
    ("b1", 240, (2, 3, 3, 4, 6, 9), 6_931_124, 1280, 437.4, "0e80663031ca32d657f9caa404b6ec37"),
    ("b2", 260, (2, 3, 3, 4, 6, 10), 8_769_374, 1408, 500.0, "1dfe2e7a5d45b6632553a8961ea609eb"),
    ("b3", 300, (2, 3, 3, 5, 7, 12), 12_930_622, 1536, 599.9, "f6abf7b5849ac99a89b50dd3fd532856"),
    ("s", 384, (2, 4, 4, 6, 9, 15), 20_331_360, 1280, 835.2, "af0682fb74e8c54910f2d4393339c070"),
    (
        "m",
        480,
        (3, 5, 5, 7, 14, 18, 5),
        53_150_388,
        1280,
        1354.8,
        "1b8dc055df72dde80d614482840fe342",
    ),
    (
        "l",
        480,
        (4, 7, 7, 10, 19, 25, 7),
        117_746_848,
        1280,
        2386.8,
        "b0b66b5c863aef5b46e8608fe1711615",
    ),
)

SPECS = tuple(
    BackboneSpec(
        name=f"efficientnet_v2_{variant}",
        family="efficientnet_v2",
        keras_module="efficientnet_v2",
        keras_class=f"EfficientNetV2{variant.upper()}",
        default_image_size=size,
        min_image_size=32,
        # the application rescales (and for B0-B3 normalises) itself: feed raw [0, 255]
        preprocessing="none",
        description=f"EfficientNetV2-{variant.upper()} (Tan & Le 2021), "
        f"{parameters / 1e6:.1f}M backbone parameters.",
        parameters=parameters,
        feature_channels=channels,
        activations_per_pixel=app,
        blocks=tuple(
            f"block{stage}{chr(ord('a') + j)}_"
            for stage, repeats in enumerate(stages, start=1)
            for j in range(repeats)
        ),
        imagenet=(keras_file("efficientnet_v2", f"efficientnetv2-{variant}_notop.h5", md5=md5),),
    )
    for variant, size, stages, parameters, channels, app, md5 in _TABLE
)
