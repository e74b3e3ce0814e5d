"""How a failed run is told, without a Ray cluster: the paragraph made from Ray Train's own
exception objects (``WorkerGroupError``, ``ControllerError``) and the exceptions inside
them, exact to the character; the worker's saved traceback; and, when the storage cannot
be asked, the checkpoint Ray Train's controller noted."""

from __future__ import annotations

import errno
import pickle
import socket

import pytest
from ray.train.v2.api.exceptions import ControllerError, WorkerGroupError
from test_resume import _write_checkpoint, state_after

from tljob import storage
from tljob.config import load_config
from tljob.errors import JobFailedError, UserError
from tljob.nn.augment_layers import ModelAugmentError
from tljob.run import checkpoint as ckpt_files
from tljob.run import failed_run, failures
from tljob.run.attempts import start_attempt

JOB = load_config(None, ["data.source=/x", "model.weights=none", "scaling.max_failures=0"])

# pyarrow 2x's text for a HeadObject on a stopped S3 server, as a worker raised it
S3_DOWN = (
    "When reading information for key 'runs/r/checkpoint_epoch_0002/state.json' in bucket "
    "'b': AWS Error NETWORK_CONNECTION during HeadObject operation: curlCode: 7, Could not "
    "connect to server; Details: Failed to connect to 127.0.0.1:8333 after 0 ms: Could not "
    "connect to server"
)
# TensorFlow 2.21's text for a convolution given the wrong number of input channels
TF_CONV = (
    "Graph execution error:\n\nDetected at node model/conv/Conv2D defined at (most recent "
    'call last):\n  File "/app/tljob/run/worker.py", line 175, in run_stage\n\n  File '
    '"/venv/tf_keras/src/engine/training.py", line 2296, in evaluate\n\ninput depth must be '
    "evenly divisible by filter depth: 3 vs 2\n\t [[{{node model/conv/Conv2D}}]] "
    "[Op:__inference_test_function_8213]"
)


def _checkpoint(run_dir, epochs: int) -> None:
    folder = run_dir / ckpt_files.checkpoint_name(epochs)
    _write_checkpoint(folder)
    (folder / ckpt_files.STATE_FILE).write_text(state_after(JOB, [epochs]).to_json())
    ckpt_files.write_manifest(str(folder))


def _ray_pickled(error: BaseException) -> BaseException:
    """What the driver gets: Ray sends the error from the controller, pickled."""
    return pickle.loads(pickle.dumps(error))


def test_a_tensorflow_error_in_a_worker_reads_as_its_type_message_and_traceback_file(tmp_path):
    import tensorflow as tf

    run_dir = storage.resolve(str(tmp_path / "run"))
    _checkpoint(tmp_path / "run", 2)
    attempt = start_attempt(run_dir)  # the group that failed: attempt 1
    saved = failures.save_traceback(run_dir, 1, attempt.number, "Traceback ...\n")
    error = _ray_pickled(
        WorkerGroupError(
            "[Rank 1 Error Snippet]: ...",
            {1: tf.errors.InvalidArgumentError(None, None, TF_CONV)},
        )
    )
    told = failed_run.explain(error, JOB, run_dir, None)
    assert type(told) is failures.WorkerFailedError
    assert str(told) == (
        "train failed on worker rank 1: InvalidArgumentError: input depth must be evenly "
        "divisible by filter depth: 3 vs 2 (at node model/conv/Conv2D) (full traceback: "
        f"{tmp_path}/run/errors/worker_rank1_attempt1.txt)\n"
        "The worker group was restarted 0 time(s) in this run (`scaling.max_failures`: 0). "
        f"Rerun the same command to resume from checkpoint_epoch_0002 in {tmp_path}/run."
    )
    assert saved == f"{tmp_path}/run/errors/worker_rank1_attempt1.txt"


def test_several_failed_workers_name_the_first_and_list_the_others(tmp_path):
    run_dir = storage.resolve(str(tmp_path / "run"))
    start_attempt(run_dir)
    start_attempt(run_dir)  # one restart: the failed group is attempt 2
    error = WorkerGroupError(
        "...",
        {
            2: RuntimeError("peer failed"),
            0: OSError("Unable to synchronously open file (file signature not found)"),
        },
    )
    told = failed_run.explain(error, JOB, run_dir, None)
    # no traceback file was saved (the worker died before it could): none is named
    assert str(told) == (
        "train failed on worker rank 0: OSError: Unable to synchronously open file (file "
        "signature not found); also failed: worker rank 2 (RuntimeError)\n"
        "The worker group was restarted 1 time(s) in this run (`scaling.max_failures`: 0). "
        "Rerunning the same command starts from the start (no epoch had finished)."
    )


