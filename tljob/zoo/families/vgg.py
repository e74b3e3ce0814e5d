"""VGG (Simonyan & Zisserman 2014): five blocks of 3x3 convolutions, each ending in a pool."""

from __future__ import annotations

from tljob.zoo.spec import BackboneSpec, keras_file


def _vgg(name: str, cls: str, parameters: int, activations_per_pixel: float, md5: str):
    return BackboneSpec(
        name=name,
        family="vgg",
        keras_module=name,
        keras_class=cls,
        default_image_size=224,
        min_image_size=32,
        preprocessing="caffe",
        description=f"{cls} (Simonyan & Zisserman 2014), "
        f"{parameters / 1e6:.1f}M backbone parameters.",
        parameters=parameters,
        feature_channels=512,
        activations_per_pixel=activations_per_pixel,
        blocks=tuple(f"block{i}_" for i in range(1, 6)),
        imagenet=(
            keras_file(name, f"{name}_weights_tf_dim_ordering_tf_kernels_notop.h5", md5=md5),
        ),
    )


SPECS = (
    _vgg("vgg16", "VGG16", 14_714_688, 303.5, "6d6bbae143d832006294945121d1f1fc"),
    _vgg("vgg19", "VGG19", 20_024_384, 329.5, "253f8cb515780f3b799900260a226db6"),
)
