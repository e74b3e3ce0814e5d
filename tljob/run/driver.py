"""The driver side of a run: check, lock, plan, launch the trainer, summarise.

``run_job_driver_fn`` is the whole run for a validated config and its data plan
(``tljob.data.plan``: the listing, its split and fingerprint, made once). In order:
the run directory is checked and locked (before Ray starts), the resume plan is made from
the newest complete checkpoint on storage and said out loud, Ray is joined, the data is
prepared into shards once (or the shards of an earlier run are reused), the workers train
from them, and the summary is written from the checkpointed history. A NaN/inf loss ends
the run with ``TrainingDivergedError`` (exit 1), keeping the last good checkpoint.
"""

from __future__ import annotations

import importlib.util
import io
import json
import signal
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from ray.train import CheckpointConfig, FailureConfig, RunConfig, ScalingConfig
from ray.train.v2.api.data_parallel_trainer import DataParallelTrainer

from tljob import output, storage
from tljob.config import JobConfig, dump_config
from tljob.data.features import RUN_RECORD as CACHED_FEATURES_RECORD
from tljob.data.features import VIEWS_DATASET
from tljob.data.pipeline import PreparedData, prepare_data
from tljob.data.plan import DataPlan
from tljob.errors import JobFailedError, UserError
from tljob.infer.pipeline import score_prepared
from tljob.report import data_summary_line, set_aside_lines
from tljob.run import checkpoint as ckpt_files
from tljob.run import failed_run, failures, terminate
from tljob.run import shipped as shipped_weights
from tljob.run.attempts import clear_attempts, read_attempts, restart_figures
from tljob.run.connect import check_cluster, ensure_ray, release_resource_request
from tljob.run.failed_run import NewestCheckpoint
from tljob.run.failures import DIVERGED_FILE
from tljob.run.input_wait import input_summary, starvation_line
from tljob.run.ledger import (
    ResumePlan,
    class_weights,
    history_csv,
    run_summary,
)
from tljob.run.lock import RunLock, prepare_run_dir
from tljob.run.loop import LoopConfig
from tljob.run.plan import read_plan
from tljob.run.progress import BoardSink, LiveDisplay, live_display_wanted
from tljob.run.rescore import (
    RESCORED_FILE,
    clear_rescored,
    read_rescored,
    test_record,
)
from tljob.run.restart import TrainDatasetPerAttempt
from tljob.run.shipped import ShippedWeights
from tljob.run.storage_check import check_workers_reach_storage
from tljob.run.terminate import Terminated, sigterm_unwinds
from tljob.run.tf_config import MultiWorkerTFConfig, train_fn_per_worker

log = output.logger("run")
say = log.info


@dataclass
class TrainOutcome:
    run_dir: str
    summary: dict[str, Any]


def plan_run(run_dir: storage.Location, job: JobConfig, classes: list[str]) -> ResumePlan:
    """Where this run starts: fresh, or after the newest complete checkpoint on storage.

    Removes incomplete checkpoint directories newer than it (an interrupted upload) and
    rewrites ``history.csv`` to the chosen checkpoint's history, so both agree."""
    found = read_plan(run_dir, job, classes)
    found.point.remove_incomplete(say)
    history = run_dir.join("history.csv")
    if found.state is not None:
        storage.write_text(history, history_csv(found.state.history))
    else:
        storage.delete_file(history)
    return found.plan


def write_learning_curves(run_dir: storage.Location, history: Sequence[Any]) -> None:
    """``<run>/learning_curves.png`` from the run's epochs (``tljob.evaluate.plots``)."""
    from tljob.evaluate.plots import learning_curves_png
    from tljob.evaluate.report import LEARNING_CURVES_PNG

    png = io.BytesIO()
    learning_curves_png(history, png)
    storage.write_bytes(run_dir.join(LEARNING_CURVES_PNG), png.getvalue())


def score_test_split(
    model_dir: storage.Location,
    prepared_uri: str,
    classes: Sequence[str],
    batch_size: int | None = None,
    use_gpu: bool | None = None,
    verbose: bool = False,
) -> dict[str, Any]:
    """The exported model of a sweep's ``best/`` scored on the prepared test split, on an
    actor pool (its trials' workers are gone): ``tljob.run.rescore.test_record``. A run
    scores its own on its training workers (``tljob.run.rescore``)."""
    scored = score_prepared(
        model_dir.join("model", "model.keras").uri,
        prepared_uri,
        "test",
        batch_size=batch_size,
        use_gpu=use_gpu,
        verbose=verbose,
    )
    return test_record(model_dir, scored.truth, scored.probs, classes)


