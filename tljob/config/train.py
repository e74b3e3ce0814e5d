"""The optimisation vocabulary of a run (pure): optimizers, learning-rate schedules, the
names of what every epoch reports, and the per-run training switches (class weights,
precision, XLA, how the best epoch is chosen).

``LOSS`` / ``METRICS`` are what every stage compiles (``tljob.nn.model.compile_for_stage``
reads them), so ``REPORTED_METRICS`` are exactly the scalar names Keras reports after each
epoch, since fit validates every epoch. Callbacks and the best-epoch rule may only watch
these names; anything else would be accepted by Keras and never act. ``macro_f1`` and the
per-class recall (``PER_CLASS_METRICS``, one figure per class) come from one confusion
matrix summed over every replica, so they are global figures under the strategy.
"""

from __future__ import annotations

import math
from typing import Annotated, Any, Literal, get_args

from pydantic import BeforeValidator, Field, model_validator

from tljob.config._base import _Section
from tljob.config.features import parse_features

Optimizer = Literal["adam", "adamw", "sgd", "rmsprop"]
OPTIMIZERS: tuple[str, ...] = get_args(Optimizer)
ScheduleKind = Literal["constant", "cosine", "step", "plateau"]
SCHEDULES: tuple[str, ...] = get_args(ScheduleKind)
BatchNormMode = Literal["auto", "frozen", "train"]
BATCHNORM_MODES: tuple[str, ...] = get_args(BatchNormMode)
ClassWeight = Literal["none", "balanced"]
CLASS_WEIGHTS: tuple[str, ...] = get_args(ClassWeight)
Precision = Literal["float32", "mixed_float16", "mixed_bfloat16"]
PRECISIONS: tuple[str, ...] = get_args(Precision)

LOSS = "sparse_categorical_crossentropy"
METRICS = ("accuracy", "macro_f1")
PER_CLASS_METRICS = ("class_recall",)  # a list per epoch, beside the scalars
REPORTED_METRICS = tuple(prefix + name for prefix in ("", "val_") for name in ("loss", *METRICS))
Metric = Literal["loss", "accuracy", "macro_f1", "val_loss", "val_accuracy", "val_macro_f1"]
assert get_args(Metric) == REPORTED_METRICS  # one list of names, spelt twice for the type
BestMetric = Literal["val_accuracy", "val_macro_f1", "val_loss"]
BEST_METRICS: tuple[str, ...] = get_args(BestMetric)
# SGD's momentum and RMSprop's when `momentum` is left empty (tljob's SGD always had 0.9).
DEFAULT_MOMENTUM: dict[str, float] = {"sgd": 0.9, "rmsprop": 0.0}


def higher_is_better(metric: str) -> bool:
    """Whether a larger value of ``metric`` (a reported name) is an improvement."""
    return not metric.endswith("loss")


def _one_of(choices: tuple[str, ...], what: str = "") -> Any:
    def check(value: Any) -> Any:
        if value not in choices:
            raise ValueError(f"must be one of {', '.join(choices)}{what}")
        return value

    return BeforeValidator(check)


def _reported_metric(name: Any) -> Any:
    if name not in REPORTED_METRICS:
        raise ValueError(
            "is not a metric a run reports, so the callback would never act; "
            "use one of " + ", ".join(REPORTED_METRICS)
        )
    return name


OptimizerName = Annotated[Optimizer, _one_of(OPTIMIZERS)]

AUTO_LEARNING_RATE = "auto"


def _learning_rate(value: Any) -> Any:
    # One message for every wrong value (pydantic's union errors would list both branches).
    if value == AUTO_LEARNING_RATE:
        return value
    number = value if isinstance(value, int | float) and not isinstance(value, bool) else None
    if isinstance(value, str):
        try:
            number = float(value)
        except ValueError:
            number = None
    if number is not None and not math.isfinite(number):
        raise ValueError("must be a finite number, not inf or nan")  # as every float field
    if number is None or number <= 0:
        raise ValueError(f"must be a positive number or {AUTO_LEARNING_RATE!r}")
    return float(number)


# A positive rate, or 'auto': picked by a learning-rate range test (tljob.run.lr_auto).
LearningRate = Annotated[float | Literal["auto"], BeforeValidator(_learning_rate)]
MetricName = Annotated[Metric, BeforeValidator(_reported_metric)]


