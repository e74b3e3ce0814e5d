"""The whole job on a real local Ray cluster with 2 workers: a submitted job with a bad
config, schedules and class weights with in-model augmentation (outputs, replica
consistency, the exported model), and resuming after Ctrl-C in a terminal with the live
display. (A good job through ``ray job submit``, its progress lines, permissions and
TensorBoard logs: test_examples_token_auth.py, on the local folder example.)"""

from __future__ import annotations

import csv
import errno
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import yaml
from conftest import REPO, write_digits_tree
from PIL import Image

from tljob import output, storage
from tljob.config import load_config
from tljob.data.listing import list_images
from tljob.data.split import split_stratified
from tljob.images import load_image
from tljob.run import checkpoint as ckpt_files

pytestmark = pytest.mark.ray


def job_yaml(tmp_path: Path, data: Path, name: str, stages: list[dict], **extra) -> Path:
    tree = {
        "data": {"source": str(data), "image_size": 32, "val_fraction": 0.2, "seed": 1},
        "model": {"backbone": "vgg16", "weights": "none", "head": {"dropout": 0.0}},
        "train": {"batch_size": 4, "stages": stages, "reduce_lr": {"patience": 1}},
        "scaling": {"num_workers": 2, "cpus_per_worker": 0.5},
        "run": {"name": name, "storage_path": str(tmp_path / "runs")},
    }
    for key, value in extra.items():
        tree[key].update(value)
    path = tmp_path / f"{name}.yaml"
    path.write_text(yaml.safe_dump(tree))
    return path


def read_history(run_dir: Path) -> list[dict[str, str]]:
    with open(run_dir / "history.csv") as f:
        return list(csv.DictReader(f))


def driver_env(ray_cluster) -> dict[str, str]:
    return {**os.environ, "RAY_ADDRESS": ray_cluster["gcs"], "PYTHONUNBUFFERED": "1"}


def digest_of_weights_file(run_dir: Path, checkpoint: str, config: Path) -> str:
    from tljob.nn import io as nn_io
    from tljob.nn import model as nn_model
    from tljob.run.worker_end import weights_digest

    job = load_config(config)
    labels = json.loads((run_dir / "labels.json").read_text())
    plain = nn_model.build_model(job.model, len(labels), job.image_size)
    weights = nn_io.load_weights(plain, run_dir / checkpoint / "model.weights.h5")
    return weights_digest(weights)


RAY_BIN = str(Path(sys.executable).with_name("ray"))
ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]")


def run_in_a_terminal(command: list[str], env: dict[str, str], timeout: float) -> tuple[int, str]:
    """Run ``command`` with stdin, stdout and stderr on a new pseudo-terminal (160 columns);
    return its exit code and everything it wrote there."""
    leader, follower = os.openpty()
    os.set_blocking(leader, True)
    proc = subprocess.Popen(
        command,
        stdin=follower,
        stdout=follower,
        stderr=follower,
        env={**env, "COLUMNS": "160", "LINES": "40", "TERM": "xterm-256color"},
        close_fds=True,
    )
    os.close(follower)
    chunks: list[bytes] = []
    deadline = time.monotonic() + timeout
    try:
        while True:
            if time.monotonic() > deadline:
                raise TimeoutError("".join(c.decode(errors="replace") for c in chunks)[-4000:])
            try:
                data = os.read(leader, 65536)
            except OSError as e:  # EIO: every writer closed the terminal
                if e.errno != errno.EIO:
                    raise
                break
            if not data:
                break
            chunks.append(data)
    finally:
        os.close(leader)
    return proc.wait(timeout=60), b"".join(chunks).decode(errors="replace")


def submit(
    ray_cluster: dict, working_dir: Path, submission_id: str, config: str, cwd: Path
) -> subprocess.CompletedProcess:
    """``ray job submit`` of ``ray_jobs/train.py --config <config>`` (a path in
    ``working_dir``), run from ``cwd``; waits for the job to end."""
    return subprocess.run(
        [RAY_BIN, "job", "submit", "--address", ray_cluster["dashboard"],
         "--submission-id", submission_id, "--working-dir", str(working_dir), "--",
         sys.executable, str(REPO / "ray_jobs" / "train.py"), "--config", config],
        capture_output=True, text=True, timeout=900, cwd=cwd,
        env={**os.environ, "RAY_ADDRESS": ""},
    )  # fmt: skip


