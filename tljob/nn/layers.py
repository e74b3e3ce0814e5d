"""tljob's own Keras layers, registered for loading: the serving-side resize that matches the
data pipeline pixel for pixel, the backbones' ImageNet input conventions, and the model class
that lets a batch of no images through."""

from __future__ import annotations

from typing import Any

import tensorflow as tf

from tljob.nn.keras import tf_keras
from tljob.zoo import PreprocessingMode


@tf_keras.saving.register_keras_serializable(package="tljob")
class ResizeImages(tf_keras.layers.Layer):
    """Bilinear resize (half-pixel centres) to ``size`` x ``size``, rounded to whole pixels.

    Rounding reproduces the uint8 images the data pipeline feeds during training, so a
    client sending images of any size gets exactly the pixels training used.
    """

    def __init__(self, size: int, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.size = int(size)

    def call(self, images: tf.Tensor) -> tf.Tensor:
        x = tf.image.resize(tf.cast(images, tf.float32), (self.size, self.size), "bilinear")
        return tf.clip_by_value(tf.round(x), 0.0, 255.0)

    def compute_output_shape(self, input_shape: Any) -> tuple:
        return (input_shape[0], self.size, self.size, input_shape[-1])

    def get_config(self) -> dict[str, Any]:
        return {**super().get_config(), "size": self.size}


_CAFFE_BGR_MEAN = (103.939, 116.779, 123.68)
_TORCH_MEAN = (0.485, 0.456, 0.406)
_TORCH_STD = (0.229, 0.224, 0.225)


@tf_keras.saving.register_keras_serializable(package="tljob")
class BackbonePreprocess(tf_keras.layers.Layer):
    """ImageNet input conventions on float pixels in [0, 255].

    caffe: RGB->BGR, minus the ImageNet BGR mean; tf: scaled to [-1, 1];
    torch: [0, 1] then per-channel ImageNet mean/std; none: unchanged.
    """

    def __init__(self, mode: PreprocessingMode, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        if mode not in ("caffe", "tf", "torch", "none"):
            raise ValueError(f"unknown preprocessing mode {mode!r}")
        self.mode = mode

    def call(self, x: tf.Tensor) -> tf.Tensor:
        if self.mode == "caffe":
            return x[..., ::-1] - tf.constant(_CAFFE_BGR_MEAN, dtype=x.dtype)
        if self.mode == "tf":
            return x / 127.5 - 1.0
        if self.mode == "torch":
            mean = tf.constant(_TORCH_MEAN, dtype=x.dtype)
            std = tf.constant(_TORCH_STD, dtype=x.dtype)
            return (x / 255.0 - mean) / std
        return x

    def get_config(self) -> dict[str, Any]:
        return {**super().get_config(), "mode": self.mode}


@tf_keras.saving.register_keras_serializable(package="tljob")
class RandomBrightnessScale(tf_keras.__internal__.layers.BaseRandomLayer):
    """Training only: each image's pixels times a factor drawn from [lower, upper], clipped
    to [0, 255]: ImageDataGenerator's ``brightness_range`` (PIL's brightness enhancer
    blends with black, i.e. multiplies). Keras' ``RandomBrightness`` adds an offset instead.
    At inference the input passes unchanged."""

    def __init__(self, lower: float, upper: float, seed: int | None = None, **kwargs: Any):
        super().__init__(seed=seed, force_generator=True, **kwargs)
        if not 0.0 <= lower <= upper:
            raise ValueError(f"brightness factors [{lower}, {upper}] must be 0 <= lower <= upper")
        self.lower, self.upper, self.seed = float(lower), float(upper), seed

    def call(self, images: tf.Tensor, training: bool = True) -> tf.Tensor:
        images = tf.cast(images, self.compute_dtype)
        if not training:
            return images
        factors = self._random_generator.random_uniform(
            shape=[tf.shape(images)[0], 1, 1, 1],
            minval=self.lower,
            maxval=self.upper,
            dtype=images.dtype,
        )
        return tf.clip_by_value(images * factors, 0.0, 255.0)

    def compute_output_shape(self, input_shape: Any) -> Any:
        return input_shape

    def get_config(self) -> dict[str, Any]:
        return {**super().get_config(), "lower": self.lower, "upper": self.upper, "seed": self.seed}


@tf_keras.saving.register_keras_serializable(package="tljob")
class ImageClassifier(tf_keras.Model):
    """tljob's functional model (``tljob.nn.model.build_model``): images in, class
    probabilities out. A batch of no images gets its empty output, (0, classes), without
    running any layer; any other batch runs through them unchanged.

    Why: oneDNN's convolutions (TensorFlow 2.21 on CPU) give a 0-row batch the *input's*
    shape, not the output's, so the next layer fails ("input depth must be evenly divisible
    by filter depth: 3 vs 32"); every backbone has such convolutions. A 0-row batch is
    normal under a distribution strategy: Keras splits each worker's last, short validation
    batch across the replicas, and a batch of 1 row over 2 replicas leaves one of them
    nothing. (The guard wraps the whole model, not the backbone, so that every layer keeps
    its place in weight files: checkpoints of earlier runs still load.)
    """

    def call(self, inputs: Any, training: Any = None, mask: Any = None) -> tf.Tensor:
        (outputs,) = self.outputs
        if not outputs.shape[1:].is_fully_defined():
            raise ValueError(f"{self.name}: output shape {outputs.shape} is not fixed")
        empty = (0, *outputs.shape[1:])
        run_layers = super().call  # (zero-argument super() does not work inside a lambda)
        return tf.cond(
            tf.shape(inputs)[0] > 0,
            lambda: run_layers(inputs, training=training, mask=mask),
            lambda: tf.zeros(empty, dtype=outputs.dtype),
        )
