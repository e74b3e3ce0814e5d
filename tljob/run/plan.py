"""Where a run would start, read from its run directory without changing anything (pure).

``read_plan`` is what ``tljob.run.driver.plan_run`` decides before it tidies up (removing
incomplete checkpoints, rewriting ``history.csv``), and what ``tljob train --dry-run``
reports: fresh, or after the newest complete checkpoint, or refused because the rerun
contradicts the run so far (``RunMismatchError``, exit 2).
"""

from __future__ import annotations

import json
from dataclasses import dataclass

from tljob import storage
from tljob.config import JobConfig
from tljob.config.yaml_in import load_yaml
from tljob.run import checkpoint as ckpt_files
from tljob.run.ledger import ResumePlan, RunMismatchError, TrainState, plan_resume


@dataclass(frozen=True)
class FoundPlan:
    """The plan and the resume point it was made from: the newest complete checkpoint with
    its state (None: fresh) and the incomplete checkpoint directories newer than it (an
    interrupted upload), which a run removes (``ResumePoint.remove_incomplete``)."""

    plan: ResumePlan
    point: ckpt_files.ResumePoint

    @property
    def state(self) -> TrainState | None:
        return self.point.state

    @property
    def incomplete(self) -> list[str]:
        return list(self.point.incomplete)


def read_plan(run_dir: storage.Location, job: JobConfig, classes: list[str]) -> FoundPlan:
    """Where ``job`` starts in ``run_dir`` (which may not exist yet), reading only.

    Raises ``RunMismatchError`` when the run so far was trained on other ``classes`` or
    with settings this config contradicts (``tljob.run.ledger.plan_resume``)."""
    labels = run_dir.join("labels.json")
    point = ckpt_files.resume_point(run_dir)
    if point.name is not None and storage.exists(labels):
        previous = json.loads(storage.read_text(labels))
        previous_classes = [previous[str(i)] for i in range(len(previous))]
        if previous_classes != classes:
            raise RunMismatchError(
                f"run {run_dir.uri!r} was trained on classes {previous_classes}, but "
                f"`data.source` now has {classes}; choose a new `run.name` to start afresh"
            )
    saved = run_dir.join("config.yaml")
    saved_config = (
        load_yaml(storage.read_text(saved), f"the run's saved config {saved!r}")
        if storage.exists(saved)
        else None
    )
    plan = plan_resume(point.state, point.name, saved_config, job, run_dir.uri)
    return FoundPlan(plan=plan, point=point)
