"""The tiny exported model the inference tests share (tests/test_predict.py,
tests/test_infer.py): one random Dense layer on 8x8-pooled 32 px images, for the three
digit classes, exported with ``nn.io.export_model`` into a run directory's layout; and
what it predicts for local image files, computed in the test process."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
from conftest import write_digits_tree

from tljob.images import load_image

SIZE = 32
CLASSES = ["digit_0", "digit_1", "digit_2"]


class TinyModel:
    """The exported model, where it is, and what it predicts for local image files."""

    def __init__(self, run_dir: Path) -> None:
        from tljob.nn import io as nn_io
        from tljob.nn.keras import tf_keras
        from tljob.nn.layers import ResizeImages

        tf_keras.utils.set_random_seed(7)
        images = tf_keras.Input(shape=(None, None, 3), dtype="uint8", name="image")
        x = ResizeImages(SIZE, name="resize")(images)
        x = tf_keras.layers.Rescaling(1 / 255.0)(x)
        x = tf_keras.layers.AveragePooling2D(4)(x)
        x = tf_keras.layers.Flatten()(x)
        probs = tf_keras.layers.Dense(3, activation="softmax", name="classifier")(x)
        net = tf_keras.Model(images, probs)
        kernel, bias = net.get_layer("classifier").get_weights()
        net.get_layer("classifier").set_weights([kernel * 4, bias])  # some confident, some not
        (run_dir / "model").mkdir(parents=True)
        nn_io.export_model(net, run_dir / "model" / "model.keras")
        (run_dir / "labels.json").write_text(json.dumps(dict(enumerate(CLASSES))))
        self.run_dir = run_dir
        self.net = nn_io.load_exported(run_dir / "model" / "model.keras")

    def probabilities(self, paths: list[Path]) -> np.ndarray:
        images = np.stack([load_image(str(p), SIZE) for p in paths])
        return self.net.predict_on_batch(images)


def digit_files(root: Path) -> list[Path]:
    """12 digit images, 32 px, 4 per class, sorted by path."""
    return sorted(write_digits_tree(root, classes=3, per_class=4, scale=4).rglob("*.png"))
