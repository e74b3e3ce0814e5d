"""The whole job from and to ``s3://`` on a real local S3 server (SeaweedFS, this module's
own: the scenario stops it) and the session's Ray cluster. examples/s3.yaml, submitted as
examples/README.md gives it, with 2 workers: a killed driver, the lock taken over on S3,
the resume from S3, an outage longer than the retry budget (the group restarted), a
SIGTERM (the lock released), a 30 s outage ridden out, every output in the bucket and no
credential in any log or object, all on a CSV manifest in one prefix naming images in
another (a missing object and a label conflict quarantined); and Ray workers without the
driver's credentials refused before anything trains. (The paragraph of a run whose
storage stays lost: tests/test_failures.py.)"""

from __future__ import annotations

import csv
import io
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml
from conftest import REPO, write_digits_tree
from s3_jobs import (
    Jobs,
    alive_train_workers,
    credentials_file,
    epochs_of,
    wait_for_controller_snapshot,
)
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


@pytest.fixture(scope="module")
def s3_server(tmp_path_factory):
    """This module's own SeaweedFS, in place of the session's (``s3`` uses it): the S3
    example's scenario stops it mid-run and starts it again."""
    from tljob.storage.seaweed import LocalS3Server

    with LocalS3Server(tmp_path_factory.mktemp("seaweedfs")) as server:
        yield server


# examples/s3.yaml at test size, on a CSV manifest in one prefix naming images in another
# (upload_manifest): 4 digits of 10 images (8 train, 2 val each; digit_1 7 + 2, one of its
# images quarantined), 32 px, batch 4, 2 + 6 epochs (enough that the driver's kill, the
# long outage and its restart, the SIGTERM and the 30 s outage each leave epochs to
# resume), no in-run restart unless a job allows it.
S3_EXAMPLE = REPO / "examples" / "s3.yaml"
S3_EXAMPLE_EPOCHS = (2, 6)
RAY_SNIPPET = "with_traceback(filtered_tb)"


