"""Sweep files: spaces, the tune section, every refusal with its message, and trial configs
built exactly as ``--set`` builds them. No Ray."""

from __future__ import annotations

import textwrap
from pathlib import Path

import numpy as np
import pytest
import yaml

from tljob.config import ConfigError, load_config
from tljob.config.search import SpaceSpec
from tljob.config.sweep import TuneSection, load_sweep, trial_job
from tljob.errors import UserError

JOB = """
    data: {source: /data/flowers, image_size: 96}
    model: {backbone: mobilenet_v2, weights: none}
    train:
      stages:
        - {name: head, epochs: 3, learning_rate: 0.001}
        - {name: tune, epochs: 2, learning_rate: 0.0001, trainable: "top:10"}
    run: {name: flowers, storage_path: /runs}
"""
SEARCH = """
    search:
      model.backbone: {choice: [mobilenet_v2, resnet50]}
      train.stages.0.learning_rate: {loguniform: [1.0e-5, 1.0e-2]}
      augment.color_jitter.hue: {uniform: [0.0, 0.1]}
      train.stages.1.epochs: {randint: [1, 4]}
      model.head.dropout: {grid: [0.1, 0.3]}
    tune: {scheduler: median, num_samples: 3, time_budget_s: 600, name: flowers-sweep}
"""


def write(tmp_path: Path, text: str, name: str = "sweep.yaml") -> Path:
    path = tmp_path / name
    path.write_text(textwrap.dedent(text))
    return path


def sweep_file(tmp_path: Path, search: dict | None, tune: dict | None = None, job: str = JOB):
    tree = yaml.safe_load(textwrap.dedent(job))
    if search is not None:
        tree["search"] = search
    if tune is not None:
        tree["tune"] = tune
    path = tmp_path / "sweep.yaml"
    path.write_text(yaml.safe_dump(tree, sort_keys=False))
    return path


def refusal(tmp_path, search, tune=None, job=JOB, overrides=()) -> str:
    with pytest.raises(ConfigError) as err:
        load_sweep(sweep_file(tmp_path, search, tune, job), list(overrides))
    return str(err.value)


def test_a_valid_sweep_file_is_read_exactly(tmp_path):
    sweep = load_sweep(write(tmp_path, JOB + SEARCH))
    assert sweep.path_list() == [
        "model.backbone",
        "train.stages.0.learning_rate",
        "augment.color_jitter.hue",
        "train.stages.1.epochs",
        "model.head.dropout",
    ]
    assert sweep.search["model.backbone"] == SpaceSpec(
        "choice", values=("mobilenet_v2", "resnet50")
    )
    assert sweep.search["train.stages.0.learning_rate"] == SpaceSpec(
        "loguniform", bounds=(1e-5, 1e-2)
    )
    assert sweep.search["train.stages.1.epochs"] == SpaceSpec("randint", bounds=(1, 4))
    assert sweep.search["model.head.dropout"].values == (0.1, 0.3)
    assert sweep.tune.scheduler == "median" and sweep.tune.num_samples == 3
    assert sweep.tune.time_budget_s == 600.0 and sweep.tune.searcher == "random"
    assert (sweep.tune.metric, sweep.mode) == ("val_accuracy", "max")
    assert sweep.storage_path == "/runs/flowers-sweep"
    assert sweep.trial_count() == 6  # 3 random draws, each once per grid point (2)
    # the base is the job alone, as load_config builds it
    assert "search" not in sweep.base and "tune" not in sweep.base
    assert sweep.job == load_config(write(tmp_path, JOB, "job.yaml"))


def test_a_sweep_file_round_trips(tmp_path):
    sweep = load_sweep(write(tmp_path, JOB + SEARCH))
    tree = yaml.safe_load(textwrap.dedent(JOB))
    tree["search"] = {path: space.as_yaml() for path, space in sweep.search.items()}
    tree["tune"] = sweep.tune.model_dump(mode="json")
    again = load_sweep(write(tmp_path, yaml.safe_dump(tree, sort_keys=False), "again.yaml"))
    assert (again.search, again.tune, again.base) == (sweep.search, sweep.tune, sweep.base)
    assert list(again.search) == list(sweep.search)


def test_tune_defaults_and_every_field_is_described(tmp_path):
    sweep = load_sweep(sweep_file(tmp_path, {"model.head.dropout": {"choice": [0.1, 0.2]}}))
    tune = sweep.tune
    assert (tune.scheduler, tune.searcher, tune.num_samples, tune.time_budget_s) == (
        "asha",
        "random",
        1,
        None,
    )
    assert (tune.metric, tune.mode, tune.max_concurrent_trials) == ("val_accuracy", None, None)
    assert (tune.grace_period, tune.reduction_factor, tune.trial_cpus) == (1, 2.0, 0.25)
    assert (tune.name, tune.storage_path) == ("sweep", None)
    assert sweep.storage_path == "/runs/sweep"
    assert all(field.description for field in TuneSection.model_fields.values())