def test_a_submitted_job_with_a_bad_config_ends_failed_with_the_error_in_its_logs(
    tmp_path, ray_cluster
):
    data = write_digits_tree(tmp_path / "digits", classes=2, per_class=4)
    configs = tmp_path / "configs"
    configs.mkdir()
    shutil.copy(job_yaml(tmp_path, data, "bad", [], train={"batch_size": 0}), configs / "bad.yaml")
    proc = submit(ray_cluster, configs, "bad-config-1", "bad.yaml", cwd=tmp_path)
    assert proc.returncode != 0
    assert "Job 'bad-config-1' failed" in proc.stdout + proc.stderr
    from ray.job_submission import JobStatus, JobSubmissionClient

    client = JobSubmissionClient(ray_cluster["dashboard"])
    assert client.get_job_status("bad-config-1") == JobStatus.FAILED
    logs = subprocess.run(
        [RAY_BIN, "job", "logs", "--address", ray_cluster["dashboard"], "bad-config-1"],
        capture_output=True, text=True, timeout=120, env={**os.environ, "RAY_ADDRESS": ""},
    )  # fmt: skip
    assert "tljob: error: invalid config:" in logs.stdout
    assert "`train.batch_size` (0): Input should be greater than or equal to 1" in logs.stdout
    assert not (tmp_path / "runs" / "bad").exists()  # refused before anything was written


