"""Hyperparameter sweeps on Ray Tune (Ray side): ``sweep_driver_fn`` runs a whole sweep.

In order: the data is listed, planned (``tljob.data.plan``) and prepared once (every trial
gets the plan and finds the shards by its fingerprint), the search space and scheduler are
built from the sweep's ``search`` and ``tune`` sections, Tune runs one ``trial_driver_fn``
per trial (``tljob.tune.trial``), and the outputs are collected from the trials' run
directories: ``trials.csv``, the printed table, ``sweep.png`` and the best trial's model
under ``<sweep dir>/best/``.
"""

from __future__ import annotations

import logging
import os
from typing import Any

import ray
from ray import tune

from tljob import output, ray_private, storage
from tljob.config.sweep import Sweep
from tljob.errors import UserError
from tljob.report import data_summary_line
from tljob.run.connect import (
    check_cluster,
    ensure_ray,
    release_resource_request,
    request_worker_resources,
)
from tljob.tune.interrupt import tune_stops_on_interrupt
from tljob.tune.outputs import SweepOutcome, collect_records, score_best_on_test, write_outputs
from tljob.tune.plan import (
    check_concurrency,
    expected_trials,
    max_concurrent,
    scheduler,
    search_space,
    searcher,
    sweep_resource_request,
    total_epochs,
)
from tljob.tune.trial import trial_driver_fn

log = output.logger("tune")
say = log.info


class SweepStateError(UserError):
    """``--resume`` without a sweep to resume, or a new sweep over an existing one."""


def sweep_location(sweep: Sweep) -> storage.Location:
    return storage.resolve(sweep.storage_path)


def _join_ray(verbose: bool) -> None:
    """Join RAY_ADDRESS or start a local Ray (``ensure_ray``, without the trials' output).
    Unless ``verbose``, the console gets only tljob's lines: no trial or worker output (it
    stays in Ray's session logs), no Tune boxes or tables (Tune's new output engine prints
    its "Configuration for experiment" box and "View detailed results" line even at
    verbosity 0; the legacy one at 0 prints nothing) and none of Ray's known-harmless
    warnings (``output.hide_ray_warnings``)."""
    if not verbose:
        os.environ["RAY_AIR_NEW_OUTPUT"] = "0"
    ensure_ray(verbose, worker_lines=False)
    output.hide_ray_warnings(verbose)


def _prepare_once(sweep: Sweep, verbose: bool) -> tuple[Any, str]:
    """List, plan and prepare the base job's data (or find it prepared): every trial trains
    on these shards and decodes nothing. Returns the data plan and the prepared data's
    URI."""
    from tljob.data.pipeline import prepare_data
    from tljob.run.job import plan_checked

    job = sweep.job
    data_plan = plan_checked(job)
    listing = data_plan.listing
    _join_ray(verbose)
    check_cluster(job, len(listing.classes), listing.count(), say)
    prepared = prepare_data(job, data_plan)
    how = "reused" if prepared.reused else "prepared now"
    say(f"data: shards in {prepared.prepared_uri} ({how}), shared by every trial")
    say(data_summary_line(prepared.summary()))
    return data_plan, prepared.prepared_uri


def _tune_verbosity(verbose: bool) -> int:
    return 2 if verbose else 0


def _tuner(sweep: Sweep, trainable: Any, resume: bool, verbose: bool, concurrency: int) -> Any:
    where = sweep_location(sweep)
    exists = tune.Tuner.can_restore(where.path, storage_filesystem=where.fs)
    if resume:
        if not exists:
            raise SweepStateError(
                f"--resume: there is no sweep to resume in {where.uri} "
                f"(`tune.name` {sweep.tune.name!r}); run without --resume to start it"
            )
        say(f"resuming the sweep in {where.uri}")
        tuner = tune.Tuner.restore(
            where.path,
            trainable,
            resume_unfinished=True,
            resume_errored=True,
            storage_filesystem=where.fs,
        )
        # Tune restores the first run's RunConfig, verbosity included; this run's --verbose
        # decides (Tuner.restore has no parameter for it).
        ray_private.set_restored_tuner_verbosity(tuner, _tune_verbosity(verbose))
        return tuner
    if exists:
        raise SweepStateError(
            f"a sweep named {sweep.tune.name!r} already exists in {where.uri}: add --resume "
            "to continue it, or choose another `tune.name`"
        )
    from tljob.tune.outputs import TrialLines, trial_dirname

    t = sweep.tune
    return tune.Tuner(
        trainable,
        param_space=search_space(sweep),
        tune_config=tune.TuneConfig(
            metric=t.metric,
            mode=sweep.mode,
            scheduler=scheduler(sweep),
            search_alg=searcher(sweep),
            num_samples=t.num_samples,
            time_budget_s=t.time_budget_s,
            max_concurrent_trials=concurrency,
            trial_dirname_creator=trial_dirname,
        ),
        run_config=tune.RunConfig(
            name=t.name,
            storage_path=where.parent.path,
            storage_filesystem=where.fs,
            verbose=_tune_verbosity(verbose),
            failure_config=tune.FailureConfig(max_failures=0),
            callbacks=[TrialLines(sweep, expected_trials(sweep), total_epochs(sweep.job))],
        ),
    )


def sweep_driver_fn(sweep: Sweep, resume: bool = False, verbose: bool = False) -> SweepOutcome:
    """Run (or with ``resume`` continue) the sweep and write its outputs.

    Raises ``UserError`` (exit 2) for unusable data, a cluster too small for one trial,
    a missing optuna, ``--resume`` with nothing to resume or a new sweep over an old one;
    ``KeyboardInterrupt`` after Ctrl-C, once Tune has saved the sweep's state."""
    searcher(sweep)  # a missing optuna is exit 2 before any work
    data_plan, prepared_uri = _prepare_once(sweep, verbose)
    concurrency = max_concurrent(sweep, ray.cluster_resources())
    check_concurrency(sweep, ray.cluster_resources(), concurrency)
    trainable = tune.with_resources(
        tune.with_parameters(
            trial_driver_fn,
            sweep=sweep,
            data_plan=data_plan,
            prepared_uri=prepared_uri,
            verbose=verbose,
        ),
        {"cpu": sweep.tune.trial_cpus},
    )
    tuner = _tuner(sweep, trainable, resume, verbose, concurrency)
    say(
        f"sweep {sweep.tune.name!r}: {expected_trials(sweep)} trials, up to {concurrency} at "
        f"once, {sweep.tune.scheduler} on {sweep.tune.metric} ({sweep.mode})"
    )
    if not verbose:
        # Tune's own lines on a stop signal (and its Tuner.restore advice): tljob says it.
        logging.getLogger("ray.tune.tune").setLevel(logging.ERROR)
    if sweep.job.scaling.resource_wait_seconds > 0:
        request_worker_resources(sweep_resource_request(sweep, concurrency))
    try:
        with tune_stops_on_interrupt(say) as interrupt:
            results = tuner.fit()
    finally:
        # every trial has ended: the nodes brought up for them may go once idle
        release_resource_request()
    if interrupt.received:
        # Tune saved its state; the outputs are written when the sweep ends.
        say(
            f"sweep {sweep.tune.name!r} interrupted; continue it with the same command and "
            "--resume (finished trials are kept, the others resume from their checkpoints)"
        )
        raise KeyboardInterrupt
    records, histories = collect_records(sweep, results)
    outcome = write_outputs(sweep, records, histories, sweep_location(sweep), sweep.mode)
    if outcome.best_dir is not None and data_plan.has_test:
        score_best_on_test(outcome, prepared_uri, verbose)
    return outcome
