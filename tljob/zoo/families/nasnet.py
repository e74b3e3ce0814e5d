"""NASNet-A Mobile (Zoph et al. 2018): searched normal and reduction cells."""

from __future__ import annotations

from tljob.zoo.spec import BackboneSpec, WeightFile

# The cells, each ending in a named concatenation: two stem reduction cells, then normal
# cells 0-3, reduction 4, normal 5-8, reduction 8, normal 9-12. A cell reads the outputs of
# the two cells before it, so its first layers are not all downstream of the previous cell;
# each block is marked by the previous cell's end, and takes every layer after it.
_CELL_ENDS = (
    "stem_bn1",
    "reduction_concat_stem_1",
    "reduction_concat_stem_2",
    *(f"normal_concat_{i}" for i in range(4)),
    "reduction_concat_reduce_4",
    *(f"normal_concat_{i}" for i in range(5, 9)),
    "reduction_concat_reduce_8",
    *(f"normal_concat_{i}" for i in range(9, 12)),
)

SPECS = (
    BackboneSpec(
        name="nasnet_mobile",
        family="nasnet",
        keras_module="nasnet",
        keras_class="NASNetMobile",
        default_image_size=224,
        min_image_size=32,
        preprocessing="tf",
        description="NASNet-A Mobile (Zoph et al. 2018), 4.3M backbone parameters.",
        parameters=4_269_716,
        feature_channels=1056,
        activations_per_pixel=551.8,
        blocks=tuple(f">{end}" for end in _CELL_ENDS),
        imagenet=(
            WeightFile(
                "nasnet_mobile_no_top.h5",
                "https://storage.googleapis.com/tensorflow/keras-applications/nasnet/"
                "NASNet-mobile-no-top.h5",
                md5="1ed92395b5b598bdda52abe5c0dbfd63",
            ),
        ),
    ),
)
