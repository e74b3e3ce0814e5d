"""One sweep trial: a Tune function trainable that is an ordinary tljob run (Ray side).

The trial's process is a Tune actor holding ``tune.trial_cpus`` (a fractional CPU); the
``TensorflowTrainer`` it builds runs its controller and workers outside that reservation,
as Ray Train V2 does under Tune. ``TuneReportCallback`` forwards every epoch's report of
rank 0 to Tune, so schedulers decide after every epoch. When a scheduler stops the trial,
Tune ends this actor; the Train controller and its workers are owned by it and end with it,
and Train's placement-group cleaner removes their reservation.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from ray import tune
from ray.tune.integration.ray_train import TuneReportCallback

from tljob.config.sweep import Sweep, trial_job
from tljob.data.listing import ImageListing


def trial_run_name(sweep: Sweep, trial_id: str) -> str:
    """The tljob run name of a trial: the sweep's name and Tune's trial id, so a trial that
    Tune restarts (``tljob tune --resume``) finds its own run directory and checkpoints."""
    return f"{sweep.tune.name}-{trial_id}"


def sampled_values(sweep: Sweep, config: Mapping[str, Any]) -> dict[str, Any]:
    """The values Tune chose for this trial, by dotted config path, in the sweep's order."""
    return {path: config[path] for path in sweep.search if path in config}


def trial_driver_fn(
    config: dict[str, Any],
    sweep: Sweep,
    listing: ImageListing,
    prepared_uri: str,
    verbose: bool = False,
) -> None:
    """Tune function trainable: ``config`` maps the search paths to this trial's values.

    The sampled values go through ``trial_job`` (the same override-and-validate path as
    ``--set``); a ``ConfigError`` fails this trial with its message, not the sweep. Then the
    run trains like ``tljob train`` with Tune's report callback. Raises ``RuntimeError`` if
    the run did not use the sweep's prepared data (``prepared_uri``), which would mean a
    searched path changed the data's fingerprint."""
    from tljob import output, storage
    from tljob.run import driver
    from tljob.run.job import resolve_weights
    from tljob.zoo import check_weights_available, get_backbone

    output.setup(verbose)
    if not verbose:
        # The sweep's driver prints one line per trial event; the run's own lines stay in
        # this actor's log file.
        output.logger("run").setLevel("WARNING")
        output.logger("data").setLevel("WARNING")
    run_name = trial_run_name(sweep, tune.get_context().get_trial_id())
    job = trial_job(sweep, sampled_values(sweep, config), run_name)
    check_weights_available(
        get_backbone(job.model.backbone), job.model.weights, job.image_size, job.model.offline
    )
    storage.configure(storage.S3Settings.from_config(job.s3))
    outcome = driver.run_job_driver_fn(
        job,
        listing,
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