def s3_example_overrides(s3) -> list[str]:
    return [
        f"data.source={s3.uri('lists', 'train.csv')}",
        "data.image_size=32",
        "train.batch_size=4",
        f"train.stages.0.epochs={S3_EXAMPLE_EPOCHS[0]}",
        f"train.stages.1.epochs={S3_EXAMPLE_EPOCHS[1]}",
        "scaling.max_failures=0",
        "scaling.worker_cache_mib=0",  # every epoch read from the shards on S3
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


def test_the_s3_example_survives_a_killed_driver_server_outages_and_a_sigterm(
    tmp_path, s3, ray_cluster
):
    """examples/s3.yaml submitted as examples/README.md gives it (credentials in a file
    named in the job's runtime environment), three jobs on one run directory:

    1. the driver is killed (SIGKILL) once a checkpoint is on S3: its lock stays there;
    2. the rerun takes over the stale lock and resumes; the S3 server stops for longer than
       the job's retry budget (`s3.max_attempts` 8: about 6 s): the worker group fails,
       Ray Train restarts it (`scaling.max_failures` 2) and, the server back, it resumes
       from the newest complete checkpoint; after a further checkpoint the driver gets
       SIGTERM (a pod eviction): it releases the lock and says where a rerun resumes;
    3. the rerun starts at once (the lock is free, nothing stale to wait out) and resumes;
       the server stops for 30 s in the middle of an epoch and comes back: reads and
       checkpoint uploads wait it out (`s3.max_attempts` 12: about 100 s) and the run
       finishes with no restart (`scaling.max_failures` 0), every epoch trained once.

    Then every output is in the bucket, whole, no temporary object is left, and no
    credential is anywhere."""
    conflicted = upload_manifest(tmp_path, s3, classes=4, per_class=10)
    overrides = s3_example_overrides(s3)
    total = sum(S3_EXAMPLE_EPOCHS)
    jobs = Jobs(ray_cluster, credentials_file(tmp_path, s3.server.admin))
    run_dir = storage.resolve(s3.uri("tljob-runs", "fashion-s3"))
    lock = run_dir.join("run.lock")

    # 1. the driver killed (SIGKILL) once a checkpoint is on S3: its lock stays behind
    first = jobs.submit(S3_EXAMPLE, overrides)
    jobs.wait_for_checkpoint(first, run_dir)
    killed = json.loads(storage.read_text(lock))  # the lock on S3 names the driver
    os.kill(killed["pid"], signal.SIGKILL)  # our own cluster's job driver, nothing else
    assert jobs.wait(first) == "FAILED"
    killed_at, _ = ckpt_files.newest_complete(run_dir)
    epochs_done = epochs_of(killed_at)
    assert epochs_done <= total - 5, "the kill came too late to test the next two jobs"
    assert storage.exists(lock)  # left behind by the killed driver

    # 2. takes over the stale lock and resumes; the server stops for longer than the retry
    # budget once a further checkpoint is on S3, and is started again once the worker
    # group has failed; after the restarted group's first checkpoint, SIGTERM
    second = jobs.submit(S3_EXAMPLE, [*overrides, "s3.max_attempts=8", "scaling.max_failures=2"])
    jobs.wait_for_checkpoint(second, run_dir, after=epochs_done)
    before_outage, _ = ckpt_files.newest_complete(run_dir)
    wait_for_controller_snapshot(run_dir, before_outage)
    group = alive_train_workers(ray_cluster)
    assert len(group) == 2
    s3.server.stop()
    jobs.wait_until(second, lambda: not group & alive_train_workers(ray_cluster))
    s3.server.start()  # back, on the same port with the same data
    restarted_from, _ = ckpt_files.newest_complete(run_dir)
    assert restarted_from >= before_outage
    jobs.wait_for_checkpoint(second, run_dir, after=epochs_of(restarted_from))
    os.kill(json.loads(storage.read_text(lock))["pid"], signal.SIGTERM)
    assert jobs.wait(second) == "FAILED"
    assert not storage.exists(lock)  # released on the way out
    terminated_at, _ = ckpt_files.newest_complete(run_dir)
    assert epochs_of(terminated_at) <= total - 2, "SIGTERM came too late to test job 3"
    lost = jobs.logs(second)
    assert (
        f"[tljob] taking over the stale lock of pid {killed['pid']} on host "
        f"{killed['host']!r} (pid {killed['pid']} is no longer running)"
    ) in lost
    assert resuming_line(epochs_done) in lost
    # Ray Train restarted the group once, from the newest complete checkpoint at the time
    restart = (
        f"[tljob] worker group restarted (attempt 2); resuming after "
        f"{resuming_line(epochs_of(restarted_from)).split('resuming after ', 1)[1]}"
    )
    assert restart in lost, lost[-5000:]
    assert "(attempt 3)" not in lost
    assert (
        f"[tljob] terminated (SIGTERM); the run lock {lock.uri} is released. Rerun the same "
        f"command to resume from {terminated_at} in {run_dir.uri}.\n"
    ) in lost, lost[-3000:]
    assert lost.rstrip().endswith("\ntljob: terminated")
    assert "exit code 143" in jobs.client.get_job_info(second).message
    assert driver_tracebacks(lost) == [] and RAY_SNIPPET not in lost

    # 3. the lock is free: the rerun starts at once and resumes; 30 s without the server
    # in the middle of an epoch, ridden out with no restart
    third = jobs.submit(S3_EXAMPLE, overrides)
    jobs.wait_for_checkpoint(third, run_dir, after=epochs_of(terminated_at))
    wait_for_controller_snapshot(run_dir, ckpt_files.newest_complete(run_dir)[0])
    s3.server.stop()
    time.sleep(30)
    s3.server.start()
    status = jobs.wait(third)
    out = jobs.logs(third)
    assert status == "SUCCEEDED", out[-5000:]
    assert "stale lock" not in out and "waiting up to" not in out
    assert resuming_line(epochs_of(terminated_at)) in out
    assert "worker group restarted" not in out
    assert out.count("[tljob] stage 2/2 'fine_tune' epoch ") >= total - epochs_of(terminated_at)

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
    # the third job's run: every epoch it trained, trained once, the outage notwithstanding
    assert (summary["restarts"], summary["epochs_repeated"]) == (0, 0)
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
    head, fine_tune = S3_EXAMPLE_EPOCHS
    assert [(r.stage, r.epoch) for r in history] == [
        *(("head", e) for e in range(1, head + 1)),
        *(("fine_tune", e) for e in range(1, fine_tune + 1)),
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
