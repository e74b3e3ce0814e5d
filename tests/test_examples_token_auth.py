"""examples/README.md's "Submitting to a running Ray cluster", run as written: the
commands of its first block, read from the README, start a Ray head of their own with
token authentication on (Ray 2.60's default once a token exists) and submit the local
folder example with ``ray job submit``, 2 workers, on the terminal of whoever submitted it:
the progress and final table in the submitter's output, global figures on every progress
line, what the run writes readable by others, and its TensorBoard logs equal to history.csv.

The commands run in a user's checkout (example_checkout.py) with a fresh HOME, so that
``ray get-auth-token --generate`` writes the test's own ``~/.ray/auth_token`` (the
developer's is left alone), and without the suite's RAY_AUTH_* settings (conftest): the
block sets its own. Only what a shared machine needs is added: the head's ports chosen
free and its temp dir (conftest.ray_head_flags), the dashboard address to match, and
``TINY``'s ``--set`` overrides for a few seconds of training, and ``OBSERVED``'s.
"""

from __future__ import annotations

import csv
import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest
from conftest import _stop_cluster, _wait_for_job_agent, ray_head_flags
from example_checkout import EXAMPLES, TINY, read_json, set_args, user_checkout, user_env

from tljob.config import load_config
from tljob.demo import CLASS_NAMES

pytestmark = pytest.mark.ray
SECTION = "## Submitting to a running Ray cluster"
# a progress line after every step (to compare with the epoch's figures), TensorBoard logs
OBSERVED = ["run.progress_seconds=0.001", "train.tensorboard=true"]
DOCUMENTED_DASHBOARD = "http://127.0.0.1:8265"


def documented_flow() -> list[str]:
    """The command lines of the first ```bash block of the README's section."""
    text = (EXAMPLES / "README.md").read_text()
    section = text[text.index(SECTION) :]
    block = re.search(r"```bash\n(.*?)```", section, re.DOTALL)
    assert block, f"no ```bash block under {SECTION!r}"
    return [line for line in block.group(1).splitlines() if line.strip()]


