"""The model and run directory the ``tljob export`` tests share, and how they call what
an export wrote (tests/test_export*.py).

The model: AlexNet at its smallest side (63 px; 15 layers, so saving and converting it
take a second, where mobilenet_v2 takes ten) with random weights, made to tell
scikit-learn's digits 0, 1 and 2 apart without a training loop (a training step costs
seconds of tracing): its classifier is the ridge regression of the class on the pooled
random features. ``make_run`` exports it with ``tljob.nn.io.export_model`` into a run
directory with the labels.json, summary.json and config.yaml a run writes.
"""

from __future__ import annotations

import io
import json
import warnings
from pathlib import Path

import numpy as np
import tensorflow as tf
from PIL import Image

from tljob.cli import main
from tljob.config import load_config
from tljob.config.load import dump_config
from tljob.nn import io as nn_io
from tljob.nn import model as nn_model
from tljob.nn.keras import tf_keras
from tljob.run.ledger import EpochRow, run_summary

SIDE = 63  # AlexNet's min_image_size
CLASSES = ("digit_0", "digit_1", "digit_2")
TRAIN = 90  # the first 90 digits of classes 0-2 fit the model; the rest test it


def digits(scale: int) -> tuple[np.ndarray, np.ndarray]:
    """Every digit 0, 1 or 2 of scikit-learn's set as RGB uint8 (8 * scale px), labels."""
    from sklearn.datasets import load_digits

    data = load_digits()
    keep = np.flatnonzero(data.target < len(CLASSES))
    grey = (data.images[keep] * (255 / 16)).astype(np.uint8)
    grey = np.kron(grey, np.ones((scale, scale), dtype=np.uint8))
    return np.repeat(grey[..., None], 3, axis=3), data.target[keep]


def fit_without_training(model: tf_keras.Model, images: np.ndarray, labels: np.ndarray) -> None:
    """The classifier as the ridge regression of +-3 class targets on the pooled features
    (AlexNet has no BatchNorm: its random features need no statistics)."""
    layers = nn_model.backbone_of(model).layers
    assert not any(isinstance(layer, tf_keras.layers.BatchNormalization) for layer in layers)
    pooled = tf_keras.Model(model.inputs, model.get_layer("pool").output)
    features = pooled.predict_on_batch(images)
    a = np.hstack([features, np.ones((len(features), 1))])
    targets = 6 * np.eye(len(CLASSES))[labels] - 3
    solution = np.linalg.solve(a.T @ a + 0.1 * np.eye(a.shape[1]), a.T @ targets)
    model.get_layer("classifier").set_weights(
        [solution[:-1].astype(np.float32), solution[-1].astype(np.float32)]
    )


def write_run_files(run: Path, job, val_accuracy: float, val_images: int) -> None:
    """labels.json, summary.json (``run_summary``, as the driver writes it) and config.yaml."""
    (run / "labels.json").write_text(json.dumps({str(i): c for i, c in enumerate(CLASSES)}))
    per_class = {"train": {c: 30 for c in CLASSES}, "val": {c: 20 for c in CLASSES}}
    data = {
        "classes": len(CLASSES),
        "listed": 153,
        "duplicates": 1,
        "quarantined": 2,
        "splits": {s: {"used": sum(n.values()), "per_class_used": n} for s, n in per_class.items()},
        "quarantined_reasons": {"corrupt_image": 2},
        "skipped_at_listing": 0,
        "skipped_reasons": {},
    }
    row = EpochRow(
        global_epoch=1,
        stage="head",
        stage_index=0,
        epoch=1,
        loss=0.5,
        accuracy=0.9,
        macro_f1=0.9,
        val_loss=0.6,
        val_accuracy=val_accuracy,
        val_macro_f1=0.7,
        val_class_recall=(0.8, 0.7, 0.6),
        learning_rate=1e-3,
        trainable_tensors=4,
        seconds=2.0,
    )
    correct = round(val_accuracy * val_images)
    exported = {"images": val_images, "correct": correct, "accuracy": correct / val_images}
    summary = run_summary(job, CLASSES, data, [row], exported, 12.3)
    (run / "summary.json").write_text(json.dumps(summary, indent=1))
    (run / "config.yaml").write_text(dump_config(job))


