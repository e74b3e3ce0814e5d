"""A run directory on S3 (the real local server), without Ray: the lock with its
conditional create, heartbeat and stale takeover; the newest complete checkpoint among
interrupted uploads; the run directory check; the listing keeping s3:// URIs."""

from __future__ import annotations

import json
import os
import time

import pytest
from conftest import write_digits_tree

from tljob import storage
from tljob.data.listing import list_images
from tljob.run import checkpoint as ckpt_files
from tljob.run.lock import RunLock, RunLockedError, prepare_run_dir


def test_the_lock_on_s3_refuses_a_second_run_and_is_released(s3):
    run = prepare_run_dir(s3.uri("runs"), "r1")
    assert run.uri == s3.uri("runs", "r1")
    lock = run.join("run.lock")
    with RunLock(run):
        holder = json.loads(storage.read_text(lock))
        assert holder["pid"] == os.getpid()
        with pytest.raises(RunLockedError) as err:
            RunLock(run).acquire()
        assert f"pid {os.getpid()} on host" in str(err.value)
        assert s3.uri("runs", "r1", "run.lock") in str(err.value)
    assert not storage.exists(lock)  # released
    RunLock(run).acquire().release()  # and free again
    assert s3.objects("runs") == []  # no probe or temporary key left


def test_a_lock_on_s3_from_another_host_is_taken_over_when_its_heartbeat_stops(s3):
    run = storage.resolve(s3.uri("runs", "r2"))
    lock = run.join("run.lock")
    other = {"host": "node-7", "pid": 1, "started": time.time(), "token": "t"}
    storage.write_text(lock, json.dumps({**other, "heartbeat": time.time()}))
    with pytest.raises(RunLockedError, match="pid 1 on host 'node-7'"):
        RunLock(run, stale_after_s=60).acquire()
    storage.write_text(lock, json.dumps({**other, "heartbeat": time.time() - 61}))
    said: list[str] = []
    taken = RunLock(run, stale_after_s=60, heartbeat_s=0.2, say=said.append).acquire()
    assert said[0].startswith("taking over the stale lock of pid 1 on host 'node-7' (its ")
    first = json.loads(storage.read_text(lock))
    time.sleep(1.0)
    later = json.loads(storage.read_text(lock))
    taken.release()
    assert first["pid"] == os.getpid() and later["heartbeat"] > first["heartbeat"]
    assert not storage.exists(lock)


def _upload_checkpoint(s3, tmp_path, epoch: int) -> None:
    local = tmp_path / ckpt_files.checkpoint_name(epoch)
    local.mkdir()
    for i, name in enumerate(ckpt_files.CHECKPOINT_FILES):
        (local / name).write_bytes(b"x" * (10 + i))
    ckpt_files.write_manifest(str(local))
    storage.upload_dir(local, storage.resolve(s3.uri("runs", "r3", local.name)))


def test_the_newest_complete_checkpoint_on_s3_wins_over_interrupted_uploads(s3, tmp_path):
    for epoch in (1, 2, 3):
        _upload_checkpoint(s3, tmp_path, epoch)
    run = storage.resolve(s3.uri("runs", "r3"))
    # epoch 3 lost a file, as when an upload is killed between files; epoch 4 has no manifest
    storage.delete_file(run.join("checkpoint_epoch_0003", "optimizer.npz"))
    storage.write_text(run.join("checkpoint_epoch_0004", "state.json"), "{}")
    assert ckpt_files.checkpoint_dirs(run) == [
        "checkpoint_epoch_0004",
        "checkpoint_epoch_0003",
        "checkpoint_epoch_0002",
        "checkpoint_epoch_0001",
    ]
    assert ckpt_files.newest_complete(run) == (
        "checkpoint_epoch_0002",
        ["checkpoint_epoch_0004", "checkpoint_epoch_0003"],
    )
    local = tmp_path / "restored"
    local.mkdir()
    ckpt_files.download(run.join("checkpoint_epoch_0002"), str(local))
    assert (local / ckpt_files.WEIGHTS_FILE).read_bytes() == b"x" * 10


def test_a_storage_path_on_s3_that_is_an_object_is_a_clear_error(s3):
    storage.write_text(storage.resolve(s3.uri("runs")), "not a folder")
    with pytest.raises(Exception) as err:
        prepare_run_dir(s3.uri("runs"), "r4")
    assert str(err.value) == (
        f"`run.storage_path` ({s3.uri('runs')!r}): {s3.uri('runs')} is an existing file, not "
        "a directory; point `run.storage_path` at a directory (it is created if missing)"
    )


def test_listing_an_s3_tree_gives_s3_uris_for_every_file(s3, tmp_path):
    local = write_digits_tree(tmp_path / "digits", classes=2, per_class=3)
    (local / "digit_0" / ".DS_Store").write_bytes(b"junk")
    (local / "digit_1" / "notes.txt").write_text("not an image")
    storage.upload_dir(local, storage.resolve(s3.uri("digits")))
    listing = list_images(s3.uri("digits"))
    assert listing.classes == ["digit_0", "digit_1"]
    assert listing.files["digit_0"] == [
        s3.uri("digits", "digit_0", name) for name in ("0000.png", "0010.png", "0020.png")
    ]
    assert listing.skipped == [
        {"path": s3.uri("digits", "digit_0", ".DS_Store"), "reason": "hidden"},
        {"path": s3.uri("digits", "digit_1", "notes.txt"), "reason": "not_an_image_file"},
    ]
    # every listed URI reads back as the file uploaded
    first = listing.files["digit_1"][0]
    name = first.rsplit("/", 1)[1]
    assert storage.read_bytes(storage.resolve(first)) == (local / "digit_1" / name).read_bytes()
