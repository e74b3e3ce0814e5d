"""Inference on the workers (``tljob.infer``) and ``tljob predict``, with one tiny exported
model for the whole file (one random Dense layer on 8x8-pooled 32 px digits, exported with
``nn.io.export_model``): predictions over the local S3 server with unreadable objects among
them, a killed run and its rerun, the driver without TensorFlow, the pseudo-label manifest,
the re-check of a prepared split, and the refusals before Ray starts.

The expected predictions are the ``.keras`` model's own, computed here in this process.
"""

from __future__ import annotations

import csv
import io
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from conftest import REPO, write_digits_tree, write_truncated_jpeg

from tljob import storage
from tljob.cli import main
from tljob.data.prepared import PreparedManifest, StoreSettings
from tljob.images import load_image
from tljob.infer import parts
from tljob.infer.inputs import list_inputs
from tljob.infer.model_file import ModelError, resolve_model
from tljob.infer.results import Scored, class_indices

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


@pytest.fixture(scope="module")
def tiny(tmp_path_factory) -> TinyModel:
    return TinyModel(tmp_path_factory.mktemp("tiny") / "run")


@pytest.fixture(scope="module")
def digits(tmp_path_factory) -> list[Path]:
    """12 digit images, 32 px, 4 per class, sorted by path."""
    root = write_digits_tree(tmp_path_factory.mktemp("digits"), classes=3, per_class=4, scale=4)
    return sorted(root.rglob("*.png"))


def decisive(probs: np.ndarray) -> None:
    """The expected labels mean something: no top-2 is within numerical noise of top-1."""
    top2 = np.sort(probs, axis=1)[:, -2:]
    assert (top2[:, 1] - top2[:, 0]).min() > 1e-3, probs


def threshold_between(values: np.ndarray) -> float:
    """A threshold with some values on each side, far from all of them."""
    ordered = np.sort(values)
    gaps = np.diff(ordered)
    i = len(ordered) // 3 + int(np.argmax(gaps[len(ordered) // 3 : 2 * len(ordered) // 3]))
    assert gaps[i] > 1e-3, ordered
    return float((ordered[i] + ordered[i + 1]) / 2)


class Jobs:
    """Jobs on the session cluster through its job server, with S3 credentials from a file
    (the cluster's own processes have none)."""

    def __init__(self, ray_cluster, s3, tmp_path: Path) -> None:
        from ray.job_submission import JobSubmissionClient

        keys = s3.server.admin
        creds = tmp_path / "aws-credentials"
        creds.touch(mode=0o600)
        creds.write_text(
            f"[tljob-test]\naws_access_key_id = {keys.access_key_id}\n"
            f"aws_secret_access_key = {keys.secret_access_key}\n"
        )
        self.client = JobSubmissionClient(ray_cluster["dashboard"])
        self.env = {
            "AWS_SHARED_CREDENTIALS_FILE": str(creds),
            "AWS_PROFILE": "tljob-test",
            "AWS_EC2_METADATA_DISABLED": "true",
            "PYTHONUNBUFFERED": "1",
        }

    def run(self, args: list[str], timeout: float = 300) -> tuple[str, str]:
        from ray.job_submission import JobStatus

        entrypoint = " ".join([sys.executable, str(REPO / "ray_jobs" / "predict.py"), *args])
        job_id = self.client.submit_job(entrypoint=entrypoint, runtime_env={"env_vars": self.env})
        deadline = time.monotonic() + timeout
        while (status := self.client.get_job_status(job_id)) not in (
            JobStatus.SUCCEEDED,
            JobStatus.FAILED,
            JobStatus.STOPPED,
        ):
            assert time.monotonic() < deadline, f"job {job_id} still {status}"
            time.sleep(0.5)
        return str(status), self.client.get_job_logs(job_id)


