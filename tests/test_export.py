"""``tljob export``: a run's model as a SavedModel, TFLite and ONNX model that serve without
tljob, answering probabilities and class names, with labels.json and a model card beside.

One model for the file (``run``): AlexNet at its smallest side (63 px; 15 layers, so
saving and converting it take a second, where mobilenet_v2 takes ten) with random weights,
made to tell scikit-learn's digits 0, 1 and 2 apart without a training loop (a training
step costs seconds of tracing): its classifier is the ridge regression of the class on the
pooled random features. It is exported with ``tljob.nn.io.export_model`` into a run
directory with the labels.json, summary.json and config.yaml a run writes. Each format is
exported once (``exported``).
"""

from __future__ import annotations

import dataclasses
import io
import json
import os
import subprocess
import sys
import textwrap
import warnings
from pathlib import Path

import h5py
import numpy as np
import pytest
import tensorflow as tf
import yaml
from PIL import Image

from tljob import storage
from tljob.cli import main
from tljob.config import load_config
from tljob.config.load import dump_config
from tljob.errors import JobFailedError
from tljob.images import decode_rgb, resize_bilinear_uint8
from tljob.nn import io as nn_io
from tljob.nn import model as nn_model
from tljob.nn.keras import tf_keras
from tljob.run.ledger import EpochRow, run_summary
from tljob.serving import card as serving_card
from tljob.serving import export as serving_export
from tljob.serving import formats, publish
from tljob.serving.graph import ServingGraph
from tljob.serving.locate import ModelSource, locate
from tljob.zoo import file_sha256
from tljob.zoo.weights_record import WeightsRecord, write_record

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


@pytest.fixture(scope="module")
def run(tmp_path_factory) -> Path:
    """A run directory as a run leaves it: model/model.keras, labels.json, summary.json and
    config.yaml."""
    run = tmp_path_factory.mktemp("runs") / "digits"
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


@pytest.fixture(scope="module")
def keras_model(run) -> tf_keras.Model:
    """tljob's own model, as `tljob.nn.load_exported` reads it."""
    return nn_io.load_exported(run / "model" / "model.keras")


@pytest.fixture(scope="module")
def exported(run):
    """``exported(fmt)``: the folder ``tljob export --model <run> --format fmt`` wrote,
    exported once per format."""
    done: dict[str, Path] = {}

    def get(fmt: str) -> Path:
        if fmt not in done:
            assert main(["export", "--model", str(run), "--format", fmt]) == 0
            done[fmt] = run / "export" / fmt
        return done[fmt]

    return get


def test_held_out_images(keras_model):
    """The held-out digits the tests classify get more than one class from the model (else
    "the same class names" would prove little)."""
    images, labels = digits(scale=5)
    predicted = keras_model.predict_on_batch(images[TRAIN:]).argmax(axis=1)
    assert len(set(predicted.tolist())) == len(CLASSES)
    assert (predicted == labels[TRAIN:]).mean() > 1 / len(CLASSES)


def encoded(images: np.ndarray, fmt: str) -> list[bytes]:
    """Each image as PNG (greyscale, as the digits are) or JPEG (RGB, quality 90) bytes."""
    found = []
    for image in images:
        buffer = io.BytesIO()
        if fmt == "PNG":
            Image.fromarray(image[..., 0], mode="L").save(buffer, "PNG")
        else:
            Image.fromarray(image, mode="RGB").save(buffer, "JPEG", quality=90)
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


# --- (a) the SavedModel in an interpreter that has TensorFlow and nothing of tljob ----------


