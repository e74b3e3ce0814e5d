"""Jobs on the session's Ray through its job server, with S3 credentials from a file, and
what the S3 scenario (tests/test_s3_integration.py) waits for: checkpoints on S3, Ray
Train's controller snapshot, the Train workers' lives."""

from __future__ import annotations

import shlex
import sys
import time
from pathlib import Path

from conftest import REPO

from tljob import storage
from tljob.run import checkpoint as ckpt_files


def credentials_file(tmp_path: Path, keys) -> Path:
    """A shared credentials file with profile ``tljob-test``: the job names it in its
    runtime_env (a path and a profile name, no secret), every process reads it."""
    path = tmp_path / "aws-credentials"
    path.touch(mode=0o600)
    path.write_text(
        f"[tljob-test]\naws_access_key_id = {keys.access_key_id}\n"
        f"aws_secret_access_key = {keys.secret_access_key}\n"
    )
    return path


def epochs_of(checkpoint: str) -> int:
    return int(checkpoint.rsplit("_", 1)[1])


def checkpointed_epochs(run_dir) -> int:
    """The epochs of the newest complete checkpoint in ``run_dir``, 0 when there is none."""
    newest, _ = ckpt_files.newest_complete(run_dir)
    return epochs_of(newest) if newest else 0


def wait_for_job_end(client, job_id: str, timeout: float, poll_s: float) -> str:
    """The status a submitted job ends with (SUCCEEDED, FAILED or STOPPED), polled every
    ``poll_s`` seconds for at most ``timeout``."""
    from ray.job_submission import JobStatus

    deadline = time.monotonic() + timeout
    while (status := client.get_job_status(job_id)) not in (
        JobStatus.SUCCEEDED,
        JobStatus.FAILED,
        JobStatus.STOPPED,
    ):
        assert time.monotonic() < deadline, f"job {job_id} still {status} after {timeout} s"
        time.sleep(poll_s)
    return str(status)


class Jobs:
    """Jobs on the session cluster through the job server, with S3 credentials from a file."""

    def __init__(self, ray_cluster, creds: Path) -> None:
        from ray.job_submission import JobSubmissionClient

        self.client = JobSubmissionClient(ray_cluster["dashboard"])
        self.runtime_env = {
            "env_vars": {
                "AWS_SHARED_CREDENTIALS_FILE": str(creds),
                "AWS_PROFILE": "tljob-test",
                "PYTHONUNBUFFERED": "1",
            }
        }

    def submit(self, config: Path, overrides: tuple[str, ...] | list[str] = ()) -> str:
        """``python ray_jobs/train.py --config CONFIG --set OVERRIDE...``, as
        examples/README.md submits a job (absolute paths: the cluster runs jobs in the
        folder pytest started in)."""
        command = [sys.executable, str(REPO / "ray_jobs" / "train.py"), "--config", str(config)]
        for override in overrides:
            command += ["--set", override]
        entrypoint = " ".join(shlex.quote(arg) for arg in command)
        return self.client.submit_job(entrypoint=entrypoint, runtime_env=self.runtime_env)

    def wait(self, job_id: str, timeout: float = 900) -> str:
        return wait_for_job_end(self.client, job_id, timeout, poll_s=1)

    def wait_for_checkpoint(self, job_id: str, run_dir, after: int = 0, timeout=600) -> None:
        """Until the running job ``job_id`` has a complete checkpoint in ``run_dir`` of more
        than ``after`` epochs."""
        deadline = time.monotonic() + timeout
        while checkpointed_epochs(run_dir) <= after:
            assert self.client.get_job_status(job_id) in ("PENDING", "RUNNING"), self.logs(job_id)
            assert time.monotonic() < deadline, f"no checkpoint on S3 within {timeout:.0f} s"
            time.sleep(0.2)

    def wait_until(self, job_id: str, predicate, timeout: float = 300) -> None:
        """Until ``predicate()`` holds, the job ``job_id`` still running."""
        deadline = time.monotonic() + timeout
        while not predicate():
            assert self.client.get_job_status(job_id) in ("PENDING", "RUNNING"), self.logs(job_id)
            assert time.monotonic() < deadline, f"not within {timeout:.0f} s"
            time.sleep(0.2)

    def logs(self, job_id: str) -> str:
        return self.client.get_job_logs(job_id)


def wait_for_controller_snapshot(run_dir, checkpoint: str, timeout: float = 120) -> None:
    """Until Ray Train's controller has recorded ``checkpoint`` in its snapshot on S3: the
    controller writes it once a checkpoint is reported, and a store lost for longer than
    the retry budget at that moment fails the controller, not a worker (no restart)."""
    snapshot = run_dir.join("checkpoint_manager_snapshot.json")
    deadline = time.monotonic() + timeout
    while not (storage.exists(snapshot) and f'"{checkpoint}"' in storage.read_text(snapshot)):
        assert time.monotonic() < deadline, f"{checkpoint} not in {snapshot.uri}"
        time.sleep(0.2)


def alive_train_workers(ray_cluster) -> set[str]:
    """The actor ids of the live Ray Train workers, from Ray's state API."""
    from ray.util.state import list_actors

    actors = list_actors(
        address=ray_cluster["dashboard"],
        filters=[("class_name", "=", "RayTrainWorker"), ("state", "=", "ALIVE")],
    )
    return {a.actor_id for a in actors}
