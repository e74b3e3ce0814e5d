"""Hyperparameter sweeps on Ray Tune (Ray side): ``sweep_driver_fn`` runs a whole sweep.

In order: the data is listed and prepared once (the shards every trial then finds by
fingerprint), the search space and scheduler are built from the sweep's ``search`` and
``tune`` sections, Tune runs one ``trial_driver_fn`` per trial (``tljob.tune_trial``), and
the outputs are collected from the trials' run directories: ``trials.csv``, the printed
table, ``sweep.png`` and the best trial's model under ``<sweep dir>/best/``.
"""

from __future__ import annotations

import logging
import math
import os
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import ray
from ray import tune
from ray.tune.schedulers import FIFOScheduler

from tljob import output, preflight, storage
from tljob.config.sweep import Sweep
from tljob.errors import UserError
from tljob.report import data_summary_line
from tljob.tune_outputs import collect_records, write_outputs
from tljob.tune_schedulers import SweepASHA, SweepMedianStopping
from tljob.tune_trial import trial_driver_fn

log = output.logger("tune")
say = log.info


class SweepStateError(UserError):
    """``--resume`` without a sweep to resume, or a new sweep over an existing one."""


class ConcurrencyError(UserError):
    """``tune.max_concurrent_trials`` too high for the cluster: the trials would hang."""


class OptunaMissingError(UserError):
    """``tune.searcher: optuna`` without optuna installed."""


@dataclass
class SweepOutcome:
    sweep_dir: str
    trials_csv: str
    plot: str | None
    best_dir: str | None
    table: str


def metric_mode(sweep: Sweep) -> str:
    """``tune.mode``, or the metric's own direction (losses down, everything else up)."""
    return sweep.mode


def total_epochs(job: Any) -> int:
    return sum(stage.epochs for stage in job.train.stages)


def search_space(sweep: Sweep) -> dict[str, Any]:
    """Tune's ``param_space``: each dotted config path to its Tune domain."""
    space: dict[str, Any] = {}
    for path, spec in sweep.search.items():
        if spec.kind == "grid" or (spec.kind == "choice" and sweep.tune.searcher == "grid"):
            space[path] = tune.grid_search(list(spec.values))
        elif spec.kind == "choice":
            space[path] = tune.choice(list(spec.values))
        elif spec.kind == "uniform":
            space[path] = tune.uniform(*spec.bounds)
        elif spec.kind == "loguniform":
            space[path] = tune.loguniform(*spec.bounds)
        elif spec.kind == "randint":
            space[path] = tune.randint(*spec.bounds)  # both exclude the upper bound
        else:
            raise ValueError(f"unknown space kind {spec.kind!r} for {path!r}")
    return space


def expected_trials(sweep: Sweep) -> int:
    """How many trials the sweep runs (without a time budget)."""
    return sweep.trial_count() or sweep.tune.num_samples


def scheduler(sweep: Sweep) -> Any:
    """ASHA, median stopping or FIFO on ``TIME_ATTR``; none stops a trial at its last
    epoch (``tljob.tune_schedulers``)."""
    t = sweep.tune
    if t.scheduler == "asha":
        return SweepASHA(
            sweep,
            max_t=max(total_epochs(sweep.job), t.grace_period),
            grace_period=t.grace_period,
            reduction_factor=t.reduction_factor,
        )
    if t.scheduler == "median":
        return SweepMedianStopping(sweep, grace_period=t.grace_period)
    return FIFOScheduler()


def searcher(sweep: Sweep) -> Any:
    """None (Tune's random/grid variant generator) or Optuna's TPE."""
    if sweep.tune.searcher != "optuna":
        return None
    try:
        import optuna  # noqa: F401
    except ImportError:
        raise OptunaMissingError(
            "`tune.searcher` (optuna) needs the optuna package: pip install 'tljob[optuna]'"
        ) from None
    from ray.tune.search.optuna import OptunaSearch

    return OptunaSearch()


# What one Ray Data task asks for (Ray Data's default): a trial's data pipeline runs only
# while at least this much CPU of a node is left unreserved by the trials' workers and drivers.
DATA_TASK_CPUS = 1.0


def max_concurrent(sweep: Sweep, resources: Mapping[str, float]) -> int:
    """``tune.max_concurrent_trials``, or what the cluster holds at once. Train V2 places each
    trial's workers outside the trial's own reservation, so Tune cannot see them.

    GPU jobs: GPUs / (workers * GPUs each). CPU jobs: every running trial has its own data
    pipeline, so each needs its workers' CPUs, its driver's ``tune.trial_cpus`` and its own
    ``scaling.data_cpus``: CPUs / (workers * CPUs each + trial_cpus + data_cpus). Fewer when
    the trials' reservations would leave less than one Ray Data task's CPU free (their
    pipelines would wait forever). At least 1."""
    if sweep.tune.max_concurrent_trials:
        return sweep.tune.max_concurrent_trials
    scaling, cpus = sweep.job.scaling, resources.get("CPU", 0.0)
    reserved = scaling.num_workers * scaling.cpus_per_worker + sweep.tune.trial_cpus
    if scaling.use_gpu:
        fits = resources.get("GPU", 0.0) / (scaling.num_workers * scaling.gpus_per_worker)
    else:
        fits = cpus / (reserved + scaling.data_cpus)
    count = max(1, math.floor(fits + 1e-9))
    while count > 1 and cpus - count * reserved < DATA_TASK_CPUS - 1e-9:
        count -= 1
    return count