def tensorflow_only_site(folder: Path) -> Path:
    """A site folder holding TensorFlow and what it depends on, and nothing else: a link to
    each top-level entry the installed distributions of TensorFlow's dependency closure
    list in their RECORD (inside a namespace folder such as ``google/``, to each entry of
    it). tf_keras (not a dependency of TensorFlow) and tljob are not there."""
    import importlib.metadata

    from packaging.requirements import Requirement

    todo = ["tensorflow-cpu", "tensorflow"]
    closure: dict[str, importlib.metadata.Distribution] = {}
    while todo:
        try:
            dist = importlib.metadata.distribution(todo.pop())
        except importlib.metadata.PackageNotFoundError:
            continue
        name = dist.metadata["Name"].lower().replace("_", "-")
        if name in closure:
            continue
        closure[name] = dist
        for text in dist.requires or []:
            requirement = Requirement(text)
            if requirement.marker is None or requirement.marker.evaluate({"extra": ""}):
                todo.append(requirement.name)
    assert "tf-keras" not in closure and "tljob" not in closure
    links: dict[tuple[str, ...], Path] = {}  # the link's parts in ``folder`` -> its target
    for dist in closure.values():
        for file in dist.files or []:
            parts = file.parts
            if parts[0] in ("..", "__pycache__") or parts[0].endswith(".pth"):
                continue
            top = Path(dist.locate_file(parts[0]))
            shared = (  # a namespace folder: google/protobuf, not all of google/
                len(parts) > 2
                and top.is_dir()
                and not (top / "__init__.py").exists()
                and not parts[0].endswith(".dist-info")
            )
            entry = parts[:2] if shared else parts[:1]
            links[entry] = Path(dist.locate_file(Path(*entry)))
    for parts, target in links.items():
        link = folder.joinpath(*parts)
        link.parent.mkdir(parents=True, exist_ok=True)
        link.symlink_to(target)
    return folder


SERVE_WITHOUT_TLJOB = textwrap.dedent(
    """
    import importlib.util, json, sys
    site, saved_model, arrays, *image_files = sys.argv[1:]
    sys.path.append(site)  # python -I -S: the standard library, and this folder
    report = {
        "sys_path": list(sys.path),
        "importable": {m: importlib.util.find_spec(m) is not None for m in ("tljob", "tf_keras")},
    }
    import numpy as np
    import tensorflow as tf

    def plain(outputs):
        return {
            k: v.numpy().tolist() if v.dtype != tf.string else np.vectorize(
                lambda b: b.decode(), otypes=[object])(v.numpy()).tolist()
            for k, v in outputs.items()
        }

    served = tf.saved_model.load(saved_model)
    encoded = [open(path, "rb").read() for path in image_files]
    report["bytes"] = plain(served.signatures["serving_default"](image_bytes=tf.constant(encoded)))
    with np.load(arrays) as batches:
        report["images"] = {
            name: plain(served.signatures["classify_images"](images=tf.constant(batches[name])))
            for name in batches.files
        }
    report["signatures"] = sorted(served.signatures)
    report["loaded"] = sorted({m.split(".")[0] for m in sys.modules} & {"tljob", "tf_keras"})
    report["files"] = sorted(
        f for m in list(sys.modules.values())
        if isinstance(f := getattr(m, "__file__", None), str) and f != __file__
    )
    print(json.dumps(report))
    """
)