def make_run(folder: Path) -> Path:
    """``folder/digits``, a run directory as a run leaves it: model/model.keras (the model of
    the module docstring), labels.json, summary.json and config.yaml."""
    run = folder / "digits"
    (run / "model").mkdir(parents=True)
    job = load_config(
        None,
        [
            f"data.source={run.parent / 'data'}",
            "model.backbone=alexnet",
            "model.weights=none",
            f"data.image_size={SIDE}",
            "run.name=digits",
        ],
    )
    tf_keras.utils.set_random_seed(0)
    model = nn_model.build_job_model(job, len(CLASSES))
    images, labels = digits(scale=8)  # 64 px: the model resizes them to 63
    fit_without_training(model, images[:TRAIN], labels[:TRAIN])
    nn_io.export_model(model, run / "model" / "model.keras")
    held_out = model.predict_on_batch(images[TRAIN:]).argmax(axis=1)
    write_run_files(run, job, float((held_out == labels[TRAIN:]).mean()), len(held_out))
    return run


class Exports:
    """``exports(fmt)``: the folder ``tljob export --model <run> --format fmt`` wrote, exported
    once per format."""

    def __init__(self, run: Path) -> None:
        self.run, self.done = run, set()

    def __call__(self, fmt: str) -> Path:
        if fmt not in self.done:
            assert main(["export", "--model", str(self.run), "--format", fmt]) == 0
            self.done.add(fmt)
        return self.run / "export" / fmt


def encoded(images: np.ndarray, fmt: str, orientations: tuple[int, ...] = ()) -> list[bytes]:
    """Each image as PNG (greyscale, as the digits are) or JPEG (RGB, quality 90) bytes; a
    JPEG with an EXIF orientation where ``orientations`` gives one (as a phone stores a
    photo taken sideways)."""
    found = []
    for i, image in enumerate(images):
        buffer = io.BytesIO()
        if fmt == "PNG":
            Image.fromarray(image[..., 0], mode="L").save(buffer, "PNG")
        else:
            exif = Image.Exif()
            if i < len(orientations):
                exif[0x0112] = orientations[i]
            Image.fromarray(image, mode="RGB").save(buffer, "JPEG", quality=90, exif=exif.tobytes())
        found.append(buffer.getvalue())
    return found


def as_text(strings) -> list:
    """String outputs (bytes from a runtime, or str from JSON) as nested lists of str."""
    text = np.vectorize(lambda s: s.decode() if isinstance(s, bytes) else s, otypes=[object])
    return text(np.asarray(strings, dtype=object)).tolist()


def assert_serves_like(outputs: dict, reference: np.ndarray, tolerance: float = 1e-4) -> None:
    """``outputs`` (one call of a served signature, as numpy) give the .keras model's
    probabilities (``reference``) within ``tolerance`` and its class names, top-1 and top-k."""
    probabilities = np.asarray(outputs["probabilities"], dtype=np.float64)
    assert probabilities.shape == reference.shape
    np.testing.assert_allclose(probabilities, reference, rtol=0, atol=tolerance)
    expected = reference.argmax(axis=1)
    assert probabilities.argmax(axis=1).tolist() == expected.tolist()
    assert as_text(outputs["class_names"]) == [CLASSES[i] for i in expected]
    order = np.argsort(-reference, axis=1, kind="stable")
    assert as_text(outputs["top_k_class_names"]) == [[CLASSES[i] for i in row] for row in order]
    np.testing.assert_allclose(
        outputs["top_k_probabilities"], np.take_along_axis(reference, order, 1), atol=tolerance
    )


def run_tflite(path: Path, images: np.ndarray) -> dict:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # tf.lite.Interpreter's notice about LiteRT
        interpreter = tf.lite.Interpreter(model_path=str(path))
    (details,) = interpreter.get_input_details()
    assert details["dtype"] == np.uint8
    assert details["shape_signature"].tolist() == [-1, SIDE, SIDE, 3]
    return interpreter.get_signature_runner("serving_default")(images=images)


def run_onnx(path: Path, images: np.ndarray) -> dict:
    import onnxruntime

    session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    (image_input,) = session.get_inputs()
    assert (image_input.name, image_input.type) == ("images", "tensor(uint8)")
    assert image_input.shape[1:] == [SIDE, SIDE, 3]
    names = [output.name for output in session.get_outputs()]
    return dict(zip(names, session.run(names, {"images": images}), strict=True))


def copy_run(run: Path, to: Path, *names: str) -> Path:
    for name in names:
        (to / name).parent.mkdir(parents=True, exist_ok=True)
        (to / name).write_bytes((run / name).read_bytes())
    return to
