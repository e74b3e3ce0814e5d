"""The Inception family: InceptionV3 (Szegedy et al. 2016), Inception-ResNet-v2 (Szegedy et
al. 2017) and Xception (Chollet 2017). Their inner layers have session-dependent generated
names (conv2d_57), so Inception blocks are marked by the named layer that ends the block
before ('>mixed9')."""

from __future__ import annotations

from tljob.zoo.spec import BackboneSpec, keras_file

# InceptionV3: modules mixed0 .. mixed10; mixed0 has no named first layer, so it counts
# with the stem and the blocks are mixed1 .. mixed10.
_INCEPTION_V3_BLOCKS = tuple(f">mixed{i}" for i in range(10))

# Inception-ResNet-v2: after the stem's mixed_5b, 10 x block35, reduction mixed_6a,
# 20 x block17, reduction mixed_7a, 10 x block8 (the last one without its activation,
# followed by conv_7b); each block starts after the previous one's named end.
_IRV2_ENDS = (
    "mixed_5b",
    *(f"block35_{i}_ac" for i in range(1, 11)),
    "mixed_6a",
    *(f"block17_{i}_ac" for i in range(1, 21)),
    "mixed_7a",
    *(f"block8_{i}_ac" for i in range(1, 10)),
)

SPECS = (
    BackboneSpec(
        name="inception_v3",
        family="inception",
        keras_module="inception_v3",
        keras_class="InceptionV3",
        default_image_size=299,
        min_image_size=75,
        preprocessing="tf",
        description="Inception-v3 (Szegedy et al. 2016), 21.8M backbone parameters.",
        parameters=21_802_784,
        feature_channels=2048,
        activations_per_pixel=364.1,
        blocks=_INCEPTION_V3_BLOCKS,
        imagenet=(
            keras_file(
                "inception_v3",
                "inception_v3_weights_tf_dim_ordering_tf_kernels_notop.h5",
                md5="bcbd6486424b2319ff4ef7d526e38f63",
            ),
        ),
    ),
    BackboneSpec(
        name="inception_resnet_v2",
        family="inception",
        keras_module="inception_resnet_v2",
        keras_class="InceptionResNetV2",
        default_image_size=299,
        min_image_size=75,
        preprocessing="tf",
        description="Inception-ResNet-v2 (Szegedy et al. 2017), 54.3M backbone parameters.",
        parameters=54_336_736,
        feature_channels=1536,
        activations_per_pixel=908.3,
        blocks=tuple(f">{end}" for end in _IRV2_ENDS),
        imagenet=(
            keras_file(
                "inception_resnet_v2",
                "inception_resnet_v2_weights_tf_dim_ordering_tf_kernels_notop.h5",
                md5="d19885ff4a710c122648d3b5c3b684e4",
            ),
        ),
    ),
    BackboneSpec(
        name="xception",
        family="inception",
        keras_module="xception",
        keras_class="Xception",
        default_image_size=299,
        min_image_size=71,
        preprocessing="tf",
        description="Xception (Chollet 2017), 20.9M backbone parameters.",
        parameters=20_861_480,
        feature_channels=2048,
        activations_per_pixel=704.5,
        # block1 is the stem's two convolutions; blocks 2-4 entry, 5-12 middle, 13-14 exit
        blocks=tuple(f"block{i}_" for i in range(1, 15)),
        imagenet=(
            keras_file(
                "xception",
                "xception_weights_tf_dim_ordering_tf_kernels_notop.h5",
                md5="b0042744bf5b25fce3cb969f33bebb97",
            ),
        ),
    ),
)
