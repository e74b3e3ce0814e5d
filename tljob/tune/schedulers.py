"""Tune's trial schedulers as a sweep uses them (Ray side): a trial always runs its last
epoch to the end.

A scheduler that decides STOP on a trial's last report (ASHA at ``max_t`` or at a rung on
the last epoch, median stopping at any epoch) makes Tune end the trial's actor at once,
while its run still writes ``summary.json`` and checks the exported model: the trial would
look unfinished although it trained every epoch. Here a report of the trial's last planned
epoch is seen by the scheduler (it still counts for the rungs and medians) but always
continues, and the run ends on its own.
"""

from __future__ import annotations

from typing import Any

from ray.tune.schedulers import ASHAScheduler, MedianStoppingRule, TrialScheduler

from tljob.config import JobConfig
from tljob.config.sweep import Sweep, trial_job
from tljob.errors import UserError

# The epoch counter a trial reports, 1-based over the whole run. A trial restarted by
# ``--resume`` continues it from its checkpoint, where Tune's training_iteration would
# start again from 1.
TIME_ATTR = "global_epoch"


def total_epochs(job: JobConfig) -> int:
    """The epochs a run of ``job`` trains: every stage's."""
    return sum(stage.epochs for stage in job.train.stages)


def planned_epochs(sweep: Sweep, config: dict[str, Any]) -> int:
    """The epochs a trial with Tune ``config`` trains (the search may change them)."""
    from tljob.tune.trial import sampled_values

    try:
        job = trial_job(sweep, sampled_values(sweep, config), "planned")
    except UserError:
        job = sweep.job  # an invalid trial fails before its first report
    return total_epochs(job)


class _LastEpochRuns:
    """Mixin over a ``TrialScheduler``: CONTINUE on a trial's last planned epoch."""

    sweep: Sweep

    def on_trial_result(self, tune_controller: Any, trial: Any, result: dict) -> str:
        decision = super().on_trial_result(tune_controller, trial, result)  # type: ignore[misc]
        if result.get(TIME_ATTR, 0) >= planned_epochs(self.sweep, trial.config):
            return TrialScheduler.CONTINUE
        return decision


class SweepASHA(_LastEpochRuns, ASHAScheduler):
    def __init__(self, sweep: Sweep, **kwargs: Any) -> None:
        self.sweep = sweep
        super().__init__(time_attr=TIME_ATTR, stop_last_trials=False, **kwargs)


class SweepMedianStopping(_LastEpochRuns, MedianStoppingRule):
    def __init__(self, sweep: Sweep, **kwargs: Any) -> None:
        self.sweep = sweep
        super().__init__(time_attr=TIME_ATTR, **kwargs)