def test_a_user_error_raised_in_a_worker_is_raised_itself(tmp_path):
    wrong = ModelAugmentError("`augment.zoom_range` ([0.5, 3.0]): lower it")
    error = _ray_pickled(WorkerGroupError("...", {0: wrong}))
    told = failed_run.explain(error, JOB, storage.resolve(str(tmp_path)), None)
    assert type(told) is ModelAugmentError and isinstance(told, UserError)
    assert str(told) == "`augment.zoom_range` ([0.5, 3.0]): lower it"


def test_tljobs_own_errors_and_other_exceptions_of_the_driver_pass_through(tmp_path):
    run_dir = storage.resolve(str(tmp_path))
    for error in (JobFailedError("diverged"), UserError("bad"), ValueError("a bug")):
        assert failed_run.explain(error, JOB, run_dir, None) is error


def test_an_s3_failure_in_a_worker_names_the_call_the_object_and_where_the_rerun_resumes(
    tmp_path,
):
    failure = failures.find_storage_failure(WorkerGroupError("...", {0: OSError(S3_DOWN)}))
    assert failure == failures.StorageFailure(
        operation="HeadObject",
        target="s3://b/runs/r/checkpoint_epoch_0002/state.json",
        detail=(
            "AWS Error NETWORK_CONNECTION: curlCode: 7, Could not connect to server; Details: "
            "Failed to connect to 127.0.0.1:8333 after 0 ms: Could not connect to server"
        ),
        where="on worker rank 0",
    )
    paragraph = failures.storage_paragraph(
        failure,
        "http://127.0.0.1:8333 (region us-east-1)",
        failures.Resume("checkpoint_epoch_0001"),
        "s3://b/runs/r",
    )
    assert paragraph == (
        "storage failed on worker rank 0: HeadObject on "
        "s3://b/runs/r/checkpoint_epoch_0002/state.json at http://127.0.0.1:8333 (region "
        "us-east-1) failed (AWS Error NETWORK_CONNECTION: curlCode: 7, Could not connect to "
        "server; Details: Failed to connect to 127.0.0.1:8333 after 0 ms: Could not connect "
        "to server). The run stopped and keeps what it saved: once the storage answers "
        "again, rerunning the same command resumes from checkpoint_epoch_0001 in "
        "s3://b/runs/r."
    )


def test_an_s3_answer_with_an_http_status_is_a_storage_failure_too():
    busy = (
        "When uploading part for key 'runs/r/checkpoint_epoch_0003/model.weights.h5' in "
        "bucket 'b': AWS Error UNKNOWN (HTTP status 503) during UploadPart operation: "
        "Service Unavailable"
    )
    assert failures.find_storage_failure(OSError(busy)) == failures.StorageFailure(
        "UploadPart",
        "s3://b/runs/r/checkpoint_epoch_0003/model.weights.h5",
        "AWS Error UNKNOWN (HTTP status 503): Service Unavailable",
        "in the driver",
    )


def test_a_storage_failure_is_found_in_the_controller_the_driver_and_what_caused_them():
    in_controller = failures.find_storage_failure(_ray_pickled(ControllerError(OSError(S3_DOWN))))
    assert in_controller is not None and in_controller.where == "in Ray Train's controller"
    try:
        try:
            raise OSError(S3_DOWN)
        except OSError as e:
            raise RuntimeError("could not write the summary") from e
    except RuntimeError as e:
        in_driver = failures.find_storage_failure(e)
    assert in_driver is not None and in_driver.where == "in the driver"
    assert in_driver.target == "s3://b/runs/r/checkpoint_epoch_0002/state.json"


def test_a_full_disk_is_a_storage_failure_and_a_damaged_file_is_not():
    full = OSError(errno.ENOSPC, "No space left on device", "/runs/r/history.csv")
    assert failures.find_storage_failure(full) == failures.StorageFailure(
        "ENOSPC", "/runs/r/history.csv", "No space left on device", "in the driver"
    )
    assert failures.storage_paragraph(
        failures.find_storage_failure(full), "", failures.Resume(None), "/runs/r"
    ) == (
        "storage failed in the driver: ENOSPC on /runs/r/history.csv failed (No space left "
        "on device). The run stopped and keeps what it saved: once the storage answers "
        "again, rerunning the same command starts from the start (no epoch had finished)."
    )
    h5py_like = OSError("Unable to synchronously open file (file signature not found)")
    assert failures.find_storage_failure(WorkerGroupError("...", {0: h5py_like})) is None