def _in_main_thread() -> bool:
    return threading.current_thread() is threading.main_thread()


def run_job_driver_fn(
    job: JobConfig,
    data_plan: DataPlan,
    verbose: bool = False,
    weights_file: str | None = None,
    train_callbacks: Sequence[Any] = (),
    in_sweep: bool = False,
    lock_wait_s: float = 0.0,
) -> TrainOutcome:
    """Check, lock and plan before Ray starts; then train (or resume) and summarise.

    ``data_plan``: the data's plan (``tljob.data.plan.plan_data``), for ``job`` or, in a
    sweep, for the sweep's base job (``DataPlan.for_job`` checks it for ``job``'s batches).
    ``weights_file``: ``model.weights`` resolved to a local file on this machine
    (``tljob.run.job.resolve_weights``), shipped to the workers through the run directory.
    ``train_callbacks``: extra Ray Train callbacks for the trainer's ``RunConfig`` (a sweep
    trial passes Tune's ``TuneReportCallback``). ``in_sweep``: the sweep's driver has already
    checked the cluster and storage and prepared and described the data, so this run skips
    those checks and lines (it still finds the shards by fingerprint). ``lock_wait_s``: how
    long a live-looking run lock is waited for (``RunLock.wait_s``).

    Raises ``UserError`` (exit 2) for unusable input (also when a worker raised it), a busy
    or unwritable run directory or a rerun that contradicts the run so far;
    ``TrainingDivergedError`` (exit 1) for a non-finite loss; ``StorageFailedError`` and
    ``WorkerFailedError`` (exit 1) when the storage or a worker failed
    (``tljob.run.failed_run``: one paragraph, and where a rerun resumes).
    """
    if job.train.tensorboard and importlib.util.find_spec("tensorboard") is None:
        raise UserError(
            "`train.tensorboard` (true) needs the tensorboard package on every node: pip "
            "install tensorboard (it comes with tljob's cpu and cuda extras), or set "
            "train.tensorboard: false"
        )
    data_plan = data_plan.for_job(job)  # the listing's counts (at most) fill a batch
    listing = data_plan.listing
    run_dir = prepare_run_dir(job.run.storage_path, job.run.name)
    newest: NewestCheckpoint | None = None
    lock = RunLock(run_dir, say=say, wait_s=lock_wait_s)
    terminated = False
    try:
        # SIGTERM (a pod eviction, `ray job stop`) unwinds as Ctrl-C: the lock goes
        with sigterm_unwinds(), lock:
            try:
                plan = plan_run(run_dir, job, listing.classes)
                newest = NewestCheckpoint(plan.checkpoint)
                say(plan.message)
                ensure_ray(verbose)
                if not in_sweep:
                    check_cluster(job, len(listing.classes), listing.count(), say)
                    check_workers_reach_storage(job, say=say)
                shipped = shipped_weights.ship(run_dir, weights_file, say)
                return _train_and_summarise(
                    job, data_plan, plan, run_dir, verbose, shipped, train_callbacks, in_sweep,
                    newest,
                )  # fmt: skip
            except Exception as e:
                told = failed_run.explain(e, job, run_dir, newest, verbose)
                if told is e:
                    raise
                raise told from e
            except (KeyboardInterrupt, SystemExit):
                terminated = terminate.received()  # (ray.get hides Terminated)
                raise
            finally:
                if newest is not None:
                    newest.close()
    except (KeyboardInterrupt, SystemExit) as e:
        if not (terminated or isinstance(e, Terminated)):
            raise
        resume = failed_run.resume_point(run_dir, newest)
        say(
            f"terminated (SIGTERM); the run lock {lock.location.uri} is released. "
            f"{failures.resume_sentence(resume, run_dir.uri)}"
        )
        raise Terminated from None
    finally:
        if not in_sweep:  # a sweep's request is its driver's (tljob.tune.driver)
            release_resource_request()


