"""DenseNet (Huang et al. 2017): dense layers in four dense blocks joined by transitions."""

from __future__ import annotations

from tljob.zoo.spec import BackboneSpec, keras_file

# (depth, dense layers per stage, parameters, feature channels, activations per pixel,
#  md5 of the no-top file from tf_keras.applications.densenet)
_TABLE = (
    (121, (6, 12, 24, 16), 7_037_504, 1024, 995.0, "30ee3e1110167f948a6b9946edeeb738"),
    (169, (6, 12, 32, 32), 12_642_880, 1664, 1197.6, "b8c4d4c20dd625c148057b9ff1c1176b"),
    (201, (6, 12, 48, 32), 18_321_984, 1920, 1540.4, "c13680b51ded0fb44dff2d8f86ac8bb1"),
)

SPECS = tuple(
    BackboneSpec(
        name=f"densenet{depth}",
        family="densenet",
        keras_module="densenet",
        keras_class=f"DenseNet{depth}",
        default_image_size=224,
        min_image_size=32,
        preprocessing="torch",
        description=f"DenseNet-{depth} (Huang et al. 2017), "
        f"{parameters / 1e6:.1f}M backbone parameters.",
        parameters=parameters,
        feature_channels=channels,
        activations_per_pixel=app,
        # a block is one dense layer; the transition after a dense block ends its last one
        blocks=tuple(
            f"conv{stage}_block{i}_"
            for stage, layers in enumerate(stages, start=2)
            for i in range(1, layers + 1)
        ),
        imagenet=(
            keras_file(
                "densenet", f"densenet{depth}_weights_tf_dim_ordering_tf_kernels_notop.h5", md5
            ),
        ),
    )
    for depth, stages, parameters, channels, app, md5 in _TABLE
)
