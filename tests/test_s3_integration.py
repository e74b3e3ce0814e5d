"""The whole job from and to ``s3://`` on a real local S3 server (SeaweedFS, this module's
own: one scenario stops it) and the session's Ray cluster. examples/s3.yaml, submitted as
examples/README.md gives it, with 2 workers: a killed driver, the lock taken over on S3,
the resume from S3, the S3 server lost mid-run (one paragraph saying what failed and where
the rerun resumes), the rerun resuming once it is back, every output in the bucket and no
credential in any log or object, all on a CSV manifest in one prefix naming images in
another (a missing object and a label conflict quarantined); and Ray workers without the
driver's credentials refused before anything trains."""

from __future__ import annotations

import csv
import io
import json
import os
import re
import shlex
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml
from conftest import REPO, write_digits_tree
from test_trust_integration import driver_tracebacks

from tljob import storage
from tljob.config import load_config
from tljob.run import checkpoint as ckpt_files
from tljob.run.ledger import parse_history_csv

pytestmark = pytest.mark.ray


def s3_job(tmp_path: Path, s3, name: str, stages: list[dict]) -> Path:
    tree = {
        "data": {"source": s3.uri("digits"), "image_size": 32, "val_fraction": 0.2, "seed": 1},
        "model": {"backbone": "vgg16", "weights": "none", "head": {"dropout": 0.0}},
        "train": {"batch_size": 4, "stages": stages, "reduce_lr": {"patience": 1}},
        "scaling": {"num_workers": 2, "cpus_per_worker": 0.5},
        "run": {"name": name, "storage_path": s3.uri("runs"), "checkpoints_to_keep": 2},
        "s3": {"endpoint_url": s3.server.endpoint_url, "allow_http": True},
    }
    path = tmp_path / f"{name}.yaml"
    path.write_text(yaml.safe_dump(tree))
    return path


def upload_digits(tmp_path: Path, s3, classes: int, per_class: int, prefix="digits") -> None:
    local = write_digits_tree(tmp_path / "digits", classes=classes, per_class=per_class)
    storage.upload_dir(local, storage.resolve(s3.uri(prefix)), threads=4)


def upload_manifest(tmp_path: Path, s3, classes: int, per_class: int) -> str:
    """Digits under ``pool/`` and ``lists/train.csv`` naming them: the last class by absolute
    uris, the others relative to the manifest's folder, plus a missing object and one image
    of ``digit_1`` listed again as ``digit_2``. Returns that image's file name."""
    local = write_digits_tree(tmp_path / "digits", classes=classes, per_class=per_class)
    storage.upload_dir(local, storage.resolve(s3.uri("pool")), threads=4)
    rows = ["uri,label"]
    absolute = f"digit_{classes - 1}"
    for path in sorted(local.rglob("*.png")):
        label = path.parent.name
        if label == absolute:  # elsewhere in the bucket
            rows.append(f"{s3.uri('pool', label, path.name)},{label}")
        else:
            rows.append(f"../pool/{label}/{path.name},{label}")
    conflicted = sorted((local / "digit_1").iterdir())[0].name
    rows += [
        "../pool/digit_0/no-such-image.png,digit_0",
        f"../pool/digit_1/{conflicted},digit_2",  # also listed as digit_1 above
    ]
    storage.write_text(storage.resolve(s3.uri("lists", "train.csv")), "\n".join(rows) + "\n")
    return conflicted


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


@pytest.fixture(scope="module")
def s3_server(tmp_path_factory):
    """This module's own SeaweedFS, in place of the session's (``s3`` uses it): the S3
    example's scenario stops it mid-run and starts it again."""
    from tljob.storage.seaweed import LocalS3Server

    with LocalS3Server(tmp_path_factory.mktemp("seaweedfs")) as server:
        yield server


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
        from ray.job_submission import JobStatus

        deadline = time.monotonic() + timeout
        while (status := self.client.get_job_status(job_id)) not in (
            JobStatus.SUCCEEDED,
            JobStatus.FAILED,
            JobStatus.STOPPED,
        ):
            assert time.monotonic() < deadline, f"job {job_id} still {status} after {timeout} s"
            time.sleep(1)
        return str(status)

    def wait_for_checkpoint(self, job_id: str, run_dir, after: int = 0, timeout=600) -> None:
        """Until the running job ``job_id`` has a complete checkpoint in ``run_dir`` of more
        than ``after`` epochs."""
        deadline = time.monotonic() + timeout
        while checkpointed_epochs(run_dir) <= after:
            assert self.client.get_job_status(job_id) in ("PENDING", "RUNNING"), self.logs(job_id)
            assert time.monotonic() < deadline, f"no checkpoint on S3 within {timeout:.0f} s"
            time.sleep(0.2)

    def logs(self, job_id: str) -> str:
        return self.client.get_job_logs(job_id)


