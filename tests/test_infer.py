"""``tljob.infer`` without Ray: the model and its classes read without TensorFlow, the
inputs of a source, the refusals before Ray starts (a model whose labels do not fit,
labels the model does not know, a rerun into another request's output, a manifest without
a threshold), the scores, and Ray's actor notice kept off stderr.
"""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from conftest import write_digits_tree
from infer_model import CLASSES, TinyModel, digit_files

from tljob import storage
from tljob.cli import main
from tljob.infer import parts
from tljob.infer.inputs import list_inputs
from tljob.infer.model_file import ModelError, resolve_model
from tljob.infer.results import Scored, class_indices


@pytest.fixture(scope="module")
def tiny(tmp_path_factory) -> TinyModel:
    return TinyModel(tmp_path_factory.mktemp("tiny") / "run")


@pytest.fixture(scope="module")
def digits(tmp_path_factory) -> list[Path]:
    return digit_files(tmp_path_factory.mktemp("digits"))


def test_the_model_is_resolved_without_tensorflow(tiny):
    code = (
        "import sys; from tljob.infer.model_file import resolve_model; "
        f"m = resolve_model({str(tiny.run_dir)!r}); "
        "print(m.image_size, list(m.classes), 'tensorflow' in sys.modules)"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert proc.stdout.split(" ", 1) == ["32", f"{CLASSES} False\n"], proc.stderr
    by_file = resolve_model(str(tiny.run_dir / "model" / "model.keras"))
    assert by_file.uri == str(tiny.run_dir / "model" / "model.keras")
    assert by_file.labels_uri == str(tiny.run_dir / "labels.json")


def test_a_model_whose_labels_do_not_fit_is_refused(tmp_path, tiny):
    (tmp_path / "model.keras").write_bytes((tiny.run_dir / "model" / "model.keras").read_bytes())
    (tmp_path / "labels.json").write_text(json.dumps({"0": "a", "1": "b"}))
    with pytest.raises(ModelError) as refused:
        resolve_model(str(tmp_path / "model.keras"))
    assert str(refused.value) == (
        f"--model {str(tmp_path / 'model.keras')!r}: the model gives 3 class probabilities but "
        f"{tmp_path / 'labels.json'} names 2 classes; use the labels.json of the run that "
        "exported this model"
    )


def test_inputs_of_a_folder_and_of_a_manifest(tmp_path, digits):
    tree = digits[0].parent.parent
    listing = list_inputs(str(tree))
    assert listing.uris == [str(p) for p in digits]
    assert listing.labels == [p.parent.name for p in digits]  # a class-folder tree
    (tmp_path / "flat").mkdir()
    for p in digits[:2]:
        (tmp_path / "flat" / p.name).write_bytes(p.read_bytes())
    (tmp_path / "flat" / "notes.txt").write_text("x")
    flat = list_inputs(str(tmp_path / "flat"))
    assert flat.labels == [None, None]
    assert flat.skipped == [
        {"path": str(tmp_path / "flat" / "notes.txt"), "reason": "not_an_image_file"}
    ]
    rows = [
        ("uri", "label"),
        (os.path.relpath(digits[0], tmp_path / "lists"), "a"),  # relative to the manifest
        (str(digits[1]), ""),
        (str(digits[1]), ""),  # again: one input
        (str(digits[2]), "a"),
        (str(digits[2]), "b"),  # under two labels: not an input
        ("", "a"),
    ]
    (tmp_path / "lists").mkdir()
    with (tmp_path / "lists" / "m.csv").open("w", newline="") as f:
        csv.writer(f).writerows(rows)
    listed = list_inputs(str(tmp_path / "lists" / "m.csv"))
    assert listed.uris == [str(digits[0]), str(digits[1])]
    assert listed.labels == ["a", None] and listed.duplicate_rows == 1
    assert [s["reason"].split(":")[0] for s in listed.skipped] == ["label_conflict", "empty_uri"]
    assert list(listed.label_indices(("b", "a"))) == [1, -1]


def test_a_source_with_labels_the_model_does_not_know_is_refused(tmp_path, tiny):
    from tljob.infer.pipeline import InferenceError, infer

    write_digits_tree(tmp_path / "tree", classes=4, per_class=1)  # digit_3 is not a class
    with pytest.raises(InferenceError) as refused:
        infer(str(tiny.run_dir), str(tmp_path / "tree"))  # before Ray: none here
    assert str(refused.value) == (
        f"{tmp_path / 'tree'}: the label(s) 'digit_3' are not classes of the model "
        f"{tiny.run_dir / 'model' / 'model.keras'} ('digit_0', 'digit_1', 'digit_2'); score "
        "images of the model's classes, or a source without labels"
    )


def test_a_rerun_into_another_requests_output_is_refused(tmp_path, tiny, digits, capsys):
    tree = str(digits[0].parent.parent)
    args = ["predict", "--model", str(tiny.run_dir), "--source", tree, "--out", str(tmp_path)]
    model, listing = resolve_model(str(tiny.run_dir)), list_inputs(tree)
    plan = parts.PartPlan(12, listing.fingerprint(), 10_000, 3, "parquet", model.identity(), tree)
    assert parts.claim(storage.resolve(str(tmp_path)), plan) == []  # as a first run writes it
    assert main([*args, "--top-k", "2"]) == 2  # refused before Ray: no cluster here
    assert capsys.readouterr().err == (
        f"tljob: error: --out {tmp_path} holds the predictions of another request (top_k: 3 "
        "then, 2 now); give a new --out, or delete that folder to start over\n"
    )


def test_the_cli_refuses_a_manifest_without_a_threshold(tmp_path, capsys):
    assert (
        main(["predict", "--model", "m", "--source", "s", "--out", "o", "--as-manifest", "f"]) == 2
    )
    assert "--min-confidence and --as-manifest go together" in capsys.readouterr().err


def test_scores_count_only_scored_inputs_with_a_known_class():
    probs = np.array([[0.7, 0.3], [0.2, 0.8], [np.nan, np.nan], [0.6, 0.4]], np.float32)
    truth = class_indices(np.array([[1, 0], [1, 0], [0, 1], [0, 1]], np.float32))
    scored = Scored(
        np.array(list("abcd"), object),
        truth,
        probs,
        np.array(["", "", "corrupt_image: x", ""], object),
    )
    assert list(scored.predicted) == [0, 1, -1, 0]
    assert scored.summary() == {"images": 3, "correct": 1, "accuracy": 1 / 3}
    assert scored.unreadable_reasons() == {"corrupt_image": 1}


def test_rays_actor_notice_is_dropped_from_stderr_and_nothing_else(capfd):
    from tljob import output

    notice = (
        "[2026-12-05 00:22:36,245 E 7049 7049] core_worker.cc:2465: Actor with class name: "
        "'MapWorker(MapBatches(Predictor))' and ID: 'ab' has constructor arguments in the "
        "object store and max_restarts > 0. If the arguments in the object store go out of "
        "scope or are lost, the actor restart will fail.\n"
    )
    with output.ray_actor_notices_hidden(verbose=False):
        os.write(2, b"a line before\n" + notice.encode() + b"a line after\n")
    assert capfd.readouterr().err == "a line before\na line after\n"
    with output.ray_actor_notices_hidden(verbose=True):
        os.write(2, notice.encode())
    assert capfd.readouterr().err == notice


def test_parts_that_do_not_hold_each_input_once_fail_the_run():
    import pyarrow as pa

    from tljob.errors import JobFailedError

    rows = pa.table({"uri": ["a", "b", "b", "z"]})
    parts.check_rows(pa.table({"uri": ["b", "a"]}), ["a", "b"], "out")  # in any order
    with pytest.raises(JobFailedError) as failed:
        parts.check_rows(rows, ["a", "b", "c"], "out")
    assert str(failed.value) == (
        "the parts in out do not hold each input exactly once: 1 missing ['c'], 1 repeated "
        "['b'], 1 not an input ['z']; delete the folder and predict again"
    )
