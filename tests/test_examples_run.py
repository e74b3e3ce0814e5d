"""The examples end to end on the session's Ray cluster, each run once at tiny size: the
example file as users have it, with examples/README.md's command, run in a user's checkout
(example_checkout.py) and the ``--set`` overrides of ``TINY`` (5 images of each class,
32 px, one epoch per stage), with one worker (``ONE_WORKER``; two workers' runs are the
local folder and S3 examples'). The local folder example runs in test_examples_token_auth.py,
submitted to a cluster of its own with token authentication; the S3 example in
test_s3_integration.py, whose scenario (a killed driver, a lost S3 server, the resumes)
runs on it."""

from __future__ import annotations

import csv
import subprocess

import pytest
from example_checkout import TINY, read_json, set_args, user_checkout, user_env
from PIL import Image

from tljob.config import load_config
from tljob.demo import CLASS_NAMES

pytestmark = pytest.mark.ray

FASHION = sorted(CLASS_NAMES)  # a folder tree's classes: the sorted folder names
ONE_WORKER = [*TINY, "scaling.num_workers=1"]


def tljob(checkout, *args: str, ray_address: str | None = None, timeout: float = 900):
    """``tljob ARGS`` in the checkout, on the session cluster when ``ray_address`` is given
    (instead of a local Ray started for the run: one cluster for the whole suite)."""
    extra = {"RAY_ADDRESS": ray_address} if ray_address else {}
    return subprocess.run(
        ["tljob", *args], cwd=checkout, env=user_env(**extra),
        capture_output=True, text=True, timeout=timeout,
    )  # fmt: skip


def test_the_manifest_example_trains_on_its_five_groups(tmp_path_factory, ray_cluster):
    checkout = user_checkout(tmp_path_factory)
    # 5 of each group (the first in path order: tops' are coats), 1 of them for validation
    proc = tljob(checkout, "train", "--config", "examples/manifest.yaml", *set_args(ONE_WORKER),
                 ray_address=ray_cluster["gcs"])  # fmt: skip
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-4000:]
    run_dir = checkout / "tljob-runs" / "fashion-manifest-groups"
    summary = read_json(run_dir / "summary.json")
    groups = ["tops", "bottoms", "dress", "footwear", "bag"]
    assert summary["classes"] == groups  # data.classes' order, not sorted
    assert read_json(run_dir / "labels.json") == {str(i): g for i, g in enumerate(groups)}
    data = summary["data"]
    assert (data["listed"], data["duplicates"], data["quarantined"]) == (25, 0, 0)
    assert data["splits"]["train"]["per_class_used"] == dict.fromkeys(groups, 4)
    assert data["splits"]["val"]["per_class_used"] == dict.fromkeys(groups, 1)
    # balanced weights of equal counts are all 1
    assert summary["class_weight"] == {"mode": "balanced", "weights": dict.fromkeys(groups, 1.0)}
    assert summary["best_metric"] == "val_macro_f1"
    assert [(name, s["epochs"]) for name, s in summary["stages"].items()] == [
        ("head", 1),
        ("fine_tune", 1),
    ]
    assert (summary["backbone"], summary["weights"], summary["image_size"]) == (
        "mobilenet_v2_tv",
        "imagenet",
        32,
    )
    assert summary["exported_model"]["images"] == 5
    assert summary["replica_weights_identical"] is True
    report = read_json(run_dir / "data_report.json")
    assert report["listed"] == 25 and report["quarantined_files"] == []
    with open(run_dir / "history.csv") as f:
        assert [r["stage"] for r in csv.DictReader(f)] == ["head", "fine_tune"]
    assert (run_dir / "model" / "model.keras").is_file()


