"""Reading a tljob model and writing it in a serving format (TensorFlow, never Ray).

``load_tljob_model`` refuses files that are not tljob models (exit 2). Each writer puts
its format's files into a local folder and returns what the model card says about how to
call it (``serving`` in ``model_card.json``):

* ``savedmodel``: ``saved_model.pb`` + ``variables/``; signatures ``serving_default``
  (encoded image bytes) and ``classify_images`` (uint8 images of any size), both
  returning ``tljob.serving.graph.OUTPUTS``.
* ``tflite``: ``model.tflite``, float32 (of a model trained in mixed precision, a float32
  copy: ``float32_copy``), converted from ``classify_images`` traced at the model's own
  side (TFLite fixes the image size; resize before calling), any batch size; the same
  outputs, class names included.
* ``onnx``: ``model.onnx`` (tf2onnx, opset ``ONNX_OPSET``), from the same function at the
  same fixed side, through the model's layers without the empty-batch guard (tf2onnx
  cannot freeze weights inside a ``tf.cond``); the same outputs.
"""

from __future__ import annotations

import json
import logging
import os
import zipfile
from collections.abc import Callable
from typing import Any

import tensorflow as tf

from tljob.errors import UserError
from tljob.nn import io as keras_io
from tljob.nn.keras import tf_keras
from tljob.nn.model import MODEL_NAME_PREFIX
from tljob.report import clean_reason
from tljob.serving.export import PRIMARY, OnnxUnavailableError
from tljob.serving.graph import OUTPUTS, ServingGraph, resize_layer, serving_module

ONNX_OPSET = 17


class NotATljobModelError(UserError):
    """A ``.keras`` file that is not a model tljob exported."""


def load_tljob_model(local_path: str, uri: str, classes: int) -> tf_keras.Model:
    """The model a run exported (``tljob.nn.io.export_model``) from ``local_path``, a copy
    of ``uri``; ``NotATljobModelError`` naming ``uri`` when Keras cannot read it, when it
    does not start with tljob's resize layer, or when it answers another number of classes
    than ``labels.json`` names (``classes``)."""
    what = f"--model {uri!r} is not a tljob model"
    try:
        model = keras_io.load_exported(local_path)
    except Exception as e:  # a zip of something else, a truncated file, another Keras
        raise NotATljobModelError(
            f"{what}: Keras cannot read it ({clean_reason(f'{type(e).__name__}: {e}')}); "
            "give the model.keras a tljob run exported (<run>/model/model.keras)"
        ) from None
    if resize_layer(model) is None or len(model.outputs) != 1:
        raise NotATljobModelError(
            f"{what}: it does not take images through tljob's ResizeImages layer to one "
            "output of class probabilities, as every model a tljob run exports does; give "
            "the model.keras a tljob run exported (<run>/model/model.keras)"
        )
    if tuple(model.output_shape) != (None, classes):
        raise NotATljobModelError(
            f"--model {uri!r}: the model answers output shape {tuple(model.output_shape)}, "
            f"but labels.json names {classes} classes; give the labels.json of the run "
            "that trained this model"
        )
    return model


FLOAT32_ONLY = ("tflite", "onnx")  # no bfloat16 / float16 kernels to convert to


def mixed_policy(model: tf_keras.Model) -> str | None:
    """The mixed-precision policy the model's layers compute in (``train.precision``
    other than float32 is saved with every layer), or None."""
    layers = [model, *(m for m in model.submodules if isinstance(m, tf_keras.layers.Layer))]
    mixed = sorted({n for layer in layers if (n := layer.dtype_policy.name).startswith("mixed_")})
    return mixed[0] if mixed else None


def float32_copy(local_path: str, folder: str) -> str:
    """A copy of the ``.keras`` file in ``folder`` whose layers compute in float32, with the
    same weights (variables are float32 under any policy). TFLite has no bfloat16 kernels
    for most layers, and tf2onnx turns a mixed-precision graph into an ONNX file that
    mixes float16 and bfloat16 and does not load."""

    def float32(tree: Any) -> Any:
        if isinstance(tree, dict):
            policy = tree.get("class_name") in ("Policy", "DTypePolicy")
            if policy and str(tree.get("config", {}).get("name", "")).startswith("mixed_"):
                return "float32"
            return {key: float32(value) for key, value in tree.items()}
        if isinstance(tree, list):
            return [float32(value) for value in tree]
        return tree

    copy = os.path.join(folder, "float32.keras")
    with zipfile.ZipFile(local_path) as src, zipfile.ZipFile(copy, "w") as dst:
        for item in src.infolist():
            data = src.read(item.filename)
            if item.filename == "config.json":
                data = json.dumps(float32(json.loads(data))).encode()
            dst.writestr(item, data)
    return copy


