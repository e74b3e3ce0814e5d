"""One sweep trial: a Tune function trainable that is an ordinary tljob run (Ray side).

The trial's process is a Tune actor holding ``tune.trial_cpus`` (a fractional CPU); the
trainer it builds (``tljob.run.driver``) runs its controller and workers outside that reservation,
as Ray Train V2 does under Tune. ``TuneReportCallback`` forwards every epoch's report of
rank 0 to Tune, so schedulers decide after every epoch. When a scheduler stops the trial,
Tune ends this actor; the Train controller and its workers are owned by it and end with it,
and Train's placement-group cleaner removes their reservation.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from ray import tune
from ray.tune.integration.ray_train import TuneReportCallback

from tljob import storage
from tljob.config.sweep import Sweep, trial_job
from tljob.data.plan import DataPlan
from tljob.run.ledger import EpochRow, parse_history_csv

ENDED_DIR = "ended"  # <sweep dir>/ended/<trial id>.json: the trials that ended, and how


def trial_run_name(sweep: Sweep, trial_id: str) -> str:
    """The tljob run name of a trial: the sweep's name and Tune's trial id, so a trial that
    Tune restarts (``tljob tune --resume``) finds its own run directory and checkpoints."""
    return f"{sweep.tune.name}-{trial_id}"


def trial_run_dir(sweep: Sweep, trial_id: str) -> storage.Location:
    """Where a trial's run lives: ``<run.storage_path>/<trial run name>``."""
    return storage.resolve(sweep.job.run.storage_path).join(trial_run_name(sweep, trial_id))


def read_history(run_dir: storage.Location) -> list[EpochRow]:
    """The epochs in a run's ``history.csv`` (none when it has none yet)."""
    history = run_dir.join("history.csv")
    return parse_history_csv(storage.read_text(history)) if storage.exists(history) else []


def checkpointed_history(run_dir: storage.Location) -> list[EpochRow]:
    """The epochs in the run's newest complete checkpoint: where a restarted run resumes."""
    from tljob.run import checkpoint as ckpt_files

    state = ckpt_files.resume_point(run_dir).state
    return state.history if state is not None else []


def ended_marker(sweep: Sweep, trial_id: str) -> storage.Location:
    return storage.resolve(sweep.storage_path).join(ENDED_DIR, f"{trial_id}.json")


def mark_ended(sweep: Sweep, trial_id: str, how: str, epochs: int) -> None:
    """Record in the sweep's folder, as soon as Tune says so, that a trial ended (``how``:
    'finished' or 'stopped'). Tune saves its own state only every few seconds, so a sweep
    killed meanwhile would otherwise restart that trial on ``--resume``."""
    storage.write_text(
        ended_marker(sweep, trial_id), json.dumps({"how": how, "epochs": epochs}) + "\n"
    )


def sampled_values(sweep: Sweep, config: Mapping[str, Any]) -> dict[str, Any]:
    """The values Tune chose for this trial, by dotted config path, in the sweep's order."""
    return {path: config[path] for path in sweep.search if path in config}


def trial_driver_fn(
    config: dict[str, Any],
    sweep: Sweep,
    data_plan: DataPlan,
    prepared_uri: str,
    verbose: bool = False,
) -> None:
    """Tune function trainable: ``config`` maps the search paths to this trial's values.

    The sampled values go through ``trial_job`` (the same override-and-validate path as
    ``--set``); a ``ConfigError`` fails this trial with its message, not the sweep. Then the
    run trains like ``tljob train`` with Tune's report callback, on the sweep's
    ``data_plan`` (made once; checked for this trial's batches when they differ). Raises
    ``RuntimeError`` if the run did not use the sweep's prepared data (``prepared_uri``),
    which would mean a searched path changed the data's fingerprint."""
    from tljob import output
    from tljob.run import driver
    from tljob.run.job import resolve_weights
    from tljob.zoo import check_weights_available, get_backbone

    output.setup(verbose)
    storage.configure(storage.S3Settings.from_config(sweep.job.s3))  # fixed per sweep
    trial_id = tune.get_context().get_trial_id()
    if storage.exists(ended_marker(sweep, trial_id)):
        # Ended before the sweep was killed, after Tune's last save of its state: tell
        # Tune the epochs it ran again, touching nothing, instead of training more.
        for row in read_history(trial_run_dir(sweep, trial_id)):
            tune.report(row.metrics())
        return
    if not verbose:
        # The sweep's driver prints one line per trial event; the run's own lines stay in
        # this actor's log file.
        output.logger("run").setLevel("WARNING")
        output.logger("data").setLevel("WARNING")
    run_name = trial_run_name(sweep, trial_id)
    # A restarted trial (--resume) resumes its run from its newest checkpoint, which may
    # hold epochs Tune never saw (trained after Tune's last save of its state): report
    # them first, so the scheduler and the trial's last result start from the run's epoch
    # (the epochs Tune did see are reported again; ASHA counts a rung once).
    for row in checkpointed_history(trial_run_dir(sweep, trial_id)):
        tune.report(row.metrics())
    job = trial_job(sweep, sampled_values(sweep, config), run_name)
    check_weights_available(
        get_backbone(job.model.backbone), job.model.weights, job.image_size, job.model.offline
    )
    outcome = driver.run_job_driver_fn(
        job,
        data_plan,
        verbose=verbose,
        weights_file=resolve_weights(job),
        train_callbacks=[TuneReportCallback()],
        in_sweep=True,
    )
    if outcome.summary["prepared_data"] != prepared_uri:
        raise RuntimeError(
            f"trial {run_name} trained on {outcome.summary['prepared_data']}, not on the "
            f"sweep's prepared data {prepared_uri}"
        )
