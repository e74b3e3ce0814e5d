"""Export a trained model for serving without tljob: ``tljob export``.

A run's ``model/model.keras`` loads only where tljob (and tf_keras) is installed and
answers class indices. ``tljob export`` turns it into formats any TensorFlow, TFLite or
ONNX runtime loads, with the class names inside the model and a model card beside it::

    locate.py    RUN_DIR or MODEL_URI -> the model, labels.json, summary.json and
                 config.yaml as a run lays them out (exit 2 naming what is missing)   pure
    card.py      model_card.json / model_card.md from the run's files                 pure
    publish.py   a finished export appears whole at --out or not at all               pure
    export.py    the steps in order (TF imported once the inputs are checked)         pure
    graph.py     the serving functions: bytes or uint8 images -> probabilities and
                 class names, through the model's own resize layer                    TF
    exif.py      a JPEG's EXIF orientation, read and applied in the graph             TF
    formats.py   savedmodel, tflite, onnx writers; loading and checking the model     TF

The package never imports Ray.
"""