@pytest.mark.ray
def test_predict_over_an_s3_prefix_gives_a_row_per_object_and_the_pseudo_labels(
    tmp_path, tiny, digits, s3, ray_cluster
):
    for path in digits:  # a flat prefix of new images, and two objects that are not images
        storage.write_bytes(storage.resolve(s3.uri("incoming", path.name)), path.read_bytes())
    broken = write_truncated_jpeg(tmp_path / "broken.jpg")
    storage.write_bytes(storage.resolve(s3.uri("incoming", "broken.jpg")), broken.read_bytes())
    storage.write_bytes(storage.resolve(s3.uri("incoming", "notes.png")), b"not an image\n")
    storage.write_bytes(storage.resolve(s3.uri("incoming", "README.txt")), b"a note\n")
    storage.upload_dir(tiny.run_dir, storage.resolve(s3.uri("runs", "tiny")))
    expected = tiny.probabilities(digits)
    decisive(expected)
    p = threshold_between(expected.max(axis=1))

    status, log = Jobs(ray_cluster, s3, tmp_path).run(
        [
            f"--model {s3.uri('runs', 'tiny')} --source {s3.uri('incoming')}",
            f"--out {s3.uri('predictions')} --top-k 2 --part-size 5",
            f"--min-confidence {p} --as-manifest {s3.uri('lists', 'pseudo.csv')}",
            f"--set s3.endpoint_url={s3.server.endpoint_url} --set s3.allow_http=true",
        ]
    )
    assert status == "SUCCEEDED", log[-4000:]

    # 12 images + 2 unreadable objects = 14 rows in 3 parts of 5, 5 and 4, in uri order
    assert s3.objects("predictions/") == [
        "predictions/_SUCCESS.json",
        "predictions/_predict.json",
        "predictions/part-00000.parquet",
        "predictions/part-00001.parquet",
        "predictions/part-00002.parquet",
    ]
    out = storage.resolve(s3.uri("predictions"))
    tables = [
        pq.read_table(out.join(f"part-0000{i}.parquet").path, filesystem=out.fs) for i in (0, 1, 2)
    ]
    assert [t.num_rows for t in tables] == [5, 5, 4]
    rows = pa.concat_tables(tables)
    assert rows.column_names == [
        "uri", "label_1", "probability_1", "label_2", "probability_2", "error"
    ]  # fmt: skip
    uris = [s3.uri("incoming", p.name) for p in digits]
    bad = [s3.uri("incoming", "broken.jpg"), s3.uri("incoming", "notes.png")]
    assert rows.column("uri").to_pylist() == sorted(uris + bad)
    by_uri = {r["uri"]: r for r in rows.to_pylist()}
    assert by_uri[bad[0]]["error"].startswith("corrupt_image: ")
    assert by_uri[bad[1]]["error"] == "corrupt_image: not a recognised image format"
    for uri in bad:
        assert by_uri[uri]["label_1"] is None and by_uri[uri]["probability_1"] is None
    order = np.argsort(-expected, axis=1)
    for uri, probs, ranked in zip(uris, expected, order, strict=True):
        row = by_uri[uri]
        assert row["error"] is None
        assert [row["label_1"], row["label_2"]] == [CLASSES[ranked[0]], CLASSES[ranked[1]]]
        np.testing.assert_allclose(
            [row["probability_1"], row["probability_2"]], probs[ranked[:2]], atol=1e-5
        )

    summary = json.loads(storage.read_text(out.join("_SUCCESS.json")))
    assert {k: summary[k] for k in ("inputs", "predicted", "unreadable", "unreadable_reasons")} == {
        "inputs": 14,
        "predicted": 12,
        "unreadable": 2,
        "unreadable_reasons": {"corrupt_image": 2},
    }
    assert summary["skipped_at_listing"] == 1 and summary["skipped_reasons"] == {
        "not_an_image_file": 1
    }
    assert (summary["parts"], summary["parts_written"], summary["parts_reused"]) == (3, 3, 0)

    # the manifest: exactly the images whose top-1 probability is at least p, as data.source
    # reads a manifest
    confident = sorted(
        (uri, CLASSES[int(probs.argmax())])
        for uri, probs in zip(uris, expected, strict=True)
        if probs.max() >= p
    )
    assert 0 < len(confident) < len(uris)
    manifest = storage.read_text(storage.resolve(s3.uri("lists", "pseudo.csv")))
    assert list(csv.reader(io.StringIO(manifest))) == [["uri", "label"], *map(list, confident)]
    assert summary["pseudo_labels"]["rows"] == len(confident)
    from tljob.data.sources import list_manifest

    listed = list_manifest(s3.uri("lists", "pseudo.csv"))
    assert sorted((u, c) for c in listed.classes for u in listed.files[c]) == confident


WRAPPER = """
import sys
from tljob.cli import main
code = main(sys.argv[1:])
print("tensorflow imported by the driver:", "tensorflow" in sys.modules, flush=True)
sys.exit(code)
"""