def test_the_augmented_example_previews_and_trains_on_new_views(tmp_path_factory, ray_cluster):
    checkout = user_checkout(tmp_path_factory)
    # the preview exactly as examples/README.md gives it (no Ray, the example's 96 px)
    preview = tljob(checkout, "augment", "preview", "--config", "examples/augmented.yaml",
                    "--out", "augment_preview.png", timeout=300)  # fmt: skip
    assert preview.returncode == 0, preview.stdout[-3000:] + preview.stderr[-3000:]
    assert preview.stdout.strip() == f"augmentation preview: {checkout / 'augment_preview.png'}"
    with Image.open(checkout / "augment_preview.png") as im:
        # 6 images (rows) x (the plain resize + 6 views), 96 px cells, 4 px gaps, a 14 px
        # header and 4 caption lines of 11 px per row
        assert im.size == (4 + 7 * (96 + 4), 14 + 6 * (96 + 44 + 4) + 4)

    proc = tljob(checkout, "train", "--config", "examples/augmented.yaml", *set_args(ONE_WORKER),
                 ray_address=ray_cluster["gcs"])  # fmt: skip
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-4000:]
    # the augmented split is streamed anew every epoch, never frozen in worker memory
    assert (
        "input: val held in worker memory, the rest streamed from Ray Data every epoch: "
        "training because the data pipeline augments it anew every epoch" in proc.stdout
    ), proc.stdout[-4000:]
    run_dir = checkout / "tljob-runs" / "fashion-augmented"
    saved = load_config(run_dir / "config.yaml")
    assert saved == load_config(checkout / "examples" / "augmented.yaml", ONE_WORKER)
    assert saved.augment.preset == "light" and saved.augment.rotation_range == 10.0
    summary = read_json(run_dir / "summary.json")
    assert summary["classes"] == FASHION
    data = summary["data"]
    assert data["listed"] == 50
    assert data["splits"]["train"]["per_class_used"] == dict.fromkeys(FASHION, 4)
    assert data["splits"]["val"]["per_class_used"] == dict.fromkeys(FASHION, 1)
    assert summary["epochs"] == 2 and list(summary["stages"]) == ["head", "fine_tune"]
    assert summary["exported_model"]["correct"] == round(summary["best"]["val_accuracy"] * 10)


def test_the_sweep_example_runs_a_trial_and_keeps_it_as_the_best(tmp_path_factory, ray_cluster):
    checkout = user_checkout(tmp_path_factory)
    # 1 draw instead of 6 (many trials, ASHA and the best of them: test_tune_integration.py);
    # 2 epochs in all, under the grace period of 3
    proc = tljob(checkout, "tune", "--config", "examples/sweep.yaml",
                 *set_args([*TINY, "tune.num_samples=1"]),
                 ray_address=ray_cluster["gcs"])  # fmt: skip
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-4000:]
    sweep_dir = checkout / "tljob-runs" / "fashion-sweep"
    with open(sweep_dir / "trials.csv") as f:
        rows = list(csv.DictReader(f))
    assert [(r["status"], r["stopped_early"], r["epochs_run"], r["error"]) for r in rows] == [
        ("completed", "false", "2", "")
    ]
    for row in rows:
        assert 1e-3 <= float(row["train.stages.0.learning_rate"]) <= 1e-2
        assert 5e-5 <= float(row["train.stages.1.learning_rate"]) <= 1e-3
        assert 0.0 <= float(row["model.head.dropout"]) <= 0.5
        run_dir = checkout / "tljob-runs" / f"fashion-sweep-{row['trial_id']}"
        summary = read_json(run_dir / "summary.json")
        assert summary["epochs"] == 2 and summary["classes"] == FASHION
        assert summary["data"]["splits"]["train"]["used"] == 40
    best = read_json(sweep_dir / "best" / "trial.json")["trial_id"]
    assert best == rows[0]["trial_id"]
    best_summary = read_json(sweep_dir / "best" / "summary.json")
    assert best_summary["run"] == f"fashion-sweep-{best}"
    assert read_json(sweep_dir / "best" / "labels.json") == {
        str(i): c for i, c in enumerate(FASHION)
    }
    assert (sweep_dir / "best" / "model" / "model.keras").is_file()
    assert (sweep_dir / "sweep.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