def test_set_edits_the_tune_section_and_the_job(tmp_path):
    path = write(tmp_path, JOB + SEARCH)
    sweep = load_sweep(
        path, ["tune.metric=val_macro_f1", "train.batch_size=8", "tune.storage_path=/sweeps"]
    )
    assert (sweep.tune.metric, sweep.mode) == ("val_macro_f1", "max")
    assert sweep.job.train.batch_size == 8 and sweep.base["train"]["batch_size"] == 8
    assert sweep.storage_path == "/sweeps/flowers-sweep"
    assert load_sweep(path, ["tune.metric=val_loss"]).mode == "min"
    assert load_sweep(path, ["tune.metric=val_loss", "tune.mode=min"]).mode == "min"


def test_tune_section_errors_name_field_value_and_rule(tmp_path):
    search = {"model.head.dropout": {"choice": [0.1]}}
    assert refusal(tmp_path, search, {"mode": "min"}) == (
        "invalid sweep:\n  `tune.mode` ('min'): `tune.metric` 'val_accuracy' improves towards "
        "'max'; set mode 'max' or leave it empty"
    )
    assert refusal(tmp_path, search, {"bogus": 1, "reduction_factor": 1}) == (
        "invalid sweep:\n  `tune.reduction_factor` (1): Input should be greater than 1\n"
        "  `tune.bogus` is not a known setting (check the spelling)"
    )
    assert refusal(tmp_path, search, overrides=["tune.metric=precision"]).startswith(
        "invalid sweep:\n  `tune.metric` ('precision'): is not a metric a run reports"
    )
    assert refusal(tmp_path, search, "x") == (
        "invalid sweep:\n  `tune` ('x'): must be a mapping of settings"
    )
    assert refusal(tmp_path, search, overrides=["search.model.backbone=x"]) == (
        "override 'search.model.backbone=x': the search section is edited in the sweep file, "
        "not with --set"
    )


def test_trial_job_applies_values_exactly_as_set_would(tmp_path):
    sweep = load_sweep(write(tmp_path, JOB + SEARCH), ["train.batch_size=8"])
    sampled = {
        "model.backbone": "resnet50",
        "train.stages.0.learning_rate": np.float64(0.0012345678901234),
        "augment.color_jitter.hue": 0.0625,
        "train.stages.1.epochs": np.int64(3),
        "model.head.dropout": 0.3,
    }
    job = trial_job(sweep, sampled, "trial-00001")
    expected = load_config(
        write(tmp_path, JOB, "job.yaml"),
        [
            "train.batch_size=8",
            "model.backbone=resnet50",
            "train.stages.0.learning_rate=0.0012345678901234",
            "augment.color_jitter.hue=0.0625",
            "train.stages.1.epochs=3",
            "model.head.dropout=0.3",
            "run.name=trial-00001",
        ],
    )
    assert job.model_dump() == expected.model_dump()
    assert job.train.stages[0].learning_rate == 0.0012345678901234
    assert job.run.name == "trial-00001" and job.model.backbone == "resnet50"
    assert sweep.base["model"]["backbone"] == "mobilenet_v2"  # the base is left alone


def test_a_combination_invalid_only_together_fails_its_trial_not_the_sweep(tmp_path):
    search = {
        "train.stages.0.optimizer": {"choice": ["adamw", "adam"]},
        "train.stages.0.weight_decay": {"choice": [0.0, 0.01]},
    }
    # weight decay 0.01 is invalid with the base's adam, valid with adamw: left to the trials
    sweep = load_sweep(sweep_file(tmp_path, search))
    good = {"train.stages.0.optimizer": "adamw", "train.stages.0.weight_decay": 0.01}
    stage = trial_job(sweep, good, "t1").train.stages[0]
    assert (stage.optimizer, stage.weight_decay) == ("adamw", 0.01)
    with pytest.raises(ConfigError) as err:
        trial_job(
            sweep, {"train.stages.0.optimizer": "adam", "train.stages.0.weight_decay": 0.01}, "t3"
        )
    assert str(err.value) == (
        "trial t3: the sampled values (train.stages.0.optimizer='adam', "
        "train.stages.0.weight_decay=0.01) make an invalid config:\n"
        "  `train.stages.0.weight_decay` (0.01) is only used by optimizer 'adamw', not 'adam'"
    )
    with pytest.raises(ConfigError, match=r"^trial t4: model.backbone not among the sweep's"):
        trial_job(sweep, {"model.backbone": "resnet50"}, "t4")