class ScheduleSection(_Section):
    kind: Annotated[ScheduleKind, _one_of(SCHEDULES)] = Field(
        "plateau",
        description="Learning-rate schedule within the stage: 'constant'; 'cosine' (from "
        "`learning_rate` down to `learning_rate * final_fraction` over the stage's steps "
        "after warmup); 'step' (times `step_factor` every `step_epochs` epochs); 'plateau' "
        "(ReduceLROnPlateau with the `train.reduce_lr` settings; constant when it is off).",
    )
    warmup_epochs: int = Field(
        0,
        ge=0,
        description="Linear warmup over this many epochs: step s (from 0) trains with "
        "(s + 1) / warmup_steps of the scheduled rate. At most one of the two warmup fields.",
    )
    warmup_steps: int = Field(
        0, ge=0, description="Linear warmup over this many optimizer steps instead."
    )
    step_epochs: int = Field(1, ge=1, description="'step': epochs between drops.")
    step_factor: float = Field(
        0.1, gt=0.0, lt=1.0, description="'step': multiply the rate by this at every drop."
    )
    final_fraction: float = Field(
        0.0, ge=0.0, le=1.0, description="'cosine': the final rate as a fraction of the first."
    )

    @model_validator(mode="after")
    def _one_warmup(self) -> ScheduleSection:
        if self.warmup_epochs and self.warmup_steps:
            raise ValueError(
                f"`warmup_epochs` ({self.warmup_epochs}) and `warmup_steps` "
                f"({self.warmup_steps}): set at most one of them"
            )
        return self


class ReduceLRSection(_Section):
    enabled: bool = Field(
        True, description="Use ReduceLROnPlateau in stages whose schedule is 'plateau'."
    )
    monitor: MetricName = Field(
        "val_loss", description="Metric watched: " + ", ".join(REPORTED_METRICS) + "."
    )
    factor: float = Field(0.5, gt=0.0, lt=1.0, description="Multiply the LR by this.")
    patience: int = Field(2, ge=0, description="Epochs without improvement before reducing.")
    min_lr: float = Field(1e-7, ge=0.0, description="Lower bound on the learning rate.")


class EarlyStoppingSection(_Section):
    enabled: bool = Field(False, description="Stop a stage early when the metric stalls.")
    monitor: MetricName = Field(
        "val_loss", description="Metric watched: " + ", ".join(REPORTED_METRICS) + "."
    )
    patience: int = Field(3, ge=0, description="Epochs without improvement before stopping.")


ClassWeightName = Annotated[ClassWeight, _one_of(CLASS_WEIGHTS)]
PrecisionName = Annotated[Precision, _one_of(PRECISIONS)]
BestMetricName = Annotated[BestMetric, _one_of(BEST_METRICS)]
BatchNormName = Annotated[BatchNormMode, _one_of(BATCHNORM_MODES)]
# 'auto', 'images', 'cached' or 'views K' (tljob.config.features)
FeaturesName = Annotated[str, BeforeValidator(parse_features)]


def check_stage_settings(stage: Any) -> None:
    """The cross-field rules of a ``StageSection``: settings its optimizer would ignore,
    a warmup longer than the stage."""
    if stage.weight_decay and stage.optimizer != "adamw":
        raise ValueError(
            f"`weight_decay` ({stage.weight_decay}) is only used by optimizer 'adamw', "
            f"not {stage.optimizer!r}"
        )
    if stage.momentum is not None and stage.optimizer not in DEFAULT_MOMENTUM:
        raise ValueError(
            f"`momentum` ({stage.momentum}) is only used by optimizers "
            f"{', '.join(DEFAULT_MOMENTUM)}, not {stage.optimizer!r}"
        )
    if stage.schedule.warmup_epochs > stage.epochs:
        raise ValueError(
            f"`schedule.warmup_epochs` ({stage.schedule.warmup_epochs}) must be <= the "
            f"stage's `epochs` ({stage.epochs})"
        )


def stage_momentum(optimizer: str, momentum: float | None) -> float:
    """The momentum an optimizer runs with: the stage's, else its default (0 if none)."""
    return momentum if momentum is not None else DEFAULT_MOMENTUM.get(optimizer, 0.0)


def balanced_class_weights(counts: list[int] | tuple[int, ...]) -> dict[int, float]:
    """``n_samples / (n_classes * count_c)`` per class index, from the training counts
    (scikit-learn's 'balanced'). A class without training images gets weight 0."""
    total, n = sum(counts), len(counts)
    return {c: (total / (n * k) if k else 0.0) for c, k in enumerate(counts)}
