"""``tljob export``: the model card and labels.json beside every export, and a model on
``s3://`` exported to ``s3://``. The model and its run: tests/serving_files.py.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import h5py
import numpy as np
import pytest
import yaml
from serving_files import (
    CLASSES,
    SIDE,
    TRAIN,
    Exports,
    assert_serves_like,
    copy_run,
    digits,
    make_run,
    run_tflite,
)

from tljob import storage
from tljob.cli import main
from tljob.images import resize_bilinear_uint8
from tljob.nn import io as nn_io
from tljob.nn.keras import tf_keras
from tljob.serving import card as serving_card
from tljob.serving.locate import ModelSource, locate
from tljob.zoo import file_sha256
from tljob.zoo.weights_record import WeightsRecord, write_record


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