# examples/s3.yaml at test size, on a CSV manifest in one prefix naming images in another
# (upload_manifest): 4 digits of 10 images (8 train, 2 val each; digit_1 7 + 2, one of its
# images quarantined), 32 px, batch 4, 2 + 3 epochs (enough that the driver's kill at the
# first checkpoint and the server's stop at the next one each leave epochs to resume), no
# in-run restart (a storage failure ends the run at once instead of failing again in every
# restarted group).
S3_EXAMPLE = REPO / "examples" / "s3.yaml"
S3_EXAMPLE_EPOCHS = (2, 3)
RAY_SNIPPET = "with_traceback(filtered_tb)"


def s3_example_overrides(s3) -> list[str]:
    return [
        f"data.source={s3.uri('lists', 'train.csv')}",
        "data.image_size=32",
        "train.batch_size=4",
        f"train.stages.0.epochs={S3_EXAMPLE_EPOCHS[0]}",
        f"train.stages.1.epochs={S3_EXAMPLE_EPOCHS[1]}",
        "scaling.max_failures=0",
        f"run.storage_path={s3.uri('tljob-runs')}",
        f"s3.endpoint_url={s3.server.endpoint_url}",
    ]


def resuming_line(epochs_done: int) -> str:
    """The driver's resume line after ``epochs_done`` global epochs of the S3 example."""
    head, fine_tune = S3_EXAMPLE_EPOCHS
    if epochs_done <= head:
        after = f"stage 'head' epoch {epochs_done} (global epoch {epochs_done})"
    else:
        after = f"stage 'fine_tune' epoch {epochs_done - head} (global epoch {epochs_done})"
    if epochs_done < head:
        nxt = f"stage 1/2 'head' epoch {epochs_done + 1}/{head}"
    else:
        nxt = f"stage 2/2 'fine_tune' epoch {epochs_done - head + 1}/{fine_tune}"
    done = ckpt_files.checkpoint_name(epochs_done)
    return f"[tljob] resuming after {after} from {done}; next: {nxt}"


