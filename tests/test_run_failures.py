"""How a failed run reaches the user, on the session's real local Ray cluster: a worker's
exception arrives as tljob's one paragraph (its type, its message, the file holding its
full traceback), a tljob ``UserError`` raised in a worker still exits 2 with its message,
and losing the S3 server mid-run says what failed and where the rerun resumes, which it
then does."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import yaml
from test_resume import _write_checkpoint, state_after
from test_s3_integration import Jobs, credentials_file, s3_job, upload_digits
from test_trust_integration import driver_tracebacks, head, run, tiny_job, tljob_train

from tljob import storage
from tljob.config import load_config
from tljob.run import checkpoint as ckpt_files
from tljob.run.ledger import parse_history_csv

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


@pytest.fixture
def s3_server(tmp_path):
    """This module's own SeaweedFS, in place of the session's (``s3`` uses it): its test
    stops it mid-run and starts it again."""
    from tljob.storage.seaweed import LocalS3Server

    with LocalS3Server(tmp_path / "seaweedfs") as server:
        yield server


def test_losing_the_s3_server_mid_run_says_what_failed_and_the_rerun_resumes(
    tmp_path, s3, ray_cluster
):
    upload_digits(tmp_path, s3, classes=3, per_class=10)
    config = s3_job(tmp_path, s3, "lost", [head(3)])
    tree = yaml.safe_load(config.read_text())
    tree["scaling"].update(num_workers=1, max_failures=0)
    config.write_text(yaml.safe_dump(tree))
    run_dir = storage.resolve(s3.uri("runs", "lost"))
    jobs = Jobs(ray_cluster, credentials_file(tmp_path, s3.server.admin))

    first = jobs.submit(config)
    jobs.wait_for_checkpoint(first, run_dir)
    s3.server.stop()
    assert jobs.wait(first) == "FAILED"
    assert "exit code 1" in jobs.client.get_job_info(first).message
    out = jobs.logs(first)
    failed = [line for line in out.splitlines() if line.startswith("tljob: ")]
    assert len(failed) == 1, out[-5000:]
    paragraph = re.fullmatch(
        r"tljob: failed: storage failed (?:on worker rank 0|in Ray Train's controller|in "
        r"the driver): (\w+) on (s3://\S+) at (\S+) \(region us-east-1\) failed \(AWS Error "
        r"[^:]+: .+\)\. The run stopped and keeps what it saved: once the "
        r"storage answers again, rerunning the same command resumes from "
        r"(checkpoint_epoch_\d{4}) in (\S+)\.",
        failed[0],
    )
    assert paragraph is not None, failed[0]
    operation, uri, endpoint, named, resumes_in = paragraph.groups()
    assert uri.startswith(s3.uri("runs", "lost") + "/")
    assert (endpoint, resumes_in) == (s3.server.endpoint_url, run_dir.uri)
    assert driver_tracebacks(out) == [] and RAY_SNIPPET not in out
    assert "ControllerError" not in out and "Training failed due to" not in out
    for value in (s3.server.admin.secret_access_key, s3.server.admin.access_key_id):
        assert value not in out

    s3.server.start()  # back, on the same port with the same data
    assert ckpt_files.newest_complete(run_dir)[0] == named
    epochs_done = int(named.rsplit("_", 1)[1])
    assert epochs_done < 3, "the server was stopped too late to test resuming"
    second = jobs.submit(config)
    assert jobs.wait(second) == "SUCCEEDED", jobs.logs(second)[-5000:]
    rerun = jobs.logs(second)
    assert (
        f"[tljob] resuming after stage 'head' epoch {epochs_done} (global epoch {epochs_done}) "
        f"from {named}; next: stage 1/1 'head' epoch {epochs_done + 1}/3"
    ) in rerun
    history = parse_history_csv(storage.read_text(run_dir.join("history.csv")))
    assert [r.epoch for r in history] == [1, 2, 3]
