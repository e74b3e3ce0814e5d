"""A training stage (pure): its epochs, rate, optimizer, what it trains, and on what
(``features``); and the classic recipe's two stages, the default."""

from __future__ import annotations

from typing import Annotated

from pydantic import Field, PlainSerializer, PlainValidator, model_validator

from tljob.config._base import _Section
from tljob.config.train import (
    DEFAULT_MOMENTUM,
    OPTIMIZERS,
    BatchNormName,
    FeaturesName,
    LearningRate,
    OptimizerName,
    ScheduleSection,
    check_stage_settings,
)
from tljob.config.trainable import Trainable

# Typed in Python, the user's spelling in YAML and JSON.
TrainableSpec = Annotated[
    Trainable, PlainValidator(Trainable.parse), PlainSerializer(str, return_type=str)
]


class StageSection(_Section):
    name: str = Field(..., min_length=1, description="Stage name, shown in logs and metrics.")
    epochs: int = Field(..., ge=1, description="Epochs in this stage.")
    learning_rate: LearningRate = Field(
        ...,
        description="Initial learning rate of the stage: a positive number, or 'auto': a "
        "learning-rate range test on the training split picks it before the stage trains "
        "(docs/pages/training.md#learning-rate-auto; the curve and the choice are kept in "
        "the run directory's `lr_find/`, and a resumed run reuses them).",
    )
    optimizer: OptimizerName = Field(
        "adam", description="Optimizer: " + ", ".join(OPTIMIZERS) + " (a fresh one per stage)."
    )
    trainable: TrainableSpec = Field(
        Trainable("head"),
        description="What is trained: 'head' (backbone frozen), 'top_layers:N' (the last N "
        "backbone layers and the head; 'top:N' is the same), 'top_blocks:K' (the last K "
        "blocks of the backbone, per its registry entry, and the head) or 'all'.",
    )
    weight_decay: float = Field(
        0.0, ge=0.0, description="'adamw' only: decoupled weight decay (tf_keras AdamW)."
    )
    momentum: float | None = Field(
        None,
        ge=0.0,
        lt=1.0,
        description="'sgd' / 'rmsprop' only: momentum; empty means "
        + ", ".join(f"{k} {v}" for k, v in DEFAULT_MOMENTUM.items())
        + ".",
    )
    schedule: ScheduleSection = Field(
        default_factory=ScheduleSection, description="The stage's learning-rate schedule."
    )
    label_smoothing: float = Field(
        0.0,
        ge=0.0,
        lt=1.0,
        description="Label smoothing of the cross-entropy (training and validation loss); "
        "labels stay class indices.",
    )
    batchnorm: BatchNormName = Field(
        "auto",
        description="BatchNorm statistics of unfrozen backbone layers: 'frozen' (inference "
        "mode, the pretrained statistics kept), 'train' (updated from the batches), or "
        "'auto': frozen with pretrained weights, trained from random ones.",
    )
    features: FeaturesName = Field(
        "auto",
        description="What a head-only stage trains on: 'images', or 'cached' pooled features "
        "(the backbone run once over the training and validation images, stored beside the "
        "prepared data and reused by later runs and sweep trials); 'auto': cached whenever "
        "valid (trainable 'head', no earlier stage training the backbone, pretrained "
        "weights, no augmentation); 'views K' (K >= 1): cached features of K augmented "
        "views of the training images (K backbone passes; epoch e trains on view e mod K), "
        "valid as 'cached' is but with augmentation in data (not in the model, no MixUp / "
        "CutMix).",
    )

    @model_validator(mode="after")
    def _optimizer_settings(self) -> StageSection:
        check_stage_settings(self)
        return self


def _default_stages() -> list[StageSection]:
    return [
        StageSection(
            name="head", epochs=5, learning_rate=1e-4, optimizer="adam", trainable=Trainable("head")
        ),
        StageSection(
            name="fine_tune",
            epochs=5,
            learning_rate=1e-5,
            optimizer="adam",
            trainable=Trainable("top", 30),
        ),
    ]
