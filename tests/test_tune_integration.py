"""A real sweep on the session's local Ray: 2 backbones x 2 learning rates, ASHA, killed
mid-way and resumed; its outputs, the best model, data decoded once, nothing leaked. And
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

BACKBONES = ["mobilenet_v3_small", "mobilenet_v2"]
LEARNING_RATES = [3e-3, 1e-7]  # the second barely moves the weights: ASHA's to stop


def sweep_yaml(tmp_path: Path, data: Path, search: dict, name: str = "sweep.yaml") -> Path:
    tree = {
        "data": {"source": str(data), "image_size": 32, "val_fraction": 0.25, "seed": 1},
        "model": {"backbone": BACKBONES[0], "weights": "none", "head": {"dropout": 0.0}},
        "train": {
            "batch_size": 8,
            "stages": [{"name": "all", "epochs": 2, "learning_rate": 1e-3, "trainable": "all"}],
        },
        "scaling": {
            "num_workers": 1,
            "cpus_per_worker": 0.25,
        },  # 2 trials at once, 1 CPU for Ray Data
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


def run_histories(runs: Path) -> dict[str, tuple[int, float]]:
    """Each trial run's (epochs in history.csv, its mtime)."""
    found = {}
    for history in runs.glob("bb-lr-*/history.csv"):
        with open(history) as f:
            found[history.parent.name] = (len(list(csv.DictReader(f))), history.stat().st_mtime)
    return found


@pytest.mark.ray
def test_sweep_stops_early_resumes_and_keeps_the_best_model(tmp_path, ray_connected):
    import ray
    from ray.util.state import list_actors, list_placement_groups

    data = write_digits_tree(tmp_path / "digits", classes=3, per_class=16, scale=4)
    config = sweep_yaml(tmp_path, data, SEARCH)
    env = {
        **os.environ,
        "RAY_ADDRESS": ray_connected["gcs"],
        "PYTHONUNBUFFERED": "1",
        "PYTHONPATH": str(Path(__file__).resolve().parents[1]),
    }
    runs = tmp_path / "runs"
    sweep_dir = runs / "bb-lr"

    # 1. start the sweep in its own process group; kill it once a trial has ended
    with open(tmp_path / "first.log", "w") as log:
        proc = subprocess.Popen(
            tune_cmd(config),
            stdout=log,
            stderr=subprocess.STDOUT,
            env=env,
            start_new_session=True,
        )
    deadline = time.monotonic() + 600
    while True:
        text = (tmp_path / "first.log").read_text()
        if "finished 2 epoch(s)" in text or "stopped by ASHA" in text:
            break
        assert proc.poll() is None, text[-4000:]
        assert time.monotonic() < deadline, text[-4000:]
        time.sleep(0.5)
    before_kill = run_histories(runs)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait(timeout=60)
    run_of = dict(re.findall(r"(trial \d+/4 \(.*?\)): started as run (\S+)", text))
    ended = [run_of[t] for t in re.findall(r"(trial \d+/4 \(.*?\)): (?:finished|stopped)", text)]
    assert ended, text[-3000:]

    # 2. resume: it finishes the sweep, without rerunning the trials that had ended
    resumed = subprocess.run(
        tune_cmd(config, "--resume"), capture_output=True, text=True, env=env, timeout=900
    )
    assert resumed.returncode == 0, resumed.stdout[-4000:] + resumed.stderr[-4000:]
    out = resumed.stdout
    assert "resuming the sweep in" in out
    assert "Trial status" not in out and "Current time" not in out  # Tune's table: --verbose

    rows = read_trials(sweep_dir / "trials.csv")
    assert len(rows) == 4
    lr_column = "train.stages.0.learning_rate"
    assert sorted((r["model.backbone"], float(r[lr_column])) for r in rows) == sorted(
        (b, lr) for b in BACKBONES for lr in LEARNING_RATES
    )
    assert all(not r["error"] for r in rows), rows
    stopped = [r for r in rows if r["stopped_early"].lower() in ("true", "yes", "1")]
    assert stopped, rows  # ASHA stopped at least one trial after its first epoch
    assert all(int(r["epochs_run"]) == 1 for r in stopped)
    finished = [r for r in rows if int(r["epochs_run"]) == 2]
    assert finished and len(finished) + len(stopped) == 4

    # trials that had ended before the kill were not rerun: same epochs, files untouched
    after = run_histories(runs)
    for name in ended:
        assert after[name] == before_kill[name], name

    # the best trial: by val_loss, lowest, among those that finished (and exported)
    metric_col = next(c for c in rows[0] if c.startswith("best") and "val_loss" in c)
    best_row = min(finished, key=lambda r: float(r[metric_col]))
    best = sweep_dir / "best"
    summary = json.loads((best / "summary.json").read_text())
    assert summary["run"] == f"bb-lr-{best_row['trial_id']}"
    assert summary["backbone"] == best_row["model.backbone"]
    assert summary["best"]["val_loss"] == pytest.approx(float(best_row[metric_col]), rel=1e-4)
    labels = json.loads((best / "labels.json").read_text())
    assert labels == {"0": "digit_0", "1": "digit_1", "2": "digit_2"}
    from tljob.nn import io as nn_io

    model = nn_io.load_exported(best / "model" / "model.keras")
    images = np.zeros((5, 32, 32, 3), dtype=np.uint8)
    probs = nn_io.predict_probabilities(model, images)
    assert probs.shape == (5, 3)
    assert np.allclose(probs.sum(axis=1), 1.0, atol=1e-4)
    assert (sweep_dir / "sweep.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"

    # the source images were decoded once: one preparation attempt, reused by every trial
    prepared = [p for p in (runs / "prepared").iterdir() if p.is_dir()]
    assert len(prepared) == 1
    attempts = [p for p in prepared[0].iterdir() if p.is_dir()]
    assert len(attempts) == 1, attempts
    reports = [json.loads(p.read_text()) for p in runs.glob("bb-lr-*/data_report.json")]
    assert len(reports) == 4 and all(r["reused"] for r in reports), reports

    # nothing of the stopped trials' Train runs is left: no controller, worker or reservation
    time.sleep(2)
    alive = [
        a.class_name
        for a in list_actors(filters=[("state", "=", "ALIVE")], raise_on_missing_output=False)
        if "Train" in a.class_name or "Worker" in a.class_name and "Tune" not in a.class_name
    ]
    assert not alive, alive
    groups = list_placement_groups(filters=[("state", "=", "CREATED")])
    assert not groups, groups
    assert ray.is_initialized()


def test_an_invalid_search_path_exits_2_before_ray_starts(tmp_path):
    data = write_digits_tree(tmp_path / "digits", classes=2, per_class=4)
    config = sweep_yaml(tmp_path, data, {"model.backbon": {"choice": ["vgg16"]}}, "bad.yaml")
    code = (
        "import sys; from tljob.cli import main; rc = main(sys.argv[1:]); "
        "print('ray loaded' if 'ray' in sys.modules else 'no ray'); sys.exit(rc)"
    )
    started = time.monotonic()
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
    assert time.monotonic() - started < 20  # an import and a YAML file, not a cluster
