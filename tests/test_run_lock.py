"""The run lock (``tljob.run.lock``), without Ray: one run per directory, stale locks taken
over, a taken-over lock never overwritten, and the wait a RayJob retry uses."""

from __future__ import annotations

import json
import os
import shlex
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from tljob import storage
from tljob.run.lock import RunLock, RunLockedError


def test_a_second_run_on_the_same_directory_is_refused_naming_the_holder(tmp_path):
    run = storage.resolve(str(tmp_path / "run"))
    with RunLock(run):
        holder = json.loads((tmp_path / "run" / "run.lock").read_text())
        assert holder["pid"] == os.getpid()
        with pytest.raises(RunLockedError) as err:
            RunLock(run).acquire()
        text = str(err.value)
        assert f"pid {os.getpid()} on host" in text
        assert str(tmp_path / "run" / "run.lock") in text
    assert not (tmp_path / "run" / "run.lock").exists()  # released
    RunLock(run).acquire().release()  # and free again


def test_a_stale_lock_from_a_dead_process_is_taken_over(tmp_path):
    run = storage.resolve(str(tmp_path / "run"))
    dead = subprocess.run(
        [sys.executable, "-c", "import os; print(os.getpid())"],
        capture_output=True,
        text=True,
        check=True,
    )
    pid = int(dead.stdout)
    RunLock(run).acquire()  # never released, as after a SIGKILL
    lock_file = tmp_path / "run" / "run.lock"
    record = json.loads(lock_file.read_text())
    lock_file.write_text(json.dumps({**record, "pid": pid, "token": "dead"}))
    said = []
    with RunLock(run, say=said.append):
        assert json.loads(lock_file.read_text())["pid"] == os.getpid()
    assert said == [
        f"taking over the stale lock of pid {pid} on host "
        f"{record['host']!r} (pid {pid} is no longer running)"
    ]


def test_a_lock_from_another_host_is_stale_only_when_its_heartbeat_stops(tmp_path):
    run = storage.resolve(str(tmp_path / "run"))
    lock_file = tmp_path / "run" / "run.lock"
    lock_file.parent.mkdir(parents=True)
    other = {"host": "node-7", "pid": 1, "started": time.time(), "token": "t"}
    lock_file.write_text(json.dumps({**other, "heartbeat": time.time()}))
    with pytest.raises(RunLockedError, match="pid 1 on host 'node-7'"):
        RunLock(run, stale_after_s=60).acquire()
    lock_file.write_text(json.dumps({**other, "heartbeat": time.time() - 61}))
    RunLock(run, stale_after_s=60).acquire().release()


def test_a_taken_over_lock_is_never_overwritten_by_its_old_holder(tmp_path):
    run = storage.resolve(str(tmp_path / "run"))
    said: list[str] = []
    old = RunLock(run, heartbeat_s=0.05, say=said.append).acquire()
    lock_file = tmp_path / "run" / "run.lock"
    successor = {"host": "node-9", "pid": 77, "started": 1.0, "token": "new", "heartbeat": 2.0}
    lock_file.write_text(json.dumps(successor))  # what a takeover leaves
    time.sleep(0.4)  # several heartbeats
    assert json.loads(lock_file.read_text()) == successor
    assert old.lost is True
    assert said == [
        f"WARNING: the run lock {run.join('run.lock').uri} now belongs to pid 77 on host "
        "'node-9', which took it over as stale; this run no longer refreshes it. Two runs may "
        "now write this run directory: stop one of them"
    ]
    old.release()
    assert json.loads(lock_file.read_text()) == successor  # not deleted either


def test_the_heartbeat_keeps_the_lock_fresh(tmp_path):
    run = storage.resolve(str(tmp_path / "run"))
    lock = RunLock(run, heartbeat_s=0.05).acquire()
    first = json.loads((tmp_path / "run" / "run.lock").read_text())["heartbeat"]
    time.sleep(0.3)
    later = json.loads((tmp_path / "run" / "run.lock").read_text())["heartbeat"]
    lock.release()
    assert later > first


# --- the wait: a RayJob retry's driver after a crashed one ------------------------------------


def _foreign_lock(lock_file: Path, heartbeat_age_s: float = 0.0) -> None:
    """What a driver on another host (the crashed cluster's head) left behind."""
    lock_file.parent.mkdir(parents=True, exist_ok=True)
    record = {"host": "old-head", "pid": 4242, "started": time.time() - 600, "token": "old"}
    lock_file.write_text(json.dumps({**record, "heartbeat": time.time() - heartbeat_age_s}))