def test_unknown_paths_get_close_matches(tmp_path):
    assert refusal(tmp_path, {"train.stages.0.learning_rat": {"choice": [0.1]}}) == (
        "invalid sweep:\n  `search.train.stages.0.learning_rat`: `train.stages.0.learning_rat` "
        "is not a known setting; did you mean 'train.stages.0.learning_rate' or "
        "'train.stages.1.learning_rate' or 'train.stages.0.name'? (a search path is a dotted "
        "config path, as `--set` takes; `tljob config --reference` lists them)"
    )
    message = refusal(tmp_path, {"modle.backbone": {"choice": ["resnet50"]}})
    assert message.startswith(
        "invalid sweep:\n  `search.modle.backbone`: `modle` is not a known setting; "
        "did you mean 'model.backbone'"
    )
    assert refusal(tmp_path, {"zzz": {"choice": [1]}}) == (
        "invalid sweep:\n  `search.zzz`: `zzz` is not a known setting (a search path is a "
        "dotted config path, as `--set` takes; `tljob config --reference` lists them)"
    )


def test_paths_must_exist_in_the_base_config(tmp_path):
    assert refusal(tmp_path, {"train.stages.2.learning_rate": {"choice": [0.1]}}) == (
        "invalid sweep:\n  `search.train.stages.2.learning_rate`: `train.stages` holds 2 "
        "entries (indices 0..1) in the sweep's base config, so `train.stages.2` does not "
        "exist (a search path indexes only entries the base config holds)"
    )
    assert refusal(tmp_path, {"model.head.dense_units.0": {"choice": [8]}}) == (
        "invalid sweep:\n  `search.model.head.dense_units.0`: `model.head.dense_units` holds "
        "no entries in the sweep's base config, so `model.head.dense_units.0` does not exist "
        "(a search path indexes only entries the base config holds)"
    )
    assert refusal(tmp_path, {"model.backbone.name": {"choice": ["x"]}}) == (
        "invalid sweep:\n  `search.model.backbone.name`: `model.backbone` is a plain value, "
        "not a section, so `model.backbone.name` is not a setting"
    )


@pytest.mark.parametrize(
    ("space", "rule"),
    [
        ({"choice": []}, "`choice` needs a non-empty list of values"),
        ({"grid": []}, "`grid` needs a non-empty list of values"),
        ({"choice": 0.1}, "`choice` needs a non-empty list of values"),
        ({"uniform": [0.1]}, "`uniform` needs a list [lo, hi]"),
        ({"uniform": [0.1, 0.01]}, "`uniform` bounds [lo, hi]: lo must be < hi"),
        ({"loguniform": [0.01, 0.01]}, "`loguniform` bounds [lo, hi]: lo must be < hi"),
        ({"loguniform": [0, 0.01]}, "`loguniform` bounds must be > 0"),
        ({"loguniform": [-1, 0.01]}, "`loguniform` bounds must be > 0"),
        ({"uniform": ["a", 0.01]}, "`uniform` bounds must be finite numbers"),
        ({"uniform": [True, 0.01]}, "`uniform` bounds must be finite numbers"),
        ({"uniform": [0.001, float("inf")]}, "`uniform` bounds must be finite numbers"),
        (
            {"choice": [0.1], "grid": [0.2]},
            "a space is a mapping with exactly one of choice, grid, uniform, loguniform, randint",
        ),
        (
            {"normal": [0, 1]},
            "a space is a mapping with exactly one of choice, grid, uniform, loguniform, randint",
        ),
    ],
)
def test_bad_spaces_name_path_value_and_rule(tmp_path, space, rule):
    path = "train.stages.0.learning_rate"
    assert (
        refusal(tmp_path, {path: space}) == f"invalid sweep:\n  `search.{path}` ({space!r}): {rule}"
    )


def test_randint_bounds_are_integers_with_hi_excluded(tmp_path):
    path = "train.stages.1.epochs"
    assert refusal(tmp_path, {path: {"randint": [2, 2]}}) == (
        f"invalid sweep:\n  `search.{path}` ({{'randint': [2, 2]}}): `randint` bounds "
        "[lo, hi]: lo must be < hi (hi is excluded)"
    )
    assert refusal(tmp_path, {path: {"randint": [1.0, 3]}}) == (
        f"invalid sweep:\n  `search.{path}` ({{'randint': [1.0, 3]}}): `randint` bounds must "
        "be integers"
    )
    assert SpaceSpec("randint", bounds=(1, 4)).extremes() == [
        ("lower bound 1", 1),
        ("value 3 (hi - 1)", 3),
    ]
    # the lowest draw is checked against the field's rule (epochs >= 1)
    assert refusal(tmp_path, {path: {"randint": [0, 3]}}) == (
        f"invalid sweep:\n  `search.{path}` lower bound 0 can never be valid: "
        "`train.stages.1.epochs` (0): Input should be greater than or equal to 1"
    )


