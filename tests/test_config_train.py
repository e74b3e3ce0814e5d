"""The per-stage optimisation settings and the run-wide training switches: each validated
with a message naming field, value and rule; unknown values listing the valid ones."""

from __future__ import annotations

import pytest

from tljob.config import ConfigError, dump_config, load_config


@pytest.mark.parametrize(
    ("overrides", "expected"),
    [
        (
            ["train.stages.0.schedule.kind=linear"],
            "`train.stages.0.schedule.kind` ('linear'): must be one of constant, cosine, step, "
            "plateau",
        ),
        (
            ["train.stages.0.batchnorm=renorm"],
            "`train.stages.0.batchnorm` ('renorm'): must be one of auto, frozen, train",
        ),
        (
            ["train.class_weight=auto"],
            "`train.class_weight` ('auto'): must be one of none, balanced",
        ),
        (
            ["train.best_metric=val_f1"],
            "`train.best_metric` ('val_f1'): must be one of val_accuracy, val_macro_f1, val_loss",
        ),
        (
            ["train.precision=float16"],
            "`train.precision` ('float16'): must be one of float32, mixed_float16, mixed_bfloat16",
        ),
        (
            ["train.precision=mixed_float16"],
            "`train.precision` ('mixed_float16') needs GPUs (`scaling.use_gpu: true`); on CPUs "
            "use 'mixed_bfloat16' or 'float32'",
        ),
        (["train.jit_compile=maybe"], "`train.jit_compile` ('maybe'): Input should be a valid"),
        (
            ["train.stages.0.weight_decay=0.01"],
            "`train.stages.0.weight_decay` (0.01) is only used by optimizer 'adamw', not 'adam'",
        ),
        (
            ["train.stages.1.optimizer=adamw", "train.stages.1.weight_decay=-1"],
            "`train.stages.1.weight_decay` (-1): Input should be greater than or equal to 0",
        ),
        (
            ["train.stages.0.momentum=0.9"],
            "`train.stages.0.momentum` (0.9) is only used by optimizers sgd, rmsprop, not 'adam'",
        ),
        (
            ["train.stages.0.optimizer=sgd", "train.stages.0.momentum=1"],
            "`train.stages.0.momentum` (1): Input should be less than 1",
        ),
        (
            ["train.stages.0.label_smoothing=1"],
            "`train.stages.0.label_smoothing` (1): Input should be less than 1",
        ),
        (
            ["train.stages.0.schedule.warmup_epochs=6"],
            "`train.stages.0.schedule.warmup_epochs` (6) must be <= the stage's "
            "`train.stages.0.epochs` (5)",
        ),
        (
            ["train.stages.0.schedule.warmup_epochs=1", "train.stages.0.schedule.warmup_steps=5"],
            "`train.stages.0.schedule.warmup_epochs` (1) and "
            "`train.stages.0.schedule.warmup_steps` (5): set at most one of them",
        ),
        (
            ["train.stages.0.schedule.step_factor=1"],
            "`train.stages.0.schedule.step_factor` (1): Input should be less than 1",
        ),
        (
            ["train.stages.0.schedule.step_epochs=0"],
            "`train.stages.0.schedule.step_epochs` (0): Input should be greater than or equal to 1",
        ),
        (
            ["train.stages.0.schedule.final_fraction=2"],
            "`train.stages.0.schedule.final_fraction` (2): Input should be less than or equal to 1",
        ),
        (["train.stages.0.schedule.warmup=3"], "`train.stages.0.schedule.warmup` is not a known"),
    ],
)
def test_new_training_settings_are_validated(overrides, expected):
    with pytest.raises(ConfigError) as err:
        load_config(None, ["data.source=/x", *overrides])
    assert expected in str(err.value)


def test_new_training_settings_read_back_equal(tmp_path):
    overrides = [
        "train.stages.0.optimizer=adamw",
        "train.stages.0.weight_decay=0.05",
        "train.stages.0.schedule={kind: cosine, warmup_epochs: 1, final_fraction: 0.1}",
        "train.stages.0.label_smoothing=0.1",
        "train.stages.1.optimizer=sgd",
        "train.stages.1.momentum=0.8",
        "train.stages.1.schedule.kind=step",
        "train.stages.1.schedule.step_epochs=2",
        "train.stages.1.batchnorm=train",
        "train.class_weight=balanced",
        "train.best_metric=val_macro_f1",
        "train.precision=mixed_bfloat16",
        "train.jit_compile=true",
    ]
    job = load_config(None, ["data.source=/x", *overrides])
    head, tune = job.train.stages
    assert (head.optimizer, head.weight_decay, head.label_smoothing) == ("adamw", 0.05, 0.1)
    assert (head.schedule.kind, head.schedule.warmup_epochs, head.schedule.final_fraction) == (
        "cosine",
        1,
        0.1,
    )
    assert (tune.momentum, tune.schedule.kind, tune.schedule.step_epochs) == (0.8, "step", 2)
    assert (tune.batchnorm, head.batchnorm) == ("train", "auto")
    assert (job.train.class_weight, job.train.best_metric) == ("balanced", "val_macro_f1")
    assert (job.train.precision, job.train.jit_compile) == ("mixed_bfloat16", True)
    saved = tmp_path / "config.yaml"
    saved.write_text(dump_config(job))
    assert load_config(saved) == job.resolved()
