"""AlexNet (Krizhevsky et al. 2012), torchvision's single-tower variant (Krizhevsky 2014),
built by ``tljob.nn.alexnet`` from its layer table. No Keras ImageNet weights exist: random
initialisation or a user's weight file."""

from __future__ import annotations

from tljob.zoo.spec import BackboneSpec

SPECS = (
    BackboneSpec(
        name="alexnet",
        family="alexnet",
        keras_module="",
        keras_class="AlexNet",
        builder="alexnet",
        default_image_size=224,
        min_image_size=63,
        # torchvision's ImageNet normalisation, so converted torchvision weights apply
        preprocessing="torch",
        description="AlexNet (Krizhevsky et al. 2012; torchvision's one-tower variant, "
        "Krizhevsky 2014), 2.5M backbone parameters; no Keras ImageNet weights.",
        parameters=2_469_696,
        feature_channels=256,
        activations_per_pixel=27.2,
        blocks=("conv1_", "conv2_", "conv3_", "conv4_", "conv5_"),
    ),
)