def _train_and_summarise(
    job: JobConfig,
    data_plan: DataPlan,
    plan: ResumePlan,
    run_dir: storage.Location,
    verbose: bool,
    shipped: ShippedWeights | None = None,
    train_callbacks: Sequence[Any] = (),
    in_sweep: bool = False,
    newest: NewestCheckpoint | None = None,
) -> TrainOutcome:
    started = time.monotonic()
    # A resumed run's first epoch gets the augmented views a straight run would give it.
    done = (
        len(ckpt_files.read_state(run_dir.join(plan.checkpoint)).history) if plan.checkpoint else 0
    )
    prepared: PreparedData = prepare_data(job, data_plan, epoch_offset=done)
    data_plan.check_prepared(prepared.counts["train"].used, prepared.counts["val"].used)
    storage.write_text(run_dir.join("config.yaml"), dump_config(job))
    storage.write_text(
        run_dir.join("labels.json"),
        json.dumps({str(i): c for i, c in enumerate(prepared.classes)}, indent=1),
    )
    data_report = prepared.report()
    storage.write_text(run_dir.join("data_report.json"), json.dumps(data_report, indent=1))
    if not in_sweep:
        _print_data_summary(prepared)
    storage.delete_file(run_dir.join(DIVERGED_FILE))
    storage.delete_file(run_dir.join(CACHED_FEATURES_RECORD))
    clear_rescored(run_dir)
    clear_attempts(run_dir)  # this run counts its own worker-group restarts
    failures.clear_tracebacks(run_dir)  # numbered by attempt, as the attempts are

    # On a terminal, rank 0's progress goes to a live display instead of [tljob] lines.
    display = LiveDisplay().start() if live_display_wanted(verbose) else None
    # fit() installs Ray Train's Ctrl-C handler, which holds the controller actor's handle:
    # put the caller's back after it, or the controller outlives the run in a process that
    # goes on (a second run from Python, a test process)
    sigint = signal.getsignal(signal.SIGINT) if _in_main_thread() else None
    try:
        sink = display.sink if display else None
        # a failure is told by run_job_driver_fn (tljob.run.failed_run)
        note = newest.key if newest else ""
        # a sweep scores only its best trial on the test split (tljob.tune.outputs)
        test = prepared.test is not None and not in_sweep
        _trainer(job, prepared, done, run_dir, sink, shipped, train_callbacks, note, test).fit()
    except (KeyboardInterrupt, SystemExit):
        if terminate.received():
            raise  # said by run_job_driver_fn once the lock is released
        # Ray Train's own Ctrl-C handler aborts the run and leaves fit() with SystemExit.
        resume = failed_run.resume_point(run_dir, newest)
        say(f"interrupted. {failures.resume_sentence(resume, run_dir.uri)}")
        raise KeyboardInterrupt from None
    finally:
        if sigint is not None:
            signal.signal(signal.SIGINT, sigint)
        if display is not None:
            display.stop()  # prints what is still on its way, before anything else
    # fit() returns once Ray Train has removed the worker group (its placement group): the
    # workers' CPUs and GPUs are free; what is left runs on the driver
    released_at = time.monotonic()
    released = {
        "at": datetime.now(UTC).isoformat(timespec="seconds"),
        "seconds_after_start": round(released_at - started, 1),
        # a sweep's request is withdrawn by its driver once every trial has ended
        "request_withdrawn": False if in_sweep else release_resource_request(),
    }
    diverged = failed_run.diverged_error(run_dir)
    if diverged is not None:
        raise diverged
    latest, _ = ckpt_files.newest_complete(run_dir)
    if latest is None:
        raise JobFailedError(f"training ended without a checkpoint in {run_dir.uri}")
    history = ckpt_files.read_state(run_dir.join(latest)).history
    storage.write_text(run_dir.join("history.csv"), history_csv(history))
    write_learning_curves(run_dir, history)
    # rank 0 re-scored the exported model (and scored the test split) before the
    # workers' resources went back: tljob.run.rescore
    rescored = read_rescored(run_dir)
    if rescored is None:
        raise JobFailedError(f"training ended without {RESCORED_FILE} in {run_dir.uri}")
    ended = time.monotonic()
    summary = run_summary(
        job, prepared.classes, prepared.summary(), history, rescored["exported_model"],
        ended - started,
    )  # fmt: skip
    summary["checkpoint"] = run_dir.join(latest).uri
    released["seconds_before_end"] = round(ended - released_at, 1)  # of the wall time
    summary["worker_resources_released"] = released
    if "test" in rescored:  # once, at the end: the test images chose nothing
        summary["test"] = rescored["test"]
    summary.update(restart_figures(read_attempts(run_dir)))
    if summary["restarts"]:
        say(
            f"the worker group was restarted {summary['restarts']} time(s) after a failure; "
            f"{summary['epochs_repeated']} epoch(s) were trained again"
        )
    summary["prepared_data"] = prepared.prepared_uri
    if storage.exists(record := run_dir.join(CACHED_FEATURES_RECORD)):
        summary["cached_features"] = json.loads(storage.read_text(record))
    timings = run_dir.join("timings.json")  # the steps' input wait (tljob.run.input_wait)
    images_per_step = job.train.batch_size * job.scaling.num_workers
    if storage.exists(timings) and (
        section := input_summary(json.loads(storage.read_text(timings)), images_per_step)
    ):
        summary["input"] = section
        if line := starvation_line(section):
            say(line)
    if shipped is not None:
        summary["initial_weights"] = {"file": shipped.uri, "sha256": shipped.sha256}
    digests = [
        storage.read_text(run_dir.join("replicas", f"rank_{r}.sha256")).strip()
        for r in range(job.scaling.num_workers)
    ]
    summary["replica_weights_identical"] = len(set(digests)) == 1
    if not summary["replica_weights_identical"]:
        say(f"WARNING: workers ended with different weights: {digests}")
    storage.write_text(run_dir.join("summary.json"), json.dumps(summary, indent=1))
    return TrainOutcome(run_dir=run_dir.uri, summary=summary)