@pytest.mark.ray
def test_a_killed_predict_run_resumes_to_each_input_exactly_once(tmp_path, tiny, ray_cluster):
    """The driver is killed (SIGKILL, ``TLJOB_PREDICT_KILL_AFTER_PARTS``) after its second
    part; the rerun keeps both, writes the rest, and every input is in exactly one row.
    The driver process never imports TensorFlow."""
    images = sorted(write_digits_tree(tmp_path / "new", 3, per_class=7, scale=4).rglob("*.png"))
    out = tmp_path / "out"
    args = [
        "predict", "--model", str(tiny.run_dir), "--source", str(tmp_path / "new"),
        "--out", str(out), "--format", "csv", "--top-k", "1", "--part-size", "4",
        "--batch-size", "4", "--actors", "1",
    ]  # fmt: skip
    env = {**os.environ, "RAY_ADDRESS": ray_cluster["gcs"], "PYTHONPATH": str(REPO)}

    def predict(**extra: str) -> subprocess.CompletedProcess[str]:
        command = [sys.executable, "-c", WRAPPER, *args]
        return subprocess.run(
            command, env={**env, **extra}, capture_output=True, text=True, timeout=300
        )

    killed = predict(TLJOB_PREDICT_KILL_AFTER_PARTS="2")
    assert killed.returncode == -9, killed.stdout[-3000:] + killed.stderr[-3000:]
    kept = sorted(p.name for p in out.glob("part-*"))
    assert kept == ["part-00000.csv", "part-00001.csv"]
    assert not (out / "_SUCCESS.json").exists()
    first = {p.name: p.read_bytes() for p in out.glob("part-*")}

    rerun = predict()
    assert rerun.returncode == 0, rerun.stdout[-3000:] + rerun.stderr[-3000:]
    assert "tensorflow imported by the driver: False" in rerun.stdout
    assert "21 images in" in rerun.stdout and "6 part(s) of up to 4" in rerun.stdout
    assert "2 already complete" in rerun.stdout
    assert "scoring 13 images" in rerun.stdout
    assert {name: (out / name).read_bytes() for name in first} == first  # not rewritten
    rows = [r for part in sorted(out.glob("part-*.csv")) for r in csv.DictReader(part.open())]
    assert [r["uri"] for r in rows] == [str(p) for p in images]  # each once, in order
    expected = tiny.probabilities(images)
    assert [r["label_1"] for r in rows] == [CLASSES[i] for i in expected.argmax(axis=1)]
    summary = json.loads((out / "_SUCCESS.json").read_text())
    assert (summary["inputs"], summary["predicted"], summary["unreadable"]) == (21, 21, 0)
    assert (summary["parts_written"], summary["parts_reused"]) == (4, 2)


def write_prepared_split(root: Path, images: list[Path], labels: list[int]) -> str:
    """Prepared data as ``tljob.data`` publishes it: a val split of one raw shard, stored at
    the training size, and its ``manifest.json``."""
    from tljob.data.shards import encode_stored

    store = StoreSettings(48, SIZE, "raw", 0, 10**8, 2**20)
    table = pa.table(
        {
            "image": [encode_stored(load_image(str(p)), SIZE, store) for p in images],
            "label": pa.array(labels, pa.int64()),
            "class_name": [CLASSES[i] for i in labels],
            "uri": [str(p) for p in images],
            "sha256": ["-"] * len(images),
        }
    )
    (root / "attempt" / "val").mkdir(parents=True)
    pq.write_table(table, root / "attempt" / "val" / "0.parquet", **store.write_options())
    manifest = PreparedManifest(
        fingerprint="fp",
        attempt="attempt",
        classes=CLASSES,
        store=store.__dict__,
        listed=len(images),
        per_split={"val": {"used": len(images), "per_class_used": {}}},
        files={"val": ["attempt/val/0.parquet"]},
    )
    (root / "manifest.json").write_text(manifest.to_json())
    return str(root)


def test_the_run_rescores_a_prepared_split_on_the_workers(tmp_path, tiny, digits, ray_connected):
    """What a run does at its end (``score_prepared``): every validation row, with its uri,
    scored by the exported model in an actor; the summary as summary.json records it."""
    from tljob.infer.pipeline import score_prepared

    labels = [0, 1, 2, 1, 1, 0, 2, 2, 0, 1, 0, 2]  # some right, some wrong
    prepared = write_prepared_split(tmp_path / "prepared", digits, labels)
    expected = tiny.probabilities(digits)
    scored = score_prepared(str(tiny.run_dir / "model" / "model.keras"), prepared, batch_size=5)
    assert list(scored.uris) == [str(p) for p in digits]
    assert list(scored.truth) == labels and set(scored.errors) == {""}
    np.testing.assert_allclose(scored.probs, expected, atol=1e-5)
    correct = int((expected.argmax(axis=1) == np.array(labels)).sum())
    assert 0 < correct < len(labels)
    assert scored.summary() == {"images": 12, "correct": correct, "accuracy": correct / 12}


# --- without Ray ---------------------------------------------------------------------


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
