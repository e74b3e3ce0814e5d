"""ConvNeXt (Liu et al. 2022): ConvNeXt blocks in four stages, with built-in normalisation."""

from __future__ import annotations

from tljob.zoo.spec import BackboneSpec, keras_file

# sha256 of the no-top files, from tf_keras.applications.convnext.WEIGHTS_HASHES
_SHA256 = {
    "tiny": "d547c096cabd03329d7be5562c5e14798aa39ed24b474157cef5e85ab9e49ef1",
    "small": "6fc8009faa2f00c1c1dfce59feea9b0745eb260a7dd11bee65c8e20843da6eab",
    "base": "40a20c5548a5e9202f69735ecc06c990e6b7c9d2de39f0361e27baeb24cb7c45",
}
# (size, blocks per stage, parameters, feature channels, activations per pixel)
_TABLE = (
    ("tiny", (3, 3, 9, 3), 27_820_128, 768, 616.5),
    ("small", (3, 3, 27, 3), 49_454_688, 768, 994.5),
    ("base", (3, 3, 27, 3), 87_566_464, 1024, 1324.0),
)

SPECS = tuple(
    BackboneSpec(
        name=f"convnext_{size}",
        family="convnext",
        keras_module="convnext",
        keras_class=f"ConvNeXt{size.title()}",
        default_image_size=224,
        min_image_size=32,
        # the application normalises with the ImageNet mean and std itself
        preprocessing="none",
        description=f"ConvNeXt-{size.title()} (Liu et al. 2022), "
        f"{parameters / 1e6:.1f}M backbone parameters.",
        parameters=parameters,
        feature_channels=channels,
        activations_per_pixel=app,
        blocks=tuple(
            f"convnext_{size}_stage_{stage}_block_{i}_"
            for stage, depth in enumerate(depths)
            for i in range(depth)
        ),
        imagenet=(keras_file("convnext", f"convnext_{size}_notop.h5", sha256=_SHA256[size]),),
    )
    for size, depths, parameters, channels, app in _TABLE
)