def check_concurrency(sweep: Sweep, resources: Mapping[str, float], count: int) -> None:
    """Refuse (exit 2) a ``tune.max_concurrent_trials`` whose trials would reserve so much
    CPU that no Ray Data task could run: every trial would wait for its images forever."""
    scaling, cpus = sweep.job.scaling, resources.get("CPU", 0.0)
    if scaling.use_gpu or count == 1:
        return
    reserved = scaling.num_workers * scaling.cpus_per_worker + sweep.tune.trial_cpus
    left = cpus - count * reserved
    if left < DATA_TASK_CPUS - 1e-9:
        raise ConcurrencyError(
            f"`tune.max_concurrent_trials` ({count}): {count} trials of {scaling.num_workers} "
            f"worker(s) x {scaling.cpus_per_worker:g} CPU + {sweep.tune.trial_cpus:g} CPU for "
            f"the trial's driver reserve {count * reserved:g} of the cluster's {cpus:g} CPUs, "
            f"leaving {max(left, 0):g}; the trials' data pipelines need at least "
            f"{DATA_TASK_CPUS:g} CPU free and would wait forever. Lower it, or leave it empty"
        )


def sweep_location(sweep: Sweep) -> storage.Location:
    return storage.resolve(sweep.storage_path)


def _join_ray(verbose: bool) -> None:
    """Join RAY_ADDRESS or start a local Ray. Unless ``verbose``, the console gets only
    tljob's lines: no trial or worker output (it stays in Ray's session logs), no Tune
    boxes or tables (Tune's new output engine prints its "Configuration for experiment"
    box and "View detailed results" line even at verbosity 0; the legacy one at 0 prints
    nothing) and none of Ray's known-harmless warnings (``output.hide_ray_warnings``)."""
    output.quiet_ray(verbose)
    if not verbose:
        os.environ["RAY_AIR_NEW_OUTPUT"] = "0"
    address = os.environ.get("RAY_ADDRESS") or None
    env = {**output.worker_env(verbose), **storage.worker_env()}
    if address:
        # Ray Train's PlacementGroupCleaner finds its cluster through the state API, which
        # without RAY_ADDRESS fails when the machine runs another Ray ("Found multiple
        # active Ray instances"): a stopped trial's workers' CPUs were then never freed.
        env["RAY_ADDRESS"] = address
    if not ray.is_initialized():
        ray.init(
            address=address,
            log_to_driver=verbose,
            logging_level=logging.INFO if verbose else logging.WARNING,
            runtime_env={"env_vars": env},
        )
    output.hide_ray_warnings(verbose)


def _prepare_once(sweep: Sweep, verbose: bool) -> tuple[Any, str]:
    """List and prepare the base job's data (or find it prepared): every trial trains on
    these shards and decodes nothing. Returns the listing and the prepared data's URI."""
    from tljob.data.listing import split_stratified
    from tljob.data.pipeline import prepare_data
    from tljob.data.sources import list_source

    job = sweep.job
    preflight.check_storage(job)
    listing = list_source(job.data)
    train, val = split_stratified(listing, job.data.val_fraction, job.data.seed)
    preflight.check_batches(len(train), len(val), job.train.batch_size, job.scaling.num_workers)
    _join_ray(verbose)
    nodes = preflight.wait_for_resources(
        job.scaling, lambda: preflight.nodes_from_ray(ray.nodes()), say=say
    )
    preflight.check_memory(job, nodes, num_classes=len(listing.classes), images=listing.count())
    prepared = prepare_data(job, listing)
    how = "reused" if prepared.reused else "prepared now"
    say(f"data: shards in {prepared.prepared_uri} ({how}), shared by every trial")
    say(data_summary_line(prepared.summary()))
    return listing, prepared.prepared_uri


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
        tuner._local_tuner.get_run_config().verbose = _tune_verbosity(verbose)
        return tuner
    if exists:
        raise SweepStateError(
            f"a sweep named {sweep.tune.name!r} already exists in {where.uri}: add --resume "
            "to continue it, or choose another `tune.name`"
        )
    from tljob.tune_outputs import TrialLines, trial_dirname

    t = sweep.tune
    return tune.Tuner(
        trainable,
        param_space=search_space(sweep),
        tune_config=tune.TuneConfig(
            metric=t.metric,
            mode=metric_mode(sweep),
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
    a missing optuna, ``--resume`` with nothing to resume or a new sweep over an old one."""
    searcher(sweep)  # a missing optuna is exit 2 before any work
    listing, prepared_uri = _prepare_once(sweep, verbose)
    concurrency = max_concurrent(sweep, ray.cluster_resources())
    check_concurrency(sweep, ray.cluster_resources(), concurrency)
    trainable = tune.with_resources(
        tune.with_parameters(
            trial_driver_fn,
            sweep=sweep,
            listing=listing,
            prepared_uri=prepared_uri,
            verbose=verbose,
        ),
        {"cpu": sweep.tune.trial_cpus},
    )
    tuner = _tuner(sweep, trainable, resume, verbose, concurrency)
    say(
        f"sweep {sweep.tune.name!r}: {expected_trials(sweep)} trials, up to {concurrency} at "
        f"once, {sweep.tune.scheduler} on {sweep.tune.metric} ({metric_mode(sweep)})"
    )
    results = tuner.fit()
    records, histories = collect_records(sweep, results)
    return write_outputs(sweep, records, histories, sweep_location(sweep), metric_mode(sweep))
