"""A sweep's plan for Tune: how many trials run at once on a given cluster (and the refusal
of a setting that would starve every trial's data pipeline), its search space, scheduler
and Optuna's TPE searcher. Ray is imported, no cluster is started."""

from __future__ import annotations

import sys
import textwrap
from pathlib import Path

import pytest

from tljob.config.sweep import load_sweep
from tljob.errors import UserError

JOB = """
    data: {source: /data/flowers, image_size: 32}
    model: {backbone: mobilenet_v2, weights: none}
    train: {stages: [{name: all, epochs: 2, learning_rate: 0.001}]}
    scaling: {num_workers: 1}
    run: {name: flowers, storage_path: /runs}
    search:
      model.backbone: {grid: [mobilenet_v2, mobilenet_v3_small]}
"""


def sweep(tmp_path: Path, *overrides: str):
    path = tmp_path / "sweep.yaml"
    path.write_text(textwrap.dedent(JOB))
    return load_sweep(path, list(overrides))


@pytest.mark.parametrize(
    ("cpus", "overrides", "expected"),
    [
        # each trial: 1 worker x 0.5 + 0.25 driver + 1.0 data = 1.75 CPUs
        (2, (), 1),
        (4, (), 2),
        (16, (), 9),
        # 0.25 + 0.25 + 0.5 = 1.0 each: 2 on 2 CPUs, leaving exactly one CPU for data tasks
        (2, ("scaling.cpus_per_worker=0.25", "scaling.data_cpus=0.5"), 2),
        # 2 x (0.5 + 0.25) + 0 data would fit 2 by reservation, but leave 0.5 CPU: one
        (2, ("scaling.data_cpus=0",), 1),
        # 2 workers x 1 CPU + 0.25 + 1: 3.25 each
        (8, ("scaling.num_workers=2", "scaling.cpus_per_worker=1"), 2),
        # too small for even one: still 1 (the preflight refuses the job itself)
        (1, ("scaling.cpus_per_worker=1",), 1),
        # set explicitly: kept
        (2, ("tune.max_concurrent_trials=3",), 3),
    ],
)
def test_concurrency_from_the_cluster(tmp_path, cpus, overrides, expected):
    from tljob.tune.plan import max_concurrent

    assert max_concurrent(sweep(tmp_path, *overrides), {"CPU": float(cpus)}) == expected


def test_gpu_sweeps_count_gpus(tmp_path):
    from tljob.tune.plan import max_concurrent

    s = sweep(tmp_path, "scaling.use_gpu=true", "scaling.num_workers=2")
    assert max_concurrent(s, {"CPU": 64.0, "GPU": 8.0}) == 4
    assert max_concurrent(s, {"CPU": 64.0, "GPU": 1.0}) == 1


def test_a_set_concurrency_that_starves_the_data_is_refused(tmp_path):
    from tljob.tune.plan import check_concurrency, max_concurrent

    s = sweep(tmp_path, "tune.max_concurrent_trials=2")
    count = max_concurrent(s, {"CPU": 2.0})
    with pytest.raises(UserError) as err:
        check_concurrency(s, {"CPU": 2.0}, count)
    assert str(err.value).startswith("`tune.max_concurrent_trials` (2): 2 trials of 1 worker")
    assert "reserve 1.5 of the cluster's 2 CPUs, leaving 0.5" in str(err.value)
    check_concurrency(s, {"CPU": 3.0}, count)  # 1.5 reserved, 1.5 left: fine


def test_a_single_trial_that_starves_its_data_is_refused(tmp_path):
    from tljob.tune.plan import check_concurrency, max_concurrent

    # 2 workers x 0.5 CPU + 0.25 for the trial's driver leave 0.75 of 2 CPUs: under one
    # Ray Data task's CPU, so the trial's pipeline would wait forever (it hung, once)
    s = sweep(tmp_path, "scaling.num_workers=2", "scaling.cpus_per_worker=0.5")
    assert s.tune.trial_cpus == 0.25
    assert max_concurrent(s, {"CPU": 2.0}) == 1
    with pytest.raises(UserError) as err:
        check_concurrency(s, {"CPU": 2.0}, 1)
    assert str(err.value).startswith(
        "`scaling.cpus_per_worker` (0.5): one trial of 2 worker(s) x 0.5 CPU + 0.25 CPU"
    )
    assert "reserves 1.25 of the cluster's 2 CPUs, leaving 0.75" in str(err.value)
    check_concurrency(s, {"CPU": 2.25}, 1)  # 1 CPU left: fine


def test_search_space_and_scheduler(tmp_path):
    from ray.tune.schedulers import ASHAScheduler

    from tljob.tune.plan import scheduler, search_space

    s = sweep(tmp_path, "train.stages.0.epochs=5")
    assert search_space(s) == {
        "model.backbone": {"grid_search": ["mobilenet_v2", "mobilenet_v3_small"]}
    }
    asha = scheduler(s)
    assert isinstance(asha, ASHAScheduler)
    assert asha._time_attr == "global_epoch" and asha._max_t == 5


OPTUNA_JOB = """
    data: {source: /data/flowers, image_size: 32}
    model: {backbone: mobilenet_v2, weights: none}
    train: {stages: [{name: all, epochs: 2, learning_rate: 0.001}]}
    run: {name: flowers, storage_path: /runs}
    search:
      model.backbone: {choice: [mobilenet_v2, mobilenet_v3_small]}
      train.stages.0.learning_rate: {loguniform: [1.0e-4, 1.0e-2]}
    tune: {searcher: optuna, num_samples: 6}
"""


def optuna_sweep(tmp_path: Path):
    path = tmp_path / "optuna.yaml"
    path.write_text(textwrap.dedent(OPTUNA_JOB))
    return load_sweep(path)


def test_optuna_tpe_draws_each_trial_from_the_spaces(tmp_path):
    from ray.tune.search.optuna import OptunaSearch

    from tljob.tune.plan import search_space, searcher

    s = optuna_sweep(tmp_path)
    tpe = searcher(s)
    assert isinstance(tpe, OptunaSearch)
    assert tpe.set_search_properties("val_accuracy", "max", search_space(s))
    draws = [tpe.suggest(f"trial_{i}") for i in range(6)]
    assert {frozenset(d) for d in draws} == {
        frozenset({"model.backbone", "train.stages.0.learning_rate"})
    }
    assert {d["model.backbone"] for d in draws} <= {"mobilenet_v2", "mobilenet_v3_small"}
    rates = [d["train.stages.0.learning_rate"] for d in draws]
    assert all(1e-4 <= r < 1e-2 for r in rates), rates
    assert len(set(rates)) == 6  # drawn, not one fixed value


def test_optuna_missing_is_a_user_error_naming_the_extra(tmp_path, monkeypatch):
    from tljob.tune.plan import OptunaMissingError, searcher

    s = optuna_sweep(tmp_path)
    monkeypatch.setitem(sys.modules, "optuna", None)  # import optuna raises ImportError
    with pytest.raises(OptunaMissingError) as err:
        searcher(s)
    assert isinstance(err.value, UserError)  # exit 2 from the CLI
    assert str(err.value) == (
        "`tune.searcher` (optuna) needs the optuna package: pip install 'tljob[optuna]'"
    )