def test_the_readme_flow_starts_ray_with_a_token_and_submits_the_local_folder_example(
    tmp_path, tmp_path_factory
):
    checkout = user_checkout(tmp_path_factory)
    lines = documented_flow()
    starts = [i for i, line in enumerate(lines) if line.startswith("ray start --head")]
    submits = [i for i, line in enumerate(lines) if line.startswith("ray job submit")]
    assert len(starts) == len(submits) == 1 and starts[0] < submits[0] == len(lines) - 1, lines
    setup = [line for line in lines[: starts[0]] if not line.startswith("ray ")]
    assert any("RAY_AUTH_MODE=token" in line for line in setup), setup

    temp_dir = Path("/tmp") / f"tljob-ray-auth-{os.getpid()}"  # short: unix socket paths
    flags, _, dash_port = ray_head_flags(temp_dir)
    dashboard = f"http://127.0.0.1:{dash_port}"
    start_lines = lines[: submits[0]]
    start_lines[starts[0]] += " " + " ".join(flags)
    submit = lines[submits[0]]
    assert submit.count(DOCUMENTED_DASHBOARD) == 1, submit
    overrides = [*TINY, *OBSERVED]
    submit = submit.replace(DOCUMENTED_DASHBOARD, dashboard) + " " + " ".join(set_args(overrides))

    home = tmp_path / "home"
    home.mkdir()
    env = user_env(HOME=str(home), RAY_ADDRESS="")  # no developer's RAY_ADDRESS redirects it
    for name in ("RAY_AUTH_MODE", "RAY_AUTH_TOKEN_PATH", "RAY_AUTH_TOKEN"):
        env.pop(name, None)

    def bash(script_lines: list[str], timeout: float) -> subprocess.CompletedProcess:
        script = "set -e\n" + "\n".join(script_lines) + "\n"
        return subprocess.run(["bash", "-c", script], cwd=checkout, env=env,
                              capture_output=True, text=True, timeout=timeout)  # fmt: skip

    try:
        started = bash(start_lines, timeout=300)
        assert started.returncode == 0, started.stdout[-3000:] + started.stderr[-3000:]
        token = (home / ".ray" / "auth_token").read_text().strip()
        assert len(token) >= 32
        _wait_for_job_agent(dashboard, headers={"Authorization": f"Bearer {token}"})

        # authentication is on: the same submission without RAY_AUTH_MODE=token is refused
        refused = bash([line for line in setup if "RAY_AUTH_MODE" not in line] + [submit], 120)
        assert refused.returncode != 0
        assert "Unauthorized: Missing authentication token" in refused.stderr, refused.stderr

        submitted = bash([*setup, submit], timeout=900)
        out = submitted.stdout + submitted.stderr
        assert submitted.returncode == 0, out[-5000:]
        assert re.search(r"Job 'raysubmit_\w+' succeeded", out), out[-3000:]
        # progress is visible while it runs, and the final table is printed; no TensorFlow
        # start-up lines from the driver (the workers' are filtered by Ray)
        assert "[tljob] stage 1/2 'head' epoch 1/1: loss=" in submitted.stdout
        assert "val_acc best" in submitted.stdout
        assert "oneDNN" not in out
        # progress lines show global figures (5 steps: each worker's 20 of the 40 training
        # images in batches of 4 per replica), and the last step's running accuracy is the
        # epoch's
        for tag in ("stage 1/2 'head' epoch 1/1", "stage 2/2 'fine_tune' epoch 1/1"):
            steps = re.findall(
                rf"\[tljob\] {tag}: step (\d+)/(\d+) loss=\S+ accuracy=(\S+)", submitted.stdout
            )
            epoch = re.search(rf"\[tljob\] {tag}: loss=\S+ accuracy=(\S+)", submitted.stdout)
            assert steps and steps[-1][0] == steps[-1][1] == "5", steps
            assert all(float(acc) <= 1.0 for _, _, acc in steps)
            assert steps[-1][2] == epoch.group(1)
        for output in (started, refused, submitted):
            assert token not in output.stdout + output.stderr  # the token is never shown
    finally:
        _stop_cluster(temp_dir)
        shutil.rmtree(temp_dir, ignore_errors=True)

    run_dir = checkout / "tljob-runs" / "fashion-local-folder"  # the job ran in the checkout
    summary = read_json(run_dir / "summary.json")
    classes = sorted(CLASS_NAMES)
    assert summary["classes"] == classes
    assert read_json(run_dir / "labels.json") == {str(i): c for i, c in enumerate(classes)}
    data = summary["data"]
    assert (data["listed"], data["duplicates"], data["quarantined"]) == (50, 0, 0)
    assert data["splits"]["train"]["per_class_used"] == dict.fromkeys(classes, 4)
    assert data["splits"]["val"]["per_class_used"] == dict.fromkeys(classes, 1)
    assert [(name, s["epochs"]) for name, s in summary["stages"].items()] == [
        ("head", 1),
        ("fine_tune", 1),
    ]
    assert (summary["backbone"], summary["weights"], summary["num_workers"]) == (
        "mobilenet_v2_tv",
        "imagenet",
        2,
    )
    assert summary["replica_weights_identical"] is True
    assert summary["exported_model"]["correct"] == round(summary["best"]["val_accuracy"] * 10)
    with open(run_dir / "history.csv") as f:
        history = list(csv.DictReader(f))
    assert [(r["global_epoch"], r["stage"]) for r in history] == [("1", "head"), ("2", "fine_tune")]
    # the head stage trains the new layer's kernel and bias at the stage's rate (plateau: no
    # change within a stage of one epoch)
    assert int(history[0]["trainable_tensors"]) == 2
    assert float(history[0]["learning_rate"]) == pytest.approx(3e-3)
    # the best epoch: the highest val_accuracy, ties to the lower val_loss, then the earlier
    best_row = max(
        history,
        key=lambda r: (float(r["val_accuracy"]), -float(r["val_loss"]), -int(r["global_epoch"])),
    )
    assert summary["best"]["global_epoch"] == int(best_row["global_epoch"])
    report = read_json(run_dir / "data_report.json")
    assert report["listed"] == 50
    assert report["quarantined_files"] == report["duplicate_files"] == []
    # gradients were all-reduced: both workers ended with identical weights
    digests = {p.name: p.read_text() for p in sorted((run_dir / "replicas").iterdir())}
    assert list(digests) == ["rank_0.sha256", "rank_1.sha256"]
    assert digests["rank_0.sha256"] == digests["rank_1.sha256"]
    assert summary["checkpoint"].endswith("/fashion-local-folder/checkpoint_epoch_0002")
    assert load_config(run_dir / "config.yaml") == load_config(
        checkout / "examples" / "local_folder.yaml", overrides
    )
    # everything the run wrote is readable by others, the exported model included
    for path in [run_dir, run_dir / "model", run_dir / "model" / "model.keras"]:
        assert path.stat().st_mode & 0o004, path
    curves = (run_dir / "learning_curves.png").read_bytes()
    # a PNG of learning_curves.png's 1500 x 450 pixels (the IHDR chunk's width and height)
    assert curves[:8] == b"\x89PNG\r\n\x1a\n"
    assert curves[16:24] == (1500).to_bytes(4, "big") + (450).to_bytes(4, "big")

    # train.tensorboard: every epoch's figures at its global epoch, as history.csv has them
    import tensorflow as tf

    logged: dict[tuple[str, int], float] = {}
    for events in sorted((run_dir / "tensorboard").iterdir()):
        for event in tf.compat.v1.train.summary_iterator(str(events)):
            for value in event.summary.value:
                logged[(value.tag, event.step)] = float(tf.make_ndarray(value.tensor))
    for row in history:
        for name in ("loss", "val_accuracy", "learning_rate"):
            assert logged[(name, int(row["global_epoch"]))] == pytest.approx(float(row[name]))
    assert {tag for tag, _ in logged} >= {"val_class_recall/bag", "val_macro_f1"}
