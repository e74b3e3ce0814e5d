"""Resume rules for the schedule, optimizer and training settings (no Ray)."""

from __future__ import annotations

import json

import pytest
from test_resume import job_with, saved, state_after

from tljob.run.ledger import RunMismatchError, plan_resume


def test_a_cosine_stage_cannot_be_extended_but_a_stage_may_follow_it():
    cosine = ["train.stages.1.schedule.kind=cosine"]
    job = job_with(*cosine)
    with pytest.raises(RunMismatchError) as err:
        plan_resume(
            state_after(job, [1, 2]),
            "c",
            saved(job),
            job_with(*cosine, "train.stages.1.epochs=4"),
            "r",
        )
    assert str(err.value).startswith(
        "`train.stages.1.epochs` (2 -> 4): stage 'fine_tune' has trained 2 epoch(s) on a "
        "cosine schedule, whose curve its epochs fix; add a stage instead"
    )
    stages = saved(job)["train"]["stages"] + [{"name": "more", "epochs": 1, "learning_rate": 0.1}]
    more = job_with(*cosine, f"train.stages={json.dumps(stages)}")
    plan = plan_resume(state_after(job, [1, 2]), "c", saved(job), more, "r")
    assert (plan.stage_index, plan.epoch) == (2, 0)
    # a step schedule's stage may still grow, as a plateau one may
    step = ["train.stages.1.schedule.kind=step"]
    longer = job_with(*step, "train.stages.1.epochs=4")
    plan = plan_resume(state_after(job, [1, 2]), "c", saved(job_with(*step)), longer, "r")
    assert (plan.stage_index, plan.epoch) == (1, 2)


def test_a_run_saved_before_the_new_settings_resumes_with_their_defaults():
    job = job_with()
    old = saved(job)
    new_stage_keys = ("weight_decay", "momentum", "schedule", "label_smoothing", "batchnorm")
    for stage in old["train"]["stages"]:
        for key in new_stage_keys:
            del stage[key]
    for key in ("class_weight", "best_metric", "precision", "jit_compile"):
        del old["train"][key]
    plan = plan_resume(state_after(job, [1, 1]), "checkpoint_epoch_0002", old, job, "r")
    assert (plan.stage_index, plan.epoch) == (1, 1)
    with pytest.raises(RunMismatchError, match=r"`schedule.kind` \('plateau' -> 'step'\)"):
        plan_resume(
            state_after(job, [1, 1]), "c", old, job_with("train.stages.1.schedule.kind=step"), "r"
        )


def test_jit_compile_may_change_on_resume():
    job = job_with()
    plan = plan_resume(
        state_after(job, [1, 1]), "c", saved(job), job_with("train.jit_compile=true"), "r"
    )
    assert (plan.stage_index, plan.epoch) == (1, 1)
