"""How a failed run reaches the user, on the session's real local Ray cluster: a worker's
exception arrives as tljob's one paragraph (its type, its message, the file holding its
full traceback), and a tljob ``UserError`` raised in a worker still exits 2 with its
message. Losing the S3 server mid-run (what failed, where the rerun resumes) is part of
the S3 example's scenario in test_s3_integration.py."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from test_resume import _write_checkpoint, state_after
from test_trust_integration import driver_tracebacks, head, run, tiny_job, tljob_train

from tljob.config import load_config
from tljob.run import checkpoint as ckpt_files

pytestmark = pytest.mark.ray

RAY_SNIPPET = "with_traceback(filtered_tb)"
_WORKER_FAILURE = re.compile(
    r"^tljob: failed: train failed on worker rank (\d+): (\w+): (.+) \(full traceback: (\S+)\)$",
    re.MULTILINE,
)


def test_a_workers_exception_reaches_the_user_with_its_type_message_and_traceback_file(
    tmp_path, ray_cluster
):
    # A checkpoint whose files match its manifest but whose weights are not HDF5 (a damaged
    # disk, a file overwritten): the driver's checks pass, the worker fails to restore it.
    config = tiny_job(tmp_path, "damaged", [head(2)])
    run_dir = tmp_path / "runs" / "damaged"
    damaged = run_dir / ckpt_files.checkpoint_name(1)
    _write_checkpoint(damaged)
    (damaged / ckpt_files.STATE_FILE).write_text(state_after(load_config(config), [1]).to_json())
    ckpt_files.write_manifest(str(damaged))

    proc = run(ray_cluster, tljob_train(ray_cluster, config, "scaling.max_failures=0"), timeout=900)
    output = proc.stdout + proc.stderr
    assert proc.returncode == 1, output[-4000:]
    found = _WORKER_FAILURE.findall(proc.stderr)
    assert len(found) == 1, proc.stderr[-4000:]
    rank, kind, message, traceback_file = found[0]
    assert (rank, traceback_file) == ("0", str(run_dir / "errors" / "worker_rank0_attempt1.txt"))
    assert kind == "OSError" and "file signature not found" in message
    # the file holds the whole traceback, from the worker loop to the raise, and ends with
    # the exception the paragraph names
    saved = Path(traceback_file).read_text().rstrip("\n").splitlines()
    assert saved[0] == "Traceback (most recent call last):"
    assert any("in train_fn_per_worker" in line for line in saved)
    assert any("in restore_checkpoint" in line for line in saved)
    assert saved[-1] == f"{kind}: {message}"
    # the paragraph goes on with what is kept and what to do
    assert (
        "The worker group was restarted 0 time(s) in this run (`scaling.max_failures`: 0). "
        f"Rerun the same command to resume from checkpoint_epoch_0001 in {run_dir}."
    ) in proc.stderr
    assert RAY_SNIPPET not in output
    assert "Training failed due to worker errors" not in output
    assert driver_tracebacks(proc.stderr) == []


def test_a_user_error_raised_in_a_worker_exits_2_with_its_message(tmp_path, ray_cluster):
    # Only the in-model augmentation layers check their zoom: in the worker, as it builds.
    config = tiny_job(tmp_path, "zoom", [head(1)])
    proc = run(
        ray_cluster,
        tljob_train(
            ray_cluster,
            config,
            "augment.where=model",
            "augment.zoom_range=[0.5, 3.0]",
            "scaling.max_failures=0",  # the same error again in every restarted group
        ),
        timeout=900,
    )
    assert proc.returncode == 2, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert proc.stderr.strip().splitlines()[-1] == (
        "tljob: error: `augment.zoom_range` ([0.5, 3.0]): inside the model the upper zoom "
        "must be <= 2.0 (Keras' RandomZoom); lower it, or set `augment.where` to 'data'"
    )
    assert RAY_SNIPPET not in proc.stdout + proc.stderr
    assert driver_tracebacks(proc.stderr) == []