def test_the_s3_example_survives_a_killed_driver_and_a_lost_server_and_resumes(
    tmp_path, s3, ray_cluster
):
    """examples/s3.yaml submitted as examples/README.md gives it (credentials in a file
    named in the job's runtime environment), three jobs on one run directory: the first's
    driver is killed once a checkpoint is on S3 (its lock stays there); the second takes
    over the stale lock and resumes, and loses the S3 server once it has written a further
    checkpoint, which it reports as one paragraph; the third, with the server back,
    resumes and finishes. Then every output is in the bucket, whole, and no credential is
    anywhere."""
    conflicted = upload_manifest(tmp_path, s3, classes=4, per_class=10)
    overrides = s3_example_overrides(s3)
    total = sum(S3_EXAMPLE_EPOCHS)
    jobs = Jobs(ray_cluster, credentials_file(tmp_path, s3.server.admin))
    run_dir = storage.resolve(s3.uri("tljob-runs", "fashion-s3"))
    lock = run_dir.join("run.lock")

    # 1. the driver killed (SIGKILL) once a checkpoint is on S3: its lock stays behind
    first = jobs.submit(S3_EXAMPLE, overrides)
    jobs.wait_for_checkpoint(first, run_dir)
    holder = json.loads(storage.read_text(lock))  # the lock on S3 names the driver
    os.kill(holder["pid"], signal.SIGKILL)  # our own cluster's job driver, nothing else
    assert jobs.wait(first) == "FAILED"
    killed_at, _ = ckpt_files.newest_complete(run_dir)
    epochs_done = epochs_of(killed_at)
    assert epochs_done < total - 1, "the kill came too late to test the next two jobs"
    assert storage.exists(lock)  # left behind by the killed driver

    # 2. takes over the stale lock and resumes; the S3 server stops once it has written a
    # further checkpoint
    second = jobs.submit(S3_EXAMPLE, overrides)
    jobs.wait_for_checkpoint(second, run_dir, after=epochs_done)
    s3.server.stop()
    assert jobs.wait(second) == "FAILED"
    assert "exit code 1" in jobs.client.get_job_info(second).message
    lost = jobs.logs(second)
    assert (
        f"[tljob] taking over the stale lock of pid {holder['pid']} on host "
        f"{holder['host']!r} (pid {holder['pid']} is no longer running)"
    ) in lost
    assert resuming_line(epochs_done) in lost
    assert "[tljob] object store reachable from all 1 Ray node(s): " in lost
    failed = [line for line in lost.splitlines() if line.startswith("tljob: ")]
    assert len(failed) == 1, lost[-5000:]
    paragraph = re.fullmatch(
        r"tljob: failed: storage failed (?:on worker rank [01]|in Ray Train's controller|in "
        r"the driver): (\w+) on (s3://\S+) at (\S+) \(region us-east-1\) failed \(AWS Error "
        r"[^:]+: .+\)\. The run stopped and keeps what it saved: once the "
        r"storage answers again, rerunning the same command resumes from "
        r"(checkpoint_epoch_\d{4}) in (\S+)\.",
        failed[0],
    )
    assert paragraph is not None, failed[0]
    operation, uri, endpoint, named, resumes_in = paragraph.groups()
    assert uri.startswith(run_dir.uri + "/")
    assert (endpoint, resumes_in) == (s3.server.endpoint_url, run_dir.uri)
    assert driver_tracebacks(lost) == [] and RAY_SNIPPET not in lost
    assert "ControllerError" not in lost and "Training failed due to" not in lost

    s3.server.start()  # back, on the same port with the same data
    assert ckpt_files.newest_complete(run_dir)[0] == named
    lost_at = epochs_of(named)
    assert epochs_done < lost_at < total, "the server was stopped too late to test resuming"

    # 3. with the server back the same command resumes from the newest checkpoint, finishes
    third = jobs.submit(S3_EXAMPLE, overrides)
    status = jobs.wait(third)
    out = jobs.logs(third)
    assert status == "SUCCEEDED", out[-5000:]
    assert resuming_line(lost_at) in out
    assert out.count("[tljob] stage 2/2 'fine_tune' epoch ") >= total - lost_at

    # Everything the run leaves is in the bucket, under the run directory, whole.
    prefix = "tljob-runs/fashion-s3/"
    keys = [k.removeprefix(prefix) for k in s3.objects(prefix)]
    assert {k for k in keys if "/" not in k} == {
        "config.yaml",
        "data_report.json",
        "history.csv",
        "labels.json",
        "summary.json",
        "timings.json",  # rank 0's per-epoch time breakdown
        "rescored.json",  # rank 0's re-check of the exported model
        "learning_curves.png",
        ".validate_storage_marker",  # Ray Train's, through the same filesystem
        "checkpoint_manager_snapshot.json",  # Ray Train's
    }
    assert {k for k in keys if k.startswith(("model/", "replicas/"))} == {
        "model/model.keras",
        "replicas/rank_0.sha256",
        "replicas/rank_1.sha256",
    }
    last = ckpt_files.checkpoint_name(total)
    checkpoints = sorted({k.split("/")[0] for k in keys if k.startswith("checkpoint_epoch_")})
    assert checkpoints[-1] == last
    assert sorted(k for k in keys if k.startswith(last + "/")) == [
        f"{last}/{name}"
        for name in sorted((*ckpt_files.CHECKPOINT_FILES, ckpt_files.MANIFEST_FILE))
    ]
    assert ckpt_files.newest_complete(run_dir) == (last, [])
    assert not [k for k in keys if ".tljob-tmp-" in k or k == "run.lock"]

    summary = json.loads(storage.read_text(run_dir.join("summary.json")))
    assert summary["classes"] == ["digit_0", "digit_1", "digit_2", "digit_3"]
    assert summary["checkpoint"] == f"{run_dir.uri}/{last}"
    assert summary["epochs"] == total
    assert summary["replica_weights_identical"] is True
    assert summary["exported_model"]["images"] == 8  # 4 classes x round(10 x 0.2)
    data = summary["data"]
    # 40 images in 42 rows: one missing object; one image under two labels (both rows)
    assert data["listed"] == 42 and data["quarantined"] == 3 and data["duplicates"] == 0
    assert data["quarantined_reasons"] == {"label_conflict": 2, "missing_object": 1}
    assert {name: c["per_class_used"] for name, c in data["splits"].items()} == {
        "train": {"digit_0": 8, "digit_1": 7, "digit_2": 8, "digit_3": 8},
        "val": {f"digit_{d}": 2 for d in range(4)},
    }
    history = parse_history_csv(storage.read_text(run_dir.join("history.csv")))
    assert [(r.stage, r.epoch) for r in history] == [
        ("head", 1),
        ("head", 2),
        ("fine_tune", 1),
        ("fine_tune", 2),
        ("fine_tune", 3),
    ]
    labels = json.loads(storage.read_text(run_dir.join("labels.json")))
    assert labels == {"0": "digit_0", "1": "digit_1", "2": "digit_2", "3": "digit_3"}
    saved = tmp_path / "saved.yaml"
    saved.write_text(storage.read_text(run_dir.join("config.yaml")))
    assert load_config(saved) == load_config(S3_EXAMPLE, overrides)
    report = json.loads(storage.read_text(run_dir.join("data_report.json")))
    assert report["listed"] == 42 and report["skipped_files"] == []
    quarantine = storage.read_text(storage.resolve(report["prepared"]["quarantine_csv"]))
    conflict = "label_conflict: the manifest lists this uri under classes 'digit_1', 'digit_2'"
    assert sorted(csv.reader(io.StringIO(quarantine))) == sorted(
        [
            ["uri", "split", "reason"],
            [s3.uri("pool", "digit_0", "no-such-image.png"), "none",
             "missing_object: no such file or object"],
            [s3.uri("pool", "digit_1", conflicted), "none", conflict],
            [s3.uri("pool", "digit_1", conflicted), "none", conflict],
        ]
    )  # fmt: skip

    # No credential anywhere: not in the logs, not in any object the run wrote.
    keys_used = s3.server.admin
    for text in [jobs.logs(first), lost, out]:
        assert keys_used.secret_access_key not in text
        assert keys_used.access_key_id not in text
    client = s3.server.client()
    for key in s3.objects(prefix):
        body = client.get_object(Bucket=s3.bucket, Key=key)["Body"].read()
        assert keys_used.secret_access_key.encode() not in body, key
        assert keys_used.access_key_id.encode() not in body, key