def test_rerun_resumes_from_the_last_checkpoint_after_ctrl_c(tmp_path, ray_cluster):
    data = write_digits_tree(tmp_path / "digits", classes=3, per_class=10)
    stages = [
        {"name": "head", "epochs": 1, "learning_rate": 1e-3, "trainable": "head"},
        {"name": "fine_tune", "epochs": 4, "learning_rate": "auto", "trainable": "top:4"},
    ]
    # a progress line every step, were it not for the rerun's terminal
    config = job_yaml(tmp_path, data, "crashy", stages, run={"progress_seconds": 0.001})
    run_dir = tmp_path / "runs" / "crashy"
    command = [sys.executable, str(REPO / "ray_jobs" / "train.py"), "--config", str(config)]
    first = subprocess.Popen(
        command,
        env=driver_env(ray_cluster),
        start_new_session=True,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    run_loc = storage.resolve(str(run_dir))
    deadline = time.monotonic() + 600
    while (ckpt_files.newest_complete(run_loc)[0] or "") < "checkpoint_epoch_0002":
        assert first.poll() is None, first.stdout.read()[-4000:]
        assert time.monotonic() < deadline, "no second checkpoint within 10 minutes"
        time.sleep(0.5)
    os.killpg(first.pid, signal.SIGINT)  # Ctrl-C mid-stage
    try:
        first.wait(timeout=120)
    except subprocess.TimeoutExpired:
        os.killpg(first.pid, signal.SIGKILL)
        first.wait(timeout=60)
        pytest.fail("Ctrl-C did not stop the run within 2 minutes")
    assert first.returncode == 130, first.stdout.read()[-6000:]
    out = first.stdout.read()
    assert "[tljob] interrupted. Rerun the same command to resume from checkpoint_epoch_" in out
    assert "tljob: interrupted" in out
    # learning_rate auto: a range test before the stage (20 steps: the 2-step epochs of the
    # data in memory cycle), its record kept; the rule is tested in test_lr_auto.py
    record_file = run_dir / "lr_find" / "stage_2_fine_tune.json"
    record = json.loads(record_file.read_text())
    steps = len(record["losses"])  # 20, or fewer where the loss diverged
    assert steps == 20 or (record["stopped_early"] and steps >= 13)
    rates = [1e-7 * 10 ** (7 * i / 19) for i in range(steps)]
    assert record["rates"] == pytest.approx(rates, rel=1e-12)
    lo, hi = record["window"]
    assert (lo, hi) == (steps // 10, steps - 5) and record["rule"] == "valley"
    assert record["chosen"] in record["rates"][lo:hi]
    assert f"[tljob] stage 2/2 'fine_tune': learning rate auto -> {record['chosen']:.1e}" in out
    with Image.open(run_dir / "lr_find" / "stage_2_fine_tune.png") as curve:
        assert curve.size == (700, 450)
    record_bytes = record_file.read_bytes()
    assert not (run_dir / "run.lock").exists()  # the interrupted run let go of its lock
    last, _ = ckpt_files.newest_complete(run_loc)
    state = json.loads((run_dir / last / "state.json").read_text())
    done = len(state["history"])
    assert 2 <= done < 5, "the crash came too late to test resuming"
    # history.csv never holds an epoch that the newest complete checkpoint does not
    on_disk = read_history(run_dir)
    assert len(on_disk) <= done
    assert [r["global_epoch"] for r in on_disk] == [
        str(r["global_epoch"]) for r in state["history"][: len(on_disk)]
    ]

    # the rerun, in a terminal: it resumes, and draws the live display (test_progress_tty)
    code, raw = run_in_a_terminal(command, driver_env(ray_cluster), timeout=900)
    screen = ANSI.sub("", raw).replace("\r\n", "\n")
    assert code == 0, screen[-4000:]
    resumed_from = state["history"][-1]
    assert (
        f"resuming after stage {resumed_from['stage']!r} epoch {resumed_from['epoch']} "
        f"(global epoch {done})"
    ) in screen
    history = read_history(run_dir)
    assert [(r["stage"], r["epoch"]) for r in history] == [
        ("head", "1"),
        ("fine_tune", "1"),
        ("fine_tune", "2"),
        ("fine_tune", "3"),
        ("fine_tune", "4"),
    ]
    # epochs before the crash are kept as they were, not retrained
    for before, after in zip(state["history"], history[:done], strict=True):
        assert float(after["val_loss"]) == pytest.approx(before["val_loss"], rel=1e-6)
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["epochs"] == 5
    # the resumed stage reused the recorded rate instead of testing again; the steps of the
    # range test are no epoch of the history
    assert record_file.read_bytes() == record_bytes
    assert "learning rate auto -> " + f"{record['chosen']:.1e}" in screen
    assert "recorded earlier in this run, reused" in screen
    assert float(history[1]["learning_rate"]) == pytest.approx(record["chosen"], rel=1e-6)

    lines = [segment for line in screen.split("\n") for segment in line.split("\r")]
    # the live row was drawn: stage, epoch, step n/N (3: each worker's 12 of the 24 training
    # images in batches of 4 per replica, tljob.preflight.batches.steps_per_epoch), running
    # figures, speed, the share of the steps' time spent waiting for input, and ETA
    live = [ln for ln in lines if re.match(r"stage 2/2 fine_tune epoch \d/4 .*step \d/3", ln)]
    assert any(
        re.search(
            r"step \d/3 loss=\d\.\d{4} accuracy=\d\.\d{4} \d+ images/s, input wait \d+% "
            r"ETA \d+:\d\d",
            ln,
        )
        for ln in live
    ), screen[-4000:]
    # one finished line per epoch, with its validation figures, stays on screen: the
    # resumed run trained only the epochs after the crash
    finished = [ln for ln in lines if ln.startswith("[tljob] stage 2/2 'fine_tune' epoch ")]
    assert [ln.split(":")[0][-3:] for ln in finished] == [f"{e}/4" for e in range(done, 5)]
    assert all(
        re.search(r"val_loss=\d\.\d{4} val_accuracy=\d\.\d{4} val_macro_f1=\d\.\d{4} lr=", ln)
        for ln in finished
    ), finished
    # rank 0's other lines arrive through the same channel; no per-step lines (the run
    # asks for one every step, run.progress_seconds) and no TensorFlow start-up lines
    assert any(re.match(r"\[tljob\] stage 2/2 'fine_tune': trainable=", ln) for ln in lines)
    assert any(ln.startswith("[tljob] exported the best epoch (") for ln in lines)
    assert not any(re.match(r"\[tljob\] .*: step \d+/3 ", ln) for ln in lines)
    assert not any(output.is_native_log_line(ln) for ln in lines)
    # the final summary comes after the display has gone
    table = screen[screen.index("tljob run 'crashy'") :]
    assert "best epoch        " in table and "val_acc best" in table
    assert "images/s" not in table


def test_schedules_class_weights_macro_f1_and_in_model_augmentation_on_two_workers(
    tmp_path, ray_cluster
):
    """Skewed classes, balanced weights, AdamW with warmup then SGD on a cosine schedule with
    label smoothing, best epoch by macro-F1: the recorded rates are the schedules', and the
    recorded macro-F1 / recall are over the whole validation set, not one worker's half.
    With `augment.where: model` (one run serves both): the layers' random generators run
    under the strategy, the training split stays in worker memory (the stream draws no
    views), both replicas end equal, and the exported model, without the layers,
    reproduces the best epoch's validation figures."""
    from sklearn.metrics import f1_score, recall_score

    data = write_digits_tree(tmp_path / "digits", classes=3, per_class=20)
    for extra in sorted((data / "digit_2").iterdir())[10:]:
        extra.unlink()  # 20, 20, 10 images: 16, 16, 8 for training
    stages = [
        {
            "name": "head",
            "epochs": 1,
            "learning_rate": 1e-3,
            "trainable": "head",
            "optimizer": "adamw",
            "weight_decay": 0.01,
            "schedule": {"kind": "constant", "warmup_steps": 4},
        },
        {
            "name": "tune",
            "epochs": 2,
            "learning_rate": 1e-3,
            "trainable": "all",
            "optimizer": "sgd",
            "schedule": {"kind": "cosine", "warmup_epochs": 1},
            "label_smoothing": 0.1,
        },
    ]
    config = job_yaml(
        tmp_path,
        data,
        "weighted",
        stages,
        train={"class_weight": "balanced", "best_metric": "val_macro_f1"},
    )
    augment = {
        "where": "model",
        "rotation_range": 20.0,
        "zoom_range": 0.2,
        "width_shift_range": 0.1,
        "horizontal_flip": True,
        "brightness_range": [0.8, 1.2],
        "color_jitter": {"contrast": 0.2},
    }
    tree = yaml.safe_load(config.read_text())
    config.write_text(yaml.safe_dump({**tree, "augment": augment}))
    command = [sys.executable, str(REPO / "ray_jobs" / "train.py"), "--config", str(config)]
    proc = subprocess.run(
        command, env=driver_env(ray_cluster), capture_output=True, text=True, timeout=900
    )
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-4000:]
    assert "[tljob] input: train and val held in worker memory" in proc.stdout
    assert (
        "[tljob] augment: in the model, training only: rotation, translation, zoom, flip, "
        "brightness_scale, contrast"
    ) in proc.stdout
    run_dir = tmp_path / "runs" / "weighted"
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["replica_weights_identical"] is True
    assert summary["class_weight"] == {
        "mode": "balanced",
        "weights": {"digit_0": 40 / 48, "digit_1": 40 / 48, "digit_2": 40 / 24},
    }
    assert (summary["precision"], summary["jit_compile"]) == ("float32", False)
    history = read_history(run_dir)
    # 40 training images, 2 workers, batch 4: 20 per worker, 5 batches of 4 per replica, 5
    # steps (in global batches of 8 it was 2 batches split in 2: 4 steps, 16 of the 20)
    steps = 5
    # rank 0 counted the images its steps took each epoch: all its 20, none left out
    timings = json.loads((run_dir / "timings.json").read_text())
    assert [(t["input"]["steps"], t["input"]["images"]) for t in timings] == [(5, 20)] * 3
    assert [float(r["learning_rate"]) for r in history] == pytest.approx(
        [1e-3 * 1 / 4, 1e-3 * 1 / steps, 1e-3], rel=1e-6
    )

    from tljob.nn import io as nn_io

    exported = nn_io.load_exported(run_dir / "model" / "model.keras")
    assert "augment" not in [layer.name for layer in exported.layers]
    _, val = split_stratified(list_images(str(data)), 0.2, seed=1)
    labels = np.array([v["label"] for v in val])
    assert len(labels) == 10
    images = np.stack([load_image(v["path"]) for v in val])
    predicted = nn_io.predict_probabilities(exported, images).argmax(axis=1)
    best = summary["best"]
    correct = int((predicted == labels).sum())
    assert correct == round(best["val_accuracy"] * len(labels))
    by_f1 = max(
        history,
        key=lambda r: (float(r["val_macro_f1"]), -float(r["val_loss"]), -int(r["global_epoch"])),
    )
    assert best["global_epoch"] == int(by_f1["global_epoch"])
    args = dict(labels=range(3), zero_division=0)
    assert best["val_macro_f1"] == pytest.approx(
        f1_score(labels, predicted, average="macro", **args), abs=1e-6
    )
    assert best["val_class_recall"] == pytest.approx(
        list(recall_score(labels, predicted, average=None, **args)), abs=1e-6
    )
    row = history[best["global_epoch"] - 1]
    assert float(row["val_macro_f1"]) == pytest.approx(best["val_macro_f1"])
    assert [float(v) for v in row["val_class_recall"].split(";")] == pytest.approx(
        best["val_class_recall"]
    )
