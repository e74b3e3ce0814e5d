"""A real sweep on the session's local Ray: 2 backbones x 2 learning rates, ASHA, killed
mid-way and resumed; its outputs, the best model (and it alone scored on the test split),
data decoded once, nothing leaked. And
an invalid search path refused with exit 2 before Ray starts."""

from __future__ import annotations

import csv
import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import yaml
from conftest import write_digits_tree

BACKBONES = ["mobilenet_v3_small", "mobilenet_v2"]  # the two cheapest, at their 32 px minimum
LEARNING_RATES = [3e-3, 1e-7]  # the second barely moves the weights: ASHA's to stop
EPOCHS = 3
# What Tune and Ray print on their own; the default console has none of it.
TUNE_AND_RAY_LINES = (
    "Configuration for experiment",
    "View detailed results",
    "Trial status",
    "worker processes have been started",
)


def sweep_yaml(tmp_path: Path, data: Path, search: dict, name: str = "sweep.yaml") -> Path:
    tree = {
        "data": {
            "source": str(data),
            "image_size": 32,
            "val_fraction": 0.25,
            "test_fraction": 0.25,  # only the best trial is scored on it, once
            "seed": 1,
        },
        "model": {"backbone": BACKBONES[0], "weights": "none", "head": {"dropout": 0.0}},
        "train": {
            "batch_size": 8,
            "best_metric": "val_loss",  # each trial exports its epoch of the sweep's metric
            "stages": [
                {"name": "all", "epochs": EPOCHS, "learning_rate": 1e-3, "trainable": "all"}
            ],
        },
        "scaling": {"num_workers": 1, "cpus_per_worker": 0.25},
        "run": {"storage_path": str(tmp_path / "runs")},
        "search": search,
        "tune": {
            "name": "bb-lr",
            "metric": "val_loss",  # continuous: ASHA's rung comparisons never tie
            "scheduler": "asha",
            "grace_period": 1,
            "reduction_factor": 2,
        },
    }
    path = tmp_path / name
    path.write_text(yaml.safe_dump(tree))
    return path


SEARCH = {
    "model.backbone": {"grid": BACKBONES},
    "train.stages.0.learning_rate": {"grid": LEARNING_RATES},
}


def tune_cmd(config: Path, *extra: str) -> list[str]:
    return [sys.executable, "-m", "tljob.cli", "tune", "--config", str(config), *extra]


def read_trials(path: Path) -> list[dict[str, str]]:
    with open(path) as f:
        return list(csv.DictReader(f))


def history_rows(path: Path) -> list[dict[str, str]]:
    with open(path) as f:
        return list(csv.DictReader(f))


def run_histories(runs: Path) -> dict[str, tuple[int, int]]:
    """Each trial run's (epochs in history.csv, its mtime in ns)."""
    found = {}
    for history in runs.glob("bb-lr-*/history.csv"):
        found[history.parent.name] = (len(history_rows(history)), history.stat().st_mtime_ns)
    return found


def age_access_times(images: list[Path]) -> None:
    """Set each file's access time well before its modification time: the next read of it
    moves the access time past it (the 'relatime' rule), later reads may not."""
    for image in images:
        st = image.stat()
        os.utime(image, ns=(st.st_mtime_ns - 10**11, st.st_mtime_ns))


def read_since_aged(images: list[Path]) -> list[Path]:
    return [p for p in images if p.stat().st_atime_ns >= p.stat().st_mtime_ns]


def wait_for(path: Path, pattern: str, proc: subprocess.Popen, timeout: float) -> str:
    deadline = time.monotonic() + timeout
    while True:
        text = path.read_text()
        if re.search(pattern, text):
            return text
        assert proc.poll() is None, text[-4000:]
        assert time.monotonic() < deadline, text[-4000:]
        time.sleep(0.2)