def ray_cluster_node_ip() -> str:
    import ray

    return ray.util.get_node_ip_address()  # the address Ray gives this machine's node


def test_ray_workers_without_the_drivers_credentials_are_refused(tmp_path, s3, ray_cluster):
    upload_digits(tmp_path, s3, classes=2, per_class=10)
    stages = [{"name": "head", "epochs": 1, "learning_rate": 1e-3, "trainable": "head"}]
    config = s3_job(tmp_path, s3, "nokeys", stages)
    # The driver has keys in its environment; the cluster's workers have none.
    env = {**s3.env(), "RAY_ADDRESS": ray_cluster["gcs"], "PYTHONUNBUFFERED": "1"}
    proc = subprocess.run(
        [sys.executable, str(REPO / "ray_jobs" / "train.py"), "--config", str(config)],
        capture_output=True,
        text=True,
        timeout=300,
        env=env,
    )
    assert proc.returncode == 2, proc.stdout[-3000:] + proc.stderr[-3000:]
    errors = [line for line in proc.stderr.splitlines() if line.startswith("tljob: error:")]
    assert len(errors) == 1, proc.stderr[-3000:]
    node = ray_cluster_node_ip()
    assert errors[0].startswith(
        "tljob: error: the Ray workers cannot use the object store as the driver can (the "
        "driver found its credentials in the environment variables AWS_ACCESS_KEY_ID / "
        f"AWS_SECRET_ACCESS_KEY): no S3 credentials: a Ray task on node {node} tried "
        f"ListObjectsV2 on {s3.uri('digits')} (`data.source`) at {s3.server.endpoint_url} "
        "(region us-east-1) but found none in the standard AWS chain."
    ), errors[0]
    for value in (s3.server.admin.secret_access_key, s3.server.admin.access_key_id):
        assert value not in proc.stdout + proc.stderr
    # refused before any data was read or trained; the lock was released
    assert "[tljob] data: " not in proc.stdout
    assert s3.objects("runs/nokeys/") == []
