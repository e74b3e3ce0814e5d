"""ResNet (He et al. 2015) and ResNet V2 (He et al. 2016): residual blocks in four stages."""

from __future__ import annotations

from tljob.zoo.spec import BackboneSpec, keras_file

# tf_keras.applications.resnet.WEIGHTS_HASHES: md5 of the no-top files
_MD5 = {
    "resnet50": "4d473c1dd8becc155b73f8504c6f6626",
    "resnet101": "88cf7a10940856eca736dc7b7e228a21",
    "resnet152": "ee4c566cf9a93f14d82f913c2dc6dd0c",
    "resnet50v2": "fac2f116257151a9d068a22e544a4917",
    "resnet101v2": "c0ed64b8031c3730f411d2eb4eea35b5",
    "resnet152v2": "ed17cf2e0169df9d443503ef94b23b33",
}


def residual_blocks(depths: tuple[int, ...]) -> tuple[str, ...]:
    """Block markers 'conv2_block1_' ... of stages conv2.. with ``depths`` blocks each."""
    return tuple(
        f"conv{stage}_block{i}_"
        for stage, depth in enumerate(depths, start=2)
        for i in range(1, depth + 1)
    )


def _resnet(
    name: str,
    cls: str,
    depths: tuple[int, ...],
    parameters: int,
    activations_per_pixel: float,
    v2: bool,
) -> BackboneSpec:
    keras_name = name.replace("_", "")
    return BackboneSpec(
        name=name,
        family="resnet_v2" if v2 else "resnet",
        keras_module="resnet_v2" if v2 else "resnet",
        keras_class=cls,
        default_image_size=224,
        min_image_size=32,
        # ResNet V1 was trained in Caffe's convention, V2 in Inception's ([-1, 1])
        preprocessing="tf" if v2 else "caffe",
        description=f"{cls} (He et al. {2016 if v2 else 2015}), "
        f"{parameters / 1e6:.1f}M backbone parameters.",
        parameters=parameters,
        feature_channels=2048,
        activations_per_pixel=activations_per_pixel,
        blocks=residual_blocks(depths),
        imagenet=(
            keras_file(
                "resnet",
                f"{keras_name}_weights_tf_dim_ordering_tf_kernels_notop.h5",
                md5=_MD5[keras_name],
            ),
        ),
    )


SPECS = (
    _resnet("resnet50", "ResNet50", (3, 4, 6, 3), 23_587_712, 739.7, v2=False),
    _resnet("resnet101", "ResNet101", (3, 4, 23, 3), 42_658_176, 1113.7, v2=False),
    _resnet("resnet152", "ResNet152", (3, 8, 36, 3), 58_370_944, 1575.7, v2=False),
    _resnet("resnet50_v2", "ResNet50V2", (3, 4, 6, 3), 23_564_800, 625.4, v2=True),
    _resnet("resnet101_v2", "ResNet101V2", (3, 4, 23, 3), 42_626_560, 1021.6, v2=True),
    _resnet("resnet152_v2", "ResNet152V2", (3, 8, 36, 3), 58_331_648, 1509.7, v2=True),
)
