"""The serving functions around a tljob model: images in, probabilities and class names out
(TensorFlow, never Ray).

Two entry points, one set of outputs::

    classify_images(images)       uint8 (N, H, W, 3), any H and W: the model as it is; its
                                  first layer (``ResizeImages``) resizes to the trained side
    classify_bytes(image_bytes)   string (N,): each image decoded by TensorFlow (JPEG, PNG,
                                  GIF's first frame, BMP) to RGB and resized by that same
                                  layer, one at a time (sizes differ), then the batch goes
                                  through the model, whose resize then leaves it unchanged
                                  (a bilinear resize to the same size samples every pixel
                                  at its centre). JPEGs decode to Pillow's pixels (the
                                  accurate IDCT) and are turned upright by their EXIF
                                  orientation (``tljob.serving.exif``), as tljob does

    probabilities         float32 (N, C)
    class_names           string (N,): each image's most probable class
    top_k_class_names     string (N, K), K = min(5, C), most probable first
    top_k_probabilities   float32 (N, K), their probabilities

So the served model computes exactly what the ``.keras`` model computes on the same
pixels. The class names are constants of the graph: a client needs no ``labels.json``.
"""

from __future__ import annotations

from collections.abc import Sequence

import tensorflow as tf

from tljob.nn.keras import tf_keras
from tljob.nn.layers import ResizeImages
from tljob.serving import exif

TOP_K = 5
OUTPUTS = ("probabilities", "class_names", "top_k_class_names", "top_k_probabilities")


def resize_layer(model: tf_keras.Model) -> ResizeImages | None:
    """The model's input resize (the layer ``build_model`` puts first), or None."""
    return next((layer for layer in model.layers if isinstance(layer, ResizeImages)), None)


class ServingGraph:
    """``model`` (a tljob model: uint8 images of any size -> probabilities) with its class
    names. ``guard_empty=False`` calls the model's layers without ``ImageClassifier``'s
    empty-batch guard (a ``tf.cond`` whose branches hold the weights), for converters that
    cannot freeze variables inside a conditional (tf2onnx); the numbers are the same."""

    def __init__(
        self, model: tf_keras.Model, class_names: Sequence[str], guard_empty: bool = True
    ) -> None:
        resize = resize_layer(model)
        if resize is None:
            raise ValueError(f"model {model.name!r} has no ResizeImages layer")
        if not guard_empty:
            model = tf_keras.Model(model.inputs, model.outputs, name=model.name)
        self.model = model
        self.resize = resize
        self.image_size = resize.size
        self.class_names = tuple(class_names)
        self.top_k = min(TOP_K, len(self.class_names))

    def outputs(self, probabilities: tf.Tensor) -> dict[str, tf.Tensor]:
        names = tf.constant(self.class_names, dtype=tf.string)
        top = tf.math.top_k(probabilities, k=self.top_k)
        return {
            "probabilities": probabilities,
            "class_names": tf.gather(names, tf.argmax(probabilities, axis=1)),
            "top_k_class_names": tf.gather(names, top.indices),
            "top_k_probabilities": top.values,
        }

    def classify_images(self, images: tf.Tensor) -> dict[str, tf.Tensor]:
        return self.outputs(self.model(images, training=False))

    def decode(self, image_bytes: tf.Tensor) -> tf.Tensor:
        """One encoded image -> uint8 (side, side, 3): decoded to RGB as tljob decodes it
        (``tljob.images.decode_rgb``), then resized by the model's own layer."""
        image = tf.cond(
            tf.io.is_jpeg(image_bytes),
            # TensorFlow's default JPEG IDCT is libjpeg's fast one, up to 7 levels away from
            # Pillow's (what tljob's data preparation uses); the accurate one matches it
            lambda: exif.upright(
                tf.io.decode_jpeg(image_bytes, channels=3, dct_method="INTEGER_ACCURATE"),
                exif.orientation(image_bytes),
            ),
            lambda: tf.io.decode_image(
                image_bytes, channels=3, dtype=tf.uint8, expand_animations=False
            ),
        )
        image.set_shape([None, None, 3])
        return tf.cast(self.resize(image[tf.newaxis])[0], tf.uint8)  # already rounded

    def classify_bytes(self, image_bytes: tf.Tensor) -> dict[str, tf.Tensor]:
        side = self.image_size
        images = tf.map_fn(
            self.decode,
            image_bytes,
            fn_output_signature=tf.TensorSpec([side, side, 3], tf.uint8),
        )
        return self.classify_images(images)

    # --- the functions each format is made from -------------------------------------

    def bytes_function(self) -> tf.types.experimental.GenericFunction:
        spec = tf.TensorSpec([None], tf.string, name="image_bytes")
        return tf.function(self.classify_bytes, input_signature=[spec])

    def images_function(self, fixed_size: bool = False) -> tf.types.experimental.GenericFunction:
        """``classify_images`` for any image size, or (``fixed_size``) for the model's own
        side only, as TFLite and ONNX take it; any batch size either way."""
        side = self.image_size if fixed_size else None
        spec = tf.TensorSpec([None, side, side, 3], tf.uint8, name="images")
        return tf.function(self.classify_images, input_signature=[spec])


def serving_module(graph: ServingGraph) -> tf.Module:
    """A ``tf.Module`` holding the model's variables and both functions: what is saved.

    Only the variables are tracked, not the Keras model, so the SavedModel holds plain
    TensorFlow functions and no Keras metadata: ``tf.saved_model.load`` alone reads it."""
    module = tf.Module(name="tljob_serving")
    module.model_variables = list(graph.model.variables)
    module.classify_bytes = graph.bytes_function()
    module.classify_images = graph.images_function()
    return module