@pytest.mark.ray
def test_sweep_stops_early_resumes_and_keeps_the_best_model(tmp_path, ray_connected):
    import ray
    from ray.util.state import list_actors

    data = write_digits_tree(tmp_path / "digits", classes=3, per_class=16, scale=4)
    images = sorted(data.glob("*/*.png"))
    assert len(images) == 48
    config = sweep_yaml(tmp_path, data, SEARCH)
    env = {
        # a sweep run in the suite's own process sets RAY_AIR_NEW_OUTPUT=0 there: not inherited
        **{k: v for k, v in os.environ.items() if k != "RAY_AIR_NEW_OUTPUT"},
        "RAY_ADDRESS": ray_connected["gcs"],
        "PYTHONUNBUFFERED": "1",
        "PYTHONPATH": str(Path(__file__).resolve().parents[1]),
    }
    runs = tmp_path / "runs"
    sweep_dir = runs / "bb-lr"
    age_access_times(images)

    # 1. the sweep, quiet, in its own process group: killed once a trial has ended
    first_log = tmp_path / "first.log"
    with open(first_log, "w") as log:
        proc = subprocess.Popen(
            tune_cmd(config), stdout=log, stderr=subprocess.STDOUT, env=env,
            start_new_session=True,
        )  # fmt: skip
    try:
        wait_for(first_log, r"started as run", proc, 300)
        # The data was prepared before the first trial: every source image read once.
        assert read_since_aged(images) == images
        age_access_times(images)
        text = wait_for(first_log, r"\): (finished|stopped by ASHA)", proc, 400)
        before_kill = run_histories(runs)
    finally:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=60)
    run_of = dict(re.findall(r"(trial \d+/4 \(.*?\)): started as run (\S+)", text))
    ended = [run_of[t] for t in re.findall(r"(trial \d+/4 \(.*?\)): (?:finished|stopped)", text)]
    assert ended, text[-3000:]
    assert "data: shards in" in text and "(prepared now)" in text
    assert re.search(r"trial 1/4 \(mobilenet_v3_small, lr 0\.003\): epoch 1/3, val_loss \d", text)
    assert not [s for s in TUNE_AND_RAY_LINES if s in text], text[-3000:]

    # 2. resume (with --verbose: Tune's own output shown): it finishes the sweep
    resumed = subprocess.run(
        tune_cmd(config, "--resume", "--verbose"),
        capture_output=True, text=True, env=env, timeout=600,
    )  # fmt: skip
    out = resumed.stdout
    assert resumed.returncode == 0, out[-4000:] + resumed.stderr[-4000:]
    assert "resuming the sweep in" in out
    assert "Configuration for experiment" in out  # Tune's box: only with --verbose

    rows = read_trials(sweep_dir / "trials.csv")
    assert len(rows) == 4
    lr_column = "train.stages.0.learning_rate"
    assert sorted((r["model.backbone"], float(r[lr_column])) for r in rows) == sorted(
        (b, lr) for b in BACKBONES for lr in LEARNING_RATES
    )
    assert all(not r["error"] for r in rows), rows
    stopped = [r for r in rows if r["stopped_early"] == "true"]
    assert stopped, rows  # ASHA stopped at least one trial at a rung (after epoch 1 or 2)
    assert all(r["status"] == "stopped" for r in stopped), rows
    # ASHA decided at a rung, after epoch 1 or 2; the run may have trained one more epoch
    # before its actor ended (reports reach Tune while training goes on)
    both = first_log.read_text() + out
    run_of.update(re.findall(r"(trial \d+/4 \(.*?\)): started as run (\S+)", both))
    decided = re.findall(r"(trial \d+/4 \(.*?\)): stopped by ASHA after (\d) epoch", both)
    assert {run_of[t] for t, _ in decided} == {f"bb-lr-{r['trial_id']}" for r in stopped}
    assert {int(k) for _, k in decided} <= {1, 2}, decided
    assert all(int(r["epochs_run"]) <= EPOCHS for r in stopped), rows
    finished = [r for r in rows if r["stopped_early"] == "false"]
    assert finished and all(int(r["epochs_run"]) == EPOCHS for r in finished), rows
    assert all(r["status"] == "completed" for r in finished), rows

    # trials that had ended before the kill were not rerun: same epochs, files untouched
    after = run_histories(runs)
    for name in ended:
        assert after[name] == before_kill[name], name

    # the best trial: the lowest best val_loss (mode min) among those that finished, ties to
    # the earlier epoch, then the lower trial id; full precision from each run's history
    # (trials.csv has 6 digits, and untrained trials tie near ln 3 at that precision)
    def rank(row: dict[str, str]) -> tuple[float, int, str]:
        epochs = history_rows(runs / f"bb-lr-{row['trial_id']}" / "history.csv")
        loss, epoch = min((float(e["val_loss"]), int(e["global_epoch"])) for e in epochs)
        assert float(row["best_val_loss"]) == pytest.approx(loss, rel=1e-5)
        return (loss, epoch, row["trial_id"])

    best_row = min(finished, key=rank)
    best = sweep_dir / "best"
    summary = json.loads((best / "summary.json").read_text())
    assert summary["run"] == f"bb-lr-{best_row['trial_id']}"
    assert summary["backbone"] == best_row["model.backbone"]
    assert summary["best"]["val_loss"] == pytest.approx(float(best_row["best_val_loss"]), rel=1e-5)
    assert json.loads((best / "trial.json").read_text())["trial_id"] == best_row["trial_id"]
    labels = json.loads((best / "labels.json").read_text())
    assert labels == {"0": "digit_0", "1": "digit_1", "2": "digit_2"}
    from tljob.nn import io as nn_io

    model = nn_io.load_exported(best / "model" / "model.keras")
    probs = nn_io.predict_probabilities(model, np.zeros((5, 32, 32, 3), dtype=np.uint8))
    assert probs.shape == (5, 3)
    assert np.allclose(probs.sum(axis=1), 1.0, atol=1e-4)
    assert (sweep_dir / "sweep.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    # the test split (12 images) scored the best trial's model once, by the sweep; no trial
    test = summary["test"]
    recorded = json.loads((best / "test_metrics.json").read_text())
    assert test["images"] == 12 and sum(map(sum, recorded["confusion_matrix"])) == 12
    assert recorded["accuracy"] == test["accuracy"]
    assert list(runs.glob("bb-lr-*/test_metrics.json")) == []
    assert out.count("best trial on the test split (12 images, scored once): accuracy ") == 1
    # the printed table marks the same trial (fixed-width columns: padding after the mark)
    assert re.search(rf"^\*\s+{re.escape(best_row['trial_id'])}\s", out, re.MULTILINE), out

    # the source images were decoded once: no trial, and not the resumed sweep, read one
    assert read_since_aged(images) == []
    prepared = [p for p in (runs / "prepared").iterdir() if p.is_dir()]
    assert len(prepared) == 1
    assert len([p for p in prepared[0].iterdir() if p.is_dir()]) == 1
    reports = [json.loads(p.read_text()) for p in runs.glob("bb-lr-*/data_report.json")]
    assert len(reports) == 4 and all(r["prepared"]["reused"] for r in reports), reports

    # nothing of the trials' Train runs is left: no controller or worker, every CPU free
    deadline = time.monotonic() + 60
    while True:
        alive = [
            a.class_name
            for a in list_actors(
                address=ray_connected["dashboard"],
                filters=[("state", "=", "ALIVE")],
                raise_on_missing_output=False,
            )
            if "Train" in a.class_name or "Worker" in a.class_name
        ]
        free = ray.available_resources().get("CPU", 0.0)
        if (not alive and free == ray.cluster_resources()["CPU"]) or time.monotonic() > deadline:
            break
        time.sleep(1)
    assert not alive, alive
    assert free == ray.cluster_resources()["CPU"]


def test_an_invalid_search_path_exits_2_before_ray_starts(tmp_path):
    data = write_digits_tree(tmp_path / "digits", classes=2, per_class=4)
    config = sweep_yaml(tmp_path, data, {"model.backbon": {"choice": ["vgg16"]}}, "bad.yaml")
    code = (
        "import sys; from tljob.cli import main; rc = main(sys.argv[1:]); "
        "print('ray loaded' if 'ray' in sys.modules else 'no ray'); sys.exit(rc)"
    )
    proc = subprocess.run(
        [sys.executable, "-c", code, "tune", "--config", str(config)],
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])},
    )
    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert "search.model.backbon" in proc.stderr
    assert proc.stdout.strip() == "no ray"