def test_credentials_in_an_error_never_reach_the_paragraph(monkeypatch):
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "s3cr3t-v4lue-of-the-test")
    leaky = S3_DOWN.replace("Could not connect", "s3cr3t-v4lue-of-the-test", 1)
    failure = failures.find_storage_failure(OSError(leaky))
    assert "s3cr3t" not in failure.detail and "[redacted]" in failure.detail
    text = failures.exception_text(RuntimeError("key s3cr3t-v4lue-of-the-test refused"))
    assert text == "RuntimeError: key [redacted] refused"


def test_exception_text_is_one_line_and_cut(monkeypatch):
    assert failures.exception_text(KeyError("x")) == "KeyError: 'x'"
    assert failures.exception_text(RuntimeError("a\n  b\n\nc")) == "RuntimeError: a b c"
    assert failures.exception_text(RuntimeError()) == "RuntimeError"
    long = failures.exception_text(RuntimeError("x" * 1000))
    assert long == "RuntimeError: " + "x" * 399 + "…"


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]  # nothing listens on it once closed


@pytest.fixture
def unreachable_s3(monkeypatch):
    """tljob's storage pointed at an S3 endpoint where nothing listens (real pyarrow)."""
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "TLJOBTESTKEY")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "not-a-real-secret-at-all")
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
    endpoint = f"http://127.0.0.1:{_closed_port()}"
    storage.reset()
    # one attempt: the message is under test here, the retries in test_storage_s3.py
    storage.configure(storage.S3Settings(endpoint_url=endpoint, allow_http=True, max_attempts=1))
    try:
        yield endpoint
    finally:
        storage.reset()


def test_a_real_error_of_an_unreachable_store_is_named_with_the_newest_checkpoint_known(
    unreachable_s3,
):
    run_dir = storage.resolve("s3://bkt/runs/r")
    with pytest.raises(OSError) as raised:
        storage.read_text(run_dir.join("history.csv"))
    # no Ray here, so nothing was noted: the checkpoint the run resumed from
    newest = failed_run.NewestCheckpoint("checkpoint_epoch_0003")
    told = failed_run.explain(WorkerGroupError("...", {0: raised.value}), JOB, run_dir, newest)
    newest.close()
    assert type(told) is failures.StorageFailedError
    port = unreachable_s3.rsplit(":", 1)[1]
    assert str(told).startswith(
        "storage failed on worker rank 0: HeadObject on s3://bkt/runs/r/history.csv at "
        f"{unreachable_s3} (region us-east-1) failed (AWS Error NETWORK_CONNECTION: "
    )
    assert f"127.0.0.1:{port}" in str(told)
    assert str(told).endswith(
        "The run stopped and keeps what it saved: once the storage answers again, rerunning "
        "the same command resumes from checkpoint_epoch_0003 in s3://bkt/runs/r."
    )
    assert "not-a-real-secret" not in str(told) and "TLJOBTESTKEY" not in str(told)


def test_without_a_note_or_a_plan_the_resume_point_is_said_to_be_unknown(unreachable_s3):
    run_dir = storage.resolve("s3://bkt/runs/r")
    assert failed_run.resume_point(run_dir, None) == failures.Resume(None, known=False)
    assert failures.resume_sentence(failures.Resume(None, known=False), run_dir.uri) == (
        "Rerunning the same command resumes from the newest complete checkpoint in "
        "s3://bkt/runs/r (from the start if there is none)."
    )
    newest = failed_run.NewestCheckpoint("checkpoint_epoch_0004")
    try:
        assert failed_run.resume_point(run_dir, newest) == failures.Resume("checkpoint_epoch_0004")
    finally:
        newest.close()


def test_a_worker_saves_its_whole_traceback_under_its_attempt(tmp_path, capsys):
    from tljob import output

    output.setup()
    run_dir = storage.resolve(str(tmp_path / "run"))
    start_attempt(run_dir)
    start_attempt(run_dir)

    def restore() -> None:
        raise ValueError("bad weights")

    try:
        restore()
    except ValueError as e:
        failures.save_worker_traceback(run_dir, 3, e)
    saved = (tmp_path / "run" / "errors" / "worker_rank3_attempt2.txt").read_text()
    lines = saved.splitlines()
    assert lines[0] == "Traceback (most recent call last):"
    assert "in restore" in saved and lines[-1] == "ValueError: bad weights"

    # a run directory that cannot take the file: the worker says so, and raises nothing
    blocked = storage.resolve(str(tmp_path / "blocked"))
    start_attempt(blocked)
    (tmp_path / "blocked" / "errors").write_text("a file where the folder goes")
    failures.save_worker_traceback(blocked, 0, ValueError("bad weights"))
    assert f"[tljob] worker rank 0 could not save its traceback in {tmp_path}/blocked/errors: " in (
        capsys.readouterr().out
    )