def test_a_range_must_fit_the_field(tmp_path):
    assert refusal(tmp_path, {"train.stages.1.epochs": {"uniform": [1, 3]}}) == (
        "invalid sweep:\n  `search.train.stages.1.epochs` ({'uniform': [1, 3]}): "
        "`train.stages.1.epochs` takes whole numbers; use `randint` (or `choice`/`grid`)"
    )
    assert refusal(tmp_path, {"model.backbone": {"randint": [1, 3]}}) == (
        "invalid sweep:\n  `search.model.backbone` ({'randint': [1, 3]}): `model.backbone` "
        "is not a number; use `choice` or `grid` with its values"
    )
    assert refusal(tmp_path, {"model.head.dropout": {"uniform": [0.0, 1.5]}}) == (
        "invalid sweep:\n  `search.model.head.dropout` draws just below 1.5 can never be "
        "valid: `model.head.dropout` (1.4999999999999998): Input should be less than 1"
    )
    # [0, 1): every draw is below 1, so a dropout range up to 1 is fine
    assert load_sweep(sweep_file(tmp_path, {"model.head.dropout": {"uniform": [0.0, 1.0]}}))


def test_values_that_can_never_be_valid_are_refused_now(tmp_path):
    message = refusal(
        tmp_path,
        {
            "model.backbone": {"choice": ["resnet50", "resnet5"]},
            "train.stages.0.learning_rate": {"grid": [0.001, -0.1]},
        },
    )
    assert message == (
        "invalid sweep:\n"
        "  `search.model.backbone` value 'resnet5' can never be valid: `model.backbone` "
        "('resnet5'): unknown backbone 'resnet5'; did you mean 'resnet50' or 'resnet152' or "
        "'resnet50_v2'? `tljob backbones` lists the 38 registered backbones\n"
        "  `search.train.stages.0.learning_rate` value -0.1 can never be valid: "
        "`train.stages.0.learning_rate` (-0.1): must be a positive number or 'auto'"
    )
    # `auto` is one of a rate's valid values (a range test picks the rate in the trial)
    auto = {"train.stages.0.learning_rate": {"grid": ["auto", 0.001]}}
    assert load_sweep(sweep_file(tmp_path, auto)).search["train.stages.0.learning_rate"]


def test_searchers_refuse_the_spaces_they_cannot_run(tmp_path):
    search = {
        "model.backbone": {"grid": ["resnet50", "mobilenet_v2"]},
        "train.stages.0.learning_rate": {"loguniform": [1e-4, 1e-2]},
    }
    assert refusal(tmp_path, search, {"searcher": "optuna"}) == (
        "invalid sweep:\n  `tune.searcher` ('optuna'): Optuna draws its own points and cannot "
        "enumerate `grid` spaces (`search.model.backbone`); use `choice` for them, or "
        "searcher 'random'"
    )
    assert refusal(tmp_path, search, {"searcher": "grid"}) == (
        "invalid sweep:\n  `tune.searcher` ('grid'): enumerates only `grid` and `choice` "
        "spaces, not `search.train.stages.0.learning_rate` (loguniform); list the values "
        "with `grid`, or use searcher 'random' or 'optuna'"
    )
    grid = load_sweep(
        sweep_file(
            tmp_path,
            {
                "model.backbone": search["model.backbone"],
                "model.head.dropout": {"choice": [0, 0.5]},
            },
            {"searcher": "grid", "num_samples": 2},
        )
    )
    assert grid.trial_count() == 8  # every combination (choice enumerated too), twice
    search["model.backbone"] = {"choice": ["resnet50", "mobilenet_v2"]}
    assert load_sweep(sweep_file(tmp_path, search, {"searcher": "optuna"})).trial_count() == 1


@pytest.mark.parametrize("search", [None, {}])
def test_a_sweep_needs_search_entries(tmp_path, search):
    assert refusal(tmp_path, search) == (
        "invalid sweep: the `search` section has no entries; map at least one dotted config "
        "path to a space, e.g. `model.backbone: {choice: [resnet50, mobilenet_v2]}`"
    )