def _trainer(
    job: JobConfig,
    prepared: PreparedData,
    epochs_done: int,
    run_dir: storage.Location,
    progress: BoardSink | None,
    shipped: ShippedWeights | None = None,
    callbacks: Sequence[Any] = (),
    checkpoint_note: str = "",
    test: bool = False,
) -> DataParallelTrainer:
    resources = {"CPU": job.scaling.cpus_per_worker}
    if job.scaling.use_gpu:
        resources["GPU"] = job.scaling.gpus_per_worker
    # Ray's TensorflowTrainer would import TensorFlow here and in the controller
    # (tljob.run.tf_config); this is the same trainer with tljob's TF_CONFIG backend.
    return DataParallelTrainer(
        train_fn_per_worker,
        backend_config=MultiWorkerTFConfig(),
        train_loop_config=LoopConfig(
            job=job,
            classes=tuple(prepared.classes),
            run_dir=run_dir.uri,
            train_images=prepared.counts["train"].used,
            progress=progress,
            storage=storage.current_settings(),
            class_weights=(
                tuple(class_weights(job, prepared.classes, prepared.summary()))
                if job.train.class_weight != "none"
                else None
            ),
            weights_file=shipped.uri if shipped else None,
            weights_sha256=shipped.sha256 if shipped else "",
            weights_content_sha256=shipped.content_sha256 if shipped else "",
            checkpoint_note=checkpoint_note,
            prepared_uri=prepared.prepared_uri,
            test=test,
        ).to_ray(),
        scaling_config=ScalingConfig(
            num_workers=job.scaling.num_workers,
            use_gpu=job.scaling.use_gpu,
            resources_per_worker=resources,
        ),
        run_config=RunConfig(
            name=job.run.name,
            # The same filesystem as tljob's own files; it holds no credentials, so every
            # Train process that unpickles it uses its own (see tljob.storage).
            storage_path=run_dir.parent.path,
            storage_filesystem=run_dir.fs,
            checkpoint_config=CheckpointConfig(num_to_keep=job.run.checkpoints_to_keep),
            # A dead worker restarts the whole group, which resumes from the newest
            # complete checkpoint (tljob.run.restart decides it at every group start).
            failure_config=FailureConfig(max_failures=job.scaling.max_failures),
            callbacks=list(callbacks),
        ),
        datasets={
            "train": TrainDatasetPerAttempt(prepared.train, run_dir, next_epoch=epochs_done),
            "val": prepared.val,
            # features: views K (tljob.run.cached_stage): the views' passes, never "train"
            **({VIEWS_DATASET: prepared.train_views} if prepared.train_views is not None else {}),
        },
    )


def _print_data_summary(prepared: PreparedData) -> None:
    how = "reused" if prepared.reused else "prepared now"
    say(f"data: shards in {prepared.prepared_uri} ({how})")
    say(data_summary_line(prepared.summary()))
    for line in set_aside_lines(prepared.quarantined, prepared.duplicates):
        say(line)
