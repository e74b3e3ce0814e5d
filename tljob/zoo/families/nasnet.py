"""NASNet-A Mobile (Zoph et al. 2018): searched normal and reduction cells."""

from __future__ import annotations

from tljob.zoo.spec import BackboneSpec, WeightFile

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
        parameters=0,
        feature_channels=1056,
        activations_per_pixel=0.0,
        blocks=(),
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
