"""``tljob export``: a run's model as a SavedModel, TFLite and ONNX model that serve without
tljob, answering probabilities and class names as tljob's .keras model does. The model and
its run: tests/serving_files.py. The model card and s3://: test_export_card.py; refusals
and publishing: test_export_refusals.py.
"""

from __future__ import annotations

import json
import os
import struct
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import tensorflow as tf
from serving_files import (
    CLASSES,
    SIDE,
    TRAIN,
    Exports,
    assert_serves_like,
    digits,
    encoded,
    make_run,
    run_onnx,
    run_tflite,
)

from tljob.cli import main
from tljob.config import load_config
from tljob.errors import JobFailedError
from tljob.images import decode_rgb, resize_bilinear_uint8
from tljob.nn import io as nn_io
from tljob.nn import model as nn_model
from tljob.nn.keras import tf_keras
from tljob.serving import exif, formats
from tljob.serving import export as serving_export
from tljob.serving.graph import ServingGraph


@pytest.fixture(scope="module")
def run(tmp_path_factory) -> Path:
    return make_run(tmp_path_factory.mktemp("runs"))


@pytest.fixture(scope="module")
def keras_model(run) -> tf_keras.Model:
    """tljob's own model, as ``tljob.nn.load_exported`` reads it."""
    return nn_io.load_exported(run / "model" / "model.keras")


@pytest.fixture(scope="module")
def exported(run) -> Exports:
    return Exports(run)


def test_held_out_images(keras_model):
    """The held-out digits the tests classify get more than one class from the model (else
    "the same class names" would prove little)."""
    images, labels = digits(scale=5)
    predicted = keras_model.predict_on_batch(images[TRAIN:]).argmax(axis=1)
    assert len(set(predicted.tolist())) == len(CLASSES)
    assert (predicted == labels[TRAIN:]).mean() > 1 / len(CLASSES)


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
    png = encoded(held_out[:8], "PNG")
    jpeg = encoded(held_out[8:12], "JPEG", orientations=(6, 3, 5))  # the last one: none
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
    # (the served model decodes PNG and JPEG to the very pixels Pillow gives tljob, turned
    # upright by their EXIF orientation as tljob turns them)
    assert_serves_like(report["bytes"], reference)
    assert_serves_like(report["images"]["large"], keras_model.predict_on_batch(held_out[:16]))
    assert_serves_like(
        report["images"]["small"], keras_model.predict_on_batch(small[TRAIN : TRAIN + 5])
    )


def test_the_graph_turns_a_jpeg_upright_as_tljob_does():
    image = np.random.default_rng(0).integers(0, 256, (20, 36, 3), dtype=np.uint8)  # not square
    for orientation in range(1, 9):
        (data,) = encoded(image[None], "JPEG", orientations=(orientation,))
        assert int(exif.orientation(tf.constant(data))) == orientation
        decoded = tf.io.decode_jpeg(data, channels=3, dct_method="INTEGER_ACCURATE")
        turned = exif.upright(decoded, exif.orientation(tf.constant(data))).numpy()
        np.testing.assert_array_equal(turned, decode_rgb(data))  # tljob: Pillow's transpose
    # a big-endian ("MM") TIFF header after a JFIF segment, as cameras write it
    tiff = b"MM\0*" + struct.pack(">IH", 8, 2) + struct.pack(">HHI4s", 0x010F, 2, 4, b"abc\0")
    tiff += struct.pack(">HHIHH", 0x0112, 3, 1, 8, 0) + b"\0" * 4
    (plain,) = encoded(image[None], "JPEG")
    data = plain[:2] + b"\xff\xe1" + struct.pack(">H", 8 + len(tiff)) + b"Exif\0\0" + tiff
    data += plain[2:]
    assert int(exif.orientation(tf.constant(data))) == 8
    # damaged or hostile headers: as it is (1), and quickly
    for data in [
        b"",
        b"\xff\xd8",
        b"\xff\xd8\xff\xe1\xff\xff",
        b"\xff\xd8\xff\xe1\x00\x10Exif\x00\x00MM\x00*\xff\xff\xff\xff",  # IFD far away
        b"\xff\xd8" + b"\xff\xe0\x00\x02" * 1000,  # endless empty segments
    ]:
        assert int(exif.orientation(tf.constant(data))) == 1


# --- (b) every format answers as the .keras model does ---------------------------------


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
