"""The Keras side of tljob: layers, model building, callbacks and model I/O.

``keras`` is the one module that imports ``tf_keras``; ``layers`` (the custom layers,
registered for loading), ``model`` (build, freeze, compile), ``callbacks`` and ``io`` (plain
copy, weight files, export/load) use it. The package imports TensorFlow and may import
``tljob.config`` and ``tljob.zoo``; never Ray (the workers in ``tljob.run`` bridge the two).
Importing it registers the layers, so ``tljob.nn.load_exported`` reads a saved model.
"""

from tljob.nn.io import export_model, load_exported, predict_probabilities
from tljob.nn.layers import BackbonePreprocess, ResizeImages

__all__ = [
    "BackbonePreprocess",
    "ResizeImages",
    "export_model",
    "load_exported",
    "predict_probabilities",
]