def test_the_savedmodel_serves_in_an_interpreter_without_tljob_or_tf_keras(
    tmp_path, exported, keras_model
):
    saved_model = exported("savedmodel")
    site = tensorflow_only_site(tmp_path / "site")
    images, _ = digits(scale=5)  # 40 px: the served model resizes them to 63
    held_out = images[TRAIN:]
    png, jpeg = encoded(held_out[:8], "PNG"), encoded(held_out[8:12], "JPEG")
    files = []
    for i, data in enumerate(png + jpeg):
        files.append(tmp_path / f"image_{i}.{'png' if i < len(png) else 'jpg'}")
        files[-1].write_bytes(data)
    small, _ = digits(scale=3)  # 24 px: smaller than the model's side
    np.savez(tmp_path / "batches.npz", large=held_out[:16], small=small[TRAIN : TRAIN + 5])
    script = tmp_path / "serve.py"
    script.write_text(SERVE_WITHOUT_TLJOB)
    proc = subprocess.run(
        [
            sys.executable,
            "-I",
            "-S",
            str(script),
            str(site),
            str(saved_model),
            str(tmp_path / "batches.npz"),
            *map(str, files),
        ],
        capture_output=True,
        text=True,
        env={"PATH": os.environ["PATH"], "TF_CPP_MIN_LOG_LEVEL": "2"},
        cwd=tmp_path,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    report = json.loads(proc.stdout.strip().splitlines()[-1])

    # The interpreter had the standard library and the TensorFlow-only folder, no more.
    stdlib = Path(os.__file__).parent
    assert all(
        p == str(site) or Path(p).is_relative_to(stdlib.parent) and "site-packages" not in p
        for p in report["sys_path"]
    ), report["sys_path"]
    assert report["importable"] == {"tljob": False, "tf_keras": False}
    assert report["loaded"] == []
    from_site = [
        Path(f).relative_to(site).parts[0] for f in report["files"] if f.startswith(str(site))
    ]
    assert "tensorflow" in from_site
    assert [f for f in report["files"] if not f.startswith((str(site), str(stdlib)))] == [], report[
        "sys_path"
    ]
    assert report["signatures"] == ["classify_images", "serving_default"]

    # The same class names and probabilities as tljob's .keras model on what tljob decodes.
    decoded_png = np.stack([decode_rgb(b) for b in png])
    decoded_jpeg = np.stack([decode_rgb(b) for b in jpeg])
    reference = np.concatenate(
        [keras_model.predict_on_batch(decoded_png), keras_model.predict_on_batch(decoded_jpeg)]
    )
    # (the served model decodes PNG and JPEG to the very pixels Pillow gives tljob)
    assert_serves_like(report["bytes"], reference)
    assert_serves_like(report["images"]["large"], keras_model.predict_on_batch(held_out[:16]))
    assert_serves_like(
        report["images"]["small"], keras_model.predict_on_batch(small[TRAIN : TRAIN + 5])
    )


# --- (b) every format answers as the .keras model does ---------------------------------


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


@pytest.mark.parametrize(
    "fmt, runner", [("tflite", run_tflite), ("onnx", run_onnx)], ids=["tflite", "onnx"]
)
def test_the_fixed_size_formats_answer_as_the_keras_model_does(fmt, runner, exported, keras_model):
    folder = exported(fmt)
    images, _ = digits(scale=5)  # 40 px, resized first as tljob resizes (the format is 63 px)
    held_out = images[TRAIN : TRAIN + 24]
    resized = np.stack([resize_bilinear_uint8(image, SIDE) for image in held_out])
    outputs = runner(folder / f"model.{fmt}", resized)
    assert outputs["probabilities"].dtype == np.float32
    assert_serves_like(outputs, keras_model.predict_on_batch(resized))
    # what the .keras model answers for the 40 px images it resizes itself
    assert_serves_like(outputs, keras_model.predict_on_batch(held_out))
    assert json.loads((folder / "labels.json").read_text()) == {
        str(i): c for i, c in enumerate(CLASSES)
    }
    card = json.loads((folder / "model_card.json").read_text())
    assert card["tljob_export"]["format"] == fmt
    assert card["serving"]["signatures"]["serving_default"]["inputs"] == {
        "images": {"dtype": "uint8", "shape": [None, SIDE, SIDE, 3]}
    }
    assert sorted(p.name for p in folder.iterdir()) == sorted(
        ["labels.json", f"model.{fmt}", "model_card.json", "model_card.md"]
    )


def test_the_savedmodel_in_this_process_answers_an_empty_batch(exported):
    served = tf.saved_model.load(str(exported("savedmodel")))
    for signature, empty in [
        ("classify_images", {"images": tf.zeros((0, 40, 40, 3), tf.uint8)}),
        ("serving_default", {"image_bytes": tf.constant([], tf.string)}),
    ]:
        outputs = served.signatures[signature](**empty)
        assert outputs["probabilities"].shape == (0, len(CLASSES))
        assert outputs["class_names"].shape == (0,)


# --- the model card and labels.json beside the export -----------------------------------


def test_the_model_card_records_the_run_and_every_file_written(run, exported):
    folder = exported("savedmodel")
    summary = json.loads((run / "summary.json").read_text())
    card = json.loads((folder / "model_card.json").read_text())
    assert card["source"] == {
        "model": str(run / "model" / "model.keras"),
        "model_sha256": file_sha256(run / "model" / "model.keras"),
        "labels": str(run / "labels.json"),
        "run_dir": str(run),
        "summary_json": True,
        "config_yaml": True,
    }
    assert card["model"] == {
        "backbone": "alexnet",
        "image_size": SIDE,
        "precision": "float32",
        "exported_precision": "float32",
        "num_classes": 3,
        "classes": list(CLASSES),
    }
    written = {
        str(p.relative_to(folder)): file_sha256(p)
        for p in folder.rglob("*")
        if p.is_file() and not p.name.startswith("model_card.")
    }
    assert card["files"] == written
    assert {"saved_model.pb", "labels.json", "variables/variables.index"} <= set(written)
    assert card["data"] == summary["data"]
    assert card["metrics"] == {k: summary[k] for k in ("best", "final", "exported_model")}
    assert card["weights"] == {"model.weights": "none", "initial_weights": None, "record": None}
    assert card["config"] == yaml.safe_load((run / "config.yaml").read_text())
    assert card["run"]["run"] == "digits"
    signatures = card["serving"]["signatures"]
    assert signatures["serving_default"]["inputs"] == {
        "image_bytes": {"dtype": "string", "shape": [None]}
    }
    assert signatures["classify_images"]["outputs"]["top_k_class_names"] == {
        "dtype": "string",
        "shape": [None, 3],
    }
    text = (folder / "model_card.md").read_text()
    for line in [
        "# Model card: digits",
        "| 0 | digit_0 | 30 | 20 |",
        "- listed: 153; used: train 90, val 60",
        "quarantined: 2 (corrupt_image 2)",
        f"| validation, best epoch | val_accuracy | {summary['best']['val_accuracy']:.4f} |",
        "| validation, exported model re-check | correct | "
        f"{summary['exported_model']['correct']} |",
        "- initial weights file: none (the backbone started from random weights)",
        f"| `saved_model.pb` | `{written['saved_model.pb']}` |",
        "  backbone: alexnet",
        "| `serving_default` | `image_bytes` string (any) |",
    ]:
        assert line in text, line


def test_the_card_names_the_initial_weights_and_never_a_secret(tmp_path, monkeypatch):
    secret = "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY"
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", secret)
    here = storage.resolve(str(tmp_path))
    summary = {
        "run": "pets",
        "weights": "imagenet",
        "initial_weights": {"file": f"s3://b/runs/pets/weights/{secret}.h5", "sha256": "ab" * 32},
        "test": {"accuracy": 0.931, "images": 400},
    }
    source = ModelSource(
        model=here.join("model", "model.keras"),
        run_dir=here,
        class_names=("cat", "dog"),
        summary=summary,
        config={"model": {"backbone": "resnet50", "weights": "imagenet"}, "note": secret},
    )
    card = serving_card.model_card(
        source,
        "tflite",
        {"tljob_version": "0.1.0", "created": "2026-12-05T00:00:00Z", "model_sha256": "cd" * 32},
        {
            "backbone": "resnet50",
            "image_size": 224,
            "precision": "mixed_bfloat16",
            "exported_precision": "float32",
        },
        {"signatures": {}},
        {"model.tflite": "ef" * 32},
        {
            "backbone": "resnet50",
            "include_top": False,
            "source": "https://x/r.pth",
            "source_sha256": "12" * 32,
            "format": 1,
        },
    )
    assert card["weights"]["initial_weights"]["sha256"] == "ab" * 32
    assert card["metrics"] == {"test": {"accuracy": 0.931, "images": 400}}
    text, markdown = serving_card.card_json(card), serving_card.card_markdown(card)
    assert secret not in text and secret not in markdown
    assert json.loads(text)["config"]["note"] == "[redacted]"
    assert f"sha256 `{'ab' * 32}`" in markdown
    assert (
        "- its tljob record: made for backbone `resnet50`, converted from `https://x/r.pth` "
        f"(sha256 `{'12' * 32}`)" in markdown
    )
    assert "| test | accuracy | 0.9310 |" in markdown
    assert (
        "Backbone `resnet50`, input 224x224 RGB, 2 classes, computing in float32 (trained in "
        "mixed_bfloat16, which this format cannot run); exported as `tflite` by tljob 0.1.0 on "
        "2026-12-05T00:00:00Z" in markdown
    )
    assert "| test | images | 400 |" in markdown


def test_a_mixed_precision_model_serves_in_its_precision_or_float32_where_the_format_must(
    tmp_path, capsys
):
    """A model trained with ``train.precision: mixed_bfloat16`` stores that policy in every
    layer. The SavedModel computes as the .keras model does; TFLite has no bfloat16 kernels
    (and tf2onnx writes an ONNX file that does not load), so they get a float32 copy."""
    run = tmp_path / "bf16"
    (run / "model").mkdir(parents=True)
    job = load_config(
        None,
        [
            "data.source=x",
            "model.backbone=alexnet",
            "model.weights=none",
            f"data.image_size={SIDE}",
        ],
    )
    try:
        nn_model.set_precision("mixed_bfloat16")
        tf_keras.utils.set_random_seed(1)
        nn_io.export_model(
            nn_model.build_job_model(job, len(CLASSES)), run / "model" / "model.keras"
        )
    finally:
        tf_keras.mixed_precision.set_global_policy("float32")
    (run / "labels.json").write_text(json.dumps({str(i): c for i, c in enumerate(CLASSES)}))
    keras = nn_io.load_exported(run / "model" / "model.keras")
    images, _ = digits(scale=8)
    batch = np.stack([resize_bilinear_uint8(image, SIDE) for image in images[TRAIN : TRAIN + 16]])
    reference = keras.predict_on_batch(batch)
    assert main(["export", "--model", str(run), "--format", "savedmodel"]) == 0
    assert main(["export", "--model", str(run), "--format", "tflite"]) == 0
    assert (
        "the model computes in mixed_bfloat16, which tflite cannot run" in capsys.readouterr().out
    )
    served = tf.saved_model.load(str(run / "export" / "savedmodel"))
    assert_serves_like(served.signatures["classify_images"](images=tf.constant(batch)), reference)
    converted = run_tflite(run / "export" / "tflite" / "model.tflite", batch)
    assert converted["probabilities"].argmax(axis=1).tolist() == reference.argmax(axis=1).tolist()
    np.testing.assert_allclose(converted["probabilities"], reference, atol=1e-2)
    assert np.abs(converted["probabilities"] - reference).max() > 1e-6  # float32, not bfloat16
    cards = {
        fmt: json.loads((run / "export" / fmt / "model_card.json").read_text())["model"]
        for fmt in ("savedmodel", "tflite")
    }
    assert (
        cards["savedmodel"]["precision"]
        == cards["savedmodel"]["exported_precision"]
        == "mixed_bfloat16"
    )
    assert (cards["tflite"]["precision"], cards["tflite"]["exported_precision"]) == (
        "mixed_bfloat16",
        "float32",
    )
    assert "computing in float32 (trained in mixed_bfloat16, which this format cannot run)" in (
        (run / "export" / "tflite" / "model_card.md").read_text()
    )
    # what converting the bfloat16 graph itself does: one paragraph, exit 1
    (tmp_path / "x").mkdir()
    with pytest.raises(JobFailedError) as failed:
        serving_export.write_format(
            formats.write_tflite, ServingGraph(keras, CLASSES), str(tmp_path / "x"), "tflite"
        )
    assert str(failed.value).startswith(
        "the tflite converter failed on this model (ConverterError: "
    )
    assert list((tmp_path / "x").iterdir()) == []


# --- (c) a run on s3:// exports to s3:// ------------------------------------------------


def test_a_model_on_s3_exports_to_s3(s3, run, keras_model, tmp_path):
    remote = storage.resolve(s3.uri("runs", "digits"))
    for name in ("model/model.keras", "labels.json", "config.yaml"):
        storage.put_file(run / name, remote.join(name))
    # the weights file a run ships into its directory, with the record tljob writes into it
    weights = tmp_path / "alexnet.weights.h5"
    with h5py.File(weights, "w") as f:
        f["kernel"] = np.zeros(3)
    record = WeightsRecord("alexnet", False, "https://x/alexnet-owt.pth", "7b" * 32)
    write_record(weights, record)
    storage.put_file(weights, remote.join("weights", weights.name))
    summary = json.loads((run / "summary.json").read_text())
    shipped = {"file": remote.join("weights", weights.name).uri, "sha256": file_sha256(weights)}
    summary.update(weights=shipped["file"], initial_weights=shipped)
    storage.write_text(remote.join("summary.json"), json.dumps(summary))
    assert locate(remote.uri).model.uri == remote.join("model", "model.keras").uri

    # a bare model URI finds labels.json in its folder's parent, which is the run; the
    # store is named as a job's s3 section names it (this process is configured by nothing)
    storage.reset()
    model_uri = remote.join("model", "model.keras").uri
    endpoint = [f"s3.endpoint_url={s3.server.endpoint_url}", "s3.allow_http=true"]
    argv = ["export", "--model", model_uri, "--format", "tflite"]
    assert main([*argv, *(f"--set={setting}" for setting in endpoint)]) == 0
    prefix = "runs/digits/export/tflite/"
    written = ["labels.json", "model.tflite", "model_card.json", "model_card.md"]
    assert s3.objects(prefix) == [prefix + name for name in written]
    card = json.loads(storage.read_text(remote.join("export", "tflite", "model_card.json")))
    assert card["source"]["model"] == model_uri
    assert card["source"]["model_sha256"] == file_sha256(run / "model" / "model.keras")
    assert card["data"] == summary["data"]
    assert card["weights"] == {
        "model.weights": shipped["file"],
        "initial_weights": shipped,
        "record": dataclasses.asdict(record),
    }
    local = tmp_path / "model.tflite"
    local.write_bytes(storage.read_bytes(remote.join("export", "tflite", "model.tflite")))
    images, _ = digits(scale=8)  # 64 px
    batch = np.stack([resize_bilinear_uint8(image, SIDE) for image in images[TRAIN : TRAIN + 8]])
    assert_serves_like(run_tflite(local, batch), keras_model.predict_on_batch(batch))


def test_a_model_file_finds_the_run_it_belongs_to(run, tmp_path):
    source = locate(str(run / "model" / "model.keras"))
    assert (source.model.uri, source.run_dir.uri) == (str(run / "model" / "model.keras"), str(run))
    assert source.class_names == CLASSES
    assert source.summary == json.loads((run / "summary.json").read_text())
    assert source.default_out("tflite").uri == str(run / "export" / "tflite")
    # a model copied with its labels.json into one folder
    copy_run(run, tmp_path, "model/model.keras", "labels.json")
    (tmp_path / "model" / "labels.json").write_bytes((run / "labels.json").read_bytes())
    (tmp_path / "labels.json").write_text('{"0": "x", "1": "y"}')  # the nearer one wins
    source = locate(str(tmp_path / "model" / "model.keras"))
    assert (source.run_dir.uri, source.class_names) == (str(tmp_path / "model"), CLASSES)
    assert (source.summary, source.config) == (None, None)


# --- (d) bad inputs: exit 2 naming the thing at fault ----------------------------------


def copy_run(run: Path, to: Path, *names: str) -> Path:
    for name in names:
        (to / name).parent.mkdir(parents=True, exist_ok=True)
        (to / name).write_bytes((run / name).read_bytes())
    return to


def not_keras(folder: Path) -> str:
    (folder / "model").mkdir(parents=True)
    (folder / "model" / "model.keras").write_text("not a model")
    (folder / "labels.json").write_text('{"0": "a", "1": "b"}')
    return str(folder)


def plain_keras(folder: Path) -> str:
    """A Keras model (one Dense layer) that tljob did not make."""
    (folder / "model").mkdir(parents=True)
    net = tf_keras.Sequential([tf_keras.Input((4,)), tf_keras.layers.Dense(2)])
    net.save(folder / "model" / "model.keras")
    (folder / "labels.json").write_text('{"0": "a", "1": "b"}')
    return str(folder / "model" / "model.keras")


def two_labels(folder: Path, run: Path) -> str:
    copy_run(run, folder, "model/model.keras")
    (folder / "labels.json").write_text('{"0": "digit_0", "1": "digit_1"}')
    return str(folder)


BAD_INPUTS = {
    "missing labels.json beside a model file": (
        lambda tmp, run: str(copy_run(run, tmp, "model/model.keras") / "model" / "model.keras"),
        [],
        "model.keras': no labels.json beside it (looked for '{tmp}/model/labels.json' or "
        "'{tmp}/labels.json')",
    ),
    "missing labels.json in a run directory": (
        lambda tmp, run: str(copy_run(run, tmp, "model/model.keras")),
        [],
        "{tmp}/labels.json: no such file",
    ),
    "labels.json not index -> name": (
        lambda tmp, run: str(copy_run(run, tmp, "model/model.keras")),
        ["labels"],
        '{tmp}/labels.json: it must be a JSON object {{"0": "<class name>"',
    ),
    "labels.json of another number of classes": (
        lambda tmp, run: two_labels(tmp, run),
        [],
        "the model answers output shape (None, 3), but labels.json names 2 classes",
    ),
    "no such path": (lambda tmp, run: str(tmp / "nowhere"), [], "nowhere': no such file or folder"),
    "a folder that is not a run": (
        lambda tmp, run: str(tmp),
        [],
        "this folder has no model/model.keras, so it is not a tljob run directory",
    ),
    "a file that is not .keras": (
        lambda tmp, run: str(copy_run(run, tmp, "summary.json") / "summary.json"),
        [],
        "summary.json' is not a tljob model: tljob's models are .keras files",
    ),
    "a .keras file Keras cannot read": (
        lambda tmp, run: not_keras(tmp),
        [],
        "model.keras' is not a tljob model: Keras cannot read it",
    ),
    "a Keras model tljob did not make": (
        lambda tmp, run: plain_keras(tmp),
        [],
        "model.keras' is not a tljob model: it does not take images through tljob's "
        "ResizeImages layer",
    ),
    "a --set outside the s3 section": (
        lambda tmp, run: str(run),
        ["--set", "train.batch_size=4"],
        "--set 'train.batch_size': tljob export takes s3 settings only (s3.endpoint_url, "
        "s3.region, s3.addressing_style, s3.allow_http)",
    ),
    "an unknown s3 setting": (
        lambda tmp, run: str(run),
        ["--set", "s3.secret_access_key=abcd1234"],
        "invalid --set:\n  `s3.secret_access_key` is not a known setting",
    ),
    "a plain-http endpoint not allowed": (
        lambda tmp, run: str(run),
        ["--set", "s3.endpoint_url=http://minio:9000"],
        "set `s3.allow_http: true`",
    ),
    "an --out folder holding other files": (
        lambda tmp, run: str(copy_run(run, tmp, "model/model.keras", "labels.json")),
        ["foreign out"],
        "--out '{tmp}/out' already holds files that are not a tljob export",
    ),
}


@pytest.mark.parametrize("case", list(BAD_INPUTS))
def test_bad_inputs_exit_2_naming_what_is_wrong(case, tmp_path, run, capsys):
    make, tweaks, expected = BAD_INPUTS[case]
    folder = tmp_path / "given"
    folder.mkdir()
    model = make(folder, run)
    argv = ["export", "--model", model, "--format", "savedmodel"]
    argv += [tweak for tweak in tweaks if tweak.startswith(("--set", "s3.", "train."))]
    if "labels" in tweaks:
        (folder / "labels.json").write_text('{"0": "digit_0", "2": "digit_2"}')
    if "foreign out" in tweaks:
        (folder / "out").mkdir()
        (folder / "out" / "notes.txt").write_text("mine")
        argv += ["--out", str(folder / "out")]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.startswith("tljob: error: ")
    assert expected.format(tmp=folder) in err
    assert "abcd1234" not in err
    assert not (folder / "export").exists()
    if "foreign out" in tweaks:
        assert [p.name for p in (folder / "out").iterdir()] == ["notes.txt"]


def test_an_unknown_format_exits_2_naming_it_and_the_formats(capsys, run):
    with pytest.raises(SystemExit) as exit_:
        main(["export", "--model", str(run), "--format", "pytorch"])
    assert exit_.value.code == 2
    assert (
        "argument --format: invalid choice: 'pytorch' (choose from 'savedmodel', 'tflite', "
        "'onnx')" in capsys.readouterr().err
    )


# --- publishing: whole or not at all ----------------------------------------------------


def earlier_export(out: Path) -> None:
    out.mkdir(parents=True)
    (out / "model.tflite").write_text("old")
    (out / "model_card.json").write_text(json.dumps({"tljob_export": {"format": "tflite"}}))


def test_a_failed_export_leaves_the_earlier_one_and_no_temporary_folder(tmp_path):
    out = tmp_path / "export" / "tflite"
    earlier_export(out)
    staged = publish.staged(storage.resolve(str(out)), "model.tflite")
    with pytest.raises(RuntimeError, match="converter failed"), staged as folder:
        Path(folder, "model.tflite").write_text("new, half written")
        raise RuntimeError("converter failed")
    assert sorted(p.name for p in out.parent.iterdir()) == ["tflite"]
    assert (out / "model.tflite").read_text() == "old"
    with publish.staged(storage.resolve(str(out)), "model.tflite") as folder:
        Path(folder, "model.tflite").write_text("new")
    assert sorted(p.name for p in out.parent.iterdir()) == ["tflite"]
    assert sorted(p.name for p in out.iterdir()) == ["model.tflite"]  # the old card is gone
    assert (out / "model.tflite").read_text() == "new"


KILLED_MID_EXPORT = textwrap.dedent(
    """
    import os, signal, sys
    from pathlib import Path
    from tljob import storage
    from tljob.serving import publish

    with publish.staged(storage.resolve(sys.argv[1]), "saved_model.pb") as folder:
        (Path(folder) / "variables").mkdir()
        (Path(folder) / "variables" / "variables.index").write_text("half")
        (Path(folder) / "saved_model.pb").write_text("written, the rest is not")
        os.kill(os.getpid(), signal.SIGKILL)
    """
)


def test_a_killed_export_leaves_no_folder_at_out(tmp_path):
    out = tmp_path / "export" / "savedmodel"
    proc = subprocess.run(
        [sys.executable, "-c", KILLED_MID_EXPORT, str(out)],
        env={**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == -9, proc.stderr
    assert not out.exists()
    (left,) = out.parent.iterdir()  # hidden: no runtime looks for a model there
    assert left.name.startswith(storage.TMP_PREFIX) and left.name.endswith("-savedmodel")


def test_an_export_on_s3_appears_whole_and_replaces_only_an_earlier_export(s3):
    out = storage.resolve(s3.uri("runs", "r", "export", "onnx"))
    with (
        pytest.raises(RuntimeError, match="converter failed"),
        publish.staged(out, "model.onnx") as folder,
    ):
        Path(folder, "labels.json").write_text("{}")
        raise RuntimeError("converter failed")
    assert s3.objects() == []  # nothing is uploaded before the writer is done

    card = json.dumps({"tljob_export": {"format": "onnx"}})
    for content in ("first", "second"):
        with publish.staged(out, "model.onnx") as folder:
            Path(folder, "model.onnx").write_text(content)
            Path(folder, "model_card.json").write_text(card)
            Path(folder, f"{content}.txt").write_text(content)
    keys = [
        f"runs/r/export/onnx/{name}" for name in ("model.onnx", "model_card.json", "second.txt")
    ]
    assert s3.objects() == keys  # the earlier export's own file is gone
    assert storage.read_text(out.join("model.onnx")) == "second"

    storage.write_text(storage.resolve(s3.uri("mine", "notes.txt")), "not an export")
    with pytest.raises(publish.OutputFolderError, match="not a tljob export"):
        publish.check_replaceable(storage.resolve(s3.uri("mine")))
    with pytest.raises(publish.OutputFolderError, match="is a whole bucket; give a prefix"):
        publish.check_replaceable(storage.resolve(s3.uri()))