def _signature(inputs: dict[str, tuple[str, list[Any]]], graph: ServingGraph) -> dict:
    """A signature's inputs and outputs, ``{name: {"dtype", "shape"}}`` (None: any size)."""
    k, c = graph.top_k, len(graph.class_names)
    outputs = {
        "probabilities": ("float32", [None, c]),
        "class_names": ("string", [None]),
        "top_k_class_names": ("string", [None, k]),
        "top_k_probabilities": ("float32", [None, k]),
    }
    assert tuple(outputs) == OUTPUTS

    def described(tensors: dict[str, tuple[str, list[Any]]]) -> dict[str, Any]:
        return {name: {"dtype": dtype, "shape": shape} for name, (dtype, shape) in tensors.items()}

    return {"inputs": described(inputs), "outputs": described(outputs)}


def write_savedmodel(graph: ServingGraph, folder: str) -> dict[str, Any]:
    module = serving_module(graph)
    signatures = {
        "serving_default": module.classify_bytes.get_concrete_function(),
        "classify_images": module.classify_images.get_concrete_function(),
    }
    tf.saved_model.save(module, folder, signatures=signatures)
    return {
        "signatures": {
            "serving_default": _signature({"image_bytes": ("string", [None])}, graph),
            "classify_images": _signature({"images": ("uint8", [None, None, None, 3])}, graph),
        }
    }


def _fixed_size_signature(graph: ServingGraph) -> dict[str, Any]:
    side = graph.image_size
    return {
        "signatures": {
            "serving_default": _signature({"images": ("uint8", [None, side, side, 3])}, graph)
        },
        "note": f"images must be {side}x{side}: resize them first as tljob does (bilinear, "
        "half-pixel centres, rounded to uint8) or use the SavedModel, which takes any size",
    }


def write_tflite(graph: ServingGraph, folder: str) -> dict[str, Any]:
    module = serving_module(graph)  # keeps the variables alive for the converter
    function = graph.images_function(fixed_size=True).get_concrete_function()
    converter = tf.lite.TFLiteConverter.from_concrete_functions([function], module)
    flatbuffer = converter.convert()
    with open(os.path.join(folder, PRIMARY["tflite"]), "wb") as f:
        f.write(flatbuffer)
    return _fixed_size_signature(graph)


def write_onnx(graph: ServingGraph, folder: str) -> dict[str, Any]:
    try:
        import tf2onnx  # the `onnx` extra
    except ImportError as e:  # installed but broken (export checked it is there)
        raise OnnxUnavailableError(f"tf2onnx ({clean_reason(str(e))})") from None
    logging.getLogger("tf2onnx").setLevel(logging.ERROR)  # it logs every pass at INFO
    unguarded = ServingGraph(graph.model, graph.class_names, guard_empty=False)
    function = unguarded.images_function(fixed_size=True)
    tf2onnx.convert.from_function(
        function,
        input_signature=function.input_signature,
        opset=ONNX_OPSET,
        output_path=os.path.join(folder, PRIMARY["onnx"]),
    )
    return {**_fixed_size_signature(graph), "opset": ONNX_OPSET}


def describe(model: tf_keras.Model, trained_precision: str | None) -> dict[str, Any]:
    """The model card's ``model``: the backbone (``build_model`` names the model after it),
    the input side the model resizes to, the precision the ``.keras`` model computes in
    (``trained_precision``: its mixed policy, or None for float32) and the one this export
    computes in (``model``'s)."""
    backbone = model.name.removeprefix(MODEL_NAME_PREFIX)
    return {
        "backbone": backbone,
        "image_size": resize_layer(model).size,
        "precision": trained_precision or "float32",
        "exported_precision": mixed_policy(model) or "float32",
    }


WRITERS: dict[str, Callable[[ServingGraph, str], dict[str, Any]]] = {
    "savedmodel": write_savedmodel,
    "tflite": write_tflite,
    "onnx": write_onnx,
}