def test_a_waiting_run_takes_the_lock_once_the_crashed_holder_goes_stale(tmp_path):
    run = storage.resolve(str(tmp_path / "run"))
    lock_file = tmp_path / "run" / "run.lock"
    _foreign_lock(lock_file)
    said: list[str] = []
    began = time.monotonic()
    lock = RunLock(run, heartbeat_s=0.05, stale_after_s=0.6, wait_s=10, say=said.append)
    lock.acquire()
    waited = time.monotonic() - began
    try:
        assert json.loads(lock_file.read_text())["pid"] == os.getpid()
        assert 0.5 <= waited < 5
        assert said[0] == (
            "the run lock is held by pid 4242 on host 'old-head'; waiting up to 10 s for it "
            "to be released or go stale (no heartbeat for 1 s)"
        )
        assert said[1].startswith("taking over the stale lock of pid 4242 on host 'old-head'")
        assert len(said) == 2
    finally:
        lock.release()


def test_a_waiting_run_takes_the_lock_as_soon_as_the_holder_releases_it(tmp_path):
    run = storage.resolve(str(tmp_path / "run"))
    holder = RunLock(run, heartbeat_s=0.05).acquire()  # alive: this very process
    threading.Timer(0.3, holder.release).start()
    said: list[str] = []
    with RunLock(run, heartbeat_s=0.05, wait_s=10, say=said.append) as waiter:
        record = json.loads((tmp_path / "run" / "run.lock").read_text())
        assert record["token"] == waiter._token
    assert len(said) == 1 and said[0].startswith(f"the run lock is held by pid {os.getpid()}")


def test_a_live_holder_outlasting_the_wait_is_refused_saying_how_long_it_waited(tmp_path):
    run = storage.resolve(str(tmp_path / "run"))
    lock_file = tmp_path / "run" / "run.lock"
    _foreign_lock(lock_file)
    began = time.monotonic()
    with pytest.raises(RunLockedError) as err:
        RunLock(run, heartbeat_s=0.05, stale_after_s=60, wait_s=1).acquire()
    assert 1 <= time.monotonic() - began < 5
    assert "is in use by another tljob run (waited 1 s): pid 4242 on host 'old-head'" in str(
        err.value
    )
    assert json.loads(lock_file.read_text())["token"] == "old"  # untouched
    with pytest.raises(RunLockedError) as at_once:  # no wait: refused at once, as before
        RunLock(run, stale_after_s=60).acquire()
    assert "waited" not in str(at_once.value)


def test_a_rendered_rayjob_retry_waits_longer_than_a_lock_takes_to_go_stale(tmp_path):
    import inspect

    from tljob.cli import build_parser
    from tljob.deploy.options import render_options
    from tljob.deploy.render import render

    examples = Path(__file__).resolve().parents[1] / "k8s" / "examples"
    documents = render(examples / "job.yaml", render_options()).plain()
    (rayjob,) = [d for d in documents if d["kind"] == "RayJob"]
    assert rayjob["spec"]["backoffLimit"] == 2
    argv = shlex.split(rayjob["spec"]["entrypoint"])
    assert argv[-2:] == ["--lock-wait", "360"]
    args = build_parser().parse_args(["train", *argv[2:]])  # what ray_jobs/train.py hands on
    stale_after_s = inspect.signature(RunLock).parameters["stale_after_s"].default
    assert stale_after_s == 300.0
    assert args.lock_wait == 360.0 > stale_after_s

    no_retry = render(examples / "job.yaml", render_options(backoff_limit=0)).plain()
    (rayjob,) = [d for d in no_retry if d["kind"] == "RayJob"]
    assert "--lock-wait" not in rayjob["spec"]["entrypoint"]


@pytest.mark.parametrize("value", ["-1", "soon", "inf", "nan"])
def test_lock_wait_must_be_a_number_of_seconds(value, capsys):
    from tljob.cli import main

    with pytest.raises(SystemExit) as exit_:
        main(["train", "--config", "job.yaml", "--lock-wait", value])
    assert exit_.value.code == 2
    assert f"argument --lock-wait: {value!r} is not a number of seconds (0 or more)" in (
        capsys.readouterr().err
    )
