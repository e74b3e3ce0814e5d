"""Config schema: good files, each kind of bad input, override order, import hygiene."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Literal

import pytest
import yaml

from tljob.config import ConfigError, JobConfig, Trainable, dump_config, load_config
from tljob.zoo import WeightsSource


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "job.yaml"
    path.write_text(textwrap.dedent(text))
    return path


GOOD = """
    data: {source: /data/flowers, image_size: 160, val_fraction: 0.25, seed: 7}
    model:
      backbone: resnet50
      weights: none
      head: {dropout: 0.3, dense_units: [256]}
    train:
      batch_size: 16
      stages:
        - {name: head, epochs: 3, learning_rate: 0.001, trainable: head}
        - {name: tune, epochs: 2, learning_rate: 0.0001, optimizer: sgd, trainable: "top:40"}
    scaling: {num_workers: 4, cpus_per_worker: 1.5}
    run: {name: flowers-r50, storage_path: /runs}
"""


def test_good_file_is_read_exactly(tmp_path):
    job = load_config(write(tmp_path, GOOD))
    assert job.data.source == "/data/flowers"
    assert job.image_size == 160
    assert job.model.backbone == "resnet50"
    assert job.model.head.dense_units == [256]
    assert [
        (s.name, s.epochs, s.learning_rate, s.optimizer, s.trainable) for s in job.train.stages
    ] == [
        ("head", 3, 0.001, "adam", Trainable("head")),
        ("tune", 2, 0.0001, "sgd", Trainable("top", 40)),
    ]
    assert job.scaling.num_workers == 4 and job.scaling.cpus_per_worker == 1.5


def test_defaults_are_the_classic_recipe():
    job = load_config(None, ["data.source=/x"])
    head, tune = job.train.stages
    assert (head.trainable, head.optimizer, head.learning_rate) == (Trainable("head"), "adam", 1e-4)
    assert tune.trainable.kind == "top" and tune.learning_rate == pytest.approx(1e-5)
    assert (
        job.train.reduce_lr.enabled,
        job.train.reduce_lr.monitor,
        job.train.reduce_lr.factor,
    ) == (True, "val_loss", 0.5)
    assert job.model.weights == WeightsSource("imagenet")
    assert job.image_size == 224  # the backbone's default when data.image_size is empty
    assert job.data.image_size is None  # computed, not written back into the config


def test_every_field_has_a_description():
    from pydantic import BaseModel

    missing = []

    def walk(model: type[BaseModel], prefix: str) -> None:
        for name, field in model.model_fields.items():
            if not field.description:
                missing.append(prefix + name)
            ann = field.annotation
            if isinstance(ann, type) and issubclass(ann, BaseModel):
                walk(ann, f"{prefix}{name}.")

    walk(JobConfig, "")
    from tljob.config import StageSection

    walk(StageSection, "train.stages[].")
    assert missing == []


@pytest.mark.parametrize(
    ("text", "overrides", "expected"),
    [
        ("train: {batch_sizee: 3}", [], "`train.batch_sizee` is not a known setting"),
        ("train: {batch_size: 0}", [], "`train.batch_size` (0)"),
        ("train: {batch_size: many}", [], "`train.batch_size` ('many')"),
        (
            "model: {backbone: resnet5}",
            [],
            "`model.backbone` ('resnet5'): unknown backbone 'resnet5'; did you mean 'resnet50' "
            "or 'resnet152' or 'resnet50_v2'? `tljob backbones` lists the ",
        ),
        ("model: {weights: imagenet21k}", [], "`model.weights` ('imagenet21k'): must be"),
        ("data: {val_fraction: 1.5}", [], "`data.val_fraction` (1.5)"),
        (
            "",
            ["train.stages.0.trainable=top:0"],
            "`train.stages.0.trainable` ('top:0'): must be 'head', 'all', 'top_layers:N' (or "
            "'top:N') or 'top_blocks:K' with N, K >= 1",
        ),
        (
            "",
            ["train.stages.1.trainable=top_blocks:18"],
            "`train.stages.1.trainable` ('top_blocks:18'): backbone 'mobilenet_v2' has 17 "
            "blocks, so K must be <= 17",
        ),
        (
            "",
            ["train.stages.1.optimizer=adagrad"],
            "`train.stages.1.optimizer` ('adagrad'): must be one of adam, adamw, sgd, rmsprop",
        ),
        ("", ["train.stages.1.name=head"], "stage names must be unique; repeated: head"),
        ("", ["train.stages=[]"], "`train.stages` ([]): at least one stage is required"),
        (
            "",
            ["data.image_size=16"],
            "`data.image_size` (16) must be >= 32 for backbone 'mobilenet_v2'",
        ),
        ("run: {name: 'my run'}", [], "`run.name` ('my run'): must be letters"),
        ("- a\n- b\n", [], "must hold a mapping of sections, not a list"),
        ("train: {batch_size: [1, 2\n", [], "is not valid YAML"),
    ],
)
def test_bad_input_names_field_value_and_rule(tmp_path, text, overrides, expected):
    with pytest.raises(ConfigError) as err:
        load_config(write(tmp_path, text), overrides)
    assert expected in str(err.value)


@pytest.mark.parametrize(
    ("override", "field", "shown"),
    [
        ("train.stages.0.learning_rate=.inf", "train.stages.0.learning_rate", "inf"),
        ("train.stages.1.learning_rate=-.inf", "train.stages.1.learning_rate", "-inf"),
        ("train.stages.0.learning_rate=.nan", "train.stages.0.learning_rate", "nan"),
        ("model.head.dropout=.nan", "model.head.dropout", "nan"),
        ("model.head.dropout=nan", "model.head.dropout", "'nan'"),  # a YAML string
        ("train.reduce_lr.factor=.nan", "train.reduce_lr.factor", "nan"),
        ("train.reduce_lr.min_lr=.inf", "train.reduce_lr.min_lr", "inf"),
        ("scaling.cpus_per_worker=.inf", "scaling.cpus_per_worker", "inf"),
        ("scaling.gpus_per_worker=.nan", "scaling.gpus_per_worker", "nan"),
        ("scaling.data_cpus=.inf", "scaling.data_cpus", "inf"),
        ("scaling.resource_wait_seconds=.inf", "scaling.resource_wait_seconds", "inf"),
        ("data.val_fraction=.nan", "data.val_fraction", "nan"),
        ("run.progress_seconds=.inf", "run.progress_seconds", "inf"),
    ],
)
def test_non_finite_floats_are_refused_naming_the_field(override, field, shown):
    with pytest.raises(ConfigError) as err:
        load_config(None, ["data.source=/x", override])
    assert str(err.value) == (
        f"invalid config:\n  `{field}` ({shown}): must be a finite number, not inf or nan"
    )


def test_every_float_field_refuses_inf_and_nan():
    # Walk the schema, so a float field added later is covered too.
    from pydantic import BaseModel

    from tljob.config import StageSection

    floats: list[str] = []

    def walk(model: type[BaseModel], prefix: str) -> None:
        for name, field in model.model_fields.items():
            ann = field.annotation
            if isinstance(ann, type) and issubclass(ann, BaseModel):
                walk(ann, f"{prefix}{name}.")
            elif ann is float or ann in (float | None, float | Literal["auto"]):
                floats.append(prefix + name)

    walk(JobConfig, "")
    walk(StageSection, "train.stages.0.")
    assert "train.stages.0.learning_rate" in floats and "scaling.data_cpus" in floats
    for path in floats:
        for value in (".inf", ".nan"):
            with pytest.raises(ConfigError, match=f"`{path}` "):
                load_config(None, [f"{path}={value}"])


@pytest.mark.parametrize(
    ("override", "shown"),
    [
        ("train.reduce_lr.monitor=bogus", "`train.reduce_lr.monitor` ('bogus')"),
        ("train.early_stopping.monitor=val_acc", "`train.early_stopping.monitor` ('val_acc')"),
        ("train.early_stopping.monitor=acc", "`train.early_stopping.monitor` ('acc')"),
        ("train.reduce_lr.monitor=lr", "`train.reduce_lr.monitor` ('lr')"),
    ],
)
def test_monitor_must_be_a_reported_metric(override, shown):
    with pytest.raises(ConfigError) as err:
        load_config(None, [override])
    assert str(err.value) == (
        f"invalid config:\n  {shown}: is not a metric a run reports, so the callback would "
        "never act; use one of loss, accuracy, macro_f1, val_loss, val_accuracy, val_macro_f1"
    )


@pytest.mark.parametrize(
    "name", ["loss", "accuracy", "macro_f1", "val_loss", "val_accuracy", "val_macro_f1"]
)
def test_every_reported_metric_can_be_monitored(name):
    job = load_config(
        None, [f"train.reduce_lr.monitor={name}", f"train.early_stopping.monitor={name}"]
    )
    assert job.train.reduce_lr.monitor == job.train.early_stopping.monitor == name


def test_reported_metrics_follow_the_compiled_metrics():
    from tljob.config import METRICS, REPORTED_METRICS

    assert METRICS == ("accuracy", "macro_f1")
    assert REPORTED_METRICS == (
        "loss",
        "accuracy",
        "macro_f1",
        "val_loss",
        "val_accuracy",
        "val_macro_f1",
    )


def test_image_size_has_an_upper_bound():
    with pytest.raises(ConfigError) as err:
        load_config(None, ["data.image_size=10000"])
    assert "`data.image_size` (10000): Input should be less than or equal to 1024" in str(err.value)
    assert load_config(None, ["data.image_size=1024"]).image_size == 1024


def test_scaling_defaults_for_the_preflight_check():
    job = load_config(None, [])
    assert (job.scaling.data_cpus, job.scaling.resource_wait_seconds) == (1.0, 0.0)
    job = load_config(None, ["scaling.data_cpus=0.25", "scaling.resource_wait_seconds=600"])
    assert (job.scaling.data_cpus, job.scaling.resource_wait_seconds) == (0.25, 600.0)
    with pytest.raises(ConfigError, match=r"`scaling.resource_wait_seconds` \(-1\)"):
        load_config(None, ["scaling.resource_wait_seconds=-1"])


def test_missing_file(tmp_path):
    with pytest.raises(ConfigError, match="does not exist"):
        load_config(tmp_path / "nope.yaml")


@pytest.mark.parametrize(
    ("override", "expected"),
    [
        ("train.batch_size", "must look like dotted.path=value"),
        ("=3", "must look like dotted.path=value"),
        ("train..batch_size=3", "must look like dotted.path=value"),
        ("train.stages.5.epochs=3", "`train.stages.5` indexes a list of 2 entries"),
        ("train.batch_size.x=3", "`train.batch_size.x` is inside a plain value"),
    ],
)
def test_bad_override_syntax(override, expected):
    with pytest.raises(ConfigError) as err:
        load_config(None, [override])
    assert expected in str(err.value)


def test_override_order_defaults_then_file_then_set(tmp_path):
    path = write(
        tmp_path,
        """
        train: {batch_size: 16}
        data: {source: /from/file, seed: 5}
    """,
    )
    job = load_config(
        path,
        [
            "train.batch_size=64",
            "train.batch_size=8",
            "train.stages.1.epochs=9",
            "model.head.dense_units=[128, 64]",
        ],
    )
    assert job.train.batch_size == 8  # last --set wins over earlier --set and the file
    assert job.data.seed == 5  # file wins over default
    assert job.data.source == "/from/file"
    assert job.train.stages[1].epochs == 9  # --set edits the default stage list
    assert job.train.stages[1].name == "fine_tune"
    assert job.model.head.dense_units == [128, 64]  # YAML list value
    assert job.data.val_fraction == 0.2  # untouched default


def test_override_values_are_yaml_scalars():
    job = load_config(
        None,
        [
            "scaling.use_gpu=true",
            "data.max_images_per_class=null",
            "train.stages.0.learning_rate=3e-4",
            "run.name='007'",
        ],
    )
    assert job.scaling.use_gpu is True
    assert job.data.max_images_per_class is None
    assert job.train.stages[0].learning_rate == pytest.approx(3e-4)
    assert job.run.name == "007"  # quoted, as in YAML


def test_resolved_config_round_trips(tmp_path):
    job = load_config(write(tmp_path, GOOD), ["train.batch_size=12"])
    saved = tmp_path / "resolved.yaml"
    saved.write_text(dump_config(job))
    again = load_config(saved)
    assert again == job
    assert yaml.safe_load(saved.read_text())["data"]["image_size"] == 160


def test_config_and_preflight_import_neither_ray_nor_tensorflow():
    code = (
        "import sys, tljob.config, tljob.zoo, tljob.cli, tljob.preflight;"
        "bad = [m for m in ('ray', 'tensorflow', 'tf_keras', 'keras') if m in sys.modules];"
        "print(bad); sys.exit(1 if bad else 0)"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_cli_bad_config_exits_2_before_ray_starts(tmp_path):
    path = write(tmp_path, "train: {batch_size: -1}\n")
    code = (
        "import sys; from tljob.cli import main;"
        f"rc = main(['train', '--config', {str(path)!r}, '--set', 'model.weights=none']);"
        "assert 'ray' not in sys.modules, 'ray was imported'; sys.exit(rc)"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert proc.returncode == 2, proc.stderr
    assert proc.stderr.startswith("tljob: error: invalid config:")
    assert "`train.batch_size` (-1)" in proc.stderr
    assert "Traceback" not in proc.stderr


def test_docs_config_reference_is_current():
    from tljob.config.reference import config_reference

    page = Path(__file__).resolve().parents[1] / "docs" / "pages" / "reference" / "config.md"
    text = page.read_text()
    start, end = "<!-- config-reference:start -->\n", "\n<!-- config-reference:end -->"
    documented = text[text.index(start) + len(start) : text.index(end)]
    assert documented == config_reference(), "regenerate with: python -m tljob.docs_gen --write"


def test_typed_values_are_parsed_once_and_saved_as_written(tmp_path):
    job = load_config(write(tmp_path, GOOD), ["model.weights=/w/r50.weights.h5"])
    assert job.model.weights == WeightsSource("file", "/w/r50.weights.h5")
    assert job.train.stages[1].trainable == Trainable("top", 40)
    saved = yaml.safe_load(dump_config(job))
    assert saved["model"]["weights"] == "/w/r50.weights.h5"
    assert [s["trainable"] for s in saved["train"]["stages"]] == ["head", "top:40"]


@pytest.mark.parametrize(
    ("text", "parsed"),
    [
        ("top:40", Trainable("top", layers=40)),
        ("top_layers:40", Trainable("top", layers=40)),
        ("top_blocks:2", Trainable("top_blocks", blocks=2)),
        ("head", Trainable("head")),
        ("all", Trainable("all")),
    ],
)
def test_trainable_kinds_parse_and_are_saved_as_written(text, parsed):
    job = load_config(None, ["data.source=/x", f"train.stages.1.trainable={text}"])
    assert job.train.stages[1].trainable == parsed
    assert job.record()["train"]["stages"][1]["trainable"] == text
    # 'top:N' is the older spelling of 'top_layers:N': the same stage either way
    assert Trainable.parse("top:3") == Trainable.parse("top_layers:3")


def test_the_default_image_size_is_saved_resolved_and_loads_back_equal(tmp_path):
    job = load_config(None, ["data.source=/x", "model.backbone=resnet50"])
    assert job.data.image_size is None and job.image_size == 224
    saved = tmp_path / "config.yaml"
    saved.write_text(dump_config(job))
    assert yaml.safe_load(saved.read_text())["data"]["image_size"] == 224
    again = load_config(saved)
    assert again == job.resolved() and again.record() == job.record()