def test_nested_search_paths_get_a_hint(tmp_path):
    assert refusal(tmp_path, {"model": {"backbone": {"choice": ["resnet50"]}}}) == (
        "invalid sweep:\n  `search.model` ({'backbone': {'choice': ['resnet50']}}): a space "
        "is a mapping with exactly one of choice, grid, uniform, loguniform, randint (write "
        "a nested path as one dotted key, e.g. `search.model.backbone`)"
    )


@pytest.mark.parametrize(
    ("path", "value"),
    [
        ("data.source", "/data/other"),
        ("data.val_fraction", 0.3),
        ("data.test_fraction", 0.1),
        ("data.test_source", "/data/test"),
        ("data.seed", 1),
        ("data.stored_size", 128),
        ("data.shard_pixels", "jpeg"),
        ("data.shard_target_mb", 64.0),
        ("data.max_images_per_class", 10),
        ("data.image_size", 128),
    ],
)
def test_paths_that_change_the_prepared_data_are_fixed(tmp_path, path, value):
    message = refusal(tmp_path, {path: {"choice": [value]}})
    assert message.startswith(
        f"invalid sweep:\n  `search.{path}`: a sweep cannot vary it; `{path}` is fixed for a "
        "whole sweep: it changes the prepared data's fingerprint, and a sweep prepares its "
        "data once"
    )


def test_sections_holding_fixed_paths_and_run_identity_are_fixed(tmp_path):
    assert refusal(tmp_path, {"data": {"choice": [{}]}}) == (
        "invalid sweep:\n  `search.data`: a sweep cannot vary it; it holds `data.source`, "
        "which is fixed for a whole sweep: it changes the prepared data's fingerprint, and a "
        "sweep prepares its data once"
    )
    assert refusal(tmp_path, {"run.name": {"choice": ["a", "b"]}}) == (
        "invalid sweep:\n  `search.run.name`: a sweep cannot vary it; `run.name` is fixed for "
        "a whole sweep: each trial's run name comes from its trial id (so a restarted trial "
        "resumes)"
    )
    # what does not touch the prepared data may vary
    assert load_sweep(sweep_file(tmp_path, {"data.shuffle_buffer": {"choice": [0, 64]}}))


def test_backbones_of_different_sizes_need_an_image_size(tmp_path):
    job = JOB.replace("image_size: 96", "image_size: null")
    search = {"model.backbone": {"choice": ["mobilenet_v2", "efficientnet_b3"]}}
    assert refusal(tmp_path, search, job=job) == (
        "invalid sweep:\n  `search.model.backbone`: with `data.image_size` empty each "
        "backbone trains at its default size (mobilenet_v2 224, efficientnet_b3 300 px), but "
        "a sweep prepares its data once and trains every trial at one size: set "
        "`data.image_size` (e.g. 300)"
    )
    # the base job prepares the data, so its backbone's size counts too
    assert refusal(tmp_path, {"model.backbone": {"grid": ["efficientnet_b3"]}}, job=job) == (
        "invalid sweep:\n  `search.model.backbone`: with `data.image_size` empty each "
        "backbone trains at its default size (efficientnet_b3 300; the base job's "
        "mobilenet_v2 224 px), but a sweep prepares its data once and trains every trial at "
        "one size: set `data.image_size` (e.g. 300)"
    )
    same = load_sweep(
        sweep_file(tmp_path, {"model.backbone": {"choice": ["mobilenet_v2", "resnet50"]}}, job=job)
    )
    assert same.job.image_size == 224
    assert trial_job(same, {"model.backbone": "resnet50"}, "t").image_size == 224
    assert load_sweep(sweep_file(tmp_path, search)).job.image_size == 96  # set: fine


def test_every_problem_is_listed_at_once_and_is_a_user_error(tmp_path):
    with pytest.raises(ConfigError) as err:
        load_sweep(
            sweep_file(
                tmp_path,
                {
                    "model.backbon": {"choice": ["resnet50"]},
                    "data.seed": {"choice": [1]},
                    "model.head.dropout": {"choice": []},
                },
            )
        )
    assert isinstance(err.value, UserError)  # exit code 2
    lines = str(err.value).splitlines()
    assert lines[0] == "invalid sweep:"
    assert [line.split(":")[0] for line in lines[1:]] == [
        "  `search.model.backbon`",
        "  `search.data.seed`",
        "  `search.model.head.dropout` ({'choice'",
    ]


def test_a_missing_sweep_file_is_a_config_error(tmp_path):
    with pytest.raises(ConfigError, match="does not exist"):
        load_sweep(tmp_path / "nope.yaml")
