"""``tljob predict`` and the end-of-run re-check on the session's Ray cluster, with the tiny
exported model of ``infer_model``: predictions over the local S3 server with unreadable
objects among them and the pseudo-label manifest, a killed run and its rerun with the driver
free of TensorFlow, the re-check of a prepared split. The expected predictions are the
``.keras`` model's own, computed here in this process.
"""

from __future__ import annotations

import csv
import io
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from conftest import REPO, write_digits_tree, write_truncated_jpeg
from infer_model import CLASSES, SIZE, TinyModel, digit_files
from s3_jobs import credentials_file, wait_for_job_end

from tljob import storage
from tljob.data.prepared import PreparedManifest, StoreSettings
from tljob.images import load_image


@pytest.fixture(scope="module")
def tiny(tmp_path_factory) -> TinyModel:
    return TinyModel(tmp_path_factory.mktemp("tiny") / "run")


@pytest.fixture(scope="module")
def digits(tmp_path_factory) -> list[Path]:
    return digit_files(tmp_path_factory.mktemp("digits"))


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

        creds = credentials_file(tmp_path, s3.server.admin)
        self.client = JobSubmissionClient(ray_cluster["dashboard"])
        self.env = {
            "AWS_SHARED_CREDENTIALS_FILE": str(creds),
            "AWS_PROFILE": "tljob-test",
            "AWS_EC2_METADATA_DISABLED": "true",
            "PYTHONUNBUFFERED": "1",
        }

    def run(self, args: list[str], timeout: float = 300) -> tuple[str, str]:
        entrypoint = " ".join([sys.executable, str(REPO / "ray_jobs" / "predict.py"), *args])
        job_id = self.client.submit_job(entrypoint=entrypoint, runtime_env={"env_vars": self.env})
        status = wait_for_job_end(self.client, job_id, timeout, poll_s=0.5)
        return status, self.client.get_job_logs(job_id)


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
    assert "constructor arguments in the object store" not in rerun.stderr  # Ray's notice
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
