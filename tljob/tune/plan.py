"""A sweep's plan for Ray Tune (Ray side): its search space, scheduler and searcher, and how
many trials run at once on a cluster."""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

from ray import tune
from ray.tune.schedulers import FIFOScheduler

from tljob import preflight
from tljob.config.sweep import Sweep
from tljob.errors import UserError
from tljob.tune.schedulers import SweepASHA, SweepMedianStopping, total_epochs


class ConcurrencyError(UserError):
    """``tune.max_concurrent_trials`` too high for the cluster: the trials would hang."""


class OptunaMissingError(UserError):
    """``tune.searcher: optuna`` without optuna installed."""


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
    epoch (``tljob.tune.schedulers``)."""
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
    """Refuse (exit 2) ``count`` concurrent trials (``tune.max_concurrent_trials``, or one
    trial) that would reserve so much CPU that no Ray Data task could run: every trial would
    wait for its images forever."""
    scaling, cpus = sweep.job.scaling, resources.get("CPU", 0.0)
    if scaling.use_gpu:
        return
    reserved = scaling.num_workers * scaling.cpus_per_worker + sweep.tune.trial_cpus
    left = cpus - count * reserved
    if left >= DATA_TASK_CPUS - 1e-9:
        return
    if count == 1:
        raise ConcurrencyError(
            f"`scaling.cpus_per_worker` ({scaling.cpus_per_worker:g}): one trial of "
            f"{scaling.num_workers} worker(s) x {scaling.cpus_per_worker:g} CPU + "
            f"{sweep.tune.trial_cpus:g} CPU for its driver (`tune.trial_cpus`) reserves "
            f"{reserved:g} of the cluster's {cpus:g} CPUs, leaving {max(left, 0):g}; its data "
            f"pipeline needs at least {DATA_TASK_CPUS:g} CPU free and would wait forever. "
            "Lower `scaling.cpus_per_worker`, `scaling.num_workers` or `tune.trial_cpus`, or "
            "add CPUs to the cluster"
        )
    raise ConcurrencyError(
        f"`tune.max_concurrent_trials` ({count}): {count} trials of {scaling.num_workers} "
        f"worker(s) x {scaling.cpus_per_worker:g} CPU + {sweep.tune.trial_cpus:g} CPU for "
        f"the trial's driver reserve {count * reserved:g} of the cluster's {cpus:g} CPUs, "
        f"leaving {max(left, 0):g}; the trials' data pipelines need at least "
        f"{DATA_TASK_CPUS:g} CPU free and would wait forever. Lower it, or leave it empty"
    )


def sweep_resource_request(sweep: Sweep, concurrency: int) -> list[dict[str, float]]:
    """What an autoscaler is asked for while ``concurrency`` trials run at once: each
    trial's workers and its Ray Data CPUs (``preflight.resource_request``) and its
    driver's ``tune.trial_cpus``. One trial's worth would leave the others waiting for
    nodes that no one asked for."""
    trial = [*preflight.resource_request(sweep.job.scaling), {"CPU": sweep.tune.trial_cpus}]
    return [dict(bundle) for _ in range(concurrency) for bundle in trial]
